#!/usr/bin/env bash
# The test command: sets up, builds, and runs every test (unit and multi-rank)
# with ctest. Extra arguments go to ctest, e.g. launch/test.sh -L mpi.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash launch/build.sh
jobs=$(nproc 2>/dev/null || echo 2)
cd build
ctest --output-on-failure -j"$jobs" "$@"
