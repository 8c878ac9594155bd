#include "core/cpu/cpu_backend.hpp"

#include <cstdlib>
#include <cstring>
#include <new>

#include <Eigen/Core>

#include "core/error.hpp"
#include "core/thread_pool.hpp"

namespace sy {

CpuBackend::CpuBackend(ThreadPool* pool) : pool_(pool) {}

std::string CpuBackend::name() const {
  ThreadPool& pool = pool_ ? *pool_ : compute_pool();
  return "cpu (Eigen " + std::to_string(EIGEN_WORLD_VERSION) + "." + std::to_string(EIGEN_MAJOR_VERSION) + "." +
         std::to_string(EIGEN_MINOR_VERSION) + ", " + std::to_string(pool.num_threads()) + " threads)";
}

void* CpuBackend::allocate(size_t bytes) {
  const size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  void* p = std::aligned_alloc(kAlignment, rounded == 0 ? kAlignment : rounded);
  SY_CHECK_AS(DeviceError, p != nullptr, "out of host memory allocating " << bytes << " bytes");
  return p;
}

void CpuBackend::deallocate(void* ptr) noexcept { std::free(ptr); }

void CpuBackend::copy_from_host(void* dst, const void* src, size_t bytes) { copy(dst, src, bytes); }
void CpuBackend::copy_to_host(void* dst, const void* src, size_t bytes) { copy(dst, src, bytes); }
void CpuBackend::copy(void* dst, const void* src, size_t bytes) {
  if (bytes) std::memmove(dst, src, bytes);
}
void CpuBackend::fill_zero(void* dst, size_t bytes) {
  if (bytes) std::memset(dst, 0, bytes);
}

void CpuBackend::gemm(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                      int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  sy::gemm<float>(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, pool_);
}

}  // namespace sy
