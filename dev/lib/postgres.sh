# PostgreSQL 15 from Debian, run as the postgres OS user (it refuses root), all servers on
# loopback only. fsync stays on: this project's claims are about durability.
# The single topology's server is `postgres`: data in .stack/data/postgres, 127.0.0.1:5432.
# The cluster topology runs further servers of its own with the same settings
# (dev/lib/cluster.sh: postgres-N, one per shard): the pg_server_* functions below take the
# server's name (its pid and log file), port and data directory.

PG_BIN=/usr/lib/postgresql/15/bin
# The single topology's server (the cluster's shard 1 too).
PG_PORT=5432

# pg_data_dir <path under $STACK_DIR>: the data directory there when the postgres user can
# reach it, else (a clone under /root, say) a directory of its own under /var/tmp. The parent
# is created first, so the answer does not change once it exists.
pg_data_dir() {
  local data="$STACK_DIR/$1" parent
  parent=$(dirname "$data")
  mkdir -p "$parent"
  chmod a+rx "$parent" 2>/dev/null || true
  if [[ $(id -u) == 0 ]] && ! su postgres -s /bin/sh -c "test -x '$parent'" 2>/dev/null; then
    data="/var/tmp/likes-stack-$(echo "$STACK_DIR" | md5sum | cut -c1-12)/$(basename "$data")"
  fi
  echo "$data"
}

PG_DATA() { pg_data_dir data/postgres; }

as_postgres() {
  if [[ $(id -u) == 0 ]]; then
    su postgres -s /bin/sh -c "$*"
  else
    sh -c "$*"
  fi
}

# pg_install <port>: the binaries, and the port free for a server of ours.
pg_install() {
  if [[ ! -x $PG_BIN/postgres ]]; then
    log "installing postgresql-15"
    apt_install postgresql-15
    # Debian may start its own cluster on 5432 at install; ours owns that port.
    pg_ctlcluster 15 main stop 2>/dev/null || true
  fi
  id postgres >/dev/null 2>&1 || die "no postgres user after install"
  port_open "$1" && die "port $1 is taken by a PostgreSQL dev/stack did not start (stop it first)"
  return 0
}

# pg_sql <port> <sql> [database]: one statement as the superuser, unaligned output.
pg_sql() { psql -h 127.0.0.1 -p "$1" -U postgres -d "${3:-postgres}" -v ON_ERROR_STOP=1 -qAtc "$2"; }
postgres_sql() { pg_sql "$PG_PORT" "$1" "${2:-postgres}"; }

# pg_ensure_database <port> <database>: creates it (owned by likes) unless it exists.
pg_ensure_database() {
  [[ $(pg_sql "$1" "SELECT 1 FROM pg_database WHERE datname = '$2'") == 1 ]] && return 0
  log "creating database $2 on 127.0.0.1:$1"
  pg_sql "$1" "CREATE DATABASE $2 OWNER likes"
}

# pg_server_start <name> <port> <data dir> [database...]: initialises the data directory
# once, starts the server, waits until it answers, creates role likes and the databases.
pg_server_start() {
  local name=$1 port=$2 data=$3; shift 3
  if running_pid "$name" >/dev/null; then return 0; fi
  pg_install "$port"
  mkdir -p "$data" "$STACK_DIR/logs" "$STACK_DIR/run"
  local logf; logf=$(log_file "$name")
  touch "$logf"
  [[ $(id -u) == 0 ]] && chown postgres "$data" "$logf"
  [[ $(id -u) == 0 ]] && ! su postgres -s /bin/sh -c "test -w '$logf'" 2>/dev/null &&
    ln -sf "$data/server.log" "$logf"
  chmod 700 "$data"
  if [[ ! -f $data/PG_VERSION ]]; then
    log "initialising PostgreSQL $name in $data"
    as_postgres "$PG_BIN/initdb -D '$data' -U postgres -A trust -E UTF8 --no-instructions" >/dev/null
    cat >>"$data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '/tmp'
max_connections = 300
shared_buffers = 512MB
work_mem = 16MB
maintenance_work_mem = 128MB
wal_buffers = 16MB
max_wal_size = 2GB
checkpoint_timeout = 10min
fsync = on
synchronous_commit = on
CONF
  fi
  # After a kill, the dead postmaster's lock file stays; a zombie still holding its pid
  # would make the new postmaster refuse it.
  local stale
  if [[ -f $data/postmaster.pid ]] && stale=$(head -n1 "$data/postmaster.pid") &&
    { ! kill -0 "$stale" 2>/dev/null || [[ $(awk '{print $3}' "/proc/$stale/stat" 2>/dev/null) == Z ]]; }; then
    rm -f "$data/postmaster.pid"
  fi
  log "starting PostgreSQL $name"
  local pglog=$logf
  [[ -L $pglog ]] && pglog="$data/server.log"
  as_postgres "$PG_BIN/pg_ctl -D '$data' -l '$pglog' -w -t 60 start" >/dev/null
  head -n1 "$data/postmaster.pid" >"$(pid_file "$name")"
  wait_until "$name" 60 "$logf" pg_sql "$port" "select 1"
  # The application role and databases.
  pg_sql "$port" "DO \$\$ BEGIN
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'likes') THEN
        CREATE ROLE likes LOGIN SUPERUSER PASSWORD 'likes';
      END IF; END \$\$;"
  local db
  for db in "$@"; do pg_ensure_database "$port" "$db"; done
  log "PostgreSQL $name ready on 127.0.0.1:$port"
}

# pg_server_stop <name> <data dir>: a fast shutdown (open transactions roll back, then a
# checkpoint), waiting until the server is gone.
pg_server_stop() {
  local name=$1 data=$2
  if running_pid "$name" >/dev/null; then
    as_postgres "$PG_BIN/pg_ctl -D '$data' -m fast -w stop" >/dev/null || true
    rm -f "$(pid_file "$name")"
    log "$name stopped"
  fi
}

# pg_server_kill <name>: SIGKILL to the postmaster and its backends and helpers at once: a
# crash, recovered from the WAL at the next start. Each child runs in a session of its own,
# so they are found by parent; the postmaster is stopped first so that it forks no child
# between the listing and the kill. (The postmaster alone killed would leave children
# attached to its shared memory for a while, and the next start would refuse to run.)
pg_server_kill() {
  local name=$1 pid
  if pid=$(running_pid "$name"); then
    kill -STOP "$pid"
    local pids; mapfile -t pids < <(pgrep -P "$pid")
    kill -KILL "$pid" "${pids[@]}" 2>/dev/null || true
    # Until reaped: the next postmaster refuses to start while the pid in postmaster.pid
    # exists, even as a zombie (which init here may take a second or two to reap).
    local p deadline=$((SECONDS + 30))
    for p in "$pid" "${pids[@]}"; do
      while kill -0 "$p" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    done
    rm -f "$(pid_file "$name")"
    log "$name killed (SIGKILL, postmaster pid $pid and its ${#pids[@]} children)"
  else
    log "$name is not running"
  fi
}

# The single topology's server; the registry keeps its schemas in a database of its own.
postgres_start() { pg_server_start postgres "$PG_PORT" "$(PG_DATA)" likes apicurio; }
postgres_stop() { pg_server_stop postgres "$(PG_DATA)"; }
postgres_restart() { postgres_stop; postgres_start; }
