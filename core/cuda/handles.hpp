// RAII owners of CUDA runtime and cuBLAS handles (STYLE 9), one definition
// for the backend, the GPU layers and the benchmarks. Host code; creation
// failures throw DeviceError through the check macros.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <memory>

#include "core/cuda/checks.hpp"

namespace sy::cuda {

struct DeviceFree {
  void operator()(void* p) const noexcept { cudaFree(p); }
};
struct PinnedFree {
  void operator()(void* p) const noexcept { cudaFreeHost(p); }
};
struct StreamDestroy {
  void operator()(cudaStream_t s) const noexcept { cudaStreamDestroy(s); }
};
struct EventDestroy {
  void operator()(cudaEvent_t e) const noexcept { cudaEventDestroy(e); }
};
struct CublasDestroy {
  void operator()(cublasHandle_t h) const noexcept { cublasDestroy(h); }
};

using DevicePtr = std::unique_ptr<void, DeviceFree>;
using PinnedPtr = std::unique_ptr<void, PinnedFree>;
using StreamPtr = std::unique_ptr<CUstream_st, StreamDestroy>;
using EventPtr = std::unique_ptr<CUevent_st, EventDestroy>;
using CublasPtr = std::unique_ptr<cublasContext, CublasDestroy>;

inline DevicePtr device_alloc(size_t bytes) {
  void* p = nullptr;
  SY_CUDA_CHECK(cudaMalloc(&p, bytes == 0 ? 1 : bytes));
  return DevicePtr(p);
}
inline PinnedPtr pinned_alloc(size_t bytes) {
  void* p = nullptr;
  SY_CUDA_CHECK(cudaMallocHost(&p, bytes == 0 ? 1 : bytes));
  return PinnedPtr(p);
}
// A stream that does not synchronize with the legacy default stream.
inline StreamPtr make_stream() {
  cudaStream_t s = nullptr;
  SY_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return StreamPtr(s);
}
inline EventPtr make_event() {
  cudaEvent_t e = nullptr;
  SY_CUDA_CHECK(cudaEventCreate(&e));
  return EventPtr(e);
}
inline CublasPtr make_cublas() {
  cublasHandle_t h = nullptr;
  SY_CUBLAS_CHECK(cublasCreate(&h));
  return CublasPtr(h);
}

}  // namespace sy::cuda
