#include "core/ops/softmax.hpp"

#include <algorithm>
#include <array>
#include <cmath>

#include "core/error.hpp"
#include "core/thread_pool.hpp"

namespace sy::ops {

namespace {

// Work per task in elements; rows per task follow from the row width.
constexpr int64_t kElementsPerTask = 16384;
int64_t row_grain(int64_t width) { return std::max<int64_t>(1, kElementsPerTask / width); }

// The loss sum is split into at most this many fixed blocks of rows, independent of
// the thread count, then the block sums are added in order: deterministic, no heap.
constexpr int64_t kLossBlocks = 64;

void check_sizes(const char* fn, int64_t N, int64_t V) {
  SY_REQUIRE(N > 0 && V > 0, fn << ": sizes must be positive, got N=" << N << " V=" << V);
}

// Validates the targets and returns how many rows are not ignored.
int64_t count_targets(const char* fn, const int32_t* targets, int64_t N, int64_t V) {
  int64_t count = 0;
  for (int64_t n = 0; n < N; ++n) {
    const int32_t t = targets[n];
    if (t == kIgnoreIndex) continue;
    SY_REQUIRE(t >= 0 && t < V, fn << ": target " << t << " at row " << n << " is outside [0, " << V
                                   << ") and is not the ignore index " << kIgnoreIndex);
    ++count;
  }
  return count;
}

// Row max and log(sum exp(x - max)).
template <typename T>
void row_logsumexp(const T* x, int64_t V, T& max_out, T& log_sum_out) {
  T m = x[0];
  for (int64_t v = 1; v < V; ++v) m = std::max(m, x[v]);
  T sum = 0;
  for (int64_t v = 0; v < V; ++v) sum += std::exp(x[v] - m);
  max_out = m;
  log_sum_out = std::log(sum);
}

}  // namespace

template <typename T>
void softmax_forward(T* probs, const T* logits, int64_t N, int64_t V) {
  check_sizes("softmax_forward", N, V);
  SY_REQUIRE(probs != nullptr && logits != nullptr, "softmax_forward: buffers must be non-null");
  compute_pool().parallel_for(N, row_grain(V), [&](int64_t r0, int64_t r1) {
    for (int64_t n = r0; n < r1; ++n) {
      const T* x = logits + n * V;
      T* p = probs + n * V;
      T m = x[0];
      for (int64_t v = 1; v < V; ++v) m = std::max(m, x[v]);
      T sum = 0;
      for (int64_t v = 0; v < V; ++v) {
        p[v] = std::exp(x[v] - m);
        sum += p[v];
      }
      const T inv = T(1) / sum;
      for (int64_t v = 0; v < V; ++v) p[v] *= inv;
    }
  });
}

template <typename T>
void softmax_backward(T* dlogits, const T* probs, const T* dprobs, int64_t N, int64_t V) {
  check_sizes("softmax_backward", N, V);
  SY_REQUIRE(dlogits != nullptr && probs != nullptr && dprobs != nullptr, "softmax_backward: buffers must be non-null");
  compute_pool().parallel_for(N, row_grain(V), [&](int64_t r0, int64_t r1) {
    for (int64_t n = r0; n < r1; ++n) {
      const T* p = probs + n * V;
      const T* dp = dprobs + n * V;
      T* dx = dlogits + n * V;
      T dot = 0;
      for (int64_t v = 0; v < V; ++v) dot += p[v] * dp[v];
      for (int64_t v = 0; v < V; ++v) dx[v] = p[v] * (dp[v] - dot);
    }
  });
}

template <typename T>
T cross_entropy_forward(T* losses, const T* logits, const int32_t* targets, int64_t N, int64_t V) {
  check_sizes("cross_entropy_forward", N, V);
  SY_REQUIRE(logits != nullptr && targets != nullptr, "cross_entropy_forward: logits and targets must be non-null");
  const int64_t count = count_targets("cross_entropy_forward", targets, N, V);
  const int64_t rows_per_block = (N + kLossBlocks - 1) / kLossBlocks;
  const int64_t num_blocks = (N + rows_per_block - 1) / rows_per_block;
  std::array<double, kLossBlocks> block_sum{};
  compute_pool().run(num_blocks, [&](int64_t b) {
    const int64_t r1 = std::min(N, (b + 1) * rows_per_block);
    double sum = 0;
    for (int64_t n = b * rows_per_block; n < r1; ++n) {
      T loss = 0;
      if (targets[n] != kIgnoreIndex) {
        const T* x = logits + n * V;
        T m, log_sum;
        row_logsumexp(x, V, m, log_sum);
        loss = m + log_sum - x[targets[n]];
        sum += double(loss);
      }
      if (losses != nullptr) losses[n] = loss;
    }
    block_sum[b] = sum;
  });
  if (count == 0) return T(0);
  double total = 0;
  for (int64_t b = 0; b < num_blocks; ++b) total += block_sum[b];
  return T(total / double(count));
}

template <typename T>
void cross_entropy_backward(T* dlogits, const T* logits, const int32_t* targets, T dloss, int64_t N, int64_t V) {
  check_sizes("cross_entropy_backward", N, V);
  SY_REQUIRE(dlogits != nullptr && logits != nullptr && targets != nullptr,
             "cross_entropy_backward: buffers must be non-null");
  const int64_t count = count_targets("cross_entropy_backward", targets, N, V);
  const T scale = count > 0 ? dloss / T(count) : T(0);
  compute_pool().parallel_for(N, row_grain(V), [&](int64_t r0, int64_t r1) {
    for (int64_t n = r0; n < r1; ++n) {
      T* dx = dlogits + n * V;
      if (targets[n] == kIgnoreIndex) {
        std::fill(dx, dx + V, T(0));
        continue;
      }
      const T* x = logits + n * V;
      T m, log_sum;
      row_logsumexp(x, V, m, log_sum);
      const T shift = m + log_sum;
      for (int64_t v = 0; v < V; ++v) dx[v] = scale * std::exp(x[v] - shift);
      dx[targets[n]] -= scale;
    }
  });
}

#define SY_INSTANTIATE_SOFTMAX(T)                                                             \
  template void softmax_forward<T>(T*, const T*, int64_t, int64_t);                           \
  template void softmax_backward<T>(T*, const T*, const T*, int64_t, int64_t);                \
  template T cross_entropy_forward<T>(T*, const T*, const int32_t*, int64_t, int64_t);        \
  template void cross_entropy_backward<T>(T*, const T*, const int32_t*, T, int64_t, int64_t);
SY_INSTANTIATE_SOFTMAX(float)
SY_INSTANTIATE_SOFTMAX(double)
#undef SY_INSTANTIATE_SOFTMAX

}  // namespace sy::ops
