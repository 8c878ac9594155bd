#include "core/cuda/ops/norm.hpp"

#include "core/cuda/checks.hpp"
#include "core/cuda/launch.hpp"
#include "core/cuda/reduce.cuh"
#include "core/error.hpp"

namespace sy::cuda::ops {

namespace {

// Threads per block of the column (parameter-gradient) kernels: small blocks
// spread the few columns of a norm over more multiprocessors.
constexpr int kColumnThreads = 64;

// One block per row (grid-strided over rows); shared: one float per warp.
template <typename T>
__global__ void layernorm_forward_kernel(T* out, float* mean, float* rstd, const T* x, const T* weight, const T* bias,
                                         int64_t N, int64_t C, float eps) {
  extern __shared__ float shared[];
  for (int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    const T* xr = x + row * C;  // (C)
    T* yr = out + row * C;      // (C)
    float s = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += to_float(xr[c]);
    const float mu = block_sum(s, shared) / float(C);
    float var = 0.0f;  // two passes: no cancellation when |mean| >> std
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      const float d = to_float(xr[c]) - mu;
      var += d * d;
    }
    var = block_sum(var, shared) / float(C);
    const float rs = 1.0f / sqrtf(var + eps);
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
      yr[c] = from_float<T>((to_float(xr[c]) - mu) * rs * to_float(weight[c]) + to_float(bias[c]));
    if (threadIdx.x == 0) {
      mean[row] = mu;
      rstd[row] = rs;
    }
  }
}

template <typename T>
__global__ void layernorm_backward_dx_kernel(T* dx, const T* dout, const T* x, const T* weight, const float* mean,
                                             const float* rstd, int64_t N, int64_t C) {
  extern __shared__ float shared[];
  for (int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    const T* xr = x + row * C;      // (C)
    const T* dyr = dout + row * C;  // (C)
    T* dxr = dx + row * C;          // (C)
    const float mu = mean[row], rs = rstd[row];
    float mean_dxhat = 0.0f, mean_dxhat_xhat = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      const float dxhat = to_float(dyr[c]) * to_float(weight[c]);
      mean_dxhat += dxhat;
      mean_dxhat_xhat += dxhat * (to_float(xr[c]) - mu) * rs;
    }
    mean_dxhat = block_sum(mean_dxhat, shared) / float(C);
    mean_dxhat_xhat = block_sum(mean_dxhat_xhat, shared) / float(C);
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      const float xhat = (to_float(xr[c]) - mu) * rs;
      dxr[c] = from_float<T>(rs * (to_float(dyr[c]) * to_float(weight[c]) - mean_dxhat - xhat * mean_dxhat_xhat));
    }
  }
}

// One thread per column c: rows in order n = 0..N-1 into an fp32 accumulator
// started from the existing gradient, one rounding to T at the end.
template <typename T>
__global__ void layernorm_param_grad_kernel(T* dweight, T* dbias, const T* dout, const T* x, const float* mean,
                                            const float* rstd, int64_t N, int64_t C) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < C; c += int64_t(gridDim.x) * blockDim.x) {
    float dw = to_float(dweight[c]), db = to_float(dbias[c]);
    for (int64_t n = 0; n < N; ++n) {
      const float dy = to_float(dout[n * C + c]);
      dw += dy * (to_float(x[n * C + c]) - mean[n]) * rstd[n];
      db += dy;
    }
    dweight[c] = from_float<T>(dw);
    dbias[c] = from_float<T>(db);
  }
}

template <typename T>
__global__ void rmsnorm_forward_kernel(T* out, float* rstd, const T* x, const T* weight, int64_t N, int64_t C,
                                       float eps) {
  extern __shared__ float shared[];
  for (int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    const T* xr = x + row * C;  // (C)
    T* yr = out + row * C;      // (C)
    float ms = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      const float v = to_float(xr[c]);
      ms += v * v;
    }
    const float rs = 1.0f / sqrtf(block_sum(ms, shared) / float(C) + eps);
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
      yr[c] = from_float<T>(to_float(xr[c]) * rs * to_float(weight[c]));
    if (threadIdx.x == 0) rstd[row] = rs;
  }
}

template <typename T>
__global__ void rmsnorm_backward_dx_kernel(T* dx, const T* dout, const T* x, const T* weight, const float* rstd,
                                           int64_t N, int64_t C) {
  extern __shared__ float shared[];
  for (int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    const T* xr = x + row * C;      // (C)
    const T* dyr = dout + row * C;  // (C)
    T* dxr = dx + row * C;          // (C)
    const float rs = rstd[row];
    float mean_dxhat_xhat = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
      mean_dxhat_xhat += to_float(dyr[c]) * to_float(weight[c]) * to_float(xr[c]) * rs;
    mean_dxhat_xhat = block_sum(mean_dxhat_xhat, shared) / float(C);
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
      dxr[c] = from_float<T>(rs * (to_float(dyr[c]) * to_float(weight[c]) - to_float(xr[c]) * rs * mean_dxhat_xhat));
  }
}

