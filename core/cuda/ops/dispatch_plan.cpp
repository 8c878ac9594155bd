#include "core/cuda/ops/dispatch_plan.hpp"

#include <algorithm>
#include <numeric>

#include "core/error.hpp"

namespace sy::cuda::ops {

void dispatch_plan_reference(const int32_t* expert, const float* score, int64_t num_slots, int num_experts,
                             int64_t capacity, DropPolicy policy, int32_t* slot_row, int32_t* routed_per_expert,
                             int32_t* tokens_per_expert, int32_t* expert_offset) {
  SY_REQUIRE(num_slots >= 0 && num_experts >= 1, "dispatch_plan_reference: need num_slots >= 0 and num_experts >= 1, got "
                                                     << num_slots << " and " << num_experts);
  const int64_t S = num_slots;
  const int E = num_experts;
  const bool by_score = policy == DropPolicy::Score && capacity >= 0 && capacity < S;
  SY_REQUIRE(!by_score || score != nullptr, "dispatch_plan_reference: the score policy needs the scores");
  // Pass 1: keys and slot ids, stably sorted by key (cub's radix sort is stable).
  std::vector<uint64_t> keys(S);
  std::vector<int32_t> slots(S);
  for (int64_t s = 0; s < S; ++s) {
    keys[s] = plan_detail::slot_key(expert[s], by_score ? score[s] : 0.0f, E, by_score);
    slots[s] = static_cast<int32_t>(s);
    slot_row[s] = -1;
  }
  auto stable_sort_pairs = [&](std::vector<uint64_t>& k, std::vector<int32_t>& v) {
    std::vector<int64_t> order(k.size());
    std::iota(order.begin(), order.end(), int64_t(0));
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return k[a] < k[b]; });
    std::vector<uint64_t> k2(k.size());
    std::vector<int32_t> v2(v.size());
    for (size_t i = 0; i < order.size(); ++i) {
      k2[i] = k[order[i]];
      v2[i] = v[order[i]];
    }
    k.swap(k2);
    v.swap(v2);
  };
  stable_sort_pairs(keys, slots);
  std::vector<int32_t> begin(size_t(E) + 1);
  for (int e = 0; e <= E; ++e) begin[e] = static_cast<int32_t>(plan_detail::expert_begin(keys.data(), S, e));
  plan_detail::counts(begin.data(), E, capacity, routed_per_expert, tokens_per_expert, expert_offset);
  if (!by_score) {
    for (int64_t i = 0; i < S; ++i)
      plan_detail::assign_position(i, keys.data(), slots.data(), begin.data(), tokens_per_expert, expert_offset, E,
                                   slot_row);
    return;
  }
  // Pass 2: kept slots by expert, in slot order.
  std::vector<uint64_t> keys2(S);
  std::vector<int32_t> slots2(S);
  for (int64_t i = 0; i < S; ++i) {
    const int32_t s = slots[i];
    keys2[s] = plan_detail::kept_key(i, keys.data(), begin.data(), tokens_per_expert, E);
    slots2[s] = s;
  }
  stable_sort_pairs(keys2, slots2);
  for (int64_t i = 0; i < expert_offset[E]; ++i) slot_row[slots2[i]] = static_cast<int32_t>(i);
}

}  // namespace sy::cuda::ops
