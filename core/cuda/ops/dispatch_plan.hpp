// The dispatch plan of the CUDA MoE layer, host side: the steps the plan
// kernels run (SY_HD, so the CPU tests run them), the scratch layout of the
// radix sorts, and a host reference that runs the GPU algorithm step by step
// on the CPU (dispatch_plan_reference), checked against models/moe_layer.cpp.
//
// The plan (core/cuda/ops/dispatch.hpp: dispatch_plan) turns the router's
// (T, K) expert ids into each slot's row in the packed per-expert buffer,
// exactly as MoeLayer::apply_capacity does:
//   - the real slots (0 <= expert < E) are bucketed by expert in slot order
//     (= token order, slots of a token in order);
//   - each expert keeps min(routed, capacity) of them: the first ones
//     (position policy), or the ones with the highest score, ties to the
//     earlier slot (score policy); kept slots keep slot order inside the expert;
//   - rows are expert-major: expert e's kept slots are rows
//     [offset[e], offset[e] + kept[e]), offset = exclusive sum of kept.
// On the GPU: a stable radix sort of (expert, score) keys with slot ids as
// values (pass 1); for the score policy a second stable sort by (kept ?
// expert : E) restores slot order among the kept slots (pass 2); segment
// starts by binary search. No atomics, so the plan is deterministic.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/config.hpp"
#include "core/cuda/ops/router.hpp"
#include "core/cuda/storage.hpp"

namespace sy::cuda::ops {

// Scratch of one stable radix sort of n (uint64 key, int32 value) pairs, carved
// from one device allocation at 256-byte aligned offsets.
struct SortScratchLayout {
  size_t keys_in = 0, keys_out = 0, values_in = 0, values_out = 0, temp = 0;  // byte offsets
  size_t temp_bytes = 0;  // cub's temporary storage
  size_t total = 0;       // bytes in all
};
inline constexpr size_t kScratchAlign = 256;
inline size_t align_scratch(size_t bytes) { return (bytes + kScratchAlign - 1) / kScratchAlign * kScratchAlign; }
inline SortScratchLayout sort_scratch_layout(int64_t n, size_t cub_temp_bytes) {
  SortScratchLayout l;
  const size_t un = static_cast<size_t>(n < 0 ? 0 : n);
  size_t at = 0;
  l.keys_in = at;
  at += align_scratch(un * sizeof(uint64_t));
  l.keys_out = at;
  at += align_scratch(un * sizeof(uint64_t));
  l.values_in = at;
  at += align_scratch(un * sizeof(int32_t));
  l.values_out = at;
  at += align_scratch(un * sizeof(int32_t));
  l.temp = at;
  l.temp_bytes = cub_temp_bytes;
  at += align_scratch(cub_temp_bytes);
  l.total = at;
  return l;
}

// Bits that hold every value in [0, max_value] (at least 1).
inline int key_bits(int64_t max_value) {
  int bits = 1;
  while (bits < 62 && (int64_t(1) << bits) <= max_value) ++bits;
  return bits;
}

// Plan scratch: the sort's, then the segment starts begin (E + 1) int32.
struct DispatchPlanLayout {
  SortScratchLayout sort;
  size_t begin = 0;  // byte offset of begin (E + 1) int32
  size_t total = 0;
};
inline DispatchPlanLayout dispatch_plan_layout(int64_t num_slots, int num_experts, size_t cub_temp_bytes) {
  DispatchPlanLayout l;
  l.sort = sort_scratch_layout(num_slots, cub_temp_bytes);
  l.begin = l.sort.total;
  l.total = l.begin + align_scratch((static_cast<size_t>(num_experts < 0 ? 0 : num_experts) + 1) * sizeof(int32_t));
  return l;
}

namespace plan_detail {

// Pass 1 sort key of a slot: its expert (E for a slot that is not dispatched:
// unused, null) in the high 32 bits; by score also the descending score below.
SY_HD inline uint64_t slot_key(int32_t expert, float score, int E, bool by_score) {
  const int e = (expert >= 0 && expert < E) ? expert : E;
  return by_score ? router_detail::expert_value_key(e, score) : (static_cast<uint64_t>(static_cast<uint32_t>(e)) << 32);
}
SY_HD inline int key_expert(uint64_t key) { return static_cast<int>(key >> 32); }

// First index of sorted keys [0, n) whose expert is >= e.
SY_HD inline int64_t expert_begin(const uint64_t* keys, int64_t n, int e) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (key_expert(keys[mid]) < e) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// From the segment starts begin (E + 1): routed (E), kept (E) = min(routed,
// capacity) (capacity < 0: no limit), offset (E + 1) exclusive sum of kept.
SY_HD inline void counts(const int32_t* begin, int E, int64_t capacity, int32_t* routed, int32_t* kept,
                         int32_t* offset) {
  int32_t row = 0;
  for (int e = 0; e < E; ++e) {
    const int32_t r = begin[e + 1] - begin[e];
    const int32_t k = capacity < 0 || capacity >= r ? r : static_cast<int32_t>(capacity);
    routed[e] = r;
    kept[e] = k;
    offset[e] = row;
    row += k;
  }
  offset[E] = row;
}

// Position policy, sorted entry i (pass 1): its slot's row, if kept.
SY_HD inline void assign_position(int64_t i, const uint64_t* keys, const int32_t* slots, const int32_t* begin,
                                  const int32_t* kept, const int32_t* offset, int E, int32_t* slot_row) {
  const int e = key_expert(keys[i]);
  if (e >= E) return;
  const int64_t j = i - begin[e];
  if (j < kept[e]) slot_row[slots[i]] = static_cast<int32_t>(offset[e] + j);
}

// Score policy, sorted entry i (pass 1, by descending score): the pass 2 key
// of its slot (its expert when among the expert's first kept, else E).
SY_HD inline uint64_t kept_key(int64_t i, const uint64_t* keys, const int32_t* begin, const int32_t* kept, int E) {
  const int e = key_expert(keys[i]);
  const bool keep = e < E && i - begin[e] < kept[e];
  return static_cast<uint64_t>(static_cast<uint32_t>(keep ? e : E)) << 32;
}

}  // namespace plan_detail

// The GPU plan's algorithm run on the host (std::stable_sort for cub's stable
// radix sort, the same step functions): the reference the CPU tests check
// against the CPU layer. expert, score: (S) slots in (T, K) order; score may
// be null for the position policy. Outputs as dispatch_plan.
void dispatch_plan_reference(const int32_t* expert, const float* score, int64_t num_slots, int num_experts,
                             int64_t capacity, DropPolicy policy,
                             int32_t* slot_row,           // (S)
                             int32_t* routed_per_expert,  // (E)
                             int32_t* tokens_per_expert,  // (E)
                             int32_t* expert_offset);     // (E + 1)

}  // namespace sy::cuda::ops
