// Storage types of the CUDA ops and their conversions, usable in kernels and in
// host code (the tests include this with the host compiler).
//
// Every CUDA op is instantiated for float, __nv_bfloat16 and __half storage and
// computes in fp32: loads widen to float, stores round to nearest even. A few
// helpers that the element-wise math shares with the CPU tests are here too,
// marked SY_HD (host and device): the CPU tests run exactly the code the
// kernels run on one element.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "core/dtype.hpp"

#if defined(__CUDACC__)
#define SY_HD __host__ __device__
#else
#define SY_HD
#endif

namespace sy::cuda {

SY_HD inline float to_float(float x) { return x; }
SY_HD inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
SY_HD inline float to_float(__half x) { return __half2float(x); }

template <typename T>
SY_HD inline T from_float(float x);
template <>
SY_HD inline float from_float<float>(float x) {
  return x;
}
template <>
SY_HD inline __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
SY_HD inline __half from_float<__half>(float x) {
  return __float2half_rn(x);
}

// The storage types of the CUDA ops, by name for messages and test names.
enum class Storage : uint8_t { F32, BF16, F16 };
template <typename T>
constexpr Storage storage_of();
template <>
constexpr Storage storage_of<float>() { return Storage::F32; }
template <>
constexpr Storage storage_of<__nv_bfloat16>() { return Storage::BF16; }
template <>
constexpr Storage storage_of<__half>() { return Storage::F16; }
inline const char* storage_name(Storage s) { return s == Storage::F32 ? "fp32" : s == Storage::BF16 ? "bf16" : "fp16"; }

}  // namespace sy::cuda

// Every op family instantiates its templates for the three storage types with this.
#define SY_CUDA_FOR_EACH_STORAGE(MACRO) \
  MACRO(float)                          \
  MACRO(__nv_bfloat16)                  \
  MACRO(__half)
