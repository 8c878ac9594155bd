#include "core/cuda/ops/attention.hpp"

#include <cmath>

#include "core/cuda/checks.hpp"
#include "core/cuda/launch.hpp"
#include "core/cuda/ops/gemm.hpp"
#include "core/error.hpp"

namespace sy::cuda::ops {

namespace {

void check_sizes(const char* fn, int64_t B, int64_t T, int64_t C, int64_t H) {
  SY_REQUIRE(B > 0 && T > 0 && C > 0 && H > 0,
             fn << ": sizes must be positive, got B=" << B << " T=" << T << " C=" << C << " H=" << H);
  SY_REQUIRE(C % H == 0, fn << ": model width C=" << C << " is not divisible by the head count H=" << H);
}

struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct SumOp {
  __device__ float operator()(float a, float b) const { return a + b; }
};

// Reduces v over the block; every thread gets the result. blockDim.x is a whole
// number of warps (launch_rows) and every thread of the block must call this.
// warp_vals holds one float per warp. The order is fixed: shuffle tree inside
// each warp, then warps 0, 1, ... in order. Deterministic.
template <typename Op>
__device__ float block_all_reduce(float v, float* warp_vals, Op op) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  for (int o = kWarp / 2; o > 0; o /= 2) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();  // the previous reduction's readers are done with warp_vals
  if (lane == 0) warp_vals[warp] = v;
  __syncthreads();
  float r = warp_vals[0];
  for (int w = 1; w < warps; ++w) r = op(r, warp_vals[w]);
  return r;
}

// probs: rows (B H T) of length T, holding S; row r is query t = r mod T.
// P[t, j] = exp(S[t, j] - max) / sum over j <= t; exact 0 for j > t. Each element
// is read and written by one thread only.
template <typename Real>
__global__ void causal_softmax_kernel(Real* probs, int64_t rows, int64_t T) {
  extern __shared__ float warp_vals[];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    Real* row = probs + r * T;
    const int64_t t = r % T;
    float m = -INFINITY;
    for (int64_t j = threadIdx.x; j <= t; j += blockDim.x) m = fmaxf(m, to_float(row[j]));
    m = block_all_reduce(m, warp_vals, MaxOp{});
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j <= t; j += blockDim.x) s += expf(to_float(row[j]) - m);
    s = block_all_reduce(s, warp_vals, SumOp{});
    const float inv = 1.0f / s;  // s >= 1: the maximum contributes exp(0)
    for (int64_t j = threadIdx.x; j < T; j += blockDim.x)
      row[j] = from_float<Real>(j <= t ? expf(to_float(row[j]) - m) * inv : 0.0f);
  }
}

// dscores holds dP on entry, dS on return: dS = P (dP - sum_{j<=t} P dP), exact 0 for j > t.
template <typename Real>
__global__ void causal_softmax_backward_kernel(Real* dscores, const Real* probs, int64_t rows, int64_t T) {
  extern __shared__ float warp_vals[];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    Real* ds = dscores + r * T;
    const Real* p = probs + r * T;
    const int64_t t = r % T;
    float dot = 0.0f;
    for (int64_t j = threadIdx.x; j <= t; j += blockDim.x) dot += to_float(p[j]) * to_float(ds[j]);
    dot = block_all_reduce(dot, warp_vals, SumOp{});
    for (int64_t j = threadIdx.x; j < T; j += blockDim.x)
      ds[j] = from_float<Real>(j <= t ? to_float(p[j]) * (to_float(ds[j]) - dot) : 0.0f);
  }
}

}  // namespace

template <typename Real>
void attention_forward(Real* out, Real* probs, const Real* qkv, int64_t B, int64_t T, int64_t C, int64_t H,
                       cublasHandle_t handle, cudaStream_t stream) {
  check_sizes("attention_forward", B, T, C, H);
  SY_REQUIRE(out != nullptr && probs != nullptr && qkv != nullptr, "attention_forward: buffers must be non-null");
  SY_REQUIRE(handle != nullptr, "attention_forward: the cuBLAS handle must be non-null");
  const int64_t D = C / H;
  const int64_t ld_qkv = 3 * C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const AttentionBatching bt = attention_batching(B, T, C, H);

  for (int64_t o = 0; o < bt.outer; ++o) {  // S = scale Q K^T
    const Real* q = qkv + o * bt.qkv_outer;
    gemm_strided_batched<Real>(handle, Trans::N, Trans::T, T, T, D, scale, q, ld_qkv, bt.qkv_inner, q + C, ld_qkv,
                               bt.qkv_inner, 0.0f, probs + o * bt.probs_outer, T, bt.probs_inner, bt.batch, stream);
  }
  const Launch l = launch_rows(B * H * T, T);
  causal_softmax_kernel<Real>
      <<<static_cast<unsigned>(l.blocks), l.threads, l.shared_bytes, stream>>>(probs, B * H * T, T);
  SY_CUDA_CHECK(cudaGetLastError());
  for (int64_t o = 0; o < bt.outer; ++o) {  // O = P V
    const Real* v = qkv + o * bt.qkv_outer + 2 * C;
    gemm_strided_batched<Real>(handle, Trans::N, Trans::N, T, D, T, 1.0f, probs + o * bt.probs_outer, T,
                               bt.probs_inner, v, ld_qkv, bt.qkv_inner, 0.0f, out + o * bt.out_outer, C, bt.out_inner,
                               bt.batch, stream);
  }
}

