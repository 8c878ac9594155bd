#include "core/cuda/ops/router.hpp"

#include <cub/cub.cuh>

#include <algorithm>
#include <climits>

#include "core/cuda/checks.hpp"
#include "core/cuda/launch.hpp"
#include "core/cuda/ops/dispatch_plan.hpp"
#include "core/error.hpp"

namespace sy::cuda::ops {

namespace {

namespace rd = router_detail;

// One thread per token: small blocks so a few thousand tokens still spread
// over every SM.
constexpr int kTokenThreads = 128;

Launch token_launch(int64_t num_tokens) { return launch_elementwise(num_tokens, kTokenThreads); }

#define SY_GRID_STRIDE(i, n) \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

void check_logits_route(const char* fn, const float* logits, int64_t T, int L, const float* probs,
                        const int32_t* expert, const float* weight, const float* score) {
  SY_REQUIRE(T >= 0, fn << ": num_tokens must be >= 0, got " << T);
  SY_REQUIRE(L >= 1, fn << ": needs at least one logit per token, got " << L);
  SY_REQUIRE(T == 0 || (logits && probs && expert && weight && score),
             fn << ": logits, probs, expert, weight and score must be non-null");
}

__global__ void topk_kernel(const float* logits, int64_t T, int E, int k, bool normalize, float* probs,
                            int32_t* expert, float* weight, float* score) {
  SY_GRID_STRIDE(t, T) {
    float* p = probs + t * E;
    rd::softmax_row(logits + t * E, E, p);
    rd::topk_token(p, E, k, normalize, expert + t * k, weight + t * k, score + t * k);
  }
}

__global__ void topp_kernel(const float* logits, int64_t T, int E, double top_p, int max_k, float* probs,
                            int32_t* expert, float* weight, float* score) {
  SY_GRID_STRIDE(t, T) {
    float* p = probs + t * E;
    rd::softmax_row(logits + t * E, E, p);
    rd::topp_token(p, E, top_p, max_k, expert + t * max_k, weight + t * max_k, score + t * max_k);
  }
}

__global__ void null_experts_kernel(const float* logits, int64_t T, int E, int L, int k, bool normalize,
                                    float* probs, int32_t* expert, float* weight, float* score) {
  SY_GRID_STRIDE(t, T) {
    float* p = probs + t * L;
    rd::softmax_row(logits + t * L, L, p);
    rd::null_experts_token(p, E, L, k, normalize, expert + t * k, weight + t * k, score + t * k);
  }
}

__global__ void sigmoid_bias_kernel(const float* logits, const double* bias, int64_t T, int E, int k,
                                    bool normalize, float* probs, int32_t* expert, float* weight, float* score) {
  SY_GRID_STRIDE(t, T) {
    rd::sigmoid_bias_token(logits + t * E, bias, E, k, normalize, probs + t * E, expert + t * k, weight + t * k,
                           score + t * k);
  }
}

__global__ void hash_kernel(const int32_t* token_ids, int64_t T, int E, int32_t* expert, float* weight,
                            float* score) {
  SY_GRID_STRIDE(t, T) {
    expert[t] = rd::hash_expert(token_ids[t], E);
    weight[t] = 1.0f;
    score[t] = 1.0f;
  }
}

__global__ void softmax_kernel(const float* logits, int64_t T, int L, float* probs) {
  SY_GRID_STRIDE(t, T) { rd::softmax_row(logits + t * L, L, probs + t * L); }
}

// expert_choice, pair i = e * T + t: key (e, descending p[t, e]), value t.
__global__ void choice_keys_kernel(const float* probs, int64_t T, int E, uint64_t* keys, int32_t* tokens) {
  SY_GRID_STRIDE(i, T * E) {
    const int64_t e = i / T, t = i - e * T;
    keys[i] = rd::expert_value_key(static_cast<int>(e), probs[t * E + e]);
    tokens[i] = static_cast<int32_t>(t);
  }
}

// After the stable sort, expert e's pairs are [e T, (e + 1) T) by descending
// p, ties by token; the first `take` are its picks: picked (E, T) = 1 / 0.
__global__ void choice_mark_kernel(const int32_t* sorted_tokens, int64_t T, int E, int64_t take, int32_t* picked) {
  SY_GRID_STRIDE(i, T * E) {
    const int64_t e = i / T, j = i - e * T;
    picked[e * T + sorted_tokens[i]] = j < take ? 1 : 0;
  }
}

// prefix = exclusive sum of picked over (E, T): every expert picks exactly
// `take` tokens, so a pick's prefix is e * take + (its rank in token order),
// its row in the (E, C) buffer. picked becomes row_of (row or -1).
__global__ void choice_rows_kernel(const int32_t* prefix, const float* probs, int64_t T, int E, int32_t* row_of,
                                   int32_t* token, float* choice_weight) {
  SY_GRID_STRIDE(i, T * E) {
    if (row_of[i]) {
      const int64_t e = i / T, t = i - e * T;
      const int32_t r = prefix[i];
      token[r] = static_cast<int32_t>(t);
      choice_weight[r] = probs[t * E + e];
      row_of[i] = r;
    } else {
      row_of[i] = -1;
    }
  }
}

__global__ void choice_slots_kernel(const int32_t* row_of, const float* probs, int64_t T, int E, int32_t* expert,
                                    float* weight, float* score, int32_t* slot_row) {
  SY_GRID_STRIDE(t, T) {
    rd::expert_choice_token(row_of, probs + t * E, t, T, E, expert + t * E, weight + t * E, score + t * E,
                            slot_row + t * E);
  }
}

__global__ void weight_backward_kernel(const float* probs, const int32_t* expert, const float* weight,
                                       const float* dweight, int64_t T, int L, int K, int num_real,
                                       bool renormalized, float* dprobs) {
  SY_GRID_STRIDE(t, T) {
    rd::weight_backward_token(probs + t * L, expert + t * K, weight + t * K, dweight + t * K, K, num_real,
                              renormalized, dprobs + t * L);
  }
}

__global__ void softmax_backward_kernel(const float* probs, const float* dprobs, int64_t rows, int cols,
                                        float* dlogits) {
  SY_GRID_STRIDE(r, rows) { rd::softmax_backward_row(probs + r * cols, dprobs + r * cols, cols, dlogits + r * cols); }
}

__global__ void sigmoid_backward_kernel(const float* s, const float* ds, int64_t n, float* dx) {
  SY_GRID_STRIDE(i, n) {
    const float v = s[i];
    dx[i] = ds[i] * v * (1.0f - v);
  }
}

__global__ void entropy_grad_kernel(const float* probs, int64_t n, float scale, float* dprobs) {
  SY_GRID_STRIDE(i, n) {
    const float p = probs[i];
    if (!(p > 0.0f)) continue;
    dprobs[i] -= scale * (logf(p) + 1.0f);
  }
}

// One block: each thread sums a fixed stride of the elements in double, then a
// fixed tree; the order depends only on n, so the loss is deterministic.
constexpr int kEntropyThreads = 1024;
__global__ void entropy_sum_kernel(const float* probs, int64_t n, double scale, double* loss) {
  __shared__ double partial[kEntropyThreads];
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float p = probs[i];
    if (!(p > 0.0f)) continue;
    sum -= double(p) * double(logf(p));
  }
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (int(threadIdx.x) < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) *loss = scale * partial[0];
}

#undef SY_GRID_STRIDE

template <typename Kernel, typename... Args>
void launch_tokens(int64_t T, cudaStream_t stream, Kernel kernel, Args... args) {
  const Launch l = token_launch(T);
  if (l.blocks == 0) return;
  kernel<<<static_cast<unsigned>(l.blocks), l.threads, 0, stream>>>(args...);
  SY_CUDA_CHECK(cudaGetLastError());
}

// expert_choice sort: pairs (e, p) over E * T items, keys' bits [0, 32 + bits(E)).
int choice_end_bit(int E) { return 32 + key_bits(E); }

size_t choice_cub_bytes(int64_t T, int E) {
  const int n = static_cast<int>(T * E);
  size_t sort_bytes = 0, scan_bytes = 0;
  SY_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, static_cast<const uint64_t*>(nullptr),
                                                static_cast<uint64_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                                static_cast<int32_t*>(nullptr), n, 0, choice_end_bit(E)));
  SY_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, scan_bytes, static_cast<const int32_t*>(nullptr),
                                              static_cast<int32_t*>(nullptr), n));
  return std::max(sort_bytes, scan_bytes);
}

