# The cluster topology's Redis: a Redis Cluster of six nodes redis-1..6 on loopback
# (Debian's redis-server in cluster mode; three primaries and three replicas, one replica
# per primary, assigned by `redis-cli --cluster create`). Node N listens on the Nth address
# of REDIS_CLUSTER_NODES in dev/config/cluster.env (its cluster bus on port + 10000).
# Settings: dev/config/redis.conf (persistence, memory policy: the single node's, per node)
# and then dev/config/redis-cluster.conf. State (nodes.conf only: no persistence) in
# $STACK_DIR/cluster/redis-N, logs in $STACK_DIR/logs/redis-N.log.

redis_cluster_nodes() {
  local IFS=,
  # shellcheck disable=SC2086 # split on commas on purpose
  printf '%s\n' $(sed -n 's/^REDIS_CLUSTER_NODES=//p' "$DEV/config/cluster.env") | sed 's,^redis://,,; s,/.*$,,'
}
redis_cluster_count() { redis_cluster_nodes | wc -l; }
redis_node_port() { redis_cluster_nodes | sed -n "${1}p" | cut -d: -f2; }

redis_node_ping() { [[ $(redis-cli -h 127.0.0.1 -p "$(redis_node_port "$1")" ping 2>/dev/null) == PONG ]]; }

redis_node_start() {
  local n=$1 name="redis-$1"
  if running_pid "$name" >/dev/null; then return 0; fi
  command -v redis-server >/dev/null || { log "installing redis-server"; apt_install redis-server; service redis-server stop >/dev/null 2>&1 || true; }
  local port; port=$(redis_node_port "$n")
  [[ -n $port ]] || die "no port for $name in dev/config/cluster.env"
  port_open "$port" && die "port $port ($name) is taken by a process dev/stack did not start"
  local dir="$STACK_DIR/cluster/$name"
  mkdir -p "$dir" "$STACK_DIR/run" "$STACK_DIR/logs"
  log "starting $name (127.0.0.1:$port)"
  spawn "$name" redis-server "$DEV/config/redis.conf" --include "$DEV/config/redis-cluster.conf" \
    --bind 127.0.0.1 --port "$port" --dir "$dir" --protected-mode yes --daemonize no --loglevel notice
  wait_until "$name" 30 "$(log_file "$name")" redis_node_ping "$n"
}

redis_node_stop() { stop_pid "redis-$1" 10; }
redis_node_restart() { redis_node_stop "$1"; redis_node_start "$1"; }

redis_cluster_start() {
  local n count; count=$(redis_cluster_count)
  for ((n = 1; n <= count; n++)); do redis_node_start "$n"; done
  # shellcheck disable=SC2046 # one argument per node
  "$DEV/lib/redis-cluster-create.sh" $(redis_cluster_nodes) >&2 || die "redis cluster not formed"
  log "Redis Cluster ready on $(redis_cluster_nodes | paste -sd,)"
}

redis_cluster_stop() {
  local n count; count=$(redis_cluster_count)
  for ((n = count; n >= 1; n--)); do redis_node_stop "$n"; done
}
