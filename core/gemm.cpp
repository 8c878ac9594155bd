#include "core/gemm.hpp"

#include <Eigen/Core>
#include <algorithm>
#include <type_traits>

#include "core/cpu/sgemm_avx512.hpp"
#include "core/error.hpp"
#include "core/thread_pool.hpp"

namespace sy {

namespace {

template <typename T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using ConstMap = Eigen::Map<const RowMat<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <typename T>
using MutMap = Eigen::Map<RowMat<T>, Eigen::Unaligned, Eigen::OuterStride<>>;

template <typename T, typename AExpr, typename BExpr>
void accumulate(MutMap<T>& c, const AExpr& a, const BExpr& b, T alpha, T beta) {
  if (beta == T(0)) {
    c.noalias() = alpha * (a * b);
  } else {
    if (beta != T(1)) c *= beta;
    c.noalias() += alpha * (a * b);
  }
}

}  // namespace

template <typename T>
void gemm_serial(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
                 const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if constexpr (std::is_same_v<T, float>) {
    if (cpu::have_sgemm_avx512()) {
      cpu::sgemm_avx512(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
      return;
    }
  }
  MutMap<T> cm(c, m, n, Eigen::OuterStride<>(ldc));
  if (k == 0) {
    if (beta == T(0)) cm.setZero(); else cm *= beta;
    return;
  }
  // Stored shapes: A is (m, k) or, transposed, (k, m); likewise B.
  const ConstMap<T> am(a, trans_a == Trans::N ? m : k, trans_a == Trans::N ? k : m, Eigen::OuterStride<>(lda));
  const ConstMap<T> bm(b, trans_b == Trans::N ? k : n, trans_b == Trans::N ? n : k, Eigen::OuterStride<>(ldb));
  if (trans_a == Trans::N && trans_b == Trans::N) accumulate<T>(cm, am, bm, alpha, beta);
  else if (trans_a == Trans::N) accumulate<T>(cm, am, bm.transpose(), alpha, beta);
  else if (trans_b == Trans::N) accumulate<T>(cm, am.transpose(), bm, alpha, beta);
  else accumulate<T>(cm, am.transpose(), bm.transpose(), alpha, beta);
}

template <typename T>
void gemm(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
          const T* b, int64_t ldb, T beta, T* c, int64_t ldc, ThreadPool* pool) {
  SY_REQUIRE(m >= 0 && n >= 0 && k >= 0, "gemm sizes must be non-negative, got m=" << m << " n=" << n << " k=" << k);
  SY_REQUIRE(ldc >= n, "gemm ldc=" << ldc << " < n=" << n);
  SY_REQUIRE(lda >= (trans_a == Trans::N ? k : m), "gemm lda=" << lda << " too small");
  SY_REQUIRE(ldb >= (trans_b == Trans::N ? n : k), "gemm ldb=" << ldb << " too small");
  if (pool == nullptr) pool = &compute_pool();
  const int threads = pool->num_threads();
  // Small products are not worth a fork: 2 MFLOP takes ~15 us on one core.
  if (threads == 1 || 2.0 * m * n * k < 4.0e6) {
    gemm_serial(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  // Split the longer side of C; blocks aligned to 16 rows/columns keep the
  // Eigen kernels on full register tiles.
  if (m >= n) {
    pool->parallel_for(m, 16, [&](int64_t r0, int64_t r1) {
      const T* a_blk = trans_a == Trans::N ? a + r0 * lda : a + r0;
      gemm_serial(trans_a, trans_b, r1 - r0, n, k, alpha, a_blk, lda, b, ldb, beta, c + r0 * ldc, ldc);
    });
  } else {
    pool->parallel_for(n, 16, [&](int64_t c0, int64_t c1) {
      const T* b_blk = trans_b == Trans::N ? b + c0 : b + c0 * ldb;
      gemm_serial(trans_a, trans_b, m, c1 - c0, k, alpha, a, lda, b_blk, ldb, beta, c + c0, ldc);
    });
  }
}

#define SY_INSTANTIATE_GEMM(T)                                                                           \
  template void gemm<T>(Trans, Trans, int64_t, int64_t, int64_t, T, const T*, int64_t, const T*, int64_t, T, \
                        T*, int64_t, ThreadPool*);                                                       \
  template void gemm_serial<T>(Trans, Trans, int64_t, int64_t, int64_t, T, const T*, int64_t, const T*,     \
                               int64_t, T, T*, int64_t);
SY_INSTANTIATE_GEMM(float)
SY_INSTANTIATE_GEMM(double)
#undef SY_INSTANTIATE_GEMM

}  // namespace sy
