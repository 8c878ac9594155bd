#include "core/ops/norm.hpp"

#include <algorithm>
#include <cmath>

#include "core/error.hpp"
#include "core/thread_pool.hpp"

namespace sy::ops {

namespace {

constexpr int64_t kElementsPerTask = 16384;
int64_t row_grain(int64_t width) { return std::max<int64_t>(1, kElementsPerTask / width); }
// Columns per task in the parameter-gradient pass.
constexpr int64_t kColumnGrain = 64;

void check_sizes(const char* fn, int64_t N, int64_t C) {
  SY_REQUIRE(N > 0 && C > 0, fn << ": sizes must be positive, got N=" << N << " C=" << C);
}

}  // namespace

template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* x, const T* weight, const T* bias, int64_t N, int64_t C,
                       T eps) {
  check_sizes("layernorm_forward", N, C);
  SY_REQUIRE(eps >= T(0), "layernorm_forward: eps must be non-negative, got " << eps);
  SY_REQUIRE(out != nullptr && mean != nullptr && rstd != nullptr && x != nullptr && weight != nullptr &&
                 bias != nullptr,
             "layernorm_forward: buffers must be non-null");
  compute_pool().parallel_for(N, row_grain(C), [&](int64_t r0, int64_t r1) {
    for (int64_t n = r0; n < r1; ++n) {
      const T* xr = x + n * C;
      T* yr = out + n * C;
      T mu = 0;
      for (int64_t c = 0; c < C; ++c) mu += xr[c];
      mu /= T(C);
      T var = 0;  // two passes: no cancellation when |mean| >> std
      for (int64_t c = 0; c < C; ++c) var += (xr[c] - mu) * (xr[c] - mu);
      var /= T(C);
      const T rs = T(1) / std::sqrt(var + eps);
      for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - mu) * rs * weight[c] + bias[c];
      mean[n] = mu;
      rstd[n] = rs;
    }
  });
}

template <typename T>
void layernorm_backward(T* dx, T* dweight, T* dbias, const T* dout, const T* x, const T* weight, const T* mean,
                        const T* rstd, int64_t N, int64_t C) {
  check_sizes("layernorm_backward", N, C);
  SY_REQUIRE(dx != nullptr && dweight != nullptr && dbias != nullptr && dout != nullptr && x != nullptr &&
                 weight != nullptr && mean != nullptr && rstd != nullptr,
             "layernorm_backward: buffers must be non-null");
  ThreadPool& pool = compute_pool();
  pool.parallel_for(N, row_grain(C), [&](int64_t r0, int64_t r1) {
    for (int64_t n = r0; n < r1; ++n) {
      const T* xr = x + n * C;
      const T* dyr = dout + n * C;
      T* dxr = dx + n * C;
      const T mu = mean[n], rs = rstd[n];
      T mean_dxhat = 0, mean_dxhat_xhat = 0;
      for (int64_t c = 0; c < C; ++c) {
        const T dxhat = dyr[c] * weight[c];
        mean_dxhat += dxhat;
        mean_dxhat_xhat += dxhat * (xr[c] - mu) * rs;
      }
      mean_dxhat /= T(C);
      mean_dxhat_xhat /= T(C);
      for (int64_t c = 0; c < C; ++c) {
        const T xhat = (xr[c] - mu) * rs;
        dxr[c] = rs * (dyr[c] * weight[c] - mean_dxhat - xhat * mean_dxhat_xhat);
      }
    }
  });
  pool.parallel_for(C, kColumnGrain, [&](int64_t c0, int64_t c1) {
    for (int64_t n = 0; n < N; ++n) {
      const T* xr = x + n * C;
      const T* dyr = dout + n * C;
      const T mu = mean[n], rs = rstd[n];
      for (int64_t c = c0; c < c1; ++c) {
        dweight[c] += dyr[c] * (xr[c] - mu) * rs;
        dbias[c] += dyr[c];
      }
    }
  });
}

template <typename T>
void rmsnorm_forward(T* out, T* rstd, const T* x, const T* weight, int64_t N, int64_t C, T eps) {
  check_sizes("rmsnorm_forward", N, C);
  SY_REQUIRE(eps >= T(0), "rmsnorm_forward: eps must be non-negative, got " << eps);
  SY_REQUIRE(out != nullptr && rstd != nullptr && x != nullptr && weight != nullptr,
             "rmsnorm_forward: buffers must be non-null");
  compute_pool().parallel_for(N, row_grain(C), [&](int64_t r0, int64_t r1) {
    for (int64_t n = r0; n < r1; ++n) {
      const T* xr = x + n * C;
      T* yr = out + n * C;
      T ms = 0;
      for (int64_t c = 0; c < C; ++c) ms += xr[c] * xr[c];
      const T rs = T(1) / std::sqrt(ms / T(C) + eps);
      for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * rs * weight[c];
      rstd[n] = rs;
    }
  });
}

template <typename T>
void rmsnorm_backward(T* dx, T* dweight, const T* dout, const T* x, const T* weight, const T* rstd, int64_t N,
                      int64_t C) {
  check_sizes("rmsnorm_backward", N, C);
  SY_REQUIRE(dx != nullptr && dweight != nullptr && dout != nullptr && x != nullptr && weight != nullptr &&
                 rstd != nullptr,
             "rmsnorm_backward: buffers must be non-null");
  ThreadPool& pool = compute_pool();
  pool.parallel_for(N, row_grain(C), [&](int64_t r0, int64_t r1) {
    for (int64_t n = r0; n < r1; ++n) {
      const T* xr = x + n * C;
      const T* dyr = dout + n * C;
      T* dxr = dx + n * C;
      const T rs = rstd[n];
      T mean_dxhat_xhat = 0;
      for (int64_t c = 0; c < C; ++c) mean_dxhat_xhat += dyr[c] * weight[c] * xr[c] * rs;
      mean_dxhat_xhat /= T(C);
      for (int64_t c = 0; c < C; ++c) dxr[c] = rs * (dyr[c] * weight[c] - xr[c] * rs * mean_dxhat_xhat);
    }
  });
  pool.parallel_for(C, kColumnGrain, [&](int64_t c0, int64_t c1) {
    for (int64_t n = 0; n < N; ++n) {
      const T* xr = x + n * C;
      const T* dyr = dout + n * C;
      const T rs = rstd[n];
      for (int64_t c = c0; c < c1; ++c) dweight[c] += dyr[c] * xr[c] * rs;
    }
  });
}

#define SY_INSTANTIATE_NORM(T)                                                                              \
  template void layernorm_forward<T>(T*, T*, T*, const T*, const T*, const T*, int64_t, int64_t, T);        \
  template void layernorm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const T*, int64_t, \
                                      int64_t);                                                             \
  template void rmsnorm_forward<T>(T*, T*, const T*, const T*, int64_t, int64_t, T);                        \
  template void rmsnorm_backward<T>(T*, T*, const T*, const T*, const T*, const T*, int64_t, int64_t);
SY_INSTANTIATE_NORM(float)
SY_INSTANTIATE_NORM(double)
#undef SY_INSTANTIATE_NORM

}  // namespace sy::ops
