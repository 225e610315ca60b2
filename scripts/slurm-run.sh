#!/usr/bin/env bash
#SBATCH --job-name=cutswap-flow
#SBATCH --time=2-00:00:00
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --output=cutswap-flow-%j.out
# The flow itself as a SLURM job, from the project root:
#
#   sbatch scripts/slurm-run.sh configs/my-preset.yaml [--set KEY=VALUE ...]
#
# The preset sets parallel.slurm (partition, gpus, ...): the run's Dask scheduler lives in this job and its
# workers are further jobs, which reach it at this node's address on the route to SLURM's nodes
# (parallel.slurm.scheduler_host unset; loopback on a single-node SLURM). Override the #SBATCH lines above
# on the command line (sbatch --time=... --partition=...). The run's log is beside its report as usual;
# this job's output file holds what the terminal would show.
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
preset=${1:?usage: sbatch scripts/slurm-run.sh PRESET [--set KEY=VALUE ...]}
shift
exec "${CUTSWAP_PYTHON:-.venv/bin/python}" -m flows.cli run --preset "$preset" "$@"
