#include "core/ops/attention.hpp"

#include <algorithm>
#include <cmath>

#include "core/error.hpp"
#include "core/gemm.hpp"
#include "core/thread_pool.hpp"

namespace sy::ops {

namespace {

void check_sizes(const char* fn, int64_t B, int64_t T, int64_t C, int64_t H) {
  SY_REQUIRE(B > 0 && T > 0 && C > 0 && H > 0,
             fn << ": sizes must be positive, got B=" << B << " T=" << T << " C=" << C << " H=" << H);
  SY_REQUIRE(C % H == 0, fn << ": model width C=" << C << " is not divisible by the head count H=" << H);
}

}  // namespace

template <typename Real>
void attention_forward(Real* out, Real* probs, const Real* qkv, int64_t B, int64_t T, int64_t C, int64_t H) {
  check_sizes("attention_forward", B, T, C, H);
  SY_REQUIRE(out != nullptr && probs != nullptr && qkv != nullptr, "attention_forward: buffers must be non-null");
  const int64_t D = C / H;
  const int64_t ld_qkv = 3 * C;
  const Real scale = Real(1) / std::sqrt(Real(D));
  compute_pool().run(B * H, [&](int64_t task) {
    const int64_t b = task / H, h = task % H;
    const Real* q = qkv + b * T * ld_qkv + h * D;
    const Real* k = q + C;
    const Real* v = q + 2 * C;
    Real* p = probs + task * T * T;  // (T, T) block of (b, h)
    // The full T x T product: the upper triangle is wasted work, but one GEMM
    // beats T row-wise calls at the sizes we train.
    gemm_serial<Real>(Trans::N, Trans::T, T, T, D, scale, q, ld_qkv, k, ld_qkv, Real(0), p, T);
    for (int64_t t = 0; t < T; ++t) {
      Real* row = p + t * T;
      Real m = row[0];
      for (int64_t j = 1; j <= t; ++j) m = std::max(m, row[j]);
      Real sum = 0;
      for (int64_t j = 0; j <= t; ++j) {
        row[j] = std::exp(row[j] - m);
        sum += row[j];
      }
      const Real inv = Real(1) / sum;
      for (int64_t j = 0; j <= t; ++j) row[j] *= inv;
      std::fill(row + t + 1, row + T, Real(0));
    }
    gemm_serial<Real>(Trans::N, Trans::N, T, D, T, Real(1), p, T, v, ld_qkv, Real(0), out + b * T * C + h * D, C);
  });
}

template <typename Real>
void attention_backward(Real* dqkv, Real* dscores, const Real* dout, const Real* qkv, const Real* probs, int64_t B,
                        int64_t T, int64_t C, int64_t H) {
  check_sizes("attention_backward", B, T, C, H);
  SY_REQUIRE(dqkv != nullptr && dscores != nullptr && dout != nullptr && qkv != nullptr && probs != nullptr,
             "attention_backward: buffers must be non-null");
  const int64_t D = C / H;
  const int64_t ld_qkv = 3 * C;
  const Real scale = Real(1) / std::sqrt(Real(D));
  compute_pool().run(B * H, [&](int64_t task) {
    const int64_t b = task / H, h = task % H;
    const int64_t head_offset = b * T * ld_qkv + h * D;
    const Real* q = qkv + head_offset;
    const Real* k = q + C;
    const Real* v = q + 2 * C;
    Real* dq = dqkv + head_offset;
    Real* dk = dq + C;
    Real* dv = dq + 2 * C;
    const Real* p = probs + task * T * T;  // (T, T)
    Real* ds = dscores + task * T * T;     // (T, T): first dP, then dS in place
    const Real* dO = dout + b * T * C + h * D;
    gemm_serial<Real>(Trans::T, Trans::N, T, D, T, Real(1), p, T, dO, C, Real(0), dv, ld_qkv);
    gemm_serial<Real>(Trans::N, Trans::T, T, T, D, Real(1), dO, C, v, ld_qkv, Real(0), ds, T);
    for (int64_t t = 0; t < T; ++t) {
      const Real* prow = p + t * T;
      Real* row = ds + t * T;
      Real dot = 0;
      for (int64_t j = 0; j <= t; ++j) dot += prow[j] * row[j];
      for (int64_t j = 0; j <= t; ++j) row[j] = prow[j] * (row[j] - dot);
      std::fill(row + t + 1, row + T, Real(0));
    }
    gemm_serial<Real>(Trans::N, Trans::N, T, D, T, scale, ds, T, k, ld_qkv, Real(0), dq, ld_qkv);
    gemm_serial<Real>(Trans::T, Trans::N, T, D, T, scale, ds, T, q, ld_qkv, Real(0), dk, ld_qkv);
  });
}

template void attention_forward<float>(float*, float*, const float*, int64_t, int64_t, int64_t, int64_t);
template void attention_forward<double>(double*, double*, const double*, int64_t, int64_t, int64_t, int64_t);
template void attention_backward<float>(float*, float*, const float*, const float*, const float*, int64_t, int64_t,
                                        int64_t, int64_t);
template void attention_backward<double>(double*, double*, const double*, const double*, const double*, int64_t,
                                         int64_t, int64_t, int64_t);

}  // namespace sy::ops
