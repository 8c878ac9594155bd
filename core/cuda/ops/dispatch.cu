#include "core/cuda/ops/dispatch.hpp"

#include <cub/cub.cuh>

#include <algorithm>
#include <climits>

#include "core/cuda/checks.hpp"
#include "core/cuda/launch.hpp"
#include "core/cuda/ops/dispatch_plan.hpp"
#include "core/error.hpp"

namespace sy::cuda::ops {

namespace {

namespace pd = plan_detail;

#define SY_GRID_STRIDE(i, n) \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

// ---------------------------------------------------------------------------
// Plan kernels.

__global__ void plan_keys_kernel(const int32_t* expert, const float* score, int64_t S, int E, bool by_score,
                                 uint64_t* keys, int32_t* slots, int32_t* slot_row) {
  SY_GRID_STRIDE(s, S) {
    keys[s] = pd::slot_key(expert[s], by_score ? score[s] : 0.0f, E, by_score);
    slots[s] = static_cast<int32_t>(s);
    slot_row[s] = -1;
  }
}

// One block: segment starts by binary search, then the counts (E serial steps
// on one thread; E is small).
constexpr int kCountThreads = 256;
__global__ void plan_counts_kernel(const uint64_t* keys, int64_t S, int E, int64_t capacity, int32_t* begin,
                                   int32_t* routed, int32_t* kept, int32_t* offset) {
  for (int e = threadIdx.x; e <= E; e += blockDim.x) begin[e] = static_cast<int32_t>(pd::expert_begin(keys, S, e));
  __syncthreads();
  if (threadIdx.x == 0) pd::counts(begin, E, capacity, routed, kept, offset);
}

__global__ void plan_position_kernel(const uint64_t* keys, const int32_t* slots, int64_t S, int E,
                                     const int32_t* begin, const int32_t* kept, const int32_t* offset,
                                     int32_t* slot_row) {
  SY_GRID_STRIDE(i, S) { pd::assign_position(i, keys, slots, begin, kept, offset, E, slot_row); }
}

__global__ void plan_kept_kernel(const uint64_t* keys, const int32_t* slots, int64_t S, int E, const int32_t* begin,
                                 const int32_t* kept, uint64_t* keys2, int32_t* slots2) {
  SY_GRID_STRIDE(i, S) {
    const int32_t s = slots[i];
    keys2[s] = pd::kept_key(i, keys, begin, kept, E);
    slots2[s] = s;
  }
}

__global__ void plan_score_rows_kernel(const int32_t* slots2, int64_t S, const int32_t* offset, int E,
                                       int32_t* slot_row) {
  const int64_t rows = offset[E];
  SY_GRID_STRIDE(i, S) {
    if (i < rows) slot_row[slots2[i]] = static_cast<int32_t>(i);
  }
}

// ---------------------------------------------------------------------------
// Row kernels: one block per slot (dispatch) or per token (the others), the
// block's threads striding over the M columns.

template <typename T>
__global__ void dispatch_forward_kernel(const T* x, const int32_t* slot_row, int64_t S, int K, int64_t M,
                                        T* packed) {
  for (int64_t s = blockIdx.x; s < S; s += gridDim.x) {
    const int32_t r = slot_row[s];
    if (r < 0) continue;
    const T* src = x + (s / K) * M;
    T* dst = packed + int64_t(r) * M;
    for (int64_t j = threadIdx.x; j < M; j += blockDim.x) dst[j] = src[j];
  }
}

// rows_out[t] (= or +=) sum over slots j (in order) of scale_j * rows_in[slot_row[t, j]].
// dispatch_backward: scale = 1 (weight null); combine_forward: scale = weight.
template <typename T>
__global__ void gather_sum_kernel(const T* rows_in, const float* weight, const int32_t* slot_row, int64_t T_, int K,
                                  int64_t M, bool accumulate, T* rows_out) {
  for (int64_t t = blockIdx.x; t < T_; t += gridDim.x) {
    const int32_t* rt = slot_row + t * K;
    const float* wt = weight ? weight + t * K : nullptr;
    T* o = rows_out + t * M;
    for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
      float acc = accumulate ? to_float(o[j]) : 0.0f;
      for (int k = 0; k < K; ++k) {
        const int32_t r = rt[k];
        if (r < 0) continue;
        const float v = to_float(rows_in[int64_t(r) * M + j]);
        acc += wt ? wt[k] * v : v;
      }
      o[j] = from_float<T>(acc);
    }
  }
}

// Sum over the block in a fixed order (warp shuffles, then the warp sums in
// warp order); the result is valid on thread 0. shared: one float per warp.
__device__ float block_sum(float v, float* shared) {
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int warps = blockDim.x / kWarp;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float total = 0.0f;
  if (warp == 0) {
    total = lane < warps ? shared[lane] : 0.0f;
    for (int o = kWarp / 2; o > 0; o /= 2) total += __shfl_xor_sync(0xffffffffu, total, o);
  }
  __syncthreads();  // shared is reused by the next call
  return total;
}

template <typename T>
__global__ void combine_backward_kernel(const T* dout, const T* y, const float* weight, const int32_t* slot_row,
                                        int64_t T_, int K, int64_t M, T* dy, float* dweight) {
  extern __shared__ float warp_sums[];
  for (int64_t t = blockIdx.x; t < T_; t += gridDim.x) {
    const T* g = dout + t * M;
    for (int k = 0; k < K; ++k) {
      const int64_t s = t * K + k;
      const int32_t r = slot_row[s];
      if (r < 0) {  // block-uniform
        if (threadIdx.x == 0) dweight[s] = 0.0f;
        continue;
      }
      const float w = weight[s];
      const T* yr = y + int64_t(r) * M;
      T* dyr = dy + int64_t(r) * M;
      float dot = 0.0f;
      for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
        const float gj = to_float(g[j]);
        dot += gj * to_float(yr[j]);
        dyr[j] = from_float<T>(w * gj);
      }
      dot = block_sum(dot, warp_sums);
      if (threadIdx.x == 0) dweight[s] = dot;
    }
  }
}

