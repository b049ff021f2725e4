# The cluster topology's verbs (`dev/stack <verb> --cluster`). Kafka and Redis are
# clusters of their own (dev/lib/kafka_cluster.sh, dev/lib/redis_cluster.sh), on ports and
# under directories ($STACK_DIR/cluster) distinct from the single node's, so both topologies
# can run at once. PostgreSQL and the registry are the single topology's: used where they
# already run (from any checkout's .stack), started from this one otherwise; the cluster
# keeps its data in a database of its own (DATABASE_URL of dev/config/cluster.env).
# The parts are a list so that a later part (a second PostgreSQL for sharding, say) is one
# more entry with its own _start/_stop.

CLUSTER_PARTS=(kafka_cluster redis_cluster)

# The database name of DATABASE_URL.
cluster_database() { local db=${DATABASE_URL##*/}; echo "${db%%\?*}"; }

# PostgreSQL and the registry: running ones are used, whoever started them.
cluster_shared_start() {
  if running_pid postgres >/dev/null || postgres_sql "select 1" >/dev/null 2>&1; then
    log "PostgreSQL: using the one on 127.0.0.1:5432"
  else
    postgres_start
  fi
  if running_pid registry >/dev/null || registry_ready; then
    log "registry: using the one on $REGISTRY_URL"
  else
    registry_start
  fi
  local db; db=$(cluster_database)
  [[ $(postgres_sql "SELECT 1 FROM pg_database WHERE datname = '$db'") == 1 ]] ||
    { log "creating database $db"; postgres_sql "CREATE DATABASE $db OWNER likes"; }
}

cluster_up() {
  mkdir -p "$STACK_DIR"/{dist,logs,run,cluster}
  kafka_install
  # The Kafka nodes boot while the rest starts; each is ready only once a majority runs.
  local n count; count=$(kafka_cluster_count)
  for ((n = 1; n <= count; n++)); do kafka_node_spawn "$n"; done
  cluster_shared_start
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
  rm -rf "$STACK_DIR/cluster"
  rm -f "$STACK_DIR"/run/kafka-*.properties
  # The projector's offsets there belong to the Kafka data just removed.
  local db; db=$(cluster_database)
  if postgres_sql "select 1" >/dev/null 2>&1; then
    postgres_sql "DROP DATABASE IF EXISTS $db WITH (FORCE)"
    log "database $db dropped"
  fi
  log "cluster data removed (downloads kept in $STACK_DIR/dist)"
}

cluster_status() {
  printf '%-9s %-8s %-8s %-22s %s\n' node state pid address log
  local n count pid state
  count=$(kafka_cluster_count)
  for ((n = 1; n <= count; n++)); do
    if pid=$(running_pid "kafka-$n"); then state=running; else state=stopped; pid=-; fi
    printf '%-9s %-8s %-8s %-22s %s\n' "kafka-$n" "$state" "$pid" "127.0.0.1:$(kafka_node_port "$n")" "$(log_file "kafka-$n")"
  done
  count=$(redis_cluster_count)
  for ((n = 1; n <= count; n++)); do
    if pid=$(running_pid "redis-$n"); then
      state=$(redis-cli -p "$(redis_node_port "$n")" role 2>/dev/null | head -n1); state=${state:-running}
    else state=stopped; pid=-; fi
    printf '%-9s %-8s %-8s %-22s %s\n' "redis-$n" "$state" "$pid" "127.0.0.1:$(redis_node_port "$n")" "$(log_file "redis-$n")"
  done
  if postgres_sql "select 1" >/dev/null 2>&1; then state=up; else state=down; fi
  printf '%-9s %-8s %-8s %-22s %s\n' postgres "$state" - 127.0.0.1:5432 "(shared; database $(cluster_database))"
  if registry_ready; then state=up; else state=down; fi
  printf '%-9s %-8s %-8s %-22s %s\n' registry "$state" - 127.0.0.1:8081 "(shared)"
  local first; first=$(redis_cluster_nodes | head -n1)
  if redis-cli -p "${first##*:}" ping >/dev/null 2>&1; then
    echo "redis cluster: $(redis-cli -p "${first##*:}" cluster info | tr -d '\r' |
      grep -E '^cluster_(state|slots_ok|known_nodes|size):' | paste -sd' ')"
  fi
}

# One node, or all nodes of one engine: kafka|kafka-N|redis|redis-N.
cluster_node_verb() {
  local verb=$1 node=${2:-}
  case "$verb:$node" in
    start:kafka) kafka_cluster_start ;;
    stop:kafka) kafka_cluster_stop ;;
    restart:kafka) kafka_cluster_stop; kafka_cluster_start ;;
    start:redis) redis_cluster_start ;;
    stop:redis) redis_cluster_stop ;;
    restart:redis) redis_cluster_stop; redis_cluster_start ;;
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
    *) die "unknown cluster node '$node' for $verb (kafka, kafka-1..$(kafka_cluster_count), redis, redis-1..$(redis_cluster_count))" ;;
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
