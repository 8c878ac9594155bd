#include "models/routers/common.hpp"

#include <algorithm>
#include <numeric>

#include "core/ops/softmax.hpp"

namespace sy::moe::detail {

template <typename T>
void softmax_rows(const T* logits, int64_t rows, int cols, T* probs) {
  if (rows == 0) return;  // the op insists on a non-empty matrix; an empty batch is fine here
  ops::softmax_forward(probs, logits, rows, int64_t(cols));
}

template <typename T>
void softmax_rows_backward(const T* probs, const T* dprobs, int64_t rows, int cols, T* dlogits) {
  if (rows == 0) return;
  ops::softmax_backward(dlogits, probs, dprobs, rows, int64_t(cols));
}

template <typename K>
void top_k(const K* key, int n, int k, int* idx, int* chosen) {
  std::iota(idx, idx + n, 0);
  std::partial_sort(idx, idx + k, idx + n,
                    [key](int a, int b) { return key[a] > key[b] || (key[a] == key[b] && a < b); });
  std::copy(idx, idx + k, chosen);
}

template <typename T>
void size_output(RouterOutput<T>& out, int64_t num_tokens, int num_logits, bool with_probs, int64_t num_slots) {
  out.num_tokens = num_tokens;
  out.num_logits = num_logits;
  out.probs.resize(with_probs ? size_t(num_tokens) * size_t(num_logits) : 0);
  out.token_begin.resize(size_t(num_tokens) + 1);
  out.token_begin[0] = 0;
  out.expert.resize(size_t(num_slots));
  out.weight.resize(size_t(num_slots));
  out.score.resize(size_t(num_slots));
}

template <typename T>
void weight_backward_rows(const RouterOutput<T>& out, const T* dweight, int num_real, bool renormalized, T* dprobs) {
  const int L = out.num_logits;
  for (int64_t t = 0; t < out.num_tokens; ++t) {
    const int64_t begin = out.token_begin[t], end = out.token_begin[t + 1];
    T* dp = dprobs + t * L;
    if (!renormalized) {
      for (int64_t s = begin; s < end; ++s)
        if (out.expert[s] < num_real) dp[out.expert[s]] += dweight[s];
      continue;
    }
    const T* p = out.probs.data() + t * L;
    T sum = 0, dot = 0;
    for (int64_t s = begin; s < end; ++s)
      if (out.expert[s] < num_real) {
        sum += p[out.expert[s]];
        dot += dweight[s] * out.weight[s];
      }
    for (int64_t s = begin; s < end; ++s)
      if (out.expert[s] < num_real) dp[out.expert[s]] += (dweight[s] - dot) / sum;
  }
}

#define SY_ROUTER_COMMON_INSTANTIATE(T)                                                      \
  template void softmax_rows<T>(const T*, int64_t, int, T*);                                 \
  template void softmax_rows_backward<T>(const T*, const T*, int64_t, int, T*);              \
  template void top_k<T>(const T*, int, int, int*, int*);                                    \
  template void size_output<T>(RouterOutput<T>&, int64_t, int, bool, int64_t);               \
  template void weight_backward_rows<T>(const RouterOutput<T>&, const T*, int, bool, T*);
SY_ROUTER_COMMON_INSTANTIATE(float)
SY_ROUTER_COMMON_INSTANTIATE(double)
#undef SY_ROUTER_COMMON_INSTANTIATE

}  // namespace sy::moe::detail
