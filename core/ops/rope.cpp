#include "core/ops/rope.hpp"

#include <algorithm>
#include <cmath>

#include "core/error.hpp"
#include "core/thread_pool.hpp"

namespace sy::ops {

namespace {

constexpr int64_t kElementsPerTask = 16384;

void check_sizes(const char* fn, int64_t B, int64_t T_seq, int64_t C, int64_t H) {
  SY_REQUIRE(B > 0 && T_seq > 0 && C > 0 && H > 0,
             fn << ": sizes must be positive, got B=" << B << " T=" << T_seq << " C=" << C << " H=" << H);
  SY_REQUIRE(C % H == 0, fn << ": model width C=" << C << " is not divisible by the head count H=" << H);
  SY_REQUIRE((C / H) % 2 == 0, fn << ": rotary embeddings need an even head size, got D = C / H = " << C / H);
}

// q and k of every row rotated by +angle (sign = +1, forward) or -angle
// (sign = -1, backward: R^T). Rows are independent; v is not touched.
template <typename T>
void rotate(const char* fn, T* qkv, const T* cos_table, const T* sin_table, int64_t B, int64_t T_seq, int64_t C,
            int64_t H, T sign) {
  check_sizes(fn, B, T_seq, C, H);
  SY_REQUIRE(qkv != nullptr && cos_table != nullptr && sin_table != nullptr, fn << ": buffers must be non-null");
  const int64_t N = B * T_seq, D = C / H, half = D / 2;
  compute_pool().parallel_for(N, std::max<int64_t>(1, kElementsPerTask / (2 * C)), [&](int64_t r0, int64_t r1) {
    for (int64_t n = r0; n < r1; ++n) {
      const T* c = cos_table + (n % T_seq) * half;  // (D/2) at this row's position
      const T* s = sin_table + (n % T_seq) * half;
      T* row = qkv + n * 3 * C;
      for (T* part : {row, row + C})  // q, then k
        for (int64_t h = 0; h < H; ++h) {
          T* x = part + h * D;  // (D) one head
          for (int64_t i = 0; i < half; ++i) {
            const T x0 = x[2 * i], x1 = x[2 * i + 1], sn = sign * s[i];
            x[2 * i] = c[i] * x0 - sn * x1;
            x[2 * i + 1] = sn * x0 + c[i] * x1;
          }
        }
    }
  });
}

}  // namespace

template <typename T>
void rope_table(T* cos_table, T* sin_table, int64_t max_seq_len, int64_t D, double base) {
  SY_REQUIRE(max_seq_len > 0 && D > 0,
             "rope_table: sizes must be positive, got max_seq_len=" << max_seq_len << " D=" << D);
  SY_REQUIRE(D % 2 == 0, "rope_table: rotary embeddings need an even head size, got D = " << D);
  SY_REQUIRE(base > 0, "rope_table: base must be positive, got " << base);
  SY_REQUIRE(cos_table != nullptr && sin_table != nullptr, "rope_table: buffers must be non-null");
  const int64_t half = D / 2;
  for (int64_t i = 0; i < half; ++i) {
    const double theta = std::pow(base, -2.0 * double(i) / double(D));
    for (int64_t t = 0; t < max_seq_len; ++t) {
      const double angle = double(t) * theta;
      cos_table[t * half + i] = static_cast<T>(std::cos(angle));
      sin_table[t * half + i] = static_cast<T>(std::sin(angle));
    }
  }
}

template <typename T>
void rope_forward(T* qkv, const T* cos_table, const T* sin_table, int64_t B, int64_t T_seq, int64_t C, int64_t H) {
  rotate("rope_forward", qkv, cos_table, sin_table, B, T_seq, C, H, T(1));
}

template <typename T>
void rope_backward(T* dqkv, const T* cos_table, const T* sin_table, int64_t B, int64_t T_seq, int64_t C, int64_t H) {
  rotate("rope_backward", dqkv, cos_table, sin_table, B, T_seq, C, H, T(-1));
}

template void rope_table<float>(float*, float*, int64_t, int64_t, double);
template void rope_table<double>(double*, double*, int64_t, int64_t, double);
template void rope_forward<float>(float*, const float*, const float*, int64_t, int64_t, int64_t, int64_t);
template void rope_forward<double>(double*, const double*, const double*, int64_t, int64_t, int64_t, int64_t);
template void rope_backward<float>(float*, const float*, const float*, int64_t, int64_t, int64_t, int64_t);
template void rope_backward<double>(double*, const double*, const double*, int64_t, int64_t, int64_t, int64_t);

}  // namespace sy::ops
