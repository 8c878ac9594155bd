#include "core/cuda/ops/softmax.hpp"

#include <cmath>

#include "core/cuda/checks.hpp"
#include "core/cuda/launch.hpp"
#include "core/cuda/reduce.cuh"
#include "core/error.hpp"

namespace sy::cuda::ops {

namespace {

// Threads of the single block that sums the per-row losses (a power of two).
constexpr int kSumThreads = 256;

__device__ inline float quiet_nan() { return __int_as_float(0x7fc00000); }

// Row max and sum of exp(x - max) of one row, over the whole block.
template <typename T>
__device__ inline void row_max_and_sum(const T* x, int64_t V, float* shared, float& max_out, float& sum_out) {
  float m = -INFINITY;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) m = fmaxf(m, to_float(x[v]));
  m = block_max(m, shared);
  float sum = 0.0f;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) sum += expf(to_float(x[v]) - m);
  max_out = m;
  sum_out = block_sum(sum, shared);
}

// One block per row (grid-strided over rows); shared: one float per warp.
template <typename T>
__global__ void softmax_forward_kernel(T* probs, const T* logits, int64_t N, int64_t V) {
  extern __shared__ float shared[];
  for (int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    const T* x = logits + row * V;  // (V)
    T* p = probs + row * V;         // (V)
    float m, sum;
    row_max_and_sum(x, V, shared, m, sum);
    const float inv = 1.0f / sum;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) p[v] = from_float<T>(expf(to_float(x[v]) - m) * inv);
  }
}

template <typename T>
__global__ void softmax_backward_kernel(T* dlogits, const T* probs, const T* dprobs, int64_t N, int64_t V) {
  extern __shared__ float shared[];
  for (int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    const T* p = probs + row * V;    // (V)
    const T* dp = dprobs + row * V;  // (V), may alias dx
    T* dx = dlogits + row * V;       // (V)
    float dot = 0.0f;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) dot += to_float(p[v]) * to_float(dp[v]);
    dot = block_sum(dot, shared);  // its barriers order every read of dp before the writes below
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
      const float pv = to_float(p[v]);
      dx[v] = from_float<T>(pv * (to_float(dp[v]) - dot));
    }
  }
}

// Per-row losses: fp32 into row_loss, rounded to T into losses (when given).
// The branch on the target is the same for the whole block, so the block
// reductions inside it are reached by every thread or by none.
template <typename T>
__global__ void cross_entropy_rows_kernel(float* row_loss, T* losses, const T* logits, const int32_t* targets,
                                          int64_t N, int64_t V) {
  extern __shared__ float shared[];
  for (int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    const int32_t t = targets[row];
    float loss = 0.0f;
    if (t != kIgnoreIndex) {
      if (t < 0 || t >= V) {
        loss = quiet_nan();
      } else {
        const T* x = logits + row * V;  // (V)
        float m, sum;
        row_max_and_sum(x, V, shared, m, sum);
        loss = m + logf(sum) - to_float(x[t]);
      }
    }
    if (threadIdx.x == 0) {
      row_loss[row] = loss;
      if (losses != nullptr) losses[row] = from_float<T>(loss);
    }
  }
}

// One block of kSumThreads: thread i sums rows i, i + kSumThreads, ... in fp64,
// then a fixed tree adds the partial sums: the order depends on N only.
__global__ void cross_entropy_mean_kernel(float* loss, const float* row_loss, const int32_t* targets, int64_t N) {
  __shared__ double sum[kSumThreads];
  __shared__ long long count[kSumThreads];
  double s = 0.0;
  long long k = 0;
  for (int64_t n = threadIdx.x; n < N; n += kSumThreads) {
    if (targets[n] == kIgnoreIndex) continue;
    s += double(row_loss[n]);
    ++k;
  }
  sum[threadIdx.x] = s;
  count[threadIdx.x] = k;
  __syncthreads();
  for (int stride = kSumThreads / 2; stride > 0; stride /= 2) {
    if (int(threadIdx.x) < stride) {
      sum[threadIdx.x] += sum[threadIdx.x + stride];
      count[threadIdx.x] += count[threadIdx.x + stride];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) *loss = count[0] > 0 ? float(sum[0] / double(count[0])) : 0.0f;
}

// scale = dloss / K (0 when K = 0), in fp32 as the CPU op's dloss / T(count).
__global__ void cross_entropy_scale_kernel(float* scale, const int32_t* targets, int64_t N, float dloss) {
  __shared__ long long count[kSumThreads];
  long long k = 0;
  for (int64_t n = threadIdx.x; n < N; n += kSumThreads) k += targets[n] != kIgnoreIndex ? 1 : 0;
  count[threadIdx.x] = k;
  __syncthreads();
  for (int stride = kSumThreads / 2; stride > 0; stride /= 2) {
    if (int(threadIdx.x) < stride) count[threadIdx.x] += count[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) *scale = count[0] > 0 ? dloss / float(count[0]) : 0.0f;
}

template <typename T>
__global__ void cross_entropy_backward_kernel(T* dlogits, const T* logits, const int32_t* targets,
                                              const float* scale_ptr, int64_t N, int64_t V) {
  extern __shared__ float shared[];
  const float scale = *scale_ptr;
  for (int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    const int32_t t = targets[row];
    T* dx = dlogits + row * V;  // (V)
    if (t == kIgnoreIndex || t < 0 || t >= V) {
      const T fill = from_float<T>(t == kIgnoreIndex ? 0.0f : quiet_nan());
      for (int64_t v = threadIdx.x; v < V; v += blockDim.x) dx[v] = fill;
      continue;  // the same for the whole block
    }
    const T* x = logits + row * V;  // (V)
    float m, sum;
    row_max_and_sum(x, V, shared, m, sum);
    const float shift = m + logf(sum);
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
      float d = scale * expf(to_float(x[v]) - shift);
      if (v == t) d -= scale;
      dx[v] = from_float<T>(d);
    }
  }
}

void check_rows(const char* fn, int64_t N, int64_t V) {
  SY_REQUIRE(N >= 0 && V >= 0, fn << ": sizes must be non-negative, got N=" << N << " V=" << V);
}

}  // namespace

