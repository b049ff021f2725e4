# Prometheus 2 from Debian (the package also brings promtool) on PROMETHEUS_URL's address
# (dev/config/prometheus.env, 127.0.0.1:9090), our own instance: its configuration is written
# from dev/config/prometheus.yml into $STACK_DIR/prometheus/, its data is under
# $STACK_DIR/data/prometheus, it loads ops/prometheus/alerts.yml and scrapes the targets listed
# in files under $STACK_DIR/prometheus/targets/ (PROMETHEUS_TARGETS_DIR). Started by
# `dev/stack up --observability` and `dev/stack test`; stopped by `dev/stack down`.

# Exports PROMETHEUS_URL (the environment wins, as on the single node) and
# PROMETHEUS_TARGETS_DIR for the services, tools and tests.
prometheus_env() {
  local line
  while IFS= read -r line; do
    [[ $line =~ ^(PROMETHEUS_[A-Z_]*)=(.*)$ ]] || continue
    [[ -n ${!BASH_REMATCH[1]:-} ]] || export "${BASH_REMATCH[1]}=${BASH_REMATCH[2]}"
  done <"$DEV/config/prometheus.env"
  export PROMETHEUS_TARGETS_DIR="${PROMETHEUS_TARGETS_DIR:-$STACK_DIR/prometheus/targets}"
}

# host:port of PROMETHEUS_URL.
prometheus_addr() {
  local rest=${PROMETHEUS_URL#*://}
  echo "${rest%%/*}"
}

# Installs the package once. Debian's own service (its configuration, port 9090) is stopped
# and disabled: ours owns the port.
prometheus_install() {
  command -v prometheus >/dev/null && command -v promtool >/dev/null && return 0
  log "installing prometheus (with promtool)"
  apt_install --no-install-recommends prometheus
  service prometheus stop >/dev/null 2>&1 || true
  systemctl disable prometheus >/dev/null 2>&1 || true
}

prometheus_start() {
  if running_pid prometheus >/dev/null; then return 0; fi
  prometheus_install
  local addr dir=$STACK_DIR/prometheus
  addr=$(prometheus_addr)
  port_open "${addr##*:}" &&
    die "port ${addr##*:} is taken by a Prometheus dev/stack did not start (Debian's: service prometheus stop; or set PROMETHEUS_URL)"
  mkdir -p "$dir" "$PROMETHEUS_TARGETS_DIR" "$STACK_DIR/data/prometheus" "$STACK_DIR/logs" "$STACK_DIR/run"
  sed "s|@ROOT@|$ROOT|g" "$DEV/config/prometheus.yml" >"$dir/prometheus.yml"
  # file_sd paths are relative to the configuration; a targets directory elsewhere is linked in.
  if [[ $(realpath -m "$PROMETHEUS_TARGETS_DIR") != $(realpath -m "$dir/targets") ]]; then
    rm -rf "$dir/targets"
    ln -s "$(realpath -m "$PROMETHEUS_TARGETS_DIR")" "$dir/targets"
  fi
  promtool check config "$dir/prometheus.yml" >/dev/null || die "promtool check config $dir/prometheus.yml failed"
  log "starting Prometheus"
  spawn prometheus prometheus --config.file="$dir/prometheus.yml" \
    --storage.tsdb.path="$STACK_DIR/data/prometheus" --storage.tsdb.retention.time=2d \
    --web.listen-address="$addr" --web.enable-lifecycle
  wait_until prometheus 60 "$(log_file prometheus)" curl -fsS "http://$addr/-/ready"
  log "Prometheus ready on http://$addr (targets: $PROMETHEUS_TARGETS_DIR)"
}

prometheus_stop() { stop_pid prometheus 30; }
prometheus_restart() { prometheus_stop; prometheus_start; }

# Reloads the configuration and the alert rules (after editing ops/prometheus/alerts.yml).
prometheus_reload() {
  running_pid prometheus >/dev/null || die "prometheus is not running (dev/stack start prometheus)"
  curl -fsS -X POST "http://$(prometheus_addr)/-/reload" >/dev/null
  log "Prometheus reloaded its configuration and rules"
}

# Writes the file_sd target file <name>.json: one group per "job=host:port" argument
# ("job=off", a service serving no metrics, is left out). Written beside and renamed, so
# Prometheus never reads half a file.
prometheus_targets() {
  local name=$1 spec groups=() file
  shift
  mkdir -p "$PROMETHEUS_TARGETS_DIR"
  for spec in "$@"; do
    [[ ${spec#*=} == off ]] && continue
    groups+=("{\"targets\": [\"${spec#*=}\"], \"labels\": {\"job\": \"${spec%%=*}\"}}")
  done
  file="$PROMETHEUS_TARGETS_DIR/$name.json"
  (IFS=,; printf '[%s]\n' "${groups[*]}") >"$file.tmp"
  mv "$file.tmp" "$file"
}

# Removes the target file <name>.json.
prometheus_untarget() { rm -f "$PROMETHEUS_TARGETS_DIR/$1.json"; }
