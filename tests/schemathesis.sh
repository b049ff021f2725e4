#!/usr/bin/env bash
# Fuzzes the running API from openapi.yaml with schemathesis (PyPI): no 5xx, no
# status, content type, header or body that the spec does not document.
#
# Starts its own likes-ingest (built from this tree) on the local stack, with
# its own topic (like-events-schemathesis) and Redis prefix, and stops it after.
# Bounded: SCHEMATHESIS_EXAMPLES examples per operation and phase (default 25),
# fixed SCHEMATHESIS_SEED (default 1), so a run takes about a minute.
# Needs the stack up (dev/stack up) and python3 with venv.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
EXAMPLES="${SCHEMATHESIS_EXAMPLES:-25}"
SEED="${SCHEMATHESIS_SEED:-1}"
PORT="${SCHEMATHESIS_PORT:-18091}"
VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
VENV="$ROOT/target/schemathesis-venv"
SPEC="${SCHEMATHESIS_SPEC:-openapi.yaml}"

if [[ ! -x "$VENV/bin/st" ]] || ! "$VENV/bin/st" --version | grep -q "$VERSION"; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "schemathesis==$VERSION"
fi

cargo build -q --bins

export KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}"
export SCHEMA_REGISTRY_URL="${SCHEMA_REGISTRY_URL:-http://127.0.0.1:8081/apis/ccompat/v7}"
export DATABASE_URL="${DATABASE_URL:-postgres://likes:likes@127.0.0.1:5432/likes}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
export KAFKA_TOPIC="like-events-schemathesis"
export REDIS_KEY_PREFIX="schemathesis:"
export LISTEN_ADDR="127.0.0.1:$PORT"
# Tokens the fuzzer invents are never projected: do not wait 2 s for each.
export READ_YOUR_WRITES_TIMEOUT_MS=100
export RUST_LOG="${RUST_LOG:-warn}"

target/debug/likes-replay setup --partitions 2

LOG="$ROOT/target/schemathesis-ingest.log"
target/debug/likes-ingest >"$LOG" 2>&1 &
INGEST_PID=$!
stop_ingest() {
  kill -TERM "$INGEST_PID" 2>/dev/null || true
  wait "$INGEST_PID" 2>/dev/null || true
}
trap stop_ingest EXIT

for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$INGEST_PID" 2>/dev/null; then
    echo "likes-ingest exited; see $LOG" >&2
    exit 1
  fi
  sleep 0.3
done

SPEC="$(realpath "$SPEC")"
# schemathesis keeps state in ./.schemathesis: keep it under target/.
cd "$ROOT/target"
"$VENV/bin/st" run "$SPEC" \
  --url "http://127.0.0.1:$PORT" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing \
  --max-examples "$EXAMPLES" \
  --seed "$SEED" \
  --request-timeout 10

# A panic in a handler would show as a 5xx above; say so if one was logged.
if grep -q "panicked" "$LOG"; then
  echo "likes-ingest panicked; see $LOG" >&2
  exit 1
fi
