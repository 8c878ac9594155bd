#include "core/cuda/ops/activation.hpp"

#include "core/cuda/checks.hpp"
#include "core/cuda/launch.hpp"
#include "core/cuda/ops/elementwise_math.hpp"
#include "core/error.hpp"

namespace sy::cuda::ops {

namespace {

void check_elementwise(const char* fn, const void* a, const void* b, const void* c, int64_t n) {
  SY_REQUIRE(n >= 0, fn << ": element count must be non-negative, got " << n);
  SY_REQUIRE(n == 0 || (a != nullptr && b != nullptr && c != nullptr), fn << ": buffers must be non-null");
}

void check_swiglu(const char* fn, const void* a, const void* b, const void* c, int64_t N, int64_t H) {
  SY_REQUIRE(N >= 0 && H >= 0, fn << ": sizes must be non-negative, got N=" << N << " H=" << H);
  SY_REQUIRE(N * H == 0 || (a != nullptr && b != nullptr && c != nullptr), fn << ": buffers must be non-null");
}

template <typename T>
__global__ void gelu_forward_kernel(T* out, const T* in, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = from_float<T>(math::gelu(to_float(in[i])));
}

template <typename T>
__global__ void gelu_backward_kernel(T* din, const T* in, const T* dout, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    din[i] = from_float<T>(math::gelu_grad(to_float(in[i])) * to_float(dout[i]));
}

template <typename T>
__global__ void relu_forward_kernel(T* out, const T* in, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = from_float<T>(math::relu(to_float(in[i])));
}

template <typename T>
__global__ void relu_backward_kernel(T* din, const T* in, const T* dout, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    din[i] = from_float<T>(math::relu_backward(to_float(in[i]), to_float(dout[i])));
}

// One thread per output element (n, j) of the (N, H) output.
template <typename T>
__global__ void swiglu_forward_kernel(T* out, const T* in, int64_t N, int64_t H) {
  const int64_t total = N * H;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i / H, j = i - n * H;
    const T* gate = in + n * 2 * H;  // (H) this row's gate, then (H) up
    out[i] = from_float<T>(math::swiglu(to_float(gate[j]), to_float(gate[H + j])));
  }
}

template <typename T>
__global__ void swiglu_backward_kernel(T* din, const T* in, const T* dout, int64_t N, int64_t H) {
  const int64_t total = N * H;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i / H, j = i - n * H;
    const T* gate = in + n * 2 * H;
    T* dgate = din + n * 2 * H;
    const math::SwigluGrad g = math::swiglu_backward(to_float(gate[j]), to_float(gate[H + j]), to_float(dout[i]));
    dgate[j] = from_float<T>(g.dgate);
    dgate[H + j] = from_float<T>(g.dup);
  }
}

}  // namespace

template <typename T>
void gelu_forward(T* out, const T* in, int64_t n, cudaStream_t stream) {
  check_elementwise("gelu_forward", out, in, in, n);
  const Launch l = launch_elementwise(n);
  if (l.blocks == 0) return;
  gelu_forward_kernel<T><<<unsigned(l.blocks), l.threads, 0, stream>>>(out, in, n);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void gelu_backward(T* din, const T* in, const T* dout, int64_t n, cudaStream_t stream) {
  check_elementwise("gelu_backward", din, in, dout, n);
  const Launch l = launch_elementwise(n);
  if (l.blocks == 0) return;
  gelu_backward_kernel<T><<<unsigned(l.blocks), l.threads, 0, stream>>>(din, in, dout, n);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void relu_forward(T* out, const T* in, int64_t n, cudaStream_t stream) {
  check_elementwise("relu_forward", out, in, in, n);
  const Launch l = launch_elementwise(n);
  if (l.blocks == 0) return;
  relu_forward_kernel<T><<<unsigned(l.blocks), l.threads, 0, stream>>>(out, in, n);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void relu_backward(T* din, const T* in, const T* dout, int64_t n, cudaStream_t stream) {
  check_elementwise("relu_backward", din, in, dout, n);
  const Launch l = launch_elementwise(n);
  if (l.blocks == 0) return;
  relu_backward_kernel<T><<<unsigned(l.blocks), l.threads, 0, stream>>>(din, in, dout, n);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void swiglu_forward(T* out, const T* in, int64_t N, int64_t H, cudaStream_t stream) {
  check_swiglu("swiglu_forward", out, in, in, N, H);
  const Launch l = launch_elementwise(N * H);
  if (l.blocks == 0) return;
  swiglu_forward_kernel<T><<<unsigned(l.blocks), l.threads, 0, stream>>>(out, in, N, H);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void swiglu_backward(T* din, const T* in, const T* dout, int64_t N, int64_t H, cudaStream_t stream) {
  check_swiglu("swiglu_backward", din, in, dout, N, H);
  const Launch l = launch_elementwise(N * H);
  if (l.blocks == 0) return;
  swiglu_backward_kernel<T><<<unsigned(l.blocks), l.threads, 0, stream>>>(din, in, dout, N, H);
  SY_CUDA_CHECK(cudaGetLastError());
}

#define SY_INSTANTIATE_ACTIVATION(T)                                                \
  template void gelu_forward<T>(T*, const T*, int64_t, cudaStream_t);               \
  template void gelu_backward<T>(T*, const T*, const T*, int64_t, cudaStream_t);    \
  template void relu_forward<T>(T*, const T*, int64_t, cudaStream_t);               \
  template void relu_backward<T>(T*, const T*, const T*, int64_t, cudaStream_t);    \
  template void swiglu_forward<T>(T*, const T*, int64_t, int64_t, cudaStream_t);    \
  template void swiglu_backward<T>(T*, const T*, const T*, int64_t, int64_t, cudaStream_t);
SY_CUDA_FOR_EACH_STORAGE(SY_INSTANTIATE_ACTIVATION)
#undef SY_INSTANTIATE_ACTIVATION

}  // namespace sy::cuda::ops
