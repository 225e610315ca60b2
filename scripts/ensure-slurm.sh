#!/usr/bin/env bash
# Debian's slurm-wlm and munge for tests/e2e/test_slurm.py (as scripts/ensure-chromium.sh does for the
# browser tests): installed when missing and this is a root shell with apt-get; otherwise the test skips
# and says why.
set -uo pipefail
command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
  && command -v munged >/dev/null && exit 0
if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
  echo "ensure-slurm: SLURM is not installed and this is not a root shell with apt-get; its test will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 \
  || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q slurm-wlm munge >/dev/null 2>&1; } \
  || echo "ensure-slurm: apt-get could not install slurm-wlm munge; the SLURM test will skip" >&2
exit 0