void check_choice_sizes(int64_t T, int E) {
  SY_REQUIRE(T >= 0 && E >= 1, "expert_choice_route: need num_tokens >= 0 and num_experts >= 1, got " << T << " and "
                                                                                                        << E);
  SY_REQUIRE(T * E <= INT_MAX, "expert_choice_route: num_tokens * num_experts = " << T * E
                                                                                  << " exceeds the sort's 2^31 - 1 items");
}

}  // namespace

void topk_route(const float* logits, int64_t num_tokens, int num_experts, int top_k, bool normalize, float* probs,
                int32_t* expert, float* weight, float* score, cudaStream_t stream) {
  check_logits_route("topk_route", logits, num_tokens, num_experts, probs, expert, weight, score);
  SY_REQUIRE(top_k >= 1 && top_k <= num_experts,
             "topk_route: top_k = " << top_k << " must be in [1, num_experts = " << num_experts << "]");
  launch_tokens(num_tokens, stream, topk_kernel, logits, num_tokens, num_experts, top_k, normalize, probs, expert,
                weight, score);
}

void switch_route(const float* logits, int64_t num_tokens, int num_experts, float* probs, int32_t* expert,
                  float* weight, float* score, cudaStream_t stream) {
  check_logits_route("switch_route", logits, num_tokens, num_experts, probs, expert, weight, score);
  launch_tokens(num_tokens, stream, topk_kernel, logits, num_tokens, num_experts, 1, false, probs, expert, weight,
                score);
}

