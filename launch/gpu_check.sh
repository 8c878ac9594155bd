#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: builds with the CUDA backend, runs every GPU
# test (each CUDA op, the GPU MoE layer and the NCCL communicator against the
# CPU), then the two GPU benchmarks, keeping their JSON lines in
# runs/gpu-check/. Exits non-zero when there is no GPU or a test fails.
#
#   launch/gpu_check.sh            # everything
#   launch/gpu_check.sh --tests    # the tests only
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
if ! command -v nvidia-smi > /dev/null || ! nvidia-smi -L > /dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU is visible (nvidia-smi -L failed); the GPU tests would only skip" >&2
  exit 1
fi
nvidia-smi -L
bash launch/build.sh -DSWITCHYARD_CUDA=ON
out=runs/gpu-check
mkdir -p "$out"
# The GPU tests, and the CPU tests of the CUDA code beside them.
build/tests/switchyard_tests --gtest_filter='*Cuda*:*Nccl*:*Backend*:*Launch*:*ElementwiseMath*' \
  > "$out/tests.txt" 2>&1 || true
cat "$out/tests.txt"
if grep -q "no CUDA device" "$out/tests.txt"; then
  echo "gpu_check: GPU tests skipped although nvidia-smi sees a GPU (driver or CUDA runtime mismatch?)" >&2
  exit 1
fi
grep -q "^\[  PASSED  \]" "$out/tests.txt" && ! grep -q "^\[  FAILED  \]" "$out/tests.txt" || {
  echo "gpu_check: GPU tests failed (see $out/tests.txt)" >&2
  exit 1
}
# The expert-parallel layer through NCCL bootstrapped by MPI, on as many ranks as GPUs (up to 4).
gpus=$(nvidia-smi -L | wc -l)
np=1
for n in 2 4; do (( gpus >= n )) && np=$n; done
(cd build && ctest --output-on-failure -R "MoeLayerCudaMpiTest.np($np)\$" | tee "../$out/mpi-tests.txt")
grep -q "Skipped" "$out/mpi-tests.txt" && { echo "gpu_check: the multi-rank GPU test skipped" >&2; exit 1; }
[[ "${1:-}" == "--tests" ]] && exit 0
build/switchyard bench gemm --device=cuda --dtype=bf16 --shapes 16384x2048x2048,16384x2048x4096,4096x4096x4096 --json \
  | tee "$out/gemm.jsonl"
build/switchyard bench moe-layer --device=cuda --config configs/bench/moe-layer-gpu.ini --json | tee "$out/moe-layer.jsonl"
echo "gpu_check: results in $out/"
