#!/bin/sh
# Forms a Redis Cluster from fresh nodes, or confirms an existing one, idempotently:
#   redis-cluster-create.sh <host:port>... (primaries first; one replica per primary)
# Run by dev/lib/redis_cluster.sh and by docker-compose.yml's redis-cluster-create job, so it
# is POSIX sh (the redis image has no bash). Exit 0: the cluster is formed and every slot is
# served; non-zero with a message: nodes in a half-formed state (a node lost its nodes.conf),
# which it does not try to repair (`dev/stack reset --cluster` starts over).
set -eu
[ $# -ge 6 ] || { echo "usage: $0 <host:port> x6 or more" >&2; exit 2; }

info() { redis-cli -h "${1%:*}" -p "${1##*:}" cluster info | tr -d '\r' | sed -n "s/^$2://p"; }

# Every node answers first.
for node in "$@"; do
  i=0
  until [ "$(redis-cli -h "${node%:*}" -p "${node##*:}" ping 2>/dev/null)" = PONG ]; do
    i=$((i + 1)); [ $i -le 60 ] || { echo "redis node $node does not answer" >&2; exit 1; }
    sleep 0.5
  done
done

first=$1
known=$(info "$first" cluster_known_nodes)
if [ "$known" -ge $# ]; then
  # Formed before (nodes.conf kept the membership); after a restart of every node the
  # cluster needs a moment to elect and agree again.
  i=0
  until [ "$(info "$first" cluster_state)" = ok ] && [ "$(info "$first" cluster_slots_ok)" = 16384 ]; do
    i=$((i + 1)); [ $i -le 60 ] || { echo "redis cluster formed but not ok:" >&2; redis-cli -h "${first%:*}" -p "${first##*:}" cluster info >&2; exit 1; }
    sleep 0.5
  done
  echo "redis cluster already formed: $known nodes, state ok"
  exit 0
fi

# Only nodes that know no one else may be joined into a new cluster.
for node in "$@"; do
  k=$(info "$node" cluster_known_nodes)
  if [ "$k" != 1 ]; then
    echo "redis node $node already knows $k nodes, but the cluster is not formed; refusing to guess (reset the cluster's data)" >&2
    exit 1
  fi
done
redis-cli --cluster create "$@" --cluster-replicas 1 --cluster-yes
i=0
until [ "$(info "$first" cluster_state)" = ok ]; do
  i=$((i + 1)); [ $i -le 60 ] || { echo "redis cluster created but not ok" >&2; exit 1; }
  sleep 0.5
done
echo "redis cluster created: $# nodes, state ok"
