// The CPU backend: aligned host memory, our threaded Eigen GEMM.
#pragma once

#include "core/backend.hpp"

namespace sy {

class ThreadPool;

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(ThreadPool* pool = nullptr);  // nullptr: compute_pool()

  Device device() const override { return Device::CPU; }
  std::string name() const override;
  void* allocate(size_t bytes) override;
  void deallocate(void* ptr) noexcept override;
  void copy_from_host(void* dst, const void* src, size_t bytes) override;
  void copy_to_host(void* dst, const void* src, size_t bytes) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void fill_zero(void* dst, size_t bytes) override;
  void gemm(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
            const float* b, int64_t ldb, float beta, float* c, int64_t ldc) override;
  void synchronize() override {}

 private:
  ThreadPool* pool_;
};

}  // namespace sy
