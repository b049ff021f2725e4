#!/usr/bin/env bash
# The single-like and batch scenarios (1 and 2) of likes-bench on the single-node topology,
# then on the cluster (3 Kafka brokers, replication 3, min.insync 2; Redis Cluster), in one
# command, and the two side by side with the ratios cluster ÷ single:
#
#   bench/compare-topologies.sh            # full mode
#   bench/compare-topologies.sh --quick    # any likes-bench option is passed on
#
# Needs both topologies up (dev/stack up; dev/stack up --cluster). Each side runs in its own
# process with exactly `dev/stack env [--cluster]`'s addresses (any inherited ones are
# cleared), so it counts the CPU of its own brokers and Redis nodes. Writes, under
# bench/results (OUT=... to change): <stamp>-single.{json,md}, <stamp>-cluster.{json,md}
# with their plots, and <stamp>-topologies.md, the comparison, also printed.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-bench/results}
SCENARIOS=${SCENARIOS:-1,2}
stamp=$(date -u +%Y-%m-%dT%H-%M-%S)

cargo build --release -q -p likes-bench
bench=$ROOT/target/release/likes-bench

# Every setting either topology's file names, so neither side inherits the other's.
mapfile -t keys < <(sed -n 's/^\([A-Z_][A-Z0-9_]*\)=.*/\1/p' dev/config/*.env | sort -u)

run() {
  local topology=$1 flag=()
  [[ $topology == cluster ]] && flag=(--cluster)
  (
    unset "${keys[@]}"
    set -a
    eval "$(dev/stack env "${flag[@]}")"
    set +a
    echo "== $topology: Kafka $KAFKA_BOOTSTRAP_SERVERS, Redis ${REDIS_CLUSTER_NODES:-$REDIS_URL}"
    "$bench" --only "$SCENARIOS" --out "$OUT" --stamp "$stamp-$topology" "${@:2}"
  )
}

status=0
run single "$@" || status=$?
run cluster "$@" || status=$?
"$bench" --out "$OUT" --stamp "$stamp-topologies" \
  --compare "$OUT/$stamp-single.json" "$OUT/$stamp-cluster.json"
exit "$status"