void topp_route(const float* logits, int64_t num_tokens, int num_experts, double top_p, int max_k, float* probs,
                int32_t* expert, float* weight, float* score, cudaStream_t stream) {
  check_logits_route("topp_route", logits, num_tokens, num_experts, probs, expert, weight, score);
  SY_REQUIRE(top_p > 0.0 && top_p <= 1.0, "topp_route: top_p = " << top_p << " must be in (0, 1]");
  SY_REQUIRE(max_k >= 1 && max_k <= num_experts,
             "topp_route: max_k = " << max_k << " must be in [1, num_experts = " << num_experts << "]");
  launch_tokens(num_tokens, stream, topp_kernel, logits, num_tokens, num_experts, top_p, max_k, probs, expert,
                weight, score);
}

void null_experts_route(const float* logits, int64_t num_tokens, int num_experts, int num_null, int top_k,
                        bool normalize, float* probs, int32_t* expert, float* weight, float* score,
                        cudaStream_t stream) {
  SY_REQUIRE(num_experts >= 1 && num_null >= 1, "null_experts_route: need num_experts >= 1 and num_null >= 1, got "
                                                    << num_experts << " and " << num_null);
  const int L = num_experts + num_null;
  check_logits_route("null_experts_route", logits, num_tokens, L, probs, expert, weight, score);
  SY_REQUIRE(top_k >= 1 && top_k <= L,
             "null_experts_route: top_k = " << top_k << " must be in [1, num_experts + num_null = " << L << "]");
  launch_tokens(num_tokens, stream, null_experts_kernel, logits, num_tokens, num_experts, L, top_k, normalize, probs,
                expert, weight, score);
}

void sigmoid_bias_route(const float* logits, const double* bias, int64_t num_tokens, int num_experts, int top_k,
                        bool normalize, float* probs, int32_t* expert, float* weight, float* score,
                        cudaStream_t stream) {
  check_logits_route("sigmoid_bias_route", logits, num_tokens, num_experts, probs, expert, weight, score);
  SY_REQUIRE(top_k >= 1 && top_k <= num_experts,
             "sigmoid_bias_route: top_k = " << top_k << " must be in [1, num_experts = " << num_experts << "]");
  launch_tokens(num_tokens, stream, sigmoid_bias_kernel, logits, bias, num_tokens, num_experts, top_k, normalize,
                probs, expert, weight, score);
}

