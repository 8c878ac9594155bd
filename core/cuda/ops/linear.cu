#include "core/cuda/ops/linear.hpp"

#include <algorithm>

#include "core/cuda/checks.hpp"
#include "core/cuda/launch.hpp"
#include "core/cuda/ops/gemm.hpp"
#include "core/error.hpp"

namespace sy::cuda::ops {

namespace {

// db: one block per tile of kColTile columns (grid-strided over tiles); thread
// (x, y) sums rows y, y + kRowLanes, ... of column x in row order, then thread
// (x, 0) adds the kRowLanes partials in lane order. Fixed order: deterministic.
constexpr int kColTile = kWarp;  // a warp reads 32 adjacent columns of a row: coalesced
constexpr int kRowLanes = 32;    // 32 x 32 = 1024 threads per block

void check_sizes(const char* fn, int64_t N, int64_t in_features, int64_t out_features) {
  SY_REQUIRE(N > 0 && in_features > 0 && out_features > 0,
             fn << ": sizes must be positive, got N=" << N << " in_features=" << in_features
                << " out_features=" << out_features);
}

// out[n, c] = bias[c] for every row n.
template <typename T>
__global__ void broadcast_bias_kernel(T* out, const T* bias, int64_t N, int64_t out_features) {
  const int64_t total = N * out_features;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = bias[i % out_features];
}

// dbias[c] += sum_n dout[n, c].
template <typename T>
__global__ void bias_grad_kernel(T* dbias, const T* dout, int64_t N, int64_t out_features) {
  __shared__ float partial[kRowLanes][kColTile + 1];
  const int64_t tiles = (out_features + kColTile - 1) / kColTile;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t col = tile * kColTile + threadIdx.x;
    float sum = 0.0f;
    if (col < out_features)
      for (int64_t n = threadIdx.y; n < N; n += kRowLanes) sum += to_float(dout[n * out_features + col]);
    partial[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0 && col < out_features) {
      float total = 0.0f;
      for (int y = 0; y < kRowLanes; ++y) total += partial[y][threadIdx.x];
      dbias[col] = from_float<T>(to_float(dbias[col]) + total);
    }
    __syncthreads();  // partial is rewritten by the next tile
  }
}

}  // namespace

template <typename T>
void linear_forward(T* out, const T* x, const T* weight, const T* bias, int64_t N, int64_t in_features,
                    int64_t out_features, cublasHandle_t handle, cudaStream_t stream) {
  check_sizes("linear_forward", N, in_features, out_features);
  SY_REQUIRE(out != nullptr && x != nullptr && weight != nullptr, "linear_forward: out, x and weight must be non-null");
  SY_REQUIRE(handle != nullptr, "linear_forward: the cuBLAS handle must be non-null");
  if (bias != nullptr) {
    const Launch l = launch_elementwise(N * out_features);
    broadcast_bias_kernel<T><<<static_cast<unsigned>(l.blocks), l.threads, 0, stream>>>(out, bias, N, out_features);
    SY_CUDA_CHECK(cudaGetLastError());
  }
  gemm<T>(handle, Trans::N, Trans::T, N, out_features, in_features, 1.0f, x, in_features, weight, in_features,
          bias != nullptr ? 1.0f : 0.0f, out, out_features, stream);
}

template <typename T>
void linear_backward(T* dx, T* dweight, T* dbias, const T* dout, const T* x, const T* weight, int64_t N,
                     int64_t in_features, int64_t out_features, cublasHandle_t handle, cudaStream_t stream) {
  check_sizes("linear_backward", N, in_features, out_features);
  SY_REQUIRE(dweight != nullptr && dout != nullptr && x != nullptr,
             "linear_backward: dweight, dout and x must be non-null");
  SY_REQUIRE(dx == nullptr || weight != nullptr, "linear_backward: weight is required to compute dx");
  SY_REQUIRE(handle != nullptr, "linear_backward: the cuBLAS handle must be non-null");
  if (dx != nullptr)
    gemm<T>(handle, Trans::N, Trans::N, N, in_features, out_features, 1.0f, dout, out_features, weight, in_features,
            0.0f, dx, in_features, stream);
  gemm<T>(handle, Trans::T, Trans::N, out_features, in_features, N, 1.0f, dout, out_features, x, in_features, 1.0f,
          dweight, in_features, stream);
  if (dbias != nullptr) {
    const int64_t tiles = (out_features + kColTile - 1) / kColTile;
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(tiles, kMaxBlocks));
    bias_grad_kernel<T><<<blocks, dim3(kColTile, kRowLanes), 0, stream>>>(dbias, dout, N, out_features);
    SY_CUDA_CHECK(cudaGetLastError());
  }
}

#define SY_INSTANTIATE_LINEAR(T)                                                                                \
  template void linear_forward<T>(T*, const T*, const T*, const T*, int64_t, int64_t, int64_t, cublasHandle_t, \
                                  cudaStream_t);                                                               \
  template void linear_backward<T>(T*, T*, T*, const T*, const T*, const T*, int64_t, int64_t, int64_t,        \
                                   cublasHandle_t, cudaStream_t);
SY_CUDA_FOR_EACH_STORAGE(SY_INSTANTIATE_LINEAR)
#undef SY_INSTANTIATE_LINEAR

}  // namespace sy::cuda::ops
