# The project's own part of the stack: setting up topics, schema and migrations,
# running the services, running the tests. Everything talks to 127.0.0.1.

# Exports the topology's addresses from dev/config/<topology>.env (STACK_TOPOLOGY: single
# or cluster). On the single node a variable already set in the environment wins, as it
# always did; on the cluster the file wins, so a shell that exported the single node's
# addresses cannot send a cluster run to the single node.
app_env() {
  local file="$DEV/config/$STACK_TOPOLOGY.env" line key
  [[ -f $file ]] || die "unknown topology '$STACK_TOPOLOGY' (single, cluster)"
  while IFS= read -r line; do
    [[ $line =~ ^([A-Z_][A-Z0-9_]*)=(.*)$ ]] || continue
    key=${BASH_REMATCH[1]}
    if [[ $STACK_TOPOLOGY != single || -z ${!key:-} ]]; then export "$key=${BASH_REMATCH[2]}"; fi
  done <"$file"
}

# Prints the topology's settings as KEY=value lines (`eval "$(dev/stack env --cluster)"`,
# or `--env-file` for docker and systemd).
app_print_env() {
  local key
  for key in $(sed -n 's/^\([A-Z_][A-Z0-9_]*\)=.*/\1/p' "$DEV/config/$STACK_TOPOLOGY.env"); do
    echo "$key=${!key}"
  done
}

# Creates the events topic (partitions and replication: the topology's .env) and its DLQ,
# applies migrations, registers the schema.
app_setup() {
  log "setting up topics, migrations and schema (likes-replay setup)"
  # The debug build: the tests build the same profile, so CI compiles once.
  (cd "$ROOT" && cargo build -q -p likes-replay)
  local attempt
  for attempt in 1 2 3 4 5 6; do
    # The registry may answer 500 once while its database connections recover.
    "$ROOT/target/debug/likes-replay" setup --partitions "$STACK_TOPIC_PARTITIONS" \
      --replication "$STACK_TOPIC_REPLICATION" && return 0
    log "setup attempt $attempt failed; retrying"
    sleep 2
  done
  die "likes-replay setup failed"

}

# Builds and runs ingest, projector and the archiver in the foreground until Ctrl-C.
# The archive is a directory under .stack/ unless ARCHIVE_URL says otherwise.
app_run() {
  (cd "$ROOT" && cargo build -q --release -p likes-ingest -p likes-projector -p likes-replay)
  export ARCHIVE_URL="${ARCHIVE_URL:-$STACK_DIR/archive-$STACK_TOPOLOGY}"
  local pids=()
  "$ROOT/target/release/likes-projector" & pids+=($!)
  "$ROOT/target/release/likes-ingest" & pids+=($!)
  "$ROOT/target/release/likes-replay" archive run & pids+=($!)
  # Listed for Prometheus (if it runs: `up --observability`) while they run.
  prometheus_targets dev-stack-run "likes-ingest=${LISTEN_ADDR:-127.0.0.1:8000}" \
    "likes-projector=${PROJECTOR_METRICS_ADDR:-127.0.0.1:9101}" \
    "likes-archive=${ARCHIVE_METRICS_ADDR:-127.0.0.1:9103}"
  log "likes-ingest on http://${LISTEN_ADDR:-127.0.0.1:8000}, likes-projector and the archiver (into $ARCHIVE_URL) running; Ctrl-C stops them"
  trap 'prometheus_untarget dev-stack-run; kill -TERM "${pids[@]}" 2>/dev/null; wait; exit 0' INT TERM
  wait -n "${pids[@]}"
  log "a service exited; stopping the others"
  prometheus_untarget dev-stack-run
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait
  return 1
}

