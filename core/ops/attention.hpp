// Causal multi-head self-attention core (the QKV and output projections are
// separate linear ops).
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
// Each (b, h) is one task on the compute pool; its products are gemm_serial calls.
// The template parameter is named Real here because T is the sequence length.
#pragma once

#include <cstdint>

namespace sy::ops {

template <typename Real>
void attention_forward(Real* out,        // (B, T, C)
                       Real* probs,      // (B, H, T, T), saved for backward
                       const Real* qkv,  // (B, T, 3C), per row [q | k | v]
                       int64_t B, int64_t T, int64_t C, int64_t H);

// dscores is caller-provided scratch for dS (its contents on return are unspecified);
// it keeps the backward free of allocation.
template <typename Real>
void attention_backward(Real* dqkv,         // (B, T, 3C), overwritten
                        Real* dscores,      // (B, H, T, T), scratch
                        const Real* dout,   // (B, T, C)
                        const Real* qkv,    // (B, T, 3C), the forward input
                        const Real* probs,  // (B, H, T, T), from attention_forward
                        int64_t B, int64_t T, int64_t C, int64_t H);

}  // namespace sy::ops
