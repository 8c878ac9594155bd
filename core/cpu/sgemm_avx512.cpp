#include "core/cpu/sgemm_avx512.hpp"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdlib>
#include <memory>

#include "core/error.hpp"

namespace sy::cpu {

#if defined(__AVX512F__)

namespace {

constexpr int64_t kMR = 12;   // rows of the C tile (broadcast from packed A)
constexpr int64_t kNR = 32;   // columns of the C tile (two zmm vectors of packed B)
constexpr int64_t kKC = 512;   // depth of a packed panel (256, 384, 512 measured: 512 best)
constexpr int64_t kMC = 192;   // rows of a packed A block: kMC x kKC floats = 384 KiB, in L2
constexpr int64_t kNC = 1024;  // columns of a packed B block: kKC x kNC floats = 2 MiB

struct FreeDeleter {
  void operator()(float* p) const noexcept { std::free(p); }
};

// Per-thread packing buffers, allocated on a thread's first GEMM and reused.
float* pack_buffer_a() {
  thread_local std::unique_ptr<float, FreeDeleter> buf(
      static_cast<float*>(std::aligned_alloc(64, sizeof(float) * kMC * kKC)));
  return buf.get();
}
float* pack_buffer_b() {
  thread_local std::unique_ptr<float, FreeDeleter> buf(
      static_cast<float*>(std::aligned_alloc(64, sizeof(float) * kKC * kNC)));
  return buf.get();
}

// Packs alpha * op(A)[i0:i0+mc, p0:p0+kc] into panels of kMR rows:
// ap[panel][p][r], zero-padded past mc. Writes are sequential; reads walk kMR
// rows (or one contiguous row, transposed) in step.
void pack_a(Trans trans, const float* a, int64_t lda, int64_t i0, int64_t p0, int64_t mc, int64_t kc, float alpha,
            float* ap) {
  for (int64_t ir = 0; ir < mc; ir += kMR) {
    const int64_t rows = std::min(kMR, mc - ir);
    float* dst = ap + ir * kc;
    if (trans == Trans::N) {
      const float* src[kMR];
      for (int64_t r = 0; r < kMR; ++r) src[r] = a + (i0 + ir + std::min(r, rows - 1)) * lda + p0;
      if (rows == kMR) {
        for (int64_t p = 0; p < kc; ++p, dst += kMR)
          for (int64_t r = 0; r < kMR; ++r) dst[r] = alpha * src[r][p];
      } else {
        for (int64_t p = 0; p < kc; ++p, dst += kMR)
          for (int64_t r = 0; r < kMR; ++r) dst[r] = r < rows ? alpha * src[r][p] : 0.0f;
      }
    } else {
      for (int64_t p = 0; p < kc; ++p) {
        const float* src = a + (p0 + p) * lda + i0 + ir;
        int64_t r = 0;
        for (; r < rows; ++r) dst[p * kMR + r] = alpha * src[r];
        for (; r < kMR; ++r) dst[p * kMR + r] = 0.0f;
      }
    }
  }
}

// Packs op(B)[p0:p0+kc, j0:j0+nc] into panels of kNR columns: bp[panel][p][j],
// zero-padded past nc.
void pack_b(Trans trans, const float* b, int64_t ldb, int64_t p0, int64_t j0, int64_t kc, int64_t nc, float* bp) {
  for (int64_t jr = 0; jr < nc; jr += kNR) {
    const int64_t cols = std::min(kNR, nc - jr);
    float* dst = bp + jr * kc;
    if (trans == Trans::N) {
      for (int64_t p = 0; p < kc; ++p) {
        const float* src = b + (p0 + p) * ldb + j0 + jr;
        float* d = dst + p * kNR;
        if (cols == kNR) {
          _mm512_store_ps(d, _mm512_loadu_ps(src));
          _mm512_store_ps(d + 16, _mm512_loadu_ps(src + 16));
        } else {
          int64_t j = 0;
          for (; j < cols; ++j) d[j] = src[j];
          for (; j < kNR; ++j) d[j] = 0.0f;
        }
      }
    } else {
      const float* src[kNR];
      for (int64_t j = 0; j < kNR; ++j) src[j] = b + (j0 + jr + std::min(j, cols - 1)) * ldb + p0;
      float* d = dst;
      if (cols == kNR) {
        for (int64_t p = 0; p < kc; ++p, d += kNR)
          for (int64_t j = 0; j < kNR; ++j) d[j] = src[j][p];
      } else {
        for (int64_t p = 0; p < kc; ++p, d += kNR)
          for (int64_t j = 0; j < kNR; ++j) d[j] = j < cols ? src[j][p] : 0.0f;
      }
    }
  }
}

// c(kMR, kNR) (row stride ldc) = [c +] ap(kc, kMR)^T-panel x bp(kc, kNR)-panel.
inline void kernel_12x32(int64_t kc, const float* __restrict ap, const float* __restrict bp, float* c, int64_t ldc,
                         bool accumulate) {
  __m512 acc[kMR][2];
#pragma GCC unroll 12
  for (int r = 0; r < kMR; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int64_t p = 0; p < kc; ++p) {
    const __m512 b0 = _mm512_load_ps(bp);
    const __m512 b1 = _mm512_load_ps(bp + 16);
#pragma GCC unroll 12
    for (int r = 0; r < kMR; ++r) {
      const __m512 av = _mm512_set1_ps(ap[r]);
      acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
    }
    ap += kMR;
    bp += kNR;
  }
#pragma GCC unroll 12
  for (int r = 0; r < kMR; ++r) {
    float* row = c + r * ldc;
    if (accumulate) {
      acc[r][0] = _mm512_add_ps(acc[r][0], _mm512_loadu_ps(row));
      acc[r][1] = _mm512_add_ps(acc[r][1], _mm512_loadu_ps(row + 16));
    }
    _mm512_storeu_ps(row, acc[r][0]);
    _mm512_storeu_ps(row + 16, acc[r][1]);
  }
}

// A partial tile at the right or bottom edge of C goes through a full local tile.
void edge_tile(int64_t kc, const float* ap, const float* bp, float* c, int64_t ldc, int64_t rows, int64_t cols,
               bool accumulate) {
  alignas(64) float tile[kMR * kNR];
  kernel_12x32(kc, ap, bp, tile, kNR, false);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j)
      c[r * ldc + j] = accumulate ? c[r * ldc + j] + tile[r * kNR + j] : tile[r * kNR + j];
}

}  // namespace