void hash_route(const int32_t* token_ids, int64_t num_tokens, int num_experts, int32_t* expert, float* weight,
                float* score, cudaStream_t stream) {
  SY_REQUIRE(num_tokens >= 0 && num_experts >= 1, "hash_route: need num_tokens >= 0 and num_experts >= 1, got "
                                                      << num_tokens << " and " << num_experts);
  SY_REQUIRE(num_tokens == 0 || (token_ids && expert && weight && score),
             "hash_route: token_ids, expert, weight and score must be non-null");
  launch_tokens(num_tokens, stream, hash_kernel, token_ids, num_tokens, num_experts, expert, weight, score);
}

int64_t expert_choice_take(int64_t num_tokens, int64_t expert_capacity) {
  return std::max<int64_t>(0, std::min(expert_capacity, num_tokens));
}

size_t expert_choice_scratch_bytes(int64_t num_tokens, int num_experts) {
  check_choice_sizes(num_tokens, num_experts);
  if (num_tokens == 0) return 0;
  return sort_scratch_layout(num_tokens * num_experts, choice_cub_bytes(num_tokens, num_experts)).total;
}

void expert_choice_route(const float* logits, int64_t num_tokens, int num_experts, int64_t expert_capacity,
                         float* probs, int32_t* token, float* choice_weight, int32_t* expert, float* weight,
                         float* score, int32_t* slot_row, void* scratch, size_t scratch_bytes, cudaStream_t stream) {
  check_choice_sizes(num_tokens, num_experts);
  SY_REQUIRE(expert_capacity >= 0, "expert_choice_route: expert_capacity must be >= 0, got " << expert_capacity);
  const int64_t T = num_tokens;
  const int E = num_experts;
  if (T == 0) return;
  const int64_t take = expert_choice_take(T, expert_capacity);
  SY_REQUIRE(logits && probs && expert && weight && score && slot_row,
             "expert_choice_route: logits, probs, expert, weight, score and slot_row must be non-null");
  SY_REQUIRE(take == 0 || (token && choice_weight), "expert_choice_route: token and choice_weight must be non-null");
  const int n = static_cast<int>(T * E);
  const size_t cub_bytes = choice_cub_bytes(T, E);
  const SortScratchLayout l = sort_scratch_layout(n, cub_bytes);
  SY_REQUIRE(scratch != nullptr && scratch_bytes >= l.total,
             "expert_choice_route: scratch of " << scratch_bytes << " bytes at " << scratch
                                                << "; expert_choice_scratch_bytes(" << T << ", " << E << ") = "
                                                << l.total);
  char* base = static_cast<char*>(scratch);
  auto* keys_in = reinterpret_cast<uint64_t*>(base + l.keys_in);
  auto* keys_out = reinterpret_cast<uint64_t*>(base + l.keys_out);
  auto* tokens_in = reinterpret_cast<int32_t*>(base + l.values_in);
  auto* tokens_out = reinterpret_cast<int32_t*>(base + l.values_out);
  void* temp = base + l.temp;
  // After the sort its inputs are free: picked / row_of (E, T) reuses the
  // values, the prefix (E, T) int32 the keys.
  int32_t* row_of = tokens_in;
  auto* prefix = reinterpret_cast<int32_t*>(keys_in);

  launch_tokens(T, stream, softmax_kernel, logits, T, E, probs);
  const Launch all = launch_elementwise(int64_t(n));
  choice_keys_kernel<<<static_cast<unsigned>(all.blocks), all.threads, 0, stream>>>(probs, T, E, keys_in, tokens_in);
  SY_CUDA_CHECK(cudaGetLastError());
  size_t temp_bytes = cub_bytes;
  SY_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys_in, keys_out, tokens_in, tokens_out, n, 0,
                                                choice_end_bit(E), stream));
  choice_mark_kernel<<<static_cast<unsigned>(all.blocks), all.threads, 0, stream>>>(tokens_out, T, E, take, row_of);
  SY_CUDA_CHECK(cudaGetLastError());
  temp_bytes = cub_bytes;
  SY_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(temp, temp_bytes, row_of, prefix, n, stream));
  choice_rows_kernel<<<static_cast<unsigned>(all.blocks), all.threads, 0, stream>>>(prefix, probs, T, E, row_of,
                                                                                    token, choice_weight);
  SY_CUDA_CHECK(cudaGetLastError());
  launch_tokens(T, stream, choice_slots_kernel, row_of, probs, T, E, expert, weight, score, slot_row);
}

