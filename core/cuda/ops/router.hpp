// Routers on the GPU: the CUDA versions of models/routers/*.cpp (topk, switch,
// topp, null_experts, sigmoid_bias, hash, expert_choice) and their backward.
// The CPU routers are the specification: on the same probabilities these make
// the same decisions with the same tie-breaking (the per-token routines below
// are SY_HD, and the CPU tests run them against the CPU routers).
//
// Layout of the router output on the device. The CPU RouterOutput is CSR; a GPU
// wants fixed shapes, so a router writes K slots per token:
//   probs  (T, L)  float  softmax (sigmoid for sigmoid_bias) of the logits
//   expert (T, K)  int32  chosen expert of each slot, in the CPU slot order;
//                         -1 marks an unused slot (topp when a token needs fewer
//                         than K experts, expert_choice for the experts that did
//                         not take the token). Used slots come first.
//                         Null experts keep their id in [E, E + m), as on the CPU
//                         (the balancing loss counts them); they are not dispatched.
//   weight (T, K)  float  combine weight (0 on unused and null slots)
//   score  (T, K)  float  drop-by-score priority (0 on unused slots)
// K = top_k (topk, null_experts, sigmoid_bias), 1 (switch, hash), max_k (topp),
// E (expert_choice). The CPU slot s of token t is the j-th used slot of row t.
// Everything downstream (dispatch plan, combine, weight backward) skips slots
// whose expert is not in [0, E).
//
// Backward, split as in models/router.hpp:
//   weight_backward_rows:  dweight (T, K) -> dprobs (T, L)   (+=)
//   topp_aux_loss:         entropy loss -> dprobs (T, L)      (+=)
//   softmax_rows_backward / sigmoid_backward: dprobs -> dlogits (T, L) (overwritten)
//
// Kernels: one thread per token runs the SY_HD routine of its router (E is
// small, a few hundred at most; the selection is O(k E) per token, no scratch).
// Only expert_choice selects across tokens; it sorts with cub and needs scratch
// (expert_choice_scratch_bytes). Nothing here allocates or synchronizes, and
// every result is deterministic (no atomics).
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/cuda/storage.hpp"

