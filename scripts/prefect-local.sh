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
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PREFECT="$PWD/$VENV/bin/prefect"
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
mkdir -p "$PREFECT_HOME"
WORKER_PID="$PREFECT_HOME/worker.pid"
SERVER_PID="$PREFECT_HOME/server.pid"

start() {
  # Not `prefect server start --background`: it gives the server pipes for stdout and stderr that nobody
  # reads once the CLI exits, and the server dies of a broken pipe the first time it logs under load.
  nohup "$PREFECT" server start --host 127.0.0.1 --port "$PORT" >"$PREFECT_HOME/server.log" 2>&1 &
  echo $! >"$SERVER_PID"
  "$PREFECT" server status --wait --timeout 180 >/dev/null
  "$PREFECT" work-pool create "$CUTSWAP_POOL" --type process --overwrite >/dev/null
  # The deployments of this pool only (remote-benchmark is for another host: README, More than one machine)
  names=$("$(dirname "$PREFECT")/python" -c 'import yaml; print(" ".join("--name " + d["name"] for d in
    yaml.safe_load(open("prefect.yaml"))["deployments"] if d["work_pool"]["name"] == "cutswap"))')
  # shellcheck disable=SC2086
  "$PREFECT" --no-prompt deploy $names >/dev/null
  nohup "$PREFECT" worker start --pool "$CUTSWAP_POOL" >"$PREFECT_HOME/worker.log" 2>&1 &
  echo $! >"$WORKER_PID"
  "$PREFECT" profile create cutswap-local >/dev/null 2>&1 || true
  "$PREFECT" --profile cutswap-local config set "PREFECT_API_URL=$PREFECT_API_URL" >/dev/null
  "$PREFECT" profile use cutswap-local >/dev/null
  cat <<MSG
Prefect server: http://127.0.0.1:$PORT  (UI and API; database under $PREFECT_HOME)
Logs: $PREFECT_HOME/server.log and $PREFECT_HOME/worker.log
Work pool '$CUTSWAP_POOL' with a worker; deployments:
$("$PREFECT" deployment ls 2>/dev/null | grep -o 'cutswap/[a-z-]*' | sort -u | sed 's/^/  /')
Run:  $VENV/bin/prefect deployment run cutswap/full-benchmark --watch
Stop: make server-stop
MSG
}

stop_pid() {  # SIGTERM, up to 15 s for a clean exit, then SIGKILL (an idle worker can hang on SIGTERM)
  local file=$1 pid
  [[ -f "$file" ]] || return 0
  pid=$(cat "$file")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$file"
}

stop() {
  stop_pid "$WORKER_PID"
  stop_pid "$SERVER_PID"
  "$PREFECT" profile use ephemeral >/dev/null 2>&1 || true
  echo "Prefect worker and server stopped."
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
