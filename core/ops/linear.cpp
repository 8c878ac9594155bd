#include "core/ops/linear.hpp"

#include <algorithm>

#include "core/error.hpp"
#include "core/gemm.hpp"
#include "core/thread_pool.hpp"

namespace sy::ops {

namespace {
void check_sizes(const char* fn, int64_t N, int64_t in_features, int64_t out_features) {
  SY_REQUIRE(N > 0 && in_features > 0 && out_features > 0,
             fn << ": sizes must be positive, got N=" << N << " in_features=" << in_features
                << " out_features=" << out_features);
}
}  // namespace

template <typename T>
void linear_forward(T* out, const T* x, const T* weight, const T* bias, int64_t N, int64_t in_features,
                    int64_t out_features) {
  check_sizes("linear_forward", N, in_features, out_features);
  SY_REQUIRE(out != nullptr && x != nullptr && weight != nullptr, "linear_forward: out, x and weight must be non-null");
  ThreadPool& pool = compute_pool();
  if (bias != nullptr) {
    // Broadcast the bias into out, then let the GEMM accumulate onto it (beta = 1).
    pool.parallel_for(N, 32, [&](int64_t r0, int64_t r1) {
      for (int64_t n = r0; n < r1; ++n) std::copy(bias, bias + out_features, out + n * out_features);
    });
  }
  gemm<T>(Trans::N, Trans::T, N, out_features, in_features, T(1), x, in_features, weight, in_features,
          bias != nullptr ? T(1) : T(0), out, out_features, &pool);
}

template <typename T>
void linear_backward(T* dx, T* dweight, T* dbias, const T* dout, const T* x, const T* weight, int64_t N,
                     int64_t in_features, int64_t out_features) {
  check_sizes("linear_backward", N, in_features, out_features);
  SY_REQUIRE(dweight != nullptr && dout != nullptr && x != nullptr,
             "linear_backward: dweight, dout and x must be non-null");
  SY_REQUIRE(dx == nullptr || weight != nullptr, "linear_backward: weight is required to compute dx");
  ThreadPool& pool = compute_pool();
  if (dx != nullptr) {
    gemm<T>(Trans::N, Trans::N, N, in_features, out_features, T(1), dout, out_features, weight, in_features, T(0), dx,
            in_features, &pool);
  }
  gemm<T>(Trans::T, Trans::N, out_features, in_features, N, T(1), dout, out_features, x, in_features, T(1), dweight,
          in_features, &pool);
  if (dbias != nullptr) {
    // Split over output columns so each db element is summed by one thread in row
    // order: deterministic for any thread count.
    pool.parallel_for(out_features, 64, [&](int64_t c0, int64_t c1) {
      for (int64_t n = 0; n < N; ++n) {
        const T* row = dout + n * out_features;
        for (int64_t c = c0; c < c1; ++c) dbias[c] += row[c];
      }
    });
  }
}

template void linear_forward<float>(float*, const float*, const float*, const float*, int64_t, int64_t, int64_t);
template void linear_forward<double>(double*, const double*, const double*, const double*, int64_t, int64_t, int64_t);
template void linear_backward<float>(float*, float*, float*, const float*, const float*, const float*, int64_t, int64_t,
                                     int64_t);
template void linear_backward<double>(double*, double*, double*, const double*, const double*, const double*, int64_t,
                                      int64_t, int64_t);

}  // namespace sy::ops