#undef SY_GRID_STRIDE

void check_rows(const char* fn, int64_t T, int K, int64_t M) {
  SY_REQUIRE(T >= 0 && K >= 1 && M >= 1,
             fn << ": need num_tokens >= 0, slots_per_token >= 1 and model_dim >= 1, got " << T << ", " << K << ", "
                << M);
  SY_REQUIRE(T * K <= INT_MAX, fn << ": " << T * K << " slots exceed 2^31 - 1");
}

int plan_end_bit(int E) { return 32 + key_bits(E); }

size_t plan_cub_bytes(int64_t S, int E) {
  // The widest sort (the score policy's pass 1); query the narrower too in case
  // cub's storage depends on the bit range.
  size_t wide = 0, narrow = 0;
  const int n = static_cast<int>(S);
  SY_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, wide, static_cast<const uint64_t*>(nullptr),
                                                static_cast<uint64_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                                static_cast<int32_t*>(nullptr), n, 0, plan_end_bit(E)));
  SY_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, narrow, static_cast<const uint64_t*>(nullptr),
                                                static_cast<uint64_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                                static_cast<int32_t*>(nullptr), n, 32, plan_end_bit(E)));
  return std::max(wide, narrow);
}

}  // namespace

size_t dispatch_plan_scratch_bytes(int64_t num_slots, int num_experts) {
  SY_REQUIRE(num_slots >= 0 && num_slots <= INT_MAX && num_experts >= 1,
             "dispatch_plan_scratch_bytes: need 0 <= num_slots < 2^31 and num_experts >= 1, got "
                 << num_slots << " and " << num_experts);
  const size_t cub_bytes = num_slots > 0 ? plan_cub_bytes(num_slots, num_experts) : 0;
  return dispatch_plan_layout(num_slots, num_experts, cub_bytes).total;
}

