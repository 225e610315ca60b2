#!/usr/bin/env bash
# The SLURM topology on one machine: a real single-node SLURM on 127.0.0.1 (scripts/slurm-lib.sh, as root;
# it installs Debian's slurm-wlm and munge when missing), then the small loopback benchmark with its
# trainings and evaluations in SLURM jobs (parallel.slurm), stores and report under a temporary folder.
# It prints where the report is and the SLURM job ids the stores name, and stops everything it started:
# `squeue` is empty afterwards.
#
#   scripts/slurm-loopback.sh                  # start, run, report, stop
#   KEEP=1 scripts/slurm-loopback.sh           # leave SLURM running (SLURM_CONF is printed)
set -euo pipefail
cd "$(dirname "$0")/.."
make -s install
# shellcheck source=scripts/slurm-lib.sh
source scripts/slurm-lib.sh
BASE=$(mktemp -d "${TMPDIR:-/tmp}/cutswap-slurm-XXXXXX")
stop() {
  if [[ -n ${KEEP:-} ]]; then echo "SLURM still running: SLURM_CONF=$BASE/slurm.conf"; return; fi
  slurm_stop "$BASE"
}
trap stop EXIT
started=$SECONDS
slurm_start "$BASE"
.venv/bin/cutswap run --preset configs/loopback.yaml \
  --set storage_root="$BASE/storage" --set reports_root="$BASE/reports" \
  --set parallel.slurm.partition=debug --set parallel.slurm.walltime=00:30:00 \
  --set parallel.slurm.cpus=1 --set parallel.slurm.memory=3GB --set parallel.slurm.max_jobs=2 \
  --set parallel.slurm.log_folder="$BASE/slurm-logs"
for _ in $(seq 1 60); do  # jobs still completing (SLURM's KillWait) leave the queue within seconds
  left=$(squeue -h -o %i)
  [[ -z $left ]] && break
  sleep 0.5
done
[[ -z $left ]] || { echo "error: SLURM jobs left 30 s after the run: $left" >&2; exit 1; }
.venv/bin/python - "$BASE/storage" <<'PYEOF'
import json, sys
from pathlib import Path
jobs = {}
for attrs in Path(sys.argv[1]).glob("*/*/zarr.json"):
    writer = json.loads(attrs.read_text()).get("attributes", {}).get("provenance", {}).get("writer", {})
    jobs.setdefault(writer.get("slurm_job_id", "the flow's process"), []).append(attrs.parent.parent.name)
for job, stages in sorted(jobs.items()):
    print(f"  SLURM job {job}: {len(stages)} stores ({', '.join(sorted(set(stages)))})")
PYEOF
echo "report: $BASE/reports/loopback/index.html (and summary.md); squeue is empty; $((SECONDS - started)) s in all"
