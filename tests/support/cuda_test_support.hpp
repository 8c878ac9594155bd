// Helpers for the tests that run CUDA ops against the CPU ops (STYLE 1). Only
// the tests under a cuda/ or nccl/ folder include this; they are built when the
// CUDA backend is, and every test that needs a GPU starts with
// SY_SKIP_WITHOUT_GPU(), so on a machine without one it is reported as skipped
// with the reason, never passed.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/backend.hpp"
#include "core/cuda/checks.hpp"
#include "core/cuda/handles.hpp"
#include "core/cuda/storage.hpp"

#define SY_SKIP_WITHOUT_GPU()                                                                             \
  do {                                                                                                    \
    if (!::sy::cuda_available())                                                                          \
      GTEST_SKIP() << "no CUDA device on this machine (the CUDA backend is built; this test needs a GPU)"; \
  } while (0)

namespace sy::test {

// Device memory for n elements of T, freed on destruction.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) : n_(n) {
    void* p = nullptr;
    SY_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)));
    ptr_.reset(static_cast<T*>(p));
  }
  // Uploads host values, converting each to the storage type (rounding to nearest even).
  template <typename H>
  static DeviceBuffer from_host(const std::vector<H>& host) {
    DeviceBuffer b(host.size());
    std::vector<T> staged(host.size());
    for (size_t i = 0; i < host.size(); ++i) staged[i] = convert(host[i]);
    SY_CUDA_CHECK(cudaMemcpy(b.get(), staged.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
    // A pageable copy may return before the data lands; the ops run on non-blocking streams.
    SY_CUDA_CHECK(cudaDeviceSynchronize());
    return b;
  }
  // All n elements, widened to float (integers as they are).
  std::vector<T> raw() const {
    std::vector<T> out(n_);
    SY_CUDA_CHECK(cudaDeviceSynchronize());
    SY_CUDA_CHECK(cudaMemcpy(out.data(), ptr_.get(), n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return out;
  }
  std::vector<float> to_float() const {
    const std::vector<T> r = raw();
    std::vector<float> out(r.size());
    for (size_t i = 0; i < r.size(); ++i) out[i] = widen(r[i]);
    return out;
  }
  void zero() { SY_CUDA_CHECK(cudaMemset(ptr_.get(), 0, std::max<size_t>(n_, 1) * sizeof(T))); }

  T* get() const { return ptr_.get(); }
  size_t size() const { return n_; }

 private:
  template <typename H>
  static T convert(H h) {
    if constexpr (std::is_integral_v<T>)
      return static_cast<T>(h);
    else
      return cuda::from_float<T>(static_cast<float>(h));
  }
  static float widen(T t) {
    if constexpr (std::is_integral_v<T>)
      return static_cast<float>(t);
    else
      return cuda::to_float(t);
  }
  size_t n_ = 0;
  std::unique_ptr<T, cuda::DeviceFree> ptr_;
};

// Host values rounded through the storage type T, as a CUDA op of storage T sees its input.
template <typename T>
std::vector<float> rounded(const std::vector<float>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = cuda::to_float(cuda::from_float<T>(v[i]));
  return out;
}

// Relative tolerance of a CUDA op against the CPU op on the same (rounded) inputs:
// fp32 differs by summation order only; bf16 and fp16 by the rounding of the output
// (8 and 11 significant bits) and of intermediates kept in storage precision.
template <typename T>
double tolerance() {
  switch (cuda::storage_of<T>()) {
    case cuda::Storage::F32: return 1e-4;
    case cuda::Storage::BF16: return 2e-2;
    case cuda::Storage::F16: return 4e-3;
  }
  return 0.0;
}

// A non-blocking stream, destroyed on scope exit.
class TestStream {
 public:
  cudaStream_t get() const { return s_.get(); }
  void sync() const { SY_CUDA_CHECK(cudaStreamSynchronize(s_.get())); }

 private:
  cuda::StreamPtr s_ = cuda::make_stream();
};

}  // namespace sy::test

// Typed tests over the three storage types.
namespace sy::test {
using StorageTypes = ::testing::Types<float, __nv_bfloat16, __half>;
struct StorageName {
  template <typename T>
  static std::string GetName(int) {
    return cuda::storage_name(cuda::storage_of<T>());
  }
};
}  // namespace sy::test
