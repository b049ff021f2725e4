# Apache Kafka 4 in KRaft mode, one node, from the Maven Central jars: the
# broker's runtime classpath is copied by dev/maven/pom.xml (profile kafka) and
# run with `java kafka.Kafka`, exactly what bin/kafka-server-start.sh does.

# Every broker's heap, the single node's and each cluster node's: fixed at 768 MB.
# A broker holds about 166 MB live (200 MB on a cluster node, a replica of every
# partition). In a heap that starts small (-Xms256m grew to 334 MB) or is 384 MB, that is
# past G1's 45 % mark-start threshold, so a concurrent cycle ran every ~30 s: a young pause
# of 10-14 ms, then a Remark of 8-23 ms within 60 ms, up to 60 ms paused in one second.
# `likes-bench --only 1`, same build, minutes apart (bench/results/2026-12-03-s1-stall-meter*
# vs -s1-broker-heap-768-fixed*): pauses 56 young + 24 Remark, 726 ms in 513 s, 13 windows
# of 200 ms with >= 20 ms paused -> 17 young, 234 ms in 510 s, 1 such window (a 72.6 ms
# young pause during a 27 ms host stall). The live set is 22 % of 768 MB: no cycles.
KAFKA_HEAP=${KAFKA_HEAP:--Xms768m -Xmx768m}

kafka_libs() { echo "$STACK_DIR/dist/kafka-$(pom_property kafka.version)/libs"; }

kafka_install() {
  local libs; libs=$(kafka_libs)
  [[ -f $libs/.complete ]] && return 0
  log "fetching Kafka $(pom_property kafka.version) jars with Maven"
  rm -rf "$libs"; mkdir -p "$libs"
  mvn_stack -Pkafka dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$libs"
  touch "$libs/.complete"
}

# The java command line of every Kafka class we run, in the array KAFKA_CMD.
kafka_cmd() {
  # shellcheck disable=SC2206 # the heap options are words on purpose
  KAFKA_CMD=(java $KAFKA_HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
    "-Dlog4j2.configurationFile=$DEV/config/log4j2.yaml" -cp "$(kafka_libs)/*")
}

kafka_java() { kafka_cmd; "${KAFKA_CMD[@]}" "$@"; }

# A broker's GC pauses in .stack/logs/<name>-gc.log, stamped with the wall
# clock, so a latency spike in a benchmark can be set against the broker's
# collections (their length and time) instead of guessed at.
kafka_gc_log() { echo "-Xlog:gc:file=$(log_file "$1-gc"):time,uptime:filecount=2,filesize=10m"; }

# Ready once the broker says it started and its listener accepts connections.
kafka_ready() {
  port_open 9092 && grep -q "Kafka Server started" "$(log_file kafka)"
}

kafka_start() {
  if running_pid kafka >/dev/null; then return 0; fi
  kafka_install
  local data="$STACK_DIR/data/kafka" conf="$STACK_DIR/run/kafka.properties"
  mkdir -p "$data" "$STACK_DIR/run"
  { cat "$DEV/config/kafka.properties"; echo "log.dirs=$data"; } >"$conf"
  if [[ ! -f $data/meta.properties ]]; then
    log "formatting Kafka storage in $data"
    local cluster_id; cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)
    kafka_java kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$conf" \
      >>"$(log_file kafka)" 2>&1 || die "kafka storage format failed (see $(log_file kafka))"
  fi
  log "starting Kafka"
  : >"$(log_file kafka)"
  kafka_cmd
  spawn kafka "${KAFKA_CMD[@]}" "$(kafka_gc_log kafka)" kafka.Kafka "$conf"
  wait_until kafka 120 "$(log_file kafka)" kafka_ready
  log "Kafka ready on 127.0.0.1:9092"
}

kafka_stop() { stop_pid kafka 60; }
kafka_restart() { kafka_stop; kafka_start; }
