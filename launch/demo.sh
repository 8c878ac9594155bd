#!/usr/bin/env bash
# The main job: sets up, builds, and runs the demo on this machine.
# Until the trainer lands, the demo is the MoE layer itself: the machine
# report, then one MoE layer (forward + backward) benchmarked on one rank
# with two threads, and on two MPI ranks with one thread each as expert
# parallelism (each rank holds 2 of the 4 experts; token rows travel by
# all-to-all).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash launch/build.sh
echo "== switchyard info"
SWITCHYARD_THREADS=2 build/switchyard info
echo
echo "== one MoE layer, 1 rank x 2 threads (configs/bench/moe-layer.ini)"
build/switchyard bench moe-layer --config configs/bench/moe-layer.ini
echo
echo "== the same layer with the null_experts router (tokens use 0..k real experts)"
build/switchyard bench moe-layer --config configs/bench/moe-layer.ini --moe.router=null_experts \
  --moe.num_null_experts=4 --moe.capacity_factor=0
echo
echo "== 2 MPI ranks x 1 thread, expert parallel (parallel.ep=2), 4096 tokens each"
bash tests/support/mpirun.sh 2 build/switchyard bench moe-layer --config configs/bench/moe-layer.ini \
  --parallel.ep=2 --bench.threads=1 --bench.tokens=4096
