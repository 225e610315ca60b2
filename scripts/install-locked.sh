#!/usr/bin/env bash
# Install this checkout into the running Python from the lock file, once per commit: the remote
# deployment's pull step (prefect-remote.yaml), and anything else that installs onto a host it does not own.
#
#   bash scripts/install-locked.sh           # python from PATH: the Prefect worker's, when started from
#                                            # its environment (activated, or its bin/ first on PATH)
#   PYTHON=/opt/venv/bin/python bash scripts/install-locked.sh
#
# The dependencies come from requirements/lock.txt with --require-hashes (pip refuses a file whose hash
# differs), then the project itself without dependencies (pip's hash mode refuses an unhashed local
# project). A stamp in the interpreter's prefix names the commit and the lock's hash: the next flow run of
# the same commit installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
LOCK=requirements/lock.txt
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
lock_hash=$(sha256sum "$LOCK" | cut -c1-16)
prefix=$("$PYTHON" -c 'import sys; print(sys.prefix)')
stamp="$prefix/.cutswap-installed-$commit-$lock_hash"
exec 9>"$prefix/.cutswap-install.lock"
flock 9  # two flow runs starting at once: the second waits, then finds the stamp
if [[ -f $stamp ]]; then
  echo "cutswap $commit already installed in $prefix (from $LOCK)"
  exit 0
fi
"$PYTHON" -m pip install -q --require-hashes -r "$LOCK"
"$PYTHON" -m pip install -q --no-deps .
rm -f "$prefix"/.cutswap-installed-*
touch "$stamp"
echo "cutswap $commit installed in $prefix from $LOCK"
