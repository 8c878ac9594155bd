// Helpers of the router and dispatch-plan tests (RouterLaunchTest on the CPU,
// RouterCudaTest on a GPU): the CPU routers' CSR output in the device's (T, K)
// layout, configs, logits, and one CPU MoE layer's plan to compare with.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/config.hpp"
#include "models/moe_layer.hpp"
#include "models/router.hpp"
#include "tests/support/test_support.hpp"

namespace sy::test {

// The CPU router's CSR slots in the device layout: K per token, unused -1.
struct Slots {
  int K = 0;
  std::vector<int32_t> expert;
  std::vector<float> weight, score;
};
inline Slots to_slots(const moe::RouterOutput<float>& out, int K) {
  Slots s;
  s.K = K;
  const size_t n = size_t(out.num_tokens) * K;
  s.expert.assign(n, -1);
  s.weight.assign(n, 0.0f);
  s.score.assign(n, 0.0f);
  for (int64_t t = 0; t < out.num_tokens; ++t) {
    const int64_t b = out.token_begin[t], e = out.token_begin[t + 1];
    EXPECT_LE(e - b, K) << "token " << t;
    for (int64_t i = b; i < e && i - b < K; ++i) {
      const size_t at = size_t(t) * K + size_t(i - b);
      s.expert[at] = out.expert[i];
      s.weight[at] = out.weight[i];
      s.score[at] = out.score[i];
    }
  }
  return s;
}

inline MoeConfig router_config(RouterKind kind, int E, int k) {
  MoeConfig c;
  c.router = kind;
  c.num_experts = E;
  c.top_k = k;
  c.num_null_experts = kind == RouterKind::NullExperts ? 3 : 0;
  c.capacity_factor = 1.0;
  c.top_p = 0.7;
  c.entropy_coeff = 0.05;
  return c;
}

// Logits (T, L); coarse ones (multiples of 1/4 in [-1, 1]) give many exact ties.
inline std::vector<float> make_logits(int64_t T, int L, uint64_t seed, bool coarse) {
  std::vector<float> v = random_vector<float>(size_t(T) * L, seed, -2.0, 2.0);
  if (coarse)
    for (float& x : v) x = std::round(x * 2.0f) / 4.0f;
  return v;
}

inline bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// One CPU MoE layer forward: its routing in the device layout, the capacity
// the device plan gets, and the layer's own plan.
struct LayerPlan {
  int64_t T = 0;
  int K = 0, E = 0;
  int64_t capacity = 0;
  Slots slots;
  std::vector<int32_t> slot_row;  // (T, K) the layer's rows, -1 on unused slots
  std::vector<int64_t> routed, kept;
};

// coarse: repeated tokens, so scores tie across tokens.
inline LayerPlan run_layer(RouterKind kind, double factor, DropPolicy policy, bool coarse, int64_t T, int E,
                           double top_p) {
  MoeConfig c = router_config(kind, E, kind == RouterKind::Hash || kind == RouterKind::Switch ? 1 : 2);
  c.capacity_factor = factor;
  c.drop_policy = policy;
  c.hidden_size = 4;
  c.top_p = top_p;
  const int64_t M = 8;
  moe::MoeLayer<float> layer(c, M, T, T, 29);
  std::vector<float> x = make_logits(T, int(M), 41, false), out(T * M);
  if (coarse)
    for (int64_t i = 0; i < T * M; ++i) x[i] = x[(i % M) + M * ((i / M) % 4)];
  std::vector<int32_t> ids(T);
  for (int64_t t = 0; t < T; ++t) ids[t] = int32_t(t * 13 + 1);
  layer.forward(x.data(), ids.data(), T, out.data());
  const auto& routing = layer.routing();
  LayerPlan p;
  p.T = T;
  p.E = c.num_experts;
  p.K = kind == RouterKind::TopP ? c.num_experts : c.top_k;
  p.capacity = factor == 0 ? -1 : layer.capacity_for(T, int64_t(1) << 40);
  p.slots = to_slots(routing, p.K);
  p.slot_row.assign(size_t(T) * p.K, -1);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t s = routing.token_begin[t]; s < routing.token_begin[t + 1]; ++s)
      p.slot_row[t * p.K + (s - routing.token_begin[t])] = int32_t(layer.slot_row()[s]);
  p.routed = layer.stats().routed_per_expert;
  p.kept = layer.stats().tokens_per_expert;
  return p;
}

}  // namespace sy::test
