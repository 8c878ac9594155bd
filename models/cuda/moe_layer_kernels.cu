#include "models/cuda/moe_layer_kernels.hpp"

#include "core/cuda/checks.hpp"
#include "core/cuda/launch.hpp"
#include "core/error.hpp"

namespace sy::moe::cuda_kernels {

namespace {

constexpr int kSumThreads = 256;

__global__ void column_sums_kernel(const float* x, int64_t rows, int cols, double* sums) {
  __shared__ double part[kSumThreads];
  for (int c = blockIdx.x; c < cols; c += gridDim.x) {
    double s = 0.0;
    for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) s += double(x[r * cols + c]);
    part[threadIdx.x] = s;
    __syncthreads();
    for (int width = kSumThreads / 2; width > 0; width /= 2) {
      if (int(threadIdx.x) < width) part[threadIdx.x] += part[threadIdx.x + width];
      __syncthreads();
    }
    if (threadIdx.x == 0) sums[c] = part[0];
    __syncthreads();
  }
}

__global__ void add_row_vector_kernel(float* x, const float* v, int64_t n, int cols) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] += v[i % cols];
}

}  // namespace

void column_sums(const float* x, int64_t rows, int cols, double* sums, cudaStream_t stream) {
  SY_REQUIRE(rows >= 0 && cols >= 0, "column_sums: negative size " << rows << " x " << cols);
  if (cols == 0) return;
  SY_REQUIRE(sums != nullptr && (rows == 0 || x != nullptr), "column_sums: null buffer");
  const int blocks = int(std::min<int64_t>(cols, sy::cuda::kMaxBlocks));
  column_sums_kernel<<<blocks, kSumThreads, 0, stream>>>(x, rows, cols, sums);
  SY_CUDA_CHECK(cudaGetLastError());
}

void add_row_vector(float* x, const float* v, int64_t rows, int cols, cudaStream_t stream) {
  SY_REQUIRE(rows >= 0 && cols >= 0, "add_row_vector: negative size " << rows << " x " << cols);
  const int64_t n = rows * cols;
  if (n == 0) return;
  SY_REQUIRE(x != nullptr && v != nullptr, "add_row_vector: null buffer");
  const sy::cuda::Launch l = sy::cuda::launch_elementwise(n);
  add_row_vector_kernel<<<l.blocks, l.threads, 0, stream>>>(x, v, n, cols);
  SY_CUDA_CHECK(cudaGetLastError());
}

}  // namespace sy::moe::cuda_kernels
