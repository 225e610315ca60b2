#!/usr/bin/env bash
# The "More than one machine" topology on one machine, every part its own process on 127.0.0.1:
# an S3-compatible server (moto_server, from the test extra) with a bucket, a Dask scheduler, two workers
# that each have their own HOME, TORCH_HOME, TMPDIR and working folder (they share nothing with the flow
# but the bucket URL), then the tiny benchmark with its stores and report in the bucket.
#
#   scripts/loopback-cluster.sh            # start everything, run, list the report in the bucket, stop
#   KEEP=1 scripts/loopback-cluster.sh     # leave the servers running (their pids are printed)
set -euo pipefail
cd "$(dirname "$0")/.."
make -s install .venv/.tracking  # the project, then the test extra (moto_server, boto3) from the dev lock, once
PY=${PY:-.venv/bin/python}
PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"  # absolute: the workers start in their own folders
BIN=$(dirname "$PY")
BASE=$(mktemp -d "${TMPDIR:-/tmp}/cutswap-loopback-XXXXXX")
port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
S3_PORT=$(port); DASK_PORT=$(port)
export AWS_ACCESS_KEY_ID=loopback AWS_SECRET_ACCESS_KEY=loopback-secret AWS_REGION=us-east-1
export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
BUCKET=cutswap-loopback
PIDS=()
stop() {
  [ ${#PIDS[@]} -eq 0 ] && return
  [ -n "${KEEP:-}" ] && { echo "still running: ${PIDS[*]} (files in $BASE)"; return; }
  kill "${PIDS[@]}" 2>/dev/null || true
}
trap stop EXIT

"$BIN/moto_server" -H 127.0.0.1 -p "$S3_PORT" >"$BASE/s3.log" 2>&1 & PIDS+=($!)
"$PY" -m distributed.cli.dask_scheduler --host 127.0.0.1 --port "$DASK_PORT" --no-dashboard >"$BASE/scheduler.log" 2>&1 & PIDS+=($!)
for name in w1 w2; do
  mkdir -p "$BASE/$name"/{home,torch,tmp}
  (cd "$BASE/$name" && HOME=$BASE/$name/home TORCH_HOME=$BASE/$name/torch TMPDIR=$BASE/$name/tmp \
     exec "$PY" -m distributed.cli.dask_worker "tcp://127.0.0.1:$DASK_PORT" --name "$name" \
     --nthreads 1 --no-dashboard --host 127.0.0.1 >"$BASE/$name.log" 2>&1) & PIDS+=($!)
done
"$PY" - <<PYEOF
import time, boto3
s3 = boto3.client("s3", endpoint_url="$AWS_ENDPOINT_URL", region_name="us-east-1")
for attempt in range(100):
    try:
        s3.create_bucket(Bucket="$BUCKET"); break
    except Exception as exc:
        if attempt == 99:
            raise SystemExit(f"the S3 server at $AWS_ENDPOINT_URL did not take a bucket: {exc} (see $BASE/s3.log)")
        time.sleep(0.2)
from distributed import Client
with Client("tcp://127.0.0.1:$DASK_PORT", timeout=60) as c:
    c.wait_for_workers(2, timeout=120)
PYEOF
echo "S3 at $AWS_ENDPOINT_URL, Dask at tcp://127.0.0.1:$DASK_PORT, workers w1 w2; logs in $BASE"
"$BIN/cutswap" run --preset configs/loopback.yaml \
  --set storage_root=s3://$BUCKET/storage --set reports_root=s3://$BUCKET/reports \
  --set parallel.address=tcp://127.0.0.1:$DASK_PORT
"$PY" - <<PYEOF
import boto3
s3 = boto3.client("s3", endpoint_url="$AWS_ENDPOINT_URL", region_name="us-east-1")
keys = [o["Key"] for o in s3.list_objects_v2(Bucket="$BUCKET", Prefix="reports/")["Contents"]]
print("report in the bucket:", *sorted(f"s3://$BUCKET/{k}" for k in keys if k.count("/") == 2), sep="\n  ")
PYEOF
