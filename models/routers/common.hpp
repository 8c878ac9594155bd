// Pieces the routers share: row softmax and its backward, a deterministic
// top-k, sizing a RouterOutput, and the two combine-weight backward rules.
//
// Gradient rule (as in models/router.hpp): weight backward adds into dprobs
// (+=); the softmax backward overwrites dlogits.
#pragma once

#include <cstdint>

#include "models/router.hpp"

namespace sy::moe::detail {

// probs (rows, cols) = softmax of each row of logits (rows, cols). rows may be 0.
template <typename T>
void softmax_rows(const T* logits,  // (rows, cols)
                  int64_t rows, int cols,
                  T* probs);        // (rows, cols)

// dlogits = p * (dprobs - sum_j p_j dprobs_j), per row (overwritten).
template <typename T>
void softmax_rows_backward(const T* probs,   // (rows, cols), the forward output
                           const T* dprobs,  // (rows, cols)
                           int64_t rows, int cols,
                           T* dlogits);      // (rows, cols), overwritten

// The k largest of key[0, n) in decreasing order, ties to the lower index,
// written to chosen (k). idx (n) is scratch. Requires 1 <= k <= n.
template <typename K>
void top_k(const K* key, int n, int k, int* idx, int* chosen);

// Sizes out for num_tokens tokens, num_logits logits per token and num_slots
// slots (probs get num_tokens * num_logits entries when with_probs, else none).
// Only resizes, so a warmed-up output does not allocate.
template <typename T>
void size_output(RouterOutput<T>& out, int64_t num_tokens, int num_logits, bool with_probs, int64_t num_slots);

// The two combine-weight rules, over the slots whose expert is < num_real
// (the others, null experts, have a constant weight 0 and get no gradient):
//   raw:          w_j = p_j                    -> dp_j += dw_j
//   renormalized: w_j = p_j / S, S = sum_R p_i -> dp_j += (dw_j - sum_R dw_i w_i) / S
// where R is the token's real slots and p = out.probs. dprobs (T, L) +=.
template <typename T>
void weight_backward_rows(const RouterOutput<T>& out, const T* dweight,  // (S)
                          int num_real, bool renormalized,
                          T* dprobs);                                      // (T, L), +=

}  // namespace sy::moe::detail
