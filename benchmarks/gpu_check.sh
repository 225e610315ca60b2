#!/usr/bin/env bash
# GPU acceptance of cutswap's CUDA paths: one JSON line per check (benchmarks/gpu_check.py says which).
# On a machine without CUDA every CUDA check is skipped with its reason; --on-cpu runs them on the CPU.
#   benchmarks/gpu_check.sh [--size 128] [--steps 20] [--only bf16_autocast,coreset] [--on-cpu]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
exec "$PYTHON" benchmarks/gpu_check.py "$@"
