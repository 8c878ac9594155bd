#!/usr/bin/env bash
# The main job: sets up, builds, and runs the demo on this machine.
# Until the trainer lands, the demo shows what the foundation does: the build
# and machine report on one rank, then the GEMM benchmark on one rank and on
# two MPI ranks at once (one thread each), so you see per-rank throughput.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash launch/build.sh
echo "== switchyard info (1 rank)"
SWITCHYARD_THREADS=2 build/switchyard info
echo
echo "== checking the demo config"
build/switchyard config --config configs/demo.ini
echo
echo "== bench gemm on 2 MPI ranks, 1 thread each"
bash tests/support/mpirun.sh 2 build/switchyard bench gemm --threads 1 --shapes 2048x512x1024 --min-time 0.3