namespace sy::cuda::ops {

// ---------------------------------------------------------------------------
// Per-token routines, shared by the kernels and the CPU tests.
namespace router_detail {

// probs (n) = softmax of x (n), in the CPU op's order (core/ops/softmax.cpp):
// running max, sum of exp(x - max) left to right, then multiply by 1 / sum.
SY_HD inline void softmax_row(const float* x, int n, float* p) {
  float m = x[0];
  for (int v = 1; v < n; ++v) m = m < x[v] ? x[v] : m;  // std::max(m, x[v])
  float sum = 0.0f;
  for (int v = 0; v < n; ++v) {
    p[v] = expf(x[v] - m);
    sum += p[v];
  }
  const float inv = 1.0f / sum;
  for (int v = 0; v < n; ++v) p[v] *= inv;
}

// dx (n) = p * (dp - sum_v p_v dp_v); dx may alias dp.
SY_HD inline void softmax_backward_row(const float* p, const float* dp, int n, float* dx) {
  float dot = 0.0f;
  for (int v = 0; v < n; ++v) dot += p[v] * dp[v];
  for (int v = 0; v < n; ++v) dx[v] = p[v] * (dp[v] - dot);
}

// The next index in the order (key descending, index ascending) after `prev`
// (-1: the first), over key(0 .. n-1); -1 when none is left. Repeated, this
// is the CPU top_k (models/routers/common.cpp: partial_sort with ties to the
// lower index), one pick per O(n) pass with no scratch.
template <typename KeyFn>
SY_HD inline int select_next(const KeyFn& key, int n, int prev) {
  using K = decltype(key(0));
  K prev_key = prev >= 0 ? key(prev) : K(0);
  int best = -1;
  K best_key = K(0);
  for (int i = 0; i < n; ++i) {
    const K v = key(i);
    if (prev >= 0 && !(v < prev_key || (v == prev_key && i > prev))) continue;  // not after prev
    if (best < 0 || v > best_key) {  // strict: a tie keeps the lower index
      best = i;
      best_key = v;
    }
  }
  return best;
}

// chosen (k) = the k largest keys, decreasing, ties to the lower index. Keys
// that compare with nothing (NaN) can end the selection early: the remaining
// slots are -1, which every caller treats as unused (never an index).
template <typename KeyFn>
SY_HD inline void select_top_k(const KeyFn& key, int n, int k, int32_t* chosen) {
  int prev = -1;
  bool done = false;
  for (int j = 0; j < k; ++j) {
    const int e = done ? -1 : select_next(key, n, prev);
    done = e < 0;
    chosen[j] = prev = e;
  }
}

struct ProbKey {
  const float* p;
  SY_HD float operator()(int i) const { return p[i]; }
};

// topk (and switch: k = 1, normalize = false): p (E) -> k slots.
SY_HD inline void topk_token(const float* p, int E, int k, bool normalize, int32_t* expert, float* weight,
                             float* score) {
  select_top_k(ProbKey{p}, E, k, expert);
  float sum = 0.0f;
  for (int j = 0; j < k; ++j) sum += expert[j] >= 0 ? p[expert[j]] : 0.0f;
  for (int j = 0; j < k; ++j) {
    const float pe = expert[j] >= 0 ? p[expert[j]] : 0.0f;
    weight[j] = normalize ? pe / sum : pe;
    score[j] = pe;
  }
}

// topp: experts in decreasing p up to and including the one whose cumulative
// sum (in double, as on the CPU) first reaches top_p, at most max_k of them.
// Writes max_k slots (the unused ones expert -1, weight = score = 0) and
// returns the number used.
SY_HD inline int topp_token(const float* p, int E, double top_p, int max_k, int32_t* expert, float* weight,
                            float* score) {
  int used = 0, prev = -1;
  double cumulative = 0.0;
  while (used < max_k) {
    const int e = select_next(ProbKey{p}, E, prev);
    if (e < 0) break;
    expert[used] = e;
    weight[used] = p[e];
    score[used] = p[e];
    ++used;
    prev = e;
    cumulative += double(p[e]);
    if (cumulative >= top_p) break;
  }
  for (int j = used; j < max_k; ++j) {
    expert[j] = -1;
    weight[j] = 0.0f;
    score[j] = 0.0f;
  }
  return used;
}

// null_experts: top k of the L = E + m probabilities; null slots (id >= E)
// keep their id with weight 0; a real slot's weight is p / (sum of the
// chosen real p) when normalize, else p; score = p for every slot.
SY_HD inline void null_experts_token(const float* p, int E, int L, int k, bool normalize, int32_t* expert,
                                     float* weight, float* score) {
  select_top_k(ProbKey{p}, L, k, expert);
  float real_sum = 0.0f;
  for (int j = 0; j < k; ++j)
    if (expert[j] >= 0 && expert[j] < E) real_sum += p[expert[j]];
  for (int j = 0; j < k; ++j) {
    const int e = expert[j];
    weight[j] = e < 0 || e >= E ? 0.0f : normalize ? p[e] / real_sum : p[e];
    score[j] = e < 0 ? 0.0f : p[e];
  }
}

SY_HD inline float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

struct BiasedKey {
  const float* s;
  const double* bias;  // (E) or null (zero bias)
  SY_HD double operator()(int i) const { return double(s[i]) + (bias ? bias[i] : 0.0); }
};

// sigmoid_bias: s (E) = sigmoid(x); the k largest s + bias (in double, as the
// CPU router), weight = s / (sum of the chosen s) when normalize, else s; score = s.
SY_HD inline void sigmoid_bias_token(const float* x, const double* bias, int E, int k, bool normalize, float* s,
                                     int32_t* expert, float* weight, float* score) {
  for (int e = 0; e < E; ++e) s[e] = sigmoid(x[e]);
  select_top_k(BiasedKey{s, bias}, E, k, expert);
  float sum = 0.0f;
  for (int j = 0; j < k; ++j) sum += expert[j] >= 0 ? s[expert[j]] : 0.0f;
  for (int j = 0; j < k; ++j) {
    const float se = expert[j] >= 0 ? s[expert[j]] : 0.0f;
    weight[j] = normalize ? se / sum : se;
    score[j] = se;
  }
}

// hash: splitmix64 (core/rng.hpp) of the id's 32-bit pattern, mod E.
SY_HD inline int32_t hash_expert(int32_t token_id, int E) {
  uint64_t x = static_cast<uint64_t>(static_cast<uint32_t>(token_id));
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  x ^= x >> 31;
  return static_cast<int32_t>(x % static_cast<uint64_t>(E));
}

// Sort key that orders (expert ascending, value descending) as an unsigned
// integer: the expert in the high 32 bits, the complement of the float's
// order-preserving bits below (-0 counts as +0, so equal floats get equal keys).
SY_HD inline uint32_t descending_bits(float v) {
  uint32_t b;
  memcpy(&b, &v, sizeof b);
  if (b == 0x80000000u) b = 0;                       // -0 == +0
  const uint32_t ordered = (b & 0x80000000u) ? ~b : (b | 0x80000000u);  // ascending with v
  return ~ordered;
}
SY_HD inline uint64_t expert_value_key(int expert, float value) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(expert)) << 32) | descending_bits(value);
}

