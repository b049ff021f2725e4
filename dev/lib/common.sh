# Helpers shared by the service scripts: logging, pid files, readiness waits.

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

pid_file() { echo "$STACK_DIR/run/$1.pid"; }
log_file() { echo "$STACK_DIR/logs/$1.log"; }

# The pid of a running service, or nothing.
running_pid() {
  local f; f=$(pid_file "$1")
  [[ -f $f ]] || return 1
  local pid; pid=$(<"$f")
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

# Whether something listens on 127.0.0.1:<port>.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_until <what> <seconds> <log file> <command...>: polls the command each
# half second; on timeout, or when the service's process died, prints the
# log's tail and fails.
wait_until() {
  local what=$1 seconds=$2 logf=$3; shift 3
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [[ -f $(pid_file "$what") ]] && ! running_pid "$what" >/dev/null; then
      log "$what exited during start-up; last lines of $logf:"
      tail -n 40 "$logf" >&2 || true
      rm -f "$(pid_file "$what")"
      die "$what failed to start"
    fi
    if ((SECONDS >= deadline)); then
      log "$what not ready after ${seconds}s; last lines of $logf:"
      tail -n 40 "$logf" >&2 || true
      die "$what did not become ready"
    fi
    sleep 0.5
  done
}

# stop_pid <name> <seconds>: SIGTERM, wait, then SIGKILL.
stop_pid() {
  local name=$1 seconds=${2:-30} pid
  pid=$(running_pid "$name") || { rm -f "$(pid_file "$name")"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + seconds))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      log "$name did not stop in ${seconds}s; killing"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  rm -f "$(pid_file "$name")"
  log "$name stopped"
}

# Installs Debian packages once (apt-get update only when something is missing).
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || log "apt-get update failed; trying the install anyway"
  apt-get install -y -qq "$@" >/dev/null
}

# Runs mvn against dev/maven/pom.xml (downloads are cached in ~/.m2).
mvn_stack() { mvn -q -B -f "$DEV/maven/pom.xml" "$@"; }

# A property of dev/maven/pom.xml, e.g. pom_property kafka.version.
pom_property() { sed -n "s:.*<$1>\(.*\)</$1>.*:\1:p" "$DEV/maven/pom.xml" | head -n1; }

# Spawns a long-running process detached from this shell, with its log and pid file.
spawn() {
  local name=$1; shift
  nohup setsid "$@" >>"$(log_file "$name")" 2>&1 < /dev/null &
  echo $! >"$(pid_file "$name")"
}

stack_status() {
  printf '%-10s %-8s %-8s %-22s %s\n' service state pid address log
  local s pid state addr
  for s in postgres redis kafka registry prometheus; do
    if pid=$(running_pid "$s"); then state=running; else state=stopped; pid=-; fi
    case $s in
      postgres) addr=127.0.0.1:5432 ;;
      redis) addr=127.0.0.1:6379 ;;
      kafka) addr=127.0.0.1:9092 ;;
      registry) addr=127.0.0.1:8081 ;;
      prometheus) addr=$(prometheus_addr) ;;
    esac
    printf '%-10s %-8s %-8s %-22s %s\n' "$s" "$state" "$pid" "$addr" "$(log_file "$s")"
  done
}
