// Warp and block reductions shared by the row kernels (softmax, norms): fixed
// order, so every thread of a block gets a bitwise identical result, the same
// on every run. Device code: included by .cu files only.
#pragma once

#include <cmath>

#include "core/cuda/launch.hpp"

namespace sy::cuda {

// Butterfly reductions: every lane ends with the same value (each step
// combines two partial results, and float addition is commutative).
__device__ inline float warp_sum(float v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}
__device__ inline float warp_max(float v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Block-wide sum / max; every thread gets the result. shared holds one float
// per warp (launch_rows sizes it); the trailing barrier lets the caller reuse
// it at once. blockDim.x is a whole number of warps, and every thread calls.
__device__ inline float block_sum(float v, float* shared) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  v = warp_sum(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < warps; ++w) total += shared[w];
  __syncthreads();
  return total;
}
__device__ inline float block_max(float v, float* shared) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  v = warp_max(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float m = -INFINITY;
  for (int w = 0; w < warps; ++w) m = fmaxf(m, shared[w]);
  __syncthreads();
  return m;
}

}  // namespace sy::cuda
