// CUDA rotary position embeddings (RoPE) on the q and k parts of a qkv buffer;
// the CPU ops of core/ops/rope.hpp are the specification (same names and
// arguments plus a stream; the tables are fp32 whatever the storage type).
//
// Sizes: B sequences of T tokens, rows sequence-major (row n = b T + t is at
// position t = n % T); width C = H * D (H heads of size D, D even). Each row
// of qkv is [q | k | v], each of width C; head h uses columns [h D, (h + 1) D)
// of each part. Interleaved pairs (RoFormer, LLaMA): dimensions (2i, 2i + 1) of
// each head form pair i, rotated at position t by the angle t theta_i:
//   theta_i = base^(-2i / D),  base = 10000
//   y[2i]     = cos(t theta_i) x[2i] - sin(t theta_i) x[2i + 1]
//   y[2i + 1] = sin(t theta_i) x[2i] + cos(t theta_i) x[2i + 1]
// Backward: R_t is orthogonal, so dx = R_t^T dy (the rotation by -t theta_i):
//   dx[2i]     =  cos(t theta_i) dy[2i] + sin(t theta_i) dy[2i + 1]
//   dx[2i + 1] = -sin(t theta_i) dy[2i] + cos(t theta_i) dy[2i + 1]
// Both directions work in place on the q and k parts; v (and dv) is not touched.
// There are no parameters.
//
// The tables are fp32 for every storage type: they are built once, and angles
// rounded to bf16 would lose all but 3 significant digits. Storage T of qkv is
// float, __nv_bfloat16 or __half; each pair is rotated in fp32 by one thread and
// rounded once to T. Sizes >= 0 (nothing is launched for an empty buffer); all
// pointers are device pointers; asynchronous on `stream`.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/cuda/storage.hpp"
#include "core/ops/rope.hpp"

namespace sy::cuda::ops {

inline constexpr double kRopeBase = sy::ops::kRopeBase;

// cos_table[t, i] = cos(t theta_i), sin_table[t, i] = sin(t theta_i) for t < max_seq_len,
// i < D/2; angles and their cos/sin are computed in double on the device, as the
// CPU op does on the host, then rounded to fp32. D must be even and positive,
// max_seq_len positive, base > 0.
void rope_table(float* cos_table,  // (max_seq_len, D/2)
                float* sin_table,  // (max_seq_len, D/2)
                int64_t max_seq_len, int64_t D, double base, cudaStream_t stream);

// qkv: q and k rotated in place (q <- R q, k <- R k). The tables are from
// rope_table with the same D = C / H and max_seq_len >= T (the caller checks T).
template <typename T>
void rope_forward(T* qkv,                  // (B, T, 3C), per row [q | k | v]
                  const float* cos_table,  // (>= T, D/2)
                  const float* sin_table,  // (>= T, D/2)
                  int64_t B, int64_t T_seq, int64_t C, int64_t H, cudaStream_t stream);

// dqkv: the q and k gradients rotated back in place (dq <- R^T dq, dk <- R^T dk);
// the dv part passes through unchanged.
template <typename T>
void rope_backward(T* dqkv,                 // (B, T, 3C), per row [dq | dk | dv]
                   const float* cos_table,  // (>= T, D/2)
                   const float* sin_table,  // (>= T, D/2)
                   int64_t B, int64_t T_seq, int64_t C, int64_t H, cudaStream_t stream);

}  // namespace sy::cuda::ops
