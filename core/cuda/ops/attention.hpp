// Causal multi-head self-attention core on the GPU. The CPU op
// (core/ops/attention.hpp) is the specification; same names and arguments plus
// a cuBLAS handle and a stream.
//
// Sizes: B sequences of T tokens, model width C = H * D (H heads of size D).
// Each row of qkv is [q | k | v], each of width C; head h uses columns
// [h D, (h + 1) D) of each part. Per sequence b and head h:
//   S = scale Q K^T (T, T),  scale = 1 / sqrt(D)
//   P = softmax over keys j <= t of S[t, :]; P[t, j] = 0 exactly for j > t (causal)
//   O = P V (T, D), written to out[b, :, h D : (h + 1) D]
// Backward (dqkv overwritten; there are no parameters):
//   dV = P^T dO,  dP = dO V^T,  dS = P * (dP - rowsum(P * dP)),
//   dQ = scale dS K,  dK = scale dS^T Q
//
// The products are strided-batched cuBLAS GEMMs (fp32 accumulation): the Q, K, V
// of head h are column blocks of the (B, T, 3C) rows, so lda = 3C and heads are D
// elements apart. S is written into probs (storage precision) and turned into P
// in place by a row-wise causal softmax kernel (fp32 math, one block per row);
// in the backward dP is written into dscores and turned into dS in place. The
// full T x T products are computed (as on the CPU); the kernels overwrite the
// upper triangle with exact zeros. Block reductions have a fixed order:
// deterministic. Sets `handle`'s stream; no synchronization, no allocation.
// The template parameter is named Real because T is the sequence length.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/cuda/storage.hpp"

namespace sy::cuda::ops {

// All pointers are device pointers.
template <typename Real>
void attention_forward(Real* out,        // (B, T, C)
                       Real* probs,      // (B, H, T, T), saved for backward
                       const Real* qkv,  // (B, T, 3C), per row [q | k | v]
                       int64_t B, int64_t T, int64_t C, int64_t H, cublasHandle_t handle, cudaStream_t stream);

// dscores is caller-provided scratch for dS (its contents on return are unspecified).
template <typename Real>
void attention_backward(Real* dqkv,         // (B, T, 3C), overwritten
                        Real* dscores,      // (B, H, T, T), scratch
                        const Real* dout,   // (B, T, C)
                        const Real* qkv,    // (B, T, 3C), the forward input
                        const Real* probs,  // (B, H, T, T), from attention_forward
                        int64_t B, int64_t T, int64_t C, int64_t H, cublasHandle_t handle, cudaStream_t stream);

// How the B * H per-head GEMMs are batched. A strided-batched call has one
// stride per operand, but head (b, h) of qkv starts at b T 3C + h D: two strides.
// So there are `outer` calls of `batch` problems each; problem i of call o is
// (b, h) = (o, i) when the batch runs over heads (B <= H), else (i, o): the
// fewer calls. Offsets in elements: operand X of problem (o, i) starts at
// o * X_outer + i * X_inner (qkv also for dqkv, out also for dout, probs also
// for dscores). Plain C++ so the CPU tests check it.
struct AttentionBatching {
  int64_t outer, batch;
  int64_t qkv_outer, qkv_inner;
  int64_t out_outer, out_inner;
  int64_t probs_outer, probs_inner;
};
inline AttentionBatching attention_batching(int64_t B, int64_t T, int64_t C, int64_t H) {
  const int64_t D = C / H;
  if (B <= H) return {B, H, T * 3 * C, D, T * C, D, H * T * T, T * T};  // call per sequence, batch over heads
  return {H, B, D, T * 3 * C, D, T * C, T * T, H * T * T};              // call per head, batch over sequences
}

}  // namespace sy::cuda::ops