bool have_sgemm_avx512() { return true; }

void sgemm_avx512(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                  int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (beta != 0.0f && beta != 1.0f) {
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] *= beta;
  }
  if (k == 0 || alpha == 0.0f) {
    if (beta == 0.0f)
      for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, 0.0f);
    return;
  }
  float* ap = pack_buffer_a();
  float* bp = pack_buffer_b();
  SY_CHECK_AS(DeviceError, ap && bp, "out of memory for GEMM packing buffers");
  for (int64_t jc = 0; jc < n; jc += kNC) {
    const int64_t nc = std::min(kNC, n - jc);
    for (int64_t pc = 0; pc < k; pc += kKC) {
      const int64_t kc = std::min(kKC, k - pc);
      const bool accumulate = pc > 0 || beta != 0.0f;
      pack_b(trans_b, b, ldb, pc, jc, kc, nc, bp);
      for (int64_t ic = 0; ic < m; ic += kMC) {
        const int64_t mc = std::min(kMC, m - ic);
        pack_a(trans_a, a, lda, ic, pc, mc, kc, alpha, ap);
        for (int64_t jr = 0; jr < nc; jr += kNR) {
          const int64_t cols = std::min(kNR, nc - jr);
          for (int64_t ir = 0; ir < mc; ir += kMR) {
            const int64_t rows = std::min(kMR, mc - ir);
            float* ct = c + (ic + ir) * ldc + jc + jr;
            if (rows == kMR && cols == kNR)
              kernel_12x32(kc, ap + ir * kc, bp + jr * kc, ct, ldc, accumulate);
            else
              edge_tile(kc, ap + ir * kc, bp + jr * kc, ct, ldc, rows, cols, accumulate);
          }
        }
      }
    }
  }
}

#else  // no AVX-512: callers use Eigen

bool have_sgemm_avx512() { return false; }

void sgemm_avx512(Trans, Trans, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                  float, float*, int64_t) {
  throw DeviceError("sgemm_avx512 called in a build without AVX-512");
}

#endif

}  // namespace sy::cpu