template <typename Real>
void attention_backward(Real* dqkv, Real* dscores, const Real* dout, const Real* qkv, const Real* probs, int64_t B,
                        int64_t T, int64_t C, int64_t H, cublasHandle_t handle, cudaStream_t stream) {
  check_sizes("attention_backward", B, T, C, H);
  SY_REQUIRE(dqkv != nullptr && dscores != nullptr && dout != nullptr && qkv != nullptr && probs != nullptr,
             "attention_backward: buffers must be non-null");
  SY_REQUIRE(handle != nullptr, "attention_backward: the cuBLAS handle must be non-null");
  const int64_t D = C / H;
  const int64_t ld_qkv = 3 * C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const AttentionBatching bt = attention_batching(B, T, C, H);

  for (int64_t o = 0; o < bt.outer; ++o) {
    const Real* v = qkv + o * bt.qkv_outer + 2 * C;
    Real* dv = dqkv + o * bt.qkv_outer + 2 * C;
    const Real* p = probs + o * bt.probs_outer;
    Real* ds = dscores + o * bt.probs_outer;
    const Real* dO = dout + o * bt.out_outer;
    // dV = P^T dO
    gemm_strided_batched<Real>(handle, Trans::T, Trans::N, T, D, T, 1.0f, p, T, bt.probs_inner, dO, C, bt.out_inner,
                               0.0f, dv, ld_qkv, bt.qkv_inner, bt.batch, stream);
    // dP = dO V^T, into dscores
    gemm_strided_batched<Real>(handle, Trans::N, Trans::T, T, T, D, 1.0f, dO, C, bt.out_inner, v, ld_qkv,
                               bt.qkv_inner, 0.0f, ds, T, bt.probs_inner, bt.batch, stream);
  }
  const Launch l = launch_rows(B * H * T, T);
  causal_softmax_backward_kernel<Real>
      <<<static_cast<unsigned>(l.blocks), l.threads, l.shared_bytes, stream>>>(dscores, probs, B * H * T, T);
  SY_CUDA_CHECK(cudaGetLastError());
  for (int64_t o = 0; o < bt.outer; ++o) {
    const Real* q = qkv + o * bt.qkv_outer;
    const Real* k = q + C;
    Real* dq = dqkv + o * bt.qkv_outer;
    Real* dk = dq + C;
    const Real* ds = dscores + o * bt.probs_outer;
    // dQ = scale dS K
    gemm_strided_batched<Real>(handle, Trans::N, Trans::N, T, D, T, scale, ds, T, bt.probs_inner, k, ld_qkv,
                               bt.qkv_inner, 0.0f, dq, ld_qkv, bt.qkv_inner, bt.batch, stream);
    // dK = scale dS^T Q
    gemm_strided_batched<Real>(handle, Trans::T, Trans::N, T, D, T, scale, ds, T, bt.probs_inner, q, ld_qkv,
                               bt.qkv_inner, 0.0f, dk, ld_qkv, bt.qkv_inner, bt.batch, stream);
  }
}

#define SY_INSTANTIATE_ATTENTION(Real)                                                                          \
  template void attention_forward<Real>(Real*, Real*, const Real*, int64_t, int64_t, int64_t, int64_t,         \
                                        cublasHandle_t, cudaStream_t);                                         \
  template void attention_backward<Real>(Real*, Real*, const Real*, const Real*, const Real*, int64_t, int64_t, \
                                         int64_t, int64_t, cublasHandle_t, cudaStream_t);
SY_CUDA_FOR_EACH_STORAGE(SY_INSTANTIATE_ATTENTION)
#undef SY_INSTANTIATE_ATTENTION

}  // namespace sy::cuda::ops
