// Packed fp32 GEMM with an AVX-512 register-blocked micro-kernel (BLIS
// structure: B panels in L1, A blocks in L2, a 12x32 tile of C in 24 zmm
// registers). Eigen 3.4's kernel reaches ~62% of the FMA peak on the AVX-512
// cores we run on; this one ~80%. Single-threaded: callers split the work.
#pragma once

#include <cstdint>

#include "core/gemm.hpp"

namespace sy::cpu {

// True when this build has the kernel (compiled with AVX-512F).
bool have_sgemm_avx512();

// Row-major C(m, n) = alpha * op(A) op(B) + beta * C, same contract as sy::gemm_serial.
void sgemm_avx512(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                  int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

}  // namespace sy::cpu
