# Redis 7 from Debian on 127.0.0.1:6379. It is a cache-shaped projection: no
# persistence, so a restart behaves like the loss the design must survive. Its
# memory policy (maxmemory, allkeys-lru) and persistence are in
# dev/config/redis.conf, shared with docker-compose.yml and the tests.

redis_start() {
  if running_pid redis >/dev/null; then return 0; fi
  if ! command -v redis-server >/dev/null; then
    log "installing redis-server"
    apt_install redis-server
    # Debian may start its own server on 6379 at install; ours owns that port.
    service redis-server stop >/dev/null 2>&1 || true
  fi
  port_open 6379 && die "port 6379 is taken by a Redis dev/stack did not start (stop it first)"
  mkdir -p "$STACK_DIR/data/redis"
  log "starting Redis"
  spawn redis redis-server "$DEV/config/redis.conf" --bind 127.0.0.1 --port 6379 \
    --dir "$STACK_DIR/data/redis" --protected-mode yes --daemonize no --loglevel notice
  wait_until redis 30 "$(log_file redis)" sh -c '[ "$(redis-cli -h 127.0.0.1 -p 6379 ping)" = PONG ]'
  log "Redis ready on 127.0.0.1:6379"
}

redis_stop() { stop_pid redis 10; }
redis_restart() { redis_stop; redis_start; }
