#include "core/ops/embedding.hpp"

#include <algorithm>

#include "core/error.hpp"
#include "core/thread_pool.hpp"

namespace sy::ops {

namespace {

constexpr int64_t kRowGrain = 32;
constexpr int64_t kColumnGrain = 64;

void check_args(const char* fn, const void* a, const int32_t* ids, const void* b, int64_t N, int64_t V, int64_t C) {
  SY_REQUIRE(N > 0 && V > 0 && C > 0, fn << ": sizes must be positive, got N=" << N << " V=" << V << " C=" << C);
  SY_REQUIRE(a != nullptr && ids != nullptr && b != nullptr, fn << ": buffers must be non-null");
  for (int64_t n = 0; n < N; ++n) {
    SY_REQUIRE(ids[n] >= 0 && ids[n] < V,
               fn << ": token id " << ids[n] << " at position " << n << " is outside the vocabulary [0, " << V << ")");
  }
}

}  // namespace

template <typename T>
void embedding_forward(T* out, const int32_t* ids, const T* table, int64_t N, int64_t V, int64_t C) {
  check_args("embedding_forward", out, ids, table, N, V, C);
  compute_pool().parallel_for(N, kRowGrain, [&](int64_t r0, int64_t r1) {
    for (int64_t n = r0; n < r1; ++n) {
      const T* row = table + int64_t(ids[n]) * C;
      std::copy(row, row + C, out + n * C);
    }
  });
}

template <typename T>
void embedding_backward(T* dtable, const int32_t* ids, const T* dout, int64_t N, int64_t V, int64_t C) {
  check_args("embedding_backward", dtable, ids, dout, N, V, C);
  compute_pool().parallel_for(C, kColumnGrain, [&](int64_t c0, int64_t c1) {
    for (int64_t n = 0; n < N; ++n) {
      const T* src = dout + n * C;
      T* dst = dtable + int64_t(ids[n]) * C;
      for (int64_t c = c0; c < c1; ++c) dst[c] += src[c];
    }
  });
}

template void embedding_forward<float>(float*, const int32_t*, const float*, int64_t, int64_t, int64_t);
template void embedding_forward<double>(double*, const int32_t*, const double*, int64_t, int64_t, int64_t);
template void embedding_backward<float>(float*, const int32_t*, const float*, int64_t, int64_t, int64_t);
template void embedding_backward<double>(double*, const int32_t*, const double*, int64_t, int64_t, int64_t);

}  // namespace sy::ops