template <typename T>
__global__ void rmsnorm_param_grad_kernel(T* dweight, const T* dout, const T* x, const float* rstd, int64_t N,
                                          int64_t C) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < C; c += int64_t(gridDim.x) * blockDim.x) {
    float dw = to_float(dweight[c]);
    for (int64_t n = 0; n < N; ++n) dw += to_float(dout[n * C + c]) * to_float(x[n * C + c]) * rstd[n];
    dweight[c] = from_float<T>(dw);
  }
}

void check_sizes(const char* fn, int64_t N, int64_t C) {
  SY_REQUIRE(N >= 0 && C >= 0, fn << ": sizes must be non-negative, got N=" << N << " C=" << C);
}

}  // namespace

template <typename T>
void layernorm_forward(T* out, float* mean, float* rstd, const T* x, const T* weight, const T* bias, int64_t N,
                       int64_t C, float eps, cudaStream_t stream) {
  check_sizes("layernorm_forward", N, C);
  SY_REQUIRE(eps >= 0.0f, "layernorm_forward: eps must be non-negative, got " << eps);
  if (N == 0 || C == 0) return;
  SY_REQUIRE(out != nullptr && mean != nullptr && rstd != nullptr && x != nullptr && weight != nullptr &&
                 bias != nullptr,
             "layernorm_forward: buffers must be non-null");
  const Launch l = launch_rows(N, C);
  layernorm_forward_kernel<T>
      <<<unsigned(l.blocks), l.threads, l.shared_bytes, stream>>>(out, mean, rstd, x, weight, bias, N, C, eps);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void layernorm_backward(T* dx, T* dweight, T* dbias, const T* dout, const T* x, const T* weight, const float* mean,
                        const float* rstd, int64_t N, int64_t C, cudaStream_t stream) {
  check_sizes("layernorm_backward", N, C);
  if (N == 0 || C == 0) return;
  SY_REQUIRE(dx != nullptr && dweight != nullptr && dbias != nullptr && dout != nullptr && x != nullptr &&
                 weight != nullptr && mean != nullptr && rstd != nullptr,
             "layernorm_backward: buffers must be non-null");
  const Launch rows = launch_rows(N, C);
  layernorm_backward_dx_kernel<T>
      <<<unsigned(rows.blocks), rows.threads, rows.shared_bytes, stream>>>(dx, dout, x, weight, mean, rstd, N, C);
  SY_CUDA_CHECK(cudaGetLastError());
  const Launch cols = launch_elementwise(C, kColumnThreads);
  layernorm_param_grad_kernel<T>
      <<<unsigned(cols.blocks), cols.threads, 0, stream>>>(dweight, dbias, dout, x, mean, rstd, N, C);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void rmsnorm_forward(T* out, float* rstd, const T* x, const T* weight, int64_t N, int64_t C, float eps,
                     cudaStream_t stream) {
  check_sizes("rmsnorm_forward", N, C);
  SY_REQUIRE(eps >= 0.0f, "rmsnorm_forward: eps must be non-negative, got " << eps);
  if (N == 0 || C == 0) return;
  SY_REQUIRE(out != nullptr && rstd != nullptr && x != nullptr && weight != nullptr,
             "rmsnorm_forward: buffers must be non-null");
  const Launch l = launch_rows(N, C);
  rmsnorm_forward_kernel<T><<<unsigned(l.blocks), l.threads, l.shared_bytes, stream>>>(out, rstd, x, weight, N, C, eps);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void rmsnorm_backward(T* dx, T* dweight, const T* dout, const T* x, const T* weight, const float* rstd, int64_t N,
                      int64_t C, cudaStream_t stream) {
  check_sizes("rmsnorm_backward", N, C);
  if (N == 0 || C == 0) return;
  SY_REQUIRE(dx != nullptr && dweight != nullptr && dout != nullptr && x != nullptr && weight != nullptr &&
                 rstd != nullptr,
             "rmsnorm_backward: buffers must be non-null");
  const Launch rows = launch_rows(N, C);
  rmsnorm_backward_dx_kernel<T>
      <<<unsigned(rows.blocks), rows.threads, rows.shared_bytes, stream>>>(dx, dout, x, weight, rstd, N, C);
  SY_CUDA_CHECK(cudaGetLastError());
  const Launch cols = launch_elementwise(C, kColumnThreads);
  rmsnorm_param_grad_kernel<T><<<unsigned(cols.blocks), cols.threads, 0, stream>>>(dweight, dout, x, rstd, N, C);
  SY_CUDA_CHECK(cudaGetLastError());
}

#define SY_INSTANTIATE_NORM(T)                                                                                  \
  template void layernorm_forward<T>(T*, float*, float*, const T*, const T*, const T*, int64_t, int64_t, float, \
                                     cudaStream_t);                                                             \
  template void layernorm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const float*, const float*,     \
                                      int64_t, int64_t, cudaStream_t);                                          \
  template void rmsnorm_forward<T>(T*, float*, const T*, const T*, int64_t, int64_t, float, cudaStream_t);      \
  template void rmsnorm_backward<T>(T*, T*, const T*, const T*, const T*, const float*, int64_t, int64_t,       \
                                    cudaStream_t);
SY_CUDA_FOR_EACH_STORAGE(SY_INSTANTIATE_NORM)
#undef SY_INSTANTIATE_NORM

}  // namespace sy::cuda::ops
