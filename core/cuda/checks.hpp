// Check macros for the CUDA runtime, cuBLAS and NCCL, in the family of
// core/error.hpp: the failing call, the library's own error text, file:line.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include <string>

#include "core/error.hpp"

#define SY_CUDA_CHECK(expr)                                                                         \
  do {                                                                                              \
    const cudaError_t sy_cuda_rc_ = (expr);                                                         \
    if (sy_cuda_rc_ != cudaSuccess)                                                                 \
      ::sy::detail::throw_check<::sy::DeviceError>(                                                 \
          #expr, std::string(cudaGetErrorName(sy_cuda_rc_)) + ": " + cudaGetErrorString(sy_cuda_rc_), \
          __FILE__, __LINE__);                                                                      \
  } while (0)

#define SY_CUBLAS_CHECK(expr)                                                                              \
  do {                                                                                                     \
    const cublasStatus_t sy_cublas_rc_ = (expr);                                                           \
    if (sy_cublas_rc_ != CUBLAS_STATUS_SUCCESS)                                                            \
      ::sy::detail::throw_check<::sy::DeviceError>(#expr, cublasGetStatusString(sy_cublas_rc_), __FILE__, \
                                                   __LINE__);                                              \
  } while (0)

#define SY_NCCL_CHECK(expr)                                                                             \
  do {                                                                                                  \
    const ncclResult_t sy_nccl_rc_ = (expr);                                                            \
    if (sy_nccl_rc_ != ncclSuccess)                                                                     \
      ::sy::detail::throw_check<::sy::CommError>(#expr, ncclGetErrorString(sy_nccl_rc_), __FILE__, __LINE__); \
  } while (0)
