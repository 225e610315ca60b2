#!/usr/bin/env bash
# Deploy prefect-remote.yaml (the remote-benchmark deployment) to the Prefect server the active profile
# names, after checking that every variable it is rendered from is set, and create its work pool.
#
#   CUTSWAP_REPOSITORY=https://git.example.org/lab/cutswap.git \
#   CUTSWAP_STORAGE_ROOT=s3://bucket/cutswap/storage CUTSWAP_REPORTS_ROOT=s3://bucket/cutswap/reports \
#   CUTSWAP_SCHEDULER=tcp://10.0.0.5:8786 scripts/deploy-remote.sh
#
# CUTSWAP_COMMIT defaults to this checkout's HEAD (which must be pushed where CUTSWAP_REPOSITORY points).
set -euo pipefail
cd "$(dirname "$0")/.."
PREFECT=${PREFECT:-.venv/bin/prefect}
CUTSWAP_COMMIT=${CUTSWAP_COMMIT:-$(git rev-parse HEAD 2>/dev/null || true)}
export CUTSWAP_COMMIT
missing=()
for name in CUTSWAP_REPOSITORY CUTSWAP_COMMIT CUTSWAP_STORAGE_ROOT CUTSWAP_REPORTS_ROOT CUTSWAP_SCHEDULER; do
  [[ -n ${!name:-} ]] || missing+=("$name")
done
if (( ${#missing[@]} )); then
  echo "error: prefect-remote.yaml is rendered from ${missing[*]}, unset here; export them (see the" \
       "comment at the top of scripts/deploy-remote.sh) and deploy again" >&2
  exit 2
fi
"$PREFECT" work-pool inspect cutswap-remote >/dev/null 2>&1 \
  || "$PREFECT" work-pool create cutswap-remote --type process >/dev/null
"$PREFECT" --no-prompt deploy --prefect-file prefect-remote.yaml --all