void dispatch_plan(const int32_t* expert, const float* score, int64_t num_tokens, int slots_per_token,
                   int num_experts, int64_t capacity, DropPolicy policy, int32_t* slot_row,
                   int32_t* routed_per_expert, int32_t* tokens_per_expert, int32_t* expert_offset, void* scratch,
                   size_t scratch_bytes, cudaStream_t stream) {
  SY_REQUIRE(num_tokens >= 0 && slots_per_token >= 1 && num_experts >= 1,
             "dispatch_plan: need num_tokens >= 0, slots_per_token >= 1 and num_experts >= 1, got "
                 << num_tokens << ", " << slots_per_token << ", " << num_experts);
  const int64_t S = num_tokens * slots_per_token;
  const int E = num_experts;
  SY_REQUIRE(S <= INT_MAX, "dispatch_plan: " << S << " slots exceed 2^31 - 1");
  SY_REQUIRE(routed_per_expert && tokens_per_expert && expert_offset,
             "dispatch_plan: routed_per_expert, tokens_per_expert and expert_offset must be non-null");
  const bool by_score = policy == DropPolicy::Score && capacity >= 0 && capacity < S;
  SY_REQUIRE(S == 0 || (expert && slot_row), "dispatch_plan: expert and slot_row must be non-null");
  SY_REQUIRE(!by_score || score != nullptr, "dispatch_plan: the score drop policy needs the scores");
  const size_t cub_bytes = S > 0 ? plan_cub_bytes(S, E) : 0;
  const DispatchPlanLayout l = dispatch_plan_layout(S, E, cub_bytes);
  SY_REQUIRE(scratch != nullptr && scratch_bytes >= l.total,
             "dispatch_plan: scratch of " << scratch_bytes << " bytes at " << scratch << "; dispatch_plan_scratch_bytes("
                                          << S << ", " << E << ") = " << l.total);
  char* base = static_cast<char*>(scratch);
  auto* keys_in = reinterpret_cast<uint64_t*>(base + l.sort.keys_in);
  auto* keys_out = reinterpret_cast<uint64_t*>(base + l.sort.keys_out);
  auto* slots_in = reinterpret_cast<int32_t*>(base + l.sort.values_in);
  auto* slots_out = reinterpret_cast<int32_t*>(base + l.sort.values_out);
  void* temp = base + l.sort.temp;
  auto* begin = reinterpret_cast<int32_t*>(base + l.begin);
  const int n = static_cast<int>(S);

  const Launch all = launch_elementwise(S);
  if (S > 0) {
    plan_keys_kernel<<<static_cast<unsigned>(all.blocks), all.threads, 0, stream>>>(expert, score, S, E, by_score,
                                                                                   keys_in, slots_in, slot_row);
    SY_CUDA_CHECK(cudaGetLastError());
    size_t temp_bytes = cub_bytes;
    SY_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys_in, keys_out, slots_in, slots_out, n,
                                                  by_score ? 0 : 32, plan_end_bit(E), stream));
  }
  // With no slot the counts still come out (all zero).
  plan_counts_kernel<<<1, kCountThreads, 0, stream>>>(keys_out, S, E, capacity, begin, routed_per_expert,
                                                       tokens_per_expert, expert_offset);
  SY_CUDA_CHECK(cudaGetLastError());
  if (S == 0) return;
  if (!by_score) {
    plan_position_kernel<<<static_cast<unsigned>(all.blocks), all.threads, 0, stream>>>(
        keys_out, slots_out, S, E, begin, tokens_per_expert, expert_offset, slot_row);
    SY_CUDA_CHECK(cudaGetLastError());
    return;
  }
  // Pass 2 sorts into the pass 1 inputs' buffers back to the outputs'.
  plan_kept_kernel<<<static_cast<unsigned>(all.blocks), all.threads, 0, stream>>>(keys_out, slots_out, S, E, begin,
                                                                                 tokens_per_expert, keys_in, slots_in);
  SY_CUDA_CHECK(cudaGetLastError());
  size_t temp_bytes = cub_bytes;
  SY_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys_in, keys_out, slots_in, slots_out, n, 32,
                                                plan_end_bit(E), stream));
  plan_score_rows_kernel<<<static_cast<unsigned>(all.blocks), all.threads, 0, stream>>>(slots_out, S, expert_offset,
                                                                                       E, slot_row);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void dispatch_forward(const T* x, const int32_t* slot_row, int64_t num_tokens, int slots_per_token, int64_t model_dim,
                      T* packed, cudaStream_t stream) {
  check_rows("dispatch_forward", num_tokens, slots_per_token, model_dim);
  if (num_tokens == 0) return;
  SY_REQUIRE(x && slot_row && packed, "dispatch_forward: x, slot_row and packed must be non-null");
  const int64_t S = num_tokens * slots_per_token;
  const Launch l = launch_rows(S, model_dim);
  dispatch_forward_kernel<T><<<static_cast<unsigned>(l.blocks), l.threads, 0, stream>>>(x, slot_row, S,
                                                                                        slots_per_token, model_dim,
                                                                                        packed);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void dispatch_backward(const T* dpacked, const int32_t* slot_row, int64_t num_tokens, int slots_per_token,
                       int64_t model_dim, bool accumulate, T* dx, cudaStream_t stream) {
  check_rows("dispatch_backward", num_tokens, slots_per_token, model_dim);
  if (num_tokens == 0) return;
  SY_REQUIRE(dpacked && slot_row && dx, "dispatch_backward: dpacked, slot_row and dx must be non-null");
  const Launch l = launch_rows(num_tokens, model_dim);
  gather_sum_kernel<T><<<static_cast<unsigned>(l.blocks), l.threads, 0, stream>>>(
      dpacked, nullptr, slot_row, num_tokens, slots_per_token, model_dim, accumulate, dx);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void combine_forward(const T* y, const float* weight, const int32_t* slot_row, int64_t num_tokens,
                     int slots_per_token, int64_t model_dim, bool accumulate, T* out, cudaStream_t stream) {
  check_rows("combine_forward", num_tokens, slots_per_token, model_dim);
  if (num_tokens == 0) return;
  SY_REQUIRE(y && weight && slot_row && out, "combine_forward: y, weight, slot_row and out must be non-null");
  const Launch l = launch_rows(num_tokens, model_dim);
  gather_sum_kernel<T><<<static_cast<unsigned>(l.blocks), l.threads, 0, stream>>>(
      y, weight, slot_row, num_tokens, slots_per_token, model_dim, accumulate, out);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void combine_backward(const T* dout, const T* y, const float* weight, const int32_t* slot_row, int64_t num_tokens,
                      int slots_per_token, int64_t model_dim, T* dy, float* dweight, cudaStream_t stream) {
  check_rows("combine_backward", num_tokens, slots_per_token, model_dim);
  if (num_tokens == 0) return;
  SY_REQUIRE(dout && y && weight && slot_row && dy && dweight,
             "combine_backward: dout, y, weight, slot_row, dy and dweight must be non-null");
  const Launch l = launch_rows(num_tokens, model_dim);
  combine_backward_kernel<T><<<static_cast<unsigned>(l.blocks), l.threads, l.shared_bytes, stream>>>(
      dout, y, weight, slot_row, num_tokens, slots_per_token, model_dim, dy, dweight);
  SY_CUDA_CHECK(cudaGetLastError());
}

#define SY_DISPATCH_INSTANTIATE(T)                                                                             \
  template void dispatch_forward<T>(const T*, const int32_t*, int64_t, int, int64_t, T*, cudaStream_t);       \
  template void dispatch_backward<T>(const T*, const int32_t*, int64_t, int, int64_t, bool, T*, cudaStream_t); \
  template void combine_forward<T>(const T*, const float*, const int32_t*, int64_t, int, int64_t, bool, T*,    \
                                   cudaStream_t);                                                              \
  template void combine_backward<T>(const T*, const T*, const float*, const int32_t*, int64_t, int, int64_t, T*, \
                                    float*, cudaStream_t);
SY_CUDA_FOR_EACH_STORAGE(SY_DISPATCH_INSTANTIATE)
#undef SY_DISPATCH_INSTANTIATE

}  // namespace sy::cuda::ops