void weight_backward_rows(const float* probs, const int32_t* expert, const float* weight, const float* dweight,
                          int64_t num_tokens, int num_logits, int slots_per_token, int num_real, bool renormalized,
                          float* dprobs, cudaStream_t stream) {
  SY_REQUIRE(num_tokens >= 0 && num_logits >= 1 && slots_per_token >= 1 && num_real >= 0 && num_real <= num_logits,
             "weight_backward_rows: need num_tokens >= 0, num_logits >= 1, slots_per_token >= 1 and 0 <= num_real <= "
             "num_logits, got "
                 << num_tokens << ", " << num_logits << ", " << slots_per_token << ", " << num_real);
  SY_REQUIRE(num_tokens == 0 || (probs && expert && weight && dweight && dprobs),
             "weight_backward_rows: probs, expert, weight, dweight and dprobs must be non-null");
  launch_tokens(num_tokens, stream, weight_backward_kernel, probs, expert, weight, dweight, num_tokens, num_logits,
                slots_per_token, num_real, renormalized, dprobs);
}

void softmax_rows_backward(const float* probs, const float* dprobs, int64_t rows, int cols, float* dlogits,
                           cudaStream_t stream) {
  SY_REQUIRE(rows >= 0 && cols >= 1,
             "softmax_rows_backward: need rows >= 0 and cols >= 1, got " << rows << " and " << cols);
  SY_REQUIRE(rows == 0 || (probs && dprobs && dlogits), "softmax_rows_backward: buffers must be non-null");
  launch_tokens(rows, stream, softmax_backward_kernel, probs, dprobs, rows, cols, dlogits);
}

void sigmoid_backward(const float* probs, const float* dprobs, int64_t num_tokens, int num_experts, float* dlogits,
                      cudaStream_t stream) {
  SY_REQUIRE(num_tokens >= 0 && num_experts >= 1,
             "sigmoid_backward: need num_tokens >= 0 and num_experts >= 1, got " << num_tokens << " and "
                                                                                 << num_experts);
  SY_REQUIRE(num_tokens == 0 || (probs && dprobs && dlogits), "sigmoid_backward: buffers must be non-null");
  const int64_t n = num_tokens * num_experts;
  const Launch l = launch_elementwise(n);
  if (l.blocks == 0) return;
  sigmoid_backward_kernel<<<static_cast<unsigned>(l.blocks), l.threads, 0, stream>>>(probs, dprobs, n, dlogits);
  SY_CUDA_CHECK(cudaGetLastError());
}

void topp_aux_loss(const float* probs, int64_t num_tokens, int num_experts, double entropy_coeff, float* dprobs,
                   double* loss, cudaStream_t stream) {
  SY_REQUIRE(num_tokens >= 0 && num_experts >= 1,
             "topp_aux_loss: need num_tokens >= 0 and num_experts >= 1, got " << num_tokens << " and " << num_experts);
  SY_REQUIRE(loss != nullptr, "topp_aux_loss: loss must point to a device double");
  if (entropy_coeff == 0.0 || num_tokens == 0) {
    SY_CUDA_CHECK(cudaMemsetAsync(loss, 0, sizeof(double), stream));  // all-zero bits: 0.0
    return;
  }
  SY_REQUIRE(probs && dprobs, "topp_aux_loss: probs and dprobs must be non-null");
  const int64_t n = num_tokens * num_experts;
  const double scale = entropy_coeff / double(num_tokens);
  const Launch l = launch_elementwise(n);
  entropy_grad_kernel<<<static_cast<unsigned>(l.blocks), l.threads, 0, stream>>>(probs, n, float(scale), dprobs);
  SY_CUDA_CHECK(cudaGetLastError());
  entropy_sum_kernel<<<1, kEntropyThreads, 0, stream>>>(probs, n, scale, loss);
  SY_CUDA_CHECK(cudaGetLastError());
}

}  // namespace sy::cuda::ops
