// Device backends: the thin interface between the layers above and a device's
// memory and GEMM. Chosen at build time (core/cpu always; core/cuda when
// SWITCHYARD_CUDA is on) and at run time by make_backend(). Raw pointers and
// counts only; the Arena above owns the memory and checks shapes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/dtype.hpp"
#include "core/gemm.hpp"

namespace sy {

class Backend {
 public:
  virtual ~Backend() = default;

  virtual Device device() const = 0;
  virtual std::string name() const = 0;

  // Device memory, aligned to kAlignment bytes; allocate throws DeviceError on failure.
  static constexpr size_t kAlignment = 256;
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* ptr) noexcept = 0;

  virtual void copy_from_host(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void copy_to_host(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  virtual void fill_zero(void* dst, size_t bytes) = 0;

  // Row-major fp32 GEMM with the semantics of sy::gemm (core/gemm.hpp).
  virtual void gemm(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                    int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) = 0;

  // Waits until all work queued on this backend has finished.
  virtual void synchronize() = 0;
};

// True when this build has the CUDA backend and a CUDA device is usable.
bool cuda_available();
// Whether this build includes the CUDA backend at all.
bool cuda_built();

// Throws DeviceError when the device is not available, saying why.
std::unique_ptr<Backend> make_backend(Device device);

}  // namespace sy
