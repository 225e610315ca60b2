#!/usr/bin/env bash
# A local Prefect server, work pool, deployments and worker for cutswap, all bound to 127.0.0.1.
#
#   scripts/prefect-local.sh start   # server (DB under $PREFECT_HOME), pool, its deployments, worker
#   scripts/prefect-local.sh stop    # worker and server
#
# Environment: PREFECT_HOME (default ./.prefect), PREFECT_PROFILES_PATH ($PREFECT_HOME/profiles.toml),
# CUTSWAP_PREFECT_PORT (4200), VENV (.venv). `start` also makes a Prefect profile `cutswap-local` pointing at
# the server the active one, so plain `prefect deployment run cutswap/full-benchmark --watch` from the
# project root reaches it (prefect.toml names the profiles file); `stop` switches back to `ephemeral`.
#
# `start` starts nothing twice: a server and worker of this PREFECT_HOME that run are reported as such. The
# port is checked first: one held by another program is named with its pid within seconds. Server and
# worker each run in a session and process group of their own, which `stop` ends whole (their children
# too). A pid file is trusted only when its pid's command line is this project's server or worker (pids
# are reused); on Linux `stop` also finds such processes that no pid file names (left by older versions).
# Our pid files are cutswap-server.pid and cutswap-worker.pid: `server.pid` is Prefect's own.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
VENV_DIR=$VENV
[[ $VENV_DIR == /* ]] || VENV_DIR=$PWD/$VENV
PREFECT="$VENV_DIR/bin/prefect"
PY="$VENV_DIR/bin/python"
export PREFECT_HOME=${PREFECT_HOME:-$PWD/.prefect}
# Where prefect.toml says the profiles are, for the default home: `prefect` commands run from the project
# root with nothing exported then find the profile that `start` activates.
export PREFECT_PROFILES_PATH=${PREFECT_PROFILES_PATH:-$PREFECT_HOME/profiles.toml}
PORT=${CUTSWAP_PREFECT_PORT:-4200}
CUTSWAP_POOL=cutswap  # the pool prefect.yaml names
export PREFECT_API_URL="http://127.0.0.1:$PORT/api"
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
export PREFECT_SERVER_API_HOST=127.0.0.1 PREFECT_SERVER_API_PORT="$PORT"
export PREFECT_WORKER_WEBSERVER_HOST=127.0.0.1
export PREFECT_WORKER_QUERY_SECONDS=${PREFECT_WORKER_QUERY_SECONDS:-2}
START_TIMEOUT=180  # seconds for the server to answer (a first start migrates its database)
mkdir -p "$PREFECT_HOME"
SERVER_PID="$PREFECT_HOME/cutswap-server.pid"
WORKER_PID="$PREFECT_HOME/cutswap-worker.pid"

die() { echo "error: $*" >&2; exit 1; }

alive() {  # alive PID: whether it runs (a zombie, which `kill -0` still finds, does not)
  local stat
  if [[ -d /proc/self ]]; then
    { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
  else
    stat=$(ps -o stat= -p "$1" 2>/dev/null) && [[ -n $stat && $stat != Z* ]]
  fi
}

cmdline() {  # cmdline PID: its arguments, each followed by a space; nothing when it is gone
  if [[ -d /proc/self ]]; then
    tr '\0\n' '  ' 2>/dev/null <"/proc/$1/cmdline" || true
  else
    ps -ww -o command= -p "$1" 2>/dev/null | sed 's/$/ /' || true
  fi
}

ours() {  # ours PID server|worker: whether PID is that process as `start` starts it, with this PREFECT_HOME
  local pid=$1 cmd env
  [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 1
  cmd=" $(cmdline "$pid")"  # a leading space: PREFECT may be argv[0] (a binary) or argv[1] (a script)
  case $2 in
    server) [[ $cmd == *" $PREFECT server start "* ]] || return 1 ;;
    worker) [[ $cmd == *" $PREFECT worker start --pool $CUTSWAP_POOL "* ]] || return 1 ;;
  esac
  # Another PREFECT_HOME's (a test's) is not ours; /proc/PID/environ is readable for our own processes.
  if [[ -r /proc/$pid/environ ]]; then
    env=$'\n'$(tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ")$'\n' || return 1
    [[ $env == *$'\n'"PREFECT_HOME=$PREFECT_HOME"$'\n'* ]]
  fi
}

running() {  # running FILE server|worker: the pid FILE names if it is that process of ours; else FILE goes
  local pid
  [[ -f $1 ]] || return 1
  pid=$(<"$1")
  if ours "$pid" "$2"; then echo "$pid"; return 0; fi
  echo "note: $1 named pid $pid, which is not this project's Prefect $2 (gone, or the pid reused); removed" >&2
  rm -f "$1"
  return 1
}

strays() {  # strays server|worker: processes of ours that no pid file names (Linux; none found elsewhere)
  local file pid
  [[ -d /proc/self ]] || return 0
  for file in $(grep -lsaF -- "$PREFECT" /proc/[0-9]*/cmdline || true); do
    pid=${file#/proc/}
    pid=${pid%/cmdline}
    if ours "$pid" "$1"; then echo "$pid"; fi
  done
}

port_of() {  # port_of PID: the --port of a server of ours
  local cmd
  cmd=$(cmdline "$1")
  cmd=${cmd##*--port }
  echo "${cmd%% *}"
}

taken() {  # taken PORT: whether our server could not bind 127.0.0.1:PORT (the check `prefect server start` makes)
  ! "$PY" -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)' "$1"
}

holders() {  # holders PORT: "pid (command)" of each process with a TCP socket bound to PORT, one a line
  local hex inode pid pids=""
  if [[ -r /proc/net/tcp ]]; then  # Linux: no lsof or ss needed (neither is on a minimal system)
    hex=$(printf ':%04X' "$1")
    # bound or listening, not connected (the remote address is all zeros): the sockets' inodes, then theirs
    for inode in $(awk -v p="$hex" '$2 ~ p"$" && $3 ~ /^0+:0000$/ {print $10}' /proc/net/tcp /proc/net/tcp6 2>/dev/null); do
      pids+=" $(find /proc/[0-9]*/fd -maxdepth 1 -lname "socket:\[$inode\]" 2>/dev/null | cut -d/ -f3)"
    done
  elif command -v lsof >/dev/null; then  # macOS and the BSDs have it
    pids=$(lsof -nP -t -iTCP:"$1" -sTCP:LISTEN 2>/dev/null || true)
  fi
  for pid in $(printf '%s\n' $pids | sort -un); do
    echo "$pid ($(cmdline "$pid" | cut -c1-120 | sed 's/ *$//'))"
  done
}

refuse_taken_port() {  # a clear error naming who holds $PORT, and how to use another port
  local who free=$((PORT + 1)) pid
  who=$(holders "$PORT")
  while taken "$free" && ((free < PORT + 50)); do free=$((free + 1)); done
  if [[ -z $who ]]; then
    who="a process of another user (\`sudo ss -ltnp 'sport = :$PORT'\` or \`sudo lsof -i :$PORT\` names it)"
  else
    pid=${who%% *}
    if ours "$pid" server || ours "$pid" worker; then
      die "port $PORT is held by pid $pid, this project's Prefect server left without its pid file ($SERVER_PID): make server-stop, then make server"
    fi
    who="pid ${who//$'\n'/, pid }"
  fi
  die "port $PORT on 127.0.0.1 is taken by $who; stop it, or use another port: CUTSWAP_PREFECT_PORT=$free make server"
}

detached() {  # detached LOG COMMAND...: COMMAND in a new session and process group, its pid printed
  local log=$1
  shift
  # Not `prefect server start --background`: it gives the server pipes for stdout and stderr that nobody
  # reads once the CLI exits, and the server dies of a broken pipe the first time it logs under load.
  # setsid(2) through Python (setsid(1) is not on macOS); exec keeps the pid, so it is the group's id.
  "$PY" -c 'import os, sys
try:
    os.setsid()
except OSError:  # already a group leader (a shell with job control): `stop` then ends the pid alone
    pass
os.execv(sys.argv[1], sys.argv[1:])' "$@" </dev/null >"$log" 2>&1 &
  echo $!
}

healthy() {  # whether the server on $PORT answers its health check
  "$PY" -c 'import sys, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/api/health", timeout=2).close()
except Exception:
    sys.exit(1)' "$PORT"
}

log_tail() {  # log_tail FILE: its last lines, indented
  tail -n 5 "$1" 2>/dev/null | sed 's/^/  | /'
}

wait_for_server() {  # wait_for_server PID: until it answers; an error at once if it exits
  local pid=$1 began=$SECONDS
  until healthy; do
    if ! alive "$pid"; then
      rm -f "$SERVER_PID"
      die "the Prefect server (pid $pid) exited while starting; the end of $PREFECT_HOME/server.log:
$(log_tail "$PREFECT_HOME/server.log")"
    fi
    if ((SECONDS - began >= START_TIMEOUT)); then
      die "the Prefect server (pid $pid) did not answer on port $PORT within $START_TIMEOUT s (still running: make server-stop ends it); the end of $PREFECT_HOME/server.log:
$(log_tail "$PREFECT_HOME/server.log")"
    fi
    sleep 1
  done
  alive "$pid" || die "the Prefect server (pid $pid) exited while starting; see $PREFECT_HOME/server.log"
}

start() {
  local server worker port
  if server=$(running "$SERVER_PID" server); then
    port=$(port_of "$server")
    [[ $port == "$PORT" ]] || die "this project's Prefect server already runs on port $port (pid $server, $SERVER_PID), not $PORT: make server-stop first to move it"
    if worker=$(running "$WORKER_PID" worker); then
      echo "Prefect server already running: http://127.0.0.1:$PORT (pid $server; worker pid $worker); nothing started. Stop: make server-stop"
      return 0
    fi
    echo "Prefect server already running (pid $server); starting its worker"
    wait_for_server "$server"  # (a `make server` still starting it)
  else
    taken "$PORT" && refuse_taken_port
    server=$(detached "$PREFECT_HOME/server.log" "$PREFECT" server start --host 127.0.0.1 --port "$PORT")
    echo "$server" >"$SERVER_PID"
    wait_for_server "$server"
  fi
  "$PREFECT" work-pool create "$CUTSWAP_POOL" --type process --overwrite >/dev/null
  # Every deployment of prefect.yaml, all on this pool: what `prefect deploy --all` deploys (the one for
  # another host is in prefect-remote.yaml: README, More than one machine).
  "$PREFECT" --no-prompt deploy --all >/dev/null
  if ! worker=$(running "$WORKER_PID" worker); then
    worker=$(detached "$PREFECT_HOME/worker.log" "$PREFECT" worker start --pool "$CUTSWAP_POOL")
    echo "$worker" >"$WORKER_PID"
  fi
  "$PREFECT" profile create cutswap-local >/dev/null 2>&1 || true
  "$PREFECT" --profile cutswap-local config set "PREFECT_API_URL=$PREFECT_API_URL" >/dev/null
  "$PREFECT" profile use cutswap-local >/dev/null
  alive "$worker" || die "the Prefect worker (pid $worker) exited; the end of $PREFECT_HOME/worker.log:
$(log_tail "$PREFECT_HOME/worker.log")"
  cat <<MSG
Prefect server: http://127.0.0.1:$PORT  (UI and API; database under $PREFECT_HOME; pid $server)
Logs: $PREFECT_HOME/server.log and $PREFECT_HOME/worker.log
Work pool '$CUTSWAP_POOL' with a worker (pid $worker); deployments:
$("$PREFECT" deployment ls 2>/dev/null | grep -o 'cutswap/[a-z-]*' | sort -u | sed 's/^/  /')
Run:  $VENV/bin/prefect deployment run cutswap/full-benchmark --watch
Stop: make server-stop
MSG
}

stop_group() {  # stop_group PID: SIGTERM to its process group, up to 15 s for PID to exit, then SIGKILL to all
  local pid=$1  # (an idle worker can hang on SIGTERM)
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 30); do alive "$pid" || break; sleep 0.5; done
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
}

stop() {
  local role file pid pids stopped=""
  for role in worker server; do  # the worker first: it would log errors about its server's going
    file=$PREFECT_HOME/cutswap-$role.pid
    pids=$({ running "$file" "$role" || true; strays "$role"; } | sort -u)
    # the pid file of versions before cutswap-*.pid, when it names ours
    if [[ -f $PREFECT_HOME/$role.pid ]] && ours "$(<"$PREFECT_HOME/$role.pid")" "$role"; then
      pids=$(printf '%s\n%s\n' "$pids" "$(<"$PREFECT_HOME/$role.pid")" | sort -u)
      rm -f "$PREFECT_HOME/$role.pid"
    fi
    for pid in $pids; do
      stop_group "$pid"
      stopped+="${stopped:+, }$role (pid $pid)"
    done
    rm -f "$file"
  done
  "$PREFECT" profile use ephemeral >/dev/null 2>&1 || true
  if [[ -n $stopped ]]; then
    echo "Stopped the Prefect $stopped with their process groups; profile back to 'ephemeral'."
  else
    echo "Nothing to stop: no Prefect server or worker of $PREFECT_HOME runs."
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
