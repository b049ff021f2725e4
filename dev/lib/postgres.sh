# PostgreSQL 15 from Debian, run as the postgres OS user (it refuses root), data
# in .stack/data/postgres, listening on 127.0.0.1:5432 only. fsync stays on: this
# project's claims are about durability.

PG_BIN=/usr/lib/postgresql/15/bin

# The data directory: under .stack when the postgres user can reach it, else
# (a clone under /root, say) a directory of its own under /var/tmp.
PG_DATA() {
  local data="$STACK_DIR/data/postgres"
  if [[ $(id -u) == 0 ]] && ! su postgres -s /bin/sh -c "test -x '$STACK_DIR/data'" 2>/dev/null; then
    data="/var/tmp/likes-stack-$(echo "$STACK_DIR" | md5sum | cut -c1-12)/postgres"
  fi
  echo "$data"
}

as_postgres() {
  if [[ $(id -u) == 0 ]]; then
    su postgres -s /bin/sh -c "$*"
  else
    sh -c "$*"
  fi
}

postgres_install() {
  if [[ ! -x $PG_BIN/postgres ]]; then
    log "installing postgresql-15"
    apt_install postgresql-15
    # Debian may start its own cluster on 5432 at install; ours owns that port.
    pg_ctlcluster 15 main stop 2>/dev/null || true
  fi
  id postgres >/dev/null 2>&1 || die "no postgres user after install"
  port_open 5432 && die "port 5432 is taken by a PostgreSQL dev/stack did not start (stop it first)"
  return 0
}

postgres_sql() { psql -h 127.0.0.1 -p 5432 -U postgres -d "${2:-postgres}" -v ON_ERROR_STOP=1 -qAtc "$1"; }

postgres_start() {
  if running_pid postgres >/dev/null; then return 0; fi
  postgres_install
  local data; data=$(PG_DATA)
  mkdir -p "$data" "$STACK_DIR/logs" "$STACK_DIR/data"
  touch "$(log_file postgres)"
  chmod a+rx "$STACK_DIR/data" 2>/dev/null || true
  [[ $(id -u) == 0 ]] && chown postgres "$data" "$(log_file postgres)"
  [[ $(id -u) == 0 ]] && ! su postgres -s /bin/sh -c "test -w '$(log_file postgres)'" 2>/dev/null &&
    ln -sf "$data/server.log" "$(log_file postgres)"
  chmod 700 "$data"
  if [[ ! -f $data/PG_VERSION ]]; then
    log "initialising PostgreSQL in $data"
    as_postgres "$PG_BIN/initdb -D '$data' -U postgres -A trust -E UTF8 --no-instructions" >/dev/null
    cat >>"$data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = 5432
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
  log "starting PostgreSQL"
  local pglog; pglog=$(log_file postgres)
  [[ -L $pglog ]] && pglog="$data/server.log"
  as_postgres "$PG_BIN/pg_ctl -D '$data' -l '$pglog' -w -t 60 start" >/dev/null
  head -n1 "$data/postmaster.pid" >"$(pid_file postgres)"
  wait_until postgres 60 "$(log_file postgres)" postgres_sql "select 1"
  # The application role and databases (the registry keeps its schemas in its own database).
  postgres_sql "DO \$\$ BEGIN
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'likes') THEN
        CREATE ROLE likes LOGIN SUPERUSER PASSWORD 'likes';
      END IF; END \$\$;"
  for db in likes apicurio; do
    [[ $(postgres_sql "SELECT 1 FROM pg_database WHERE datname = '$db'") == 1 ]] ||
      postgres_sql "CREATE DATABASE $db OWNER likes"
  done
  log "PostgreSQL ready on 127.0.0.1:5432"
}

postgres_stop() {
  local data; data=$(PG_DATA)
  if running_pid postgres >/dev/null; then
    as_postgres "$PG_BIN/pg_ctl -D '$data' -m fast -w stop" >/dev/null || true
    rm -f "$(pid_file postgres)"
    log "postgres stopped"
  fi
}

postgres_restart() { postgres_stop; postgres_start; }
