#!/usr/bin/env bash
# Sets up (launch/setup.sh) and builds switchyard into build/ (Release).
# Extra arguments go to the CMake configure step, e.g. -DSWITCHYARD_CUDA=OFF.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash launch/setup.sh
jobs=$(nproc 2>/dev/null || echo 2)
mkdir -p build
if [ ! -f build/CMakeCache.txt ] || [ $# -gt 0 ]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@" >build/configure.log 2>&1 || {
    cat build/configure.log >&2; echo "build: CMake configure failed (log above)" >&2; exit 1; }
fi
cmake --build build -j"$jobs" 2>&1 | grep -v -E '^\[ *[0-9]+%\] (Building|Linking|Built)' || true
test "${PIPESTATUS[0]}" -eq 0