template <typename T>
void softmax_forward(T* probs, const T* logits, int64_t N, int64_t V, cudaStream_t stream) {
  check_rows("softmax_forward", N, V);
  if (N == 0 || V == 0) return;
  SY_REQUIRE(probs != nullptr && logits != nullptr, "softmax_forward: buffers must be non-null");
  const Launch l = launch_rows(N, V);
  softmax_forward_kernel<T><<<unsigned(l.blocks), l.threads, l.shared_bytes, stream>>>(probs, logits, N, V);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void softmax_backward(T* dlogits, const T* probs, const T* dprobs, int64_t N, int64_t V, cudaStream_t stream) {
  check_rows("softmax_backward", N, V);
  if (N == 0 || V == 0) return;
  SY_REQUIRE(dlogits != nullptr && probs != nullptr && dprobs != nullptr, "softmax_backward: buffers must be non-null");
  const Launch l = launch_rows(N, V);
  softmax_backward_kernel<T><<<unsigned(l.blocks), l.threads, l.shared_bytes, stream>>>(dlogits, probs, dprobs, N, V);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void cross_entropy_forward(float* loss, T* losses, const T* logits, const int32_t* targets, int64_t N, int64_t V,
                           float* row_scratch, cudaStream_t stream) {
  SY_REQUIRE(N >= 0 && V > 0,
             "cross_entropy_forward: need N >= 0 rows and V > 0 classes, got N=" << N << " V=" << V);
  SY_REQUIRE(loss != nullptr, "cross_entropy_forward: the loss scalar must be non-null");
  if (N == 0) {
    SY_CUDA_CHECK(cudaMemsetAsync(loss, 0, sizeof(float), stream));  // K = 0: the loss is 0
    return;
  }
  SY_REQUIRE(logits != nullptr && targets != nullptr && row_scratch != nullptr,
             "cross_entropy_forward: logits, targets and row_scratch must be non-null");
  const Launch l = launch_rows(N, V);
  cross_entropy_rows_kernel<T>
      <<<unsigned(l.blocks), l.threads, l.shared_bytes, stream>>>(row_scratch, losses, logits, targets, N, V);
  SY_CUDA_CHECK(cudaGetLastError());
  cross_entropy_mean_kernel<<<1, kSumThreads, 0, stream>>>(loss, row_scratch, targets, N);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void cross_entropy_backward(T* dlogits, const T* logits, const int32_t* targets, float dloss, int64_t N, int64_t V,
                            float* scale_scratch, cudaStream_t stream) {
  SY_REQUIRE(N >= 0 && V > 0,
             "cross_entropy_backward: need N >= 0 rows and V > 0 classes, got N=" << N << " V=" << V);
  if (N == 0) return;
  SY_REQUIRE(dlogits != nullptr && logits != nullptr && targets != nullptr && scale_scratch != nullptr,
             "cross_entropy_backward: buffers must be non-null");
  cross_entropy_scale_kernel<<<1, kSumThreads, 0, stream>>>(scale_scratch, targets, N, dloss);
  SY_CUDA_CHECK(cudaGetLastError());
  const Launch l = launch_rows(N, V);
  cross_entropy_backward_kernel<T>
      <<<unsigned(l.blocks), l.threads, l.shared_bytes, stream>>>(dlogits, logits, targets, scale_scratch, N, V);
  SY_CUDA_CHECK(cudaGetLastError());
}

#define SY_INSTANTIATE_SOFTMAX(T)                                                                                 \
  template void softmax_forward<T>(T*, const T*, int64_t, int64_t, cudaStream_t);                                 \
  template void softmax_backward<T>(T*, const T*, const T*, int64_t, int64_t, cudaStream_t);                      \
  template void cross_entropy_forward<T>(float*, T*, const T*, const int32_t*, int64_t, int64_t, float*,         \
                                         cudaStream_t);                                                           \
  template void cross_entropy_backward<T>(T*, const T*, const int32_t*, float, int64_t, int64_t, float*,         \
                                          cudaStream_t);
SY_CUDA_FOR_EACH_STORAGE(SY_INSTANTIATE_SOFTMAX)
#undef SY_INSTANTIATE_SOFTMAX

}  // namespace sy::cuda::ops
