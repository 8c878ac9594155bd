#include "core/cuda/ops/convert.hpp"

#include "core/cuda/checks.hpp"
#include "core/cuda/launch.hpp"
#include "core/error.hpp"

namespace sy::cuda::ops {

namespace {

template <typename T>
__global__ void convert_from_f32_kernel(T* out, const float* in, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = from_float<T>(in[i]);
}

template <typename T>
__global__ void convert_to_f32_kernel(float* out, const T* in, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = to_float(in[i]);
}

void check_args(const char* fn, const void* out, const void* in, int64_t n) {
  SY_REQUIRE(n >= 0, fn << ": element count must be non-negative, got " << n);
  SY_REQUIRE(n == 0 || (out != nullptr && in != nullptr), fn << ": buffers must be non-null");
}

}  // namespace

template <typename T>
void convert_from_f32(T* out, const float* in, int64_t n, cudaStream_t stream) {
  check_args("convert_from_f32", out, in, n);
  const Launch l = launch_elementwise(n);
  if (l.blocks == 0) return;
  convert_from_f32_kernel<T><<<unsigned(l.blocks), l.threads, 0, stream>>>(out, in, n);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void convert_to_f32(float* out, const T* in, int64_t n, cudaStream_t stream) {
  check_args("convert_to_f32", out, in, n);
  const Launch l = launch_elementwise(n);
  if (l.blocks == 0) return;
  convert_to_f32_kernel<T><<<unsigned(l.blocks), l.threads, 0, stream>>>(out, in, n);
  SY_CUDA_CHECK(cudaGetLastError());
}

#define SY_INSTANTIATE_CONVERT(T)                                                 \
  template void convert_from_f32<T>(T*, const float*, int64_t, cudaStream_t);    \
  template void convert_to_f32<T>(float*, const T*, int64_t, cudaStream_t);
SY_CUDA_FOR_EACH_STORAGE(SY_INSTANTIATE_CONVERT)
#undef SY_INSTANTIATE_CONVERT

}  // namespace sy::cuda::ops
