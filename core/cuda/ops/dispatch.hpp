// Dispatch and combine of the MoE layer on the GPU: the plan (each slot's row
// in the packed per-expert buffer, with capacity and drop policy), the gather
// of token rows into that buffer, and the weighted sum back to tokens, with
// their backward. The CPU layer (models/moe_layer.cpp: apply_capacity, and the
// dispatch / combine loops of forward and backward) is the specification.
//
// Slots are the router's (T, K) layout (core/cuda/ops/router.hpp): slot s =
// t * K + j; a slot is real when 0 <= expert < E (unused -1 and null experts
// >= E are never dispatched). slot_row (T, K) int32 is the slot's row in the
// packed buffer or -1 (not dispatched, or dropped over capacity).
//
//   dispatch_forward:  packed[slot_row[t, j]] = x[t]                  (every kept slot)
//   dispatch_backward: dx[t] (= or +=) sum_j dpacked[slot_row[t, j]]  (kept slots, j in order)
//   combine_forward:   out[t] (= or +=) sum_j weight[t, j] y[slot_row[t, j]]
//   combine_backward:  dy[slot_row[t, j]] = weight[t, j] dout[t]      (overwritten)
//                      dweight[t, j] = <dout[t], y[slot_row[t, j]]>   (overwritten; 0 when not dispatched)
// accumulate = false overwrites the token rows (the CPU layer without shared
// experts), true adds to them (with shared experts, or dx after the router's
// part). Rows of the packed buffer past expert_offset[E] are not touched.
// Row data in storage T (float, __nv_bfloat16, __half), computed in float,
// each output rounded once; weights and dweight are float. Each token's sum
// runs over its slots in order in one thread per column: deterministic, no
// atomics. dweight is a fixed-shape block reduction over the columns.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "core/config.hpp"
#include "core/cuda/storage.hpp"

namespace sy::cuda::ops {

// The plan (algorithm in core/cuda/ops/dispatch_plan.hpp). capacity: tokens
// per expert, or < 0 for no limit (dropless: the CPU layer's capacity = the
// largest load keeps every slot, and so does no limit; the capped dropless
// mode gives min(largest load, cap), which keeps the same slots as cap).
// policy Score needs score (T, K); Position ignores it (may be null).
// Outputs: slot_row (T, K); routed_per_expert (E) real slots chosen before
// capacity; tokens_per_expert (E) kept; expert_offset (E + 1) exclusive sum
// of tokens_per_expert (expert_offset[E] = rows in use). All int32 on the
// device: S = T * K must be < 2^31.
// Scratch: dispatch_plan_scratch_bytes(S, E) bytes (two sort buffers of S
// uint64 keys and S int32 values, E + 1 int32, cub's temporary storage);
// the size function asks cub, so it needs a CUDA device (launches nothing).
size_t dispatch_plan_scratch_bytes(int64_t num_slots, int num_experts);
void dispatch_plan(const int32_t* expert,  // (T, K)
                   const float* score,     // (T, K), or null with DropPolicy::Position
                   int64_t num_tokens, int slots_per_token, int num_experts, int64_t capacity, DropPolicy policy,
                   int32_t* slot_row,           // (T, K)
                   int32_t* routed_per_expert,  // (E)
                   int32_t* tokens_per_expert,  // (E)
                   int32_t* expert_offset,      // (E + 1)
                   void* scratch, size_t scratch_bytes, cudaStream_t stream);

template <typename T>
void dispatch_forward(const T* x,               // (T, M)
                      const int32_t* slot_row,  // (T, K)
                      int64_t num_tokens, int slots_per_token, int64_t model_dim,
                      T* packed,  // (rows, M), kept rows overwritten
                      cudaStream_t stream);

template <typename T>
void dispatch_backward(const T* dpacked,          // (rows, M)
                       const int32_t* slot_row,   // (T, K)
                       int64_t num_tokens, int slots_per_token, int64_t model_dim, bool accumulate,
                       T* dx,  // (T, M), overwritten or +=
                       cudaStream_t stream);

template <typename T>
void combine_forward(const T* y,                // (rows, M) expert outputs
                     const float* weight,       // (T, K)
                     const int32_t* slot_row,   // (T, K)
                     int64_t num_tokens, int slots_per_token, int64_t model_dim, bool accumulate,
                     T* out,  // (T, M), overwritten or +=
                     cudaStream_t stream);

template <typename T>
void combine_backward(const T* dout,             // (T, M)
                      const T* y,                // (rows, M) forward expert outputs
                      const float* weight,       // (T, K)
                      const int32_t* slot_row,   // (T, K)
                      int64_t num_tokens, int slots_per_token, int64_t model_dim,
                      T* dy,           // (rows, M), kept rows overwritten
                      float* dweight,  // (T, K), overwritten
                      cudaStream_t stream);

}  // namespace sy::cuda::ops
