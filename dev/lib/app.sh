# The project's own part of the stack: setting up topics, schema and migrations,
# running the services, running the tests. Everything talks to 127.0.0.1.

export KAFKA_BOOTSTRAP_SERVERS=${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}
export SCHEMA_REGISTRY_URL=${SCHEMA_REGISTRY_URL:-http://127.0.0.1:8081/apis/ccompat/v7}
export DATABASE_URL=${DATABASE_URL:-postgres://likes:likes@127.0.0.1:5432/likes}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}

# Creates the 64-partition topic and its DLQ, applies migrations, registers the schema.
app_setup() {
  log "setting up topics, migrations and schema (likes-replay setup)"
  # The debug build: the tests build the same profile, so CI compiles once.
  (cd "$ROOT" && cargo build -q -p likes-replay)
  local attempt
  for attempt in 1 2 3 4 5 6; do
    # The registry may answer 500 once while its database connections recover.
    "$ROOT/target/debug/likes-replay" setup --partitions 64 && return 0
    log "setup attempt $attempt failed; retrying"
    sleep 2
  done
  die "likes-replay setup failed"

}

# Builds and runs ingest and projector in the foreground until Ctrl-C.
app_run() {
  (cd "$ROOT" && cargo build -q --release -p likes-ingest -p likes-projector)
  local pids=()
  "$ROOT/target/release/likes-projector" & pids+=($!)
  "$ROOT/target/release/likes-ingest" & pids+=($!)
  log "likes-ingest on http://${LISTEN_ADDR:-127.0.0.1:8000}, likes-projector running; Ctrl-C stops them"
  trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait; exit 0' INT TERM
  wait -n "${pids[@]}"
  log "a service exited; stopping the other"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait
  return 1
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
  echo "$fuzz"
  echo "$bench"
  echo "suite: $passed passed, $failed failed"
  return "$status"
}
