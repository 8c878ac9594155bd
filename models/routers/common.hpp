// Shared pieces of the routers: row softmax and its backward, top-k selection.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "models/router.hpp"

namespace sy::moe::detail {

// probs (T, L) = softmax of each row of logits (T, L).
template <typename T>
void softmax_rows(const T* logits, int64_t rows, int cols, T* probs) {
  for (int64_t t = 0; t < rows; ++t) {
    const T* l = logits + t * cols;
    T* p = probs + t * cols;
    const T mx = *std::max_element(l, l + cols);
    T sum = 0;
    for (int i = 0; i < cols; ++i) sum += (p[i] = std::exp(l[i] - mx));
    const T inv = T(1) / sum;
    for (int i = 0; i < cols; ++i) p[i] *= inv;
  }
}

// dlogits = p * (dprobs - sum_j p_j dprobs_j), per row (overwritten).
template <typename T>
void softmax_rows_backward(const T* probs, const T* dprobs, int64_t rows, int cols, T* dlogits) {
  for (int64_t t = 0; t < rows; ++t) {
    const T* p = probs + t * cols;
    const T* dp = dprobs + t * cols;
    T dot = 0;
    for (int i = 0; i < cols; ++i) dot += p[i] * dp[i];
    T* dl = dlogits + t * cols;
    for (int i = 0; i < cols; ++i) dl[i] = p[i] * (dp[i] - dot);
  }
}

// The k largest of key[0..n) (ties: lower index first), written to out in
// decreasing order. idx is scratch of size n.
template <typename T>
void top_k(const T* key, int n, int k, int* idx, int* out) {
  std::iota(idx, idx + n, 0);
  std::partial_sort(idx, idx + k, idx + n, [&](int a, int b) { return key[a] > key[b] || (key[a] == key[b] && a < b); });
  std::copy(idx, idx + k, out);
}

// Resizes the output for num_tokens tokens and L logits; slots are appended.
template <typename T>
void begin_output(RouterOutput<T>& out, int64_t num_tokens, int num_logits, bool with_probs) {
  out.num_tokens = num_tokens;
  out.num_logits = num_logits;
  out.probs.resize(with_probs ? num_tokens * num_logits : 0);
  out.token_begin.resize(num_tokens + 1);
  out.token_begin[0] = 0;
  out.expert.clear();
  out.weight.clear();
  out.score.clear();
}

}  // namespace sy::moe::detail
