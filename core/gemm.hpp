// CPU GEMM near the machine's limit.
//
// Row-major C(m, n) = alpha * op(A)(m, k) * op(B)(k, n) + beta * C, where op(X)
// is X or its transpose. The work is split into row blocks of C (or column
// blocks when C is wide and short) over the thread pool; each block is one
// single-threaded GEMM: for fp32 on AVX-512 our packed kernel
// (core/cpu/sgemm_avx512.cpp), otherwise Eigen. Eigen's own OpenMP threading
// scales poorly here (1.2x on 2 threads), our split ~1.9x.
#pragma once

#include <cstdint>

namespace sy {

class ThreadPool;

enum class Trans : uint8_t { N, T };

// lda, ldb, ldc are row strides in elements of the stored (untransposed) matrices.
// beta == 0 overwrites C (NaNs in C are not propagated). pool == nullptr uses compute_pool().
template <typename T>
void gemm(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
          const T* b, int64_t ldb, T beta, T* c, int64_t ldc, ThreadPool* pool = nullptr);

// Same as gemm() but runs on the calling thread only; the building block of
// every parallel split (and of grouped expert GEMMs, which split over experts).
template <typename T>
void gemm_serial(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
                 const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

}  // namespace sy
