# The cluster topology's verbs (`dev/stack <verb> --cluster`). Kafka and Redis are
# clusters of their own (dev/lib/kafka_cluster.sh, dev/lib/redis_cluster.sh), on ports and
# under directories ($STACK_DIR/cluster) distinct from the single node's, so both topologies
# can run at once. The registry is the single topology's: used where it already runs (from
# any checkout's .stack), started from this one otherwise.
# PostgreSQL is sharded: DATABASE_URLS of dev/config/cluster.env lists the shards in order.
# A shard on 127.0.0.1:5432 lives on the single topology's server (shared, used or started
# like the registry; the cluster keeps its data in a database of its own there); the shard of
# every other Nth URL (shard N-1: shards are numbered from 0, like partitions) is a server of
# the cluster's own, postgres-N, on its URL's port with the same
# settings (dev/lib/postgres.sh), data in $STACK_DIR/cluster/postgres-N. Each shard's
# database is the one its URL names; `up`, `start postgres[-N]` create it where missing.
# The parts are a list: each is one entry with its own _start/_stop.

CLUSTER_PARTS=(postgres_cluster kafka_cluster redis_cluster)

# The shard URLs, one a line: DATABASE_URLS, else DATABASE_URL alone (one shard).
postgres_shard_urls() {
  local IFS=,
  # shellcheck disable=SC2086 # split on commas on purpose
  printf '%s\n' ${DATABASE_URLS:-$DATABASE_URL}
}
postgres_shard_count() { postgres_shard_urls | wc -l; }
postgres_shard_url() { postgres_shard_urls | sed -n "${1}p"; }
# The port and the database of shard N's URL (postgres://user:password@host:port/database?...).
postgres_shard_port() { local hp; hp=$(postgres_shard_url "$1"); hp=${hp#*@}; hp=${hp%%/*}; echo "${hp##*:}"; }
postgres_shard_database() { local db; db=$(postgres_shard_url "$1"); db=${db##*/}; echo "${db%%\?*}"; }
# Whether shard N lives on the shared server (else on postgres-N, the cluster's own).
postgres_shard_shared() { [[ $(postgres_shard_port "$1") == "$PG_PORT" ]]; }
postgres_shard_data() { pg_data_dir "cluster/postgres-$1"; }
# The shards on servers of the cluster's own, one number a line.
postgres_own_shards() {
  local n count; count=$(postgres_shard_count)
  for ((n = 1; n <= count; n++)); do postgres_shard_shared "$n" || echo "$n"; done
}

postgres_shard_start() {
  local n=$1
  if postgres_shard_shared "$n"; then
    postgres_shared_start
    pg_ensure_database "$PG_PORT" "$(postgres_shard_database "$n")"
  else
    pg_server_start "postgres-$n" "$(postgres_shard_port "$n")" "$(postgres_shard_data "$n")" \
      "$(postgres_shard_database "$n")"
  fi
}
postgres_shard_stop() { pg_server_stop "postgres-$1" "$(postgres_shard_data "$1")"; }

# Every shard: the shared server used (or started), the cluster's own started.
postgres_cluster_start() {
  local n count; count=$(postgres_shard_count)
  for ((n = 1; n <= count; n++)); do postgres_shard_start "$n"; done
}
# Only the cluster's own servers: the shared one serves the single topology too.
postgres_cluster_stop() {
  local n
  for n in $(postgres_own_shards | sort -rn); do postgres_shard_stop "$n"; done
}

# The single topology's PostgreSQL server: a running one is used, whoever started it.
postgres_shared_start() {
  if running_pid postgres >/dev/null || postgres_sql "select 1" >/dev/null 2>&1; then
    log "PostgreSQL: using the one on 127.0.0.1:$PG_PORT"
  else
    postgres_start
  fi
}

# The registry: a running one is used, whoever started it.
cluster_registry_start() {
  if running_pid registry >/dev/null || registry_ready; then
    log "registry: using the one on $REGISTRY_URL"
  else
    registry_start
  fi
}

cluster_up() {
  mkdir -p "$STACK_DIR"/{dist,logs,run,cluster}
  kafka_install
  # The Kafka nodes boot while the rest starts; each is ready only once a majority runs.
  local n count; count=$(kafka_cluster_count)
  for ((n = 1; n <= count; n++)); do kafka_node_spawn "$n"; done
  postgres_cluster_start
  cluster_registry_start
  redis_cluster_start
  for ((n = 1; n <= count; n++)); do kafka_node_wait "$n"; done
  log "Kafka cluster ready on $KAFKA_BOOTSTRAP_SERVERS"
  app_setup
  cluster_status
}

cluster_down() {
  local i
  for ((i = ${#CLUSTER_PARTS[@]} - 1; i >= 0; i--)); do "${CLUSTER_PARTS[$i]}_stop"; done
}

cluster_reset() {
  cluster_down
  # The cluster's own PostgreSQL servers go with their data (under /var/tmp when the
  # postgres user cannot reach $STACK_DIR; under $STACK_DIR/cluster otherwise).
  local n
  for n in $(postgres_own_shards); do rm -rf "$(postgres_shard_data "$n")"; done
  rm -rf "$STACK_DIR/cluster"
  rm -f "$STACK_DIR"/run/kafka-*.properties
  # On the shared server, only the cluster's databases: the projector's offsets there belong
  # to the Kafka data just removed.
  local count db; count=$(postgres_shard_count)
  for ((n = 1; n <= count; n++)); do
    postgres_shard_shared "$n" || continue
    db=$(postgres_shard_database "$n")
    if postgres_sql "select 1" >/dev/null 2>&1; then
      postgres_sql "DROP DATABASE IF EXISTS $db WITH (FORCE)"
      log "database $db dropped"
    fi
  done
  log "cluster data removed (downloads kept in $STACK_DIR/dist)"
}

status_row() { printf '%-11s %-8s %-8s %-22s %s\n' "$@"; }

cluster_status() {
  status_row node state pid address log
  local n count pid state port
  count=$(kafka_cluster_count)
  for ((n = 1; n <= count; n++)); do
    if pid=$(running_pid "kafka-$n"); then state=running; else state=stopped; pid=-; fi
    status_row "kafka-$n" "$state" "$pid" "127.0.0.1:$(kafka_node_port "$n")" "$(log_file "kafka-$n")"
  done
  count=$(redis_cluster_count)
  for ((n = 1; n <= count; n++)); do
    if pid=$(running_pid "redis-$n"); then
      state=$(redis-cli -p "$(redis_node_port "$n")" role 2>/dev/null | head -n1); state=${state:-running}
    else state=stopped; pid=-; fi
    status_row "redis-$n" "$state" "$pid" "127.0.0.1:$(redis_node_port "$n")" "$(log_file "redis-$n")"
  done
  count=$(postgres_shard_count)
  for ((n = 1; n <= count; n++)); do
    port=$(postgres_shard_port "$n")
    if pg_sql "$port" "select 1" >/dev/null 2>&1; then state=up; else state=down; fi
    if postgres_shard_shared "$n"; then
      status_row "postgres-$n" "$state" - "127.0.0.1:$port" "(shared; shard $((n - 1)), database $(postgres_shard_database "$n"))"
    else
      pid=$(running_pid "postgres-$n") || pid=-
      status_row "postgres-$n" "$state" "$pid" "127.0.0.1:$port" \
        "$(log_file "postgres-$n") (shard $((n - 1)), database $(postgres_shard_database "$n"))"
    fi
  done
  if registry_ready; then state=up; else state=down; fi
  status_row registry "$state" - 127.0.0.1:8081 "(shared)"
  local first; first=$(redis_cluster_nodes | head -n1)
  if redis-cli -p "${first##*:}" ping >/dev/null 2>&1; then
    echo "redis cluster: $(redis-cli -p "${first##*:}" cluster info | tr -d '\r' |
      grep -E '^cluster_(state|slots_ok|known_nodes|size):' | paste -sd' ')"
  fi
}

# One node, or all nodes of one engine: kafka|kafka-N|redis|redis-N|postgres|postgres-N.
# postgres-N is shard N's server; a shard on the shared server (postgres-1) can only be
# started here: stopping it would stop the single topology's server under its other users
# (`dev/stack stop postgres` does that, knowingly).
cluster_node_verb() {
  local verb=$1 node=${2:-}
  case "$verb:$node" in
    start:kafka) kafka_cluster_start ;;
    stop:kafka) kafka_cluster_stop ;;
    restart:kafka) kafka_cluster_stop; kafka_cluster_start ;;
    start:redis) redis_cluster_start ;;
    stop:redis) redis_cluster_stop ;;
    restart:redis) redis_cluster_stop; redis_cluster_start ;;
    start:postgres) postgres_cluster_start ;;
    stop:postgres) postgres_cluster_stop ;;
    restart:postgres) postgres_cluster_stop; postgres_cluster_start ;;
    *:postgres-[0-9]*)
      local n=${node#postgres-}
      if ! [[ $n =~ ^[0-9]+$ ]] || ((n < 1 || n > $(postgres_shard_count))); then
        die "no shard $node (postgres-1..$(postgres_shard_count), from DATABASE_URLS)"
      fi
      if postgres_shard_shared "$n" && [[ $verb != start ]]; then
        die "$node is the shared server on 127.0.0.1:$PG_PORT (the single topology's): not stopped from --cluster"
      fi
      case $verb in
        start) postgres_shard_start "$n" ;;
        stop) postgres_shard_stop "$n" ;;
        restart) postgres_shard_stop "$n"; postgres_shard_start "$n" ;;
        kill) pg_server_kill "$node" ;;
      esac
      ;;
    kill:kafka-[0-9]*|kill:redis-[0-9]*)
      local pid
      if pid=$(running_pid "$node"); then
        kill -KILL "$pid"
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
        rm -f "$(pid_file "$node")"
        log "$node killed (SIGKILL, pid $pid)"
      else
        log "$node is not running"
      fi
      ;;
    start:kafka-[0-9]*|stop:kafka-[0-9]*|restart:kafka-[0-9]*)
      (( ${node#kafka-} >= 1 && ${node#kafka-} <= $(kafka_cluster_count) )) || die "no node $node"
      "kafka_node_$verb" "${node#kafka-}" ;;
    start:redis-[0-9]*|stop:redis-[0-9]*|restart:redis-[0-9]*)
      (( ${node#redis-} >= 1 && ${node#redis-} <= $(redis_cluster_count) )) || die "no node $node"
      "redis_node_$verb" "${node#redis-}" ;;
    *) die "unknown cluster node '$node' for $verb (kafka, kafka-1..$(kafka_cluster_count), redis, redis-1..$(redis_cluster_count), postgres, postgres-1..$(postgres_shard_count))" ;;
  esac
}

cluster_main() {
  local verb=${1:-}
  shift || true
  case "$verb" in
    up) cluster_up ;;
    down) cluster_down ;;
    status) cluster_status ;;
    reset) cluster_reset ;;
    env) app_print_env ;;
    start|stop|restart|kill) cluster_node_verb "$verb" "$@" ;;
    run)
      cluster_up
      log "note: the services read the cluster's Kafka list; Redis Cluster support (REDIS_CLUSTER_NODES) is not in them yet"
      app_run
      ;;
    test) cluster_up; app_test_cluster "$@" ;;
    kafka-admin) kafka_admin "$@" ;;
    *) usage ;;
  esac
}