# promtool's checks of the alert rules: `check rules` (syntax, templates) and `test rules`
# (ops/prometheus/alerts_test.yml). Prints one summary line; fails when either fails.
app_test_rules() {
  local out status=0 rules
  rules=$(grep -c '^ *- alert:' "$ROOT/ops/prometheus/alerts.yml")
  if ! out=$(promtool check rules "$ROOT/ops/prometheus/alerts.yml" 2>&1); then
    echo "$out"
    echo "rules: promtool check rules FAILED"
    return 1
  fi
  if ! out=$(cd "$ROOT/ops/prometheus" && promtool test rules alerts_test.yml 2>&1); then
    echo "$out"
    status=1
  fi
  local cases
  cases=$(grep -c '^  - interval:' "$ROOT/ops/prometheus/alerts_test.yml")
  if ((status == 0)); then
    echo "rules: $rules alerts checked, $cases promtool test cases passed"
  else
    echo "rules: $rules alerts checked, promtool test rules FAILED ($cases cases)"
  fi
  return "$status"
}

# The whole test suite against the running stack. Cargo runs the test binaries
# one at a time (each runs its own tests in parallel); the fault tests, which
# restart services, are one binary and take turns inside it. They also SIGKILL
# the real projector binary, so the binaries are built first. Then schemathesis
# fuzzes the API from openapi.yaml, and the benchmark harness runs its quick
# mode as a smoke test (debug build, results under target/: it fails only when
# a scenario errors; speed is never asserted). The last line sums up every runner.
app_test() {
  cd "$ROOT"
  cargo build -q --bins
  local log="$ROOT/target/test-output.log" status=0 fuzz="fuzz: not run" bench="bench: not run"
  local rules
  rules=$(app_test_rules) || status=1
  echo "$rules"
  cargo test --workspace --no-fail-fast "$@" -- --test-threads=4 2>&1 | tee "$log" || status=$?
  if "$ROOT/tests/schemathesis.sh"; then fuzz="fuzz: schemathesis passed"; else status=1; fuzz="fuzz: schemathesis FAILED"; fi
  if "$ROOT/target/debug/likes-bench" --quick --out "$ROOT/target/bench-smoke"; then
    bench="bench: quick smoke passed"
  else
    status=1; bench="bench: quick smoke FAILED"
  fi
  local passed failed
  passed=$(grep -E '^test result:' "$log" | grep -oE '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
  failed=$(grep -E '^test result:' "$log" | grep -oE '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
  echo "${rules##*$'\n'}"
  echo "$fuzz"
  echo "$bench"
  echo "suite: $passed passed, $failed failed"
  return "$status"
}

# The cluster tests (tests/tests/cluster_*.rs) against the running cluster topology, one at a
# time: they kill and restart the cluster's nodes. Then the shard tests (*_shards.rs) again. Each is declared in tests/Cargo.toml with
# `test = false`, so the default suite's `cargo test --workspace` leaves it out and only this
# explicit `--test 'cluster_*'` runs it.
app_test_cluster() {
  cd "$ROOT"
  if ! compgen -G "$ROOT/tests/tests/cluster_*.rs" >/dev/null; then
    log "no cluster tests yet (tests/tests/cluster_*.rs); the cluster is up and set up"
    echo "suite (cluster): 0 passed, 0 failed"
    return 0
  fi
  cargo build -q --bins
  local log="$ROOT/target/test-output-cluster.log" status=0
  cargo test -p likes-tests --test 'cluster_*' --no-fail-fast "$@" -- --test-threads=1 2>&1 | tee "$log" || status=$?
  # The shard tests (tests/tests/*_shards.rs) run in the default suite on two databases of one
  # server; here again, where each shard is a server of its own (DATABASE_URLS of cluster.env).
  cargo test -p likes-tests --test '*_shards' --no-fail-fast "$@" -- --test-threads=2 2>&1 | tee -a "$log" || status=$?
  local passed failed
  passed=$(grep -E '^test result:' "$log" | grep -oE '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
  failed=$(grep -E '^test result:' "$log" | grep -oE '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
  echo "suite (cluster): $passed passed, $failed failed"
  return "$status"
}
