# The cluster topology's Kafka: three KRaft nodes kafka-1..3 on loopback, each broker and
# controller and all three voters, from the same cached jars as the single node
# (dev/lib/kafka.sh). Settings: dev/config/kafka-cluster.properties; client ports: the
# KAFKA_BOOTSTRAP_SERVERS list of dev/config/cluster.env (node N is its Nth entry).
# State in $STACK_DIR/cluster/kafka-N, logs in $STACK_DIR/logs/kafka-N.log.

# The single node's heap (dev/lib/kafka.sh says why 768 MB): three such brokers beside
# PostgreSQL, the registry, six Redis nodes and the services fit the 24 GiB machine.
KAFKA_CLUSTER_HEAP=${KAFKA_CLUSTER_HEAP:-$KAFKA_HEAP}
# Fixed, so a node's storage can be formatted (or re-formatted after `reset --cluster`)
# without coordinating with the others.
KAFKA_CLUSTER_ID=ZdL3P9VJSt2wM1K0r4yQmg

# The nodes' client addresses, from the one place that names them.
kafka_cluster_nodes() {
  local IFS=,
  # shellcheck disable=SC2086 # split on commas on purpose
  printf '%s\n' $(sed -n 's/^KAFKA_BOOTSTRAP_SERVERS=//p' "$DEV/config/cluster.env")
}
kafka_cluster_count() { kafka_cluster_nodes | wc -l; }
kafka_node_port() { kafka_cluster_nodes | sed -n "${1}p" | cut -d: -f2; }
# The controller port of node N, from the voters line of kafka-cluster.properties.
kafka_node_controller_port() {
  sed -n 's/^controller.quorum.voters=//p' "$DEV/config/kafka-cluster.properties" | tr , '\n' |
    sed -n "s/^$1@[^:]*:\([0-9]*\)$/\1/p"
}

kafka_node_cmd() {
  # shellcheck disable=SC2206 # the heap options are words on purpose
  KAFKA_CMD=(java $KAFKA_CLUSTER_HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
    "-Dlog4j2.configurationFile=$DEV/config/log4j2.yaml" -cp "$(kafka_libs)/*")
}

kafka_node_ready() {
  port_open "$(kafka_node_port "$1")" && grep -q "Kafka Server started" "$(log_file "kafka-$1")"
}

# Writes node N's properties and formats its storage once; then starts it without waiting
# (a node becomes ready only once a majority of the voters runs).
kafka_node_spawn() {
  local n=$1 name="kafka-$1"
  if running_pid "$name" >/dev/null; then return 0; fi
  local port cport; port=$(kafka_node_port "$n"); cport=$(kafka_node_controller_port "$n")
  [[ -n $port && -n $cport ]] || die "no ports for $name in dev/config/cluster.env / kafka-cluster.properties"
  port_open "$port" && die "port $port ($name) is taken by a process dev/stack did not start"
  local data="$STACK_DIR/cluster/$name" conf="$STACK_DIR/run/$name.properties"
  mkdir -p "$data" "$STACK_DIR/run" "$STACK_DIR/logs"
  {
    cat "$DEV/config/kafka-cluster.properties"
    echo "node.id=$n"
    echo "listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
    echo "advertised.listeners=PLAINTEXT://127.0.0.1:$port"
    echo "log.dirs=$data"
  } >"$conf"
  kafka_node_cmd
  if [[ ! -f $data/meta.properties ]]; then
    log "formatting $name storage in $data"
    "${KAFKA_CMD[@]}" kafka.tools.StorageTool format -t "$KAFKA_CLUSTER_ID" -c "$conf" \
      >>"$(log_file "$name")" 2>&1 || die "$name storage format failed (see $(log_file "$name"))"
  fi
  log "starting $name (127.0.0.1:$port, controller $cport)"
  : >"$(log_file "$name")"
  spawn "$name" "${KAFKA_CMD[@]}" "$(kafka_gc_log "$name")" kafka.Kafka "$conf"
}

kafka_node_wait() {
  wait_until "kafka-$1" 180 "$(log_file "kafka-$1")" kafka_node_ready "$1"
}

kafka_cluster_start() {
  kafka_install
  local n count; count=$(kafka_cluster_count)
  for ((n = 1; n <= count; n++)); do kafka_node_spawn "$n"; done
  for ((n = 1; n <= count; n++)); do kafka_node_wait "$n"; done
  log "Kafka cluster ready on $(kafka_cluster_nodes | paste -sd,)"
}

kafka_cluster_stop() {
  local n count; count=$(kafka_cluster_count)
  # All at once: stopped one by one, the last node's controlled shutdown waits for a
  # controller quorum that left with the others, and hangs until killed.
  for ((n = 1; n <= count; n++)); do stop_pid "kafka-$n" 60 & done
  wait
}

# start|stop|restart|kill of one node, for fault tests and operators.
kafka_node_start() { kafka_install; kafka_node_spawn "$1"; kafka_node_wait "$1"; log "kafka-$1 ready"; }
kafka_node_stop() { stop_pid "kafka-$1" 60; }
kafka_node_restart() { kafka_node_stop "$1"; kafka_node_start "$1"; }

# The admin helper (dev/lib/KafkaAdmin.java) against the cluster.
kafka_admin() {
  java -Xmx128m "-Dlog4j2.configurationFile=$DEV/config/log4j2-tools.yaml" -cp "$(kafka_libs)/*" \
    "$DEV/lib/KafkaAdmin.java" "$@"
}
