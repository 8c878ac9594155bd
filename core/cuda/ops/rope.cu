#include "core/cuda/ops/rope.hpp"

#include "core/cuda/checks.hpp"
#include "core/cuda/launch.hpp"
#include "core/error.hpp"

namespace sy::cuda::ops {

namespace {

// One thread per table entry (t, i), in double as the CPU op.
__global__ void rope_table_kernel(float* cos_table, float* sin_table, int64_t max_seq_len, int64_t D, double base) {
  const int64_t half = D / 2, total = max_seq_len * half;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = k / half, i = k - t * half;
    const double theta = pow(base, -2.0 * double(i) / double(D));
    const double angle = double(t) * theta;
    cos_table[k] = float(cos(angle));
    sin_table[k] = float(sin(angle));
  }
}

// One thread per rotated pair: a row has C / 2 pairs in q and C / 2 in k, so
// pair j of row n is in part j / (C/2) (0: q, 1: k) at columns 2 k', 2 k' + 1
// with k' = j mod (C/2) = h D/2 + i (head h, pair i of the head).
// sign = +1: y = R x (forward); sign = -1: y = R^T x (backward).
template <typename T>
__global__ void rope_rotate_kernel(T* qkv, const float* cos_table, const float* sin_table, int64_t N, int64_t T_seq,
                                   int64_t C, int64_t half, float sign) {
  const int64_t part_pairs = C / 2, total = N * C;  // C pairs per row: C/2 in q, C/2 in k
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < total; p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = p / C, j = p - n * C;
    const int64_t part = j / part_pairs, k = j - part * part_pairs;
    const int64_t i = k % half;
    const int64_t entry = (n % T_seq) * half + i;  // this row's position t, pair i
    T* x = qkv + n * 3 * C + part * C + 2 * k;     // (2) the pair
    const float c = cos_table[entry], sn = sign * sin_table[entry];
    const float x0 = to_float(x[0]), x1 = to_float(x[1]);
    x[0] = from_float<T>(c * x0 - sn * x1);
    x[1] = from_float<T>(sn * x0 + c * x1);
  }
}

void check_sizes(const char* fn, int64_t B, int64_t T_seq, int64_t C, int64_t H) {
  SY_REQUIRE(B >= 0 && T_seq >= 0 && C >= 0 && H > 0,
             fn << ": sizes must be non-negative and H positive, got B=" << B << " T=" << T_seq << " C=" << C
                << " H=" << H);
  SY_REQUIRE(C % H == 0, fn << ": model width C=" << C << " is not divisible by the head count H=" << H);
  SY_REQUIRE((C / H) % 2 == 0, fn << ": rotary embeddings need an even head size, got D = C / H = " << C / H);
}

template <typename T>
void rotate(const char* fn, T* qkv, const float* cos_table, const float* sin_table, int64_t B, int64_t T_seq,
            int64_t C, int64_t H, float sign, cudaStream_t stream) {
  check_sizes(fn, B, T_seq, C, H);
  const int64_t N = B * T_seq;
  if (N == 0 || C == 0) return;
  SY_REQUIRE(qkv != nullptr && cos_table != nullptr && sin_table != nullptr, fn << ": buffers must be non-null");
  const Launch l = launch_elementwise(N * C);
  rope_rotate_kernel<T>
      <<<unsigned(l.blocks), l.threads, 0, stream>>>(qkv, cos_table, sin_table, N, T_seq, C, C / H / 2, sign);
  SY_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void rope_table(float* cos_table, float* sin_table, int64_t max_seq_len, int64_t D, double base,
                cudaStream_t stream) {
  SY_REQUIRE(max_seq_len > 0 && D > 0,
             "rope_table: sizes must be positive, got max_seq_len=" << max_seq_len << " D=" << D);
  SY_REQUIRE(D % 2 == 0, "rope_table: rotary embeddings need an even head size, got D = " << D);
  SY_REQUIRE(base > 0, "rope_table: base must be positive, got " << base);
  SY_REQUIRE(cos_table != nullptr && sin_table != nullptr, "rope_table: buffers must be non-null");
  const Launch l = launch_elementwise(max_seq_len * (D / 2));
  rope_table_kernel<<<unsigned(l.blocks), l.threads, 0, stream>>>(cos_table, sin_table, max_seq_len, D, base);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void rope_forward(T* qkv, const float* cos_table, const float* sin_table, int64_t B, int64_t T_seq, int64_t C,
                  int64_t H, cudaStream_t stream) {
  rotate("rope_forward", qkv, cos_table, sin_table, B, T_seq, C, H, 1.0f, stream);
}

template <typename T>
void rope_backward(T* dqkv, const float* cos_table, const float* sin_table, int64_t B, int64_t T_seq, int64_t C,
                   int64_t H, cudaStream_t stream) {
  rotate("rope_backward", dqkv, cos_table, sin_table, B, T_seq, C, H, -1.0f, stream);
}

#define SY_INSTANTIATE_ROPE(T)                                                                                 \
  template void rope_forward<T>(T*, const float*, const float*, int64_t, int64_t, int64_t, int64_t,          \
                                cudaStream_t);                                                                \
  template void rope_backward<T>(T*, const float*, const float*, int64_t, int64_t, int64_t, int64_t, cudaStream_t);
SY_CUDA_FOR_EACH_STORAGE(SY_INSTANTIATE_ROPE)
#undef SY_INSTANTIATE_ROPE

}  // namespace sy::cuda::ops