// expert_choice, one token's slots from row_of (E, T): the packed row of the
// pair (e, t) when expert e took token t, else -1. Slots in expert order (as
// the CPU router), E of them: expert, weight = score = p[t, e], slot_row (the
// plan: row in the (E, C) buffer); the unused ones expert -1, row -1, 0.
SY_HD inline void expert_choice_token(const int32_t* row_of, const float* p, int64_t t, int64_t T, int E,
                                      int32_t* expert, float* weight, float* score, int32_t* slot_row) {
  int used = 0;
  for (int e = 0; e < E; ++e) {
    const int32_t r = row_of[int64_t(e) * T + t];
    if (r < 0) continue;
    expert[used] = e;
    weight[used] = p[e];
    score[used] = p[e];
    slot_row[used] = r;
    ++used;
  }
  for (int j = used; j < E; ++j) {
    expert[j] = -1;
    weight[j] = 0.0f;
    score[j] = 0.0f;
    slot_row[j] = -1;
  }
}

// One token's combine-weight backward (models/routers/common.cpp), over the
// slots with 0 <= expert < num_real:
//   raw:          dp_j += dw_j
//   renormalized: dp_j += (dw_j - sum_R dw_i w_i) / S,  S = sum_R p_i
SY_HD inline void weight_backward_token(const float* p, const int32_t* expert, const float* weight,
                                        const float* dweight, int K, int num_real, bool renormalized, float* dp) {
  if (!renormalized) {
    for (int j = 0; j < K; ++j)
      if (expert[j] >= 0 && expert[j] < num_real) dp[expert[j]] += dweight[j];
    return;
  }
  float sum = 0.0f, dot = 0.0f;
  for (int j = 0; j < K; ++j)
    if (expert[j] >= 0 && expert[j] < num_real) {
      sum += p[expert[j]];
      dot += dweight[j] * weight[j];
    }
  for (int j = 0; j < K; ++j)
    if (expert[j] >= 0 && expert[j] < num_real) dp[expert[j]] += (dweight[j] - dot) / sum;
}

}  // namespace router_detail

// ---------------------------------------------------------------------------
// Forward. logits (T, L) float; probs (T, L); expert/weight/score (T, K) as in
// the header comment. T = num_tokens may be 0 (nothing is launched).

// topk: p = softmax over E; k = top_k slots in decreasing p (ties to the lower
// id); weight = p or p / (sum of the k chosen p) when normalize; score = p.
void topk_route(const float* logits,  // (T, E)
                int64_t num_tokens, int num_experts, int top_k, bool normalize,
                float* probs,    // (T, E)
                int32_t* expert,  // (T, k)
                float* weight,    // (T, k)
                float* score,     // (T, k)
                cudaStream_t stream);

// switch: top-1 of the softmax, weight = score = p (raw whatever the config says).
void switch_route(const float* logits,  // (T, E)
                  int64_t num_tokens, int num_experts,
                  float* probs,     // (T, E)
                  int32_t* expert,  // (T, 1)
                  float* weight,    // (T, 1)
                  float* score,     // (T, 1)
                  cudaStream_t stream);

// topp: the shortest prefix of the experts in decreasing p whose sum reaches
// top_p (the crossing expert included), capped at max_k slots (max_k = E
// gives exactly the CPU router); weight = score = p (raw).
void topp_route(const float* logits,  // (T, E)
                int64_t num_tokens, int num_experts, double top_p, int max_k,
                float* probs,     // (T, E)
                int32_t* expert,  // (T, max_k), -1 past the token's used slots
                float* weight,    // (T, max_k)
                float* score,     // (T, max_k)
                cudaStream_t stream);

// null_experts: L = E + num_null logits; top_k of the L probabilities; null
// slots keep their id (>= E) with weight 0; real weights p / (sum of the
// chosen real p) when normalize, else p; score = p.
void null_experts_route(const float* logits,  // (T, E + num_null)
                        int64_t num_tokens, int num_experts, int num_null, int top_k, bool normalize,
                        float* probs,     // (T, E + num_null)
                        int32_t* expert,  // (T, k)
                        float* weight,    // (T, k)
                        float* score,     // (T, k)
                        cudaStream_t stream);

// sigmoid_bias: s = sigmoid(logits); the k largest s + bias (compared in
// double; bias may be null = 0); weight = s / (sum of the chosen s) when
// normalize, else s; score = s. probs receives s.
void sigmoid_bias_route(const float* logits,  // (T, E)
                        const double* bias,   // (E) device, or nullptr
                        int64_t num_tokens, int num_experts, int top_k, bool normalize,
                        float* probs,     // (T, E)  s
                        int32_t* expert,  // (T, k)
                        float* weight,    // (T, k)
                        float* score,     // (T, k)
                        cudaStream_t stream);

// hash: expert = splitmix64(uint32(token id)) mod E, weight = score = 1. No probs.
void hash_route(const int32_t* token_ids,  // (T)
                int64_t num_tokens, int num_experts,
                int32_t* expert,  // (T, 1)
                float* weight,    // (T, 1)
                float* score,     // (T, 1)
                cudaStream_t stream);

// expert_choice: p = softmax over E per token; each expert takes the
// C = min(expert_capacity, T) tokens with the largest p[:, e] (ties to the
// lower token). Output in two views:
//   token (E, C), choice_weight (E, C): expert e's tokens in ascending token
//     order, which is exactly the packed dispatch buffer of the CPU layer
//     (row e * C + j; every expert holds C rows, nothing is dropped);
//   expert/weight/score/slot_row (T, E): each token's slots in expert order
//     (unused: expert -1, row -1), slot_row = its row in that buffer, so
//     dispatch_forward / combine_* take it with slots_per_token = E.
// Scratch: expert_choice_scratch_bytes(T, E) bytes of device memory, 256-byte
// aligned: keys and values of a stable radix sort over the E*T (expert, p)
// pairs (24 bytes per pair) plus cub's temporary storage.
int64_t expert_choice_take(int64_t num_tokens, int64_t expert_capacity);  // C
// Queries cub for its temporary storage: needs a CUDA device (launches nothing).
size_t expert_choice_scratch_bytes(int64_t num_tokens, int num_experts);
void expert_choice_route(const float* logits,  // (T, E)
                         int64_t num_tokens, int num_experts, int64_t expert_capacity,
                         float* probs,          // (T, E)
                         int32_t* token,        // (E, C)
                         float* choice_weight,  // (E, C)
                         int32_t* expert,       // (T, E)
                         float* weight,         // (T, E)
                         float* score,          // (T, E)
                         int32_t* slot_row,     // (T, E)
                         void* scratch, size_t scratch_bytes, cudaStream_t stream);

// ---------------------------------------------------------------------------
// Backward.

// dprobs (T, L) += the combine weights' gradient, given dweight (T, K), over
// the slots with 0 <= expert < num_real (num_real = E; null and unused slots
// get nothing). renormalized: topk / null_experts / sigmoid_bias with
// normalize; raw otherwise (switch, topp, expert_choice).
void weight_backward_rows(const float* probs,    // (T, L)
                          const int32_t* expert,  // (T, K)
                          const float* weight,    // (T, K)
                          const float* dweight,   // (T, K)
                          int64_t num_tokens, int num_logits, int slots_per_token, int num_real, bool renormalized,
                          float* dprobs,  // (T, L), +=
                          cudaStream_t stream);

// dlogits = p * (dprobs - sum_j p_j dprobs_j) per row (overwritten; may alias dprobs).
void softmax_rows_backward(const float* probs,   // (rows, cols)
                           const float* dprobs,  // (rows, cols)
                           int64_t rows, int cols,
                           float* dlogits,  // (rows, cols), overwritten
                           cudaStream_t stream);

// sigmoid_bias: dlogits = dprobs * s * (1 - s) (overwritten; may alias dprobs).
void sigmoid_backward(const float* probs,   // (T, E) s
                      const float* dprobs,  // (T, E)
                      int64_t num_tokens, int num_experts,
                      float* dlogits,  // (T, E), overwritten
                      cudaStream_t stream);

// topp's aux loss: entropy_coeff * mean_t H(p_t), H = -sum p log p (p = 0
// adds nothing); dprobs += -(entropy_coeff / T) (log p + 1) where p > 0.
// The CPU returns the loss; here it is written to *loss (device, double),
// summed in a fixed order by one block (deterministic).
void topp_aux_loss(const float* probs,  // (T, E)
                   int64_t num_tokens, int num_experts, double entropy_coeff,
                   float* dprobs,  // (T, E), +=
                   double* loss,   // (1) device scalar, overwritten
                   cudaStream_t stream);

}  // namespace sy::cuda::ops
