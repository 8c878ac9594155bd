// Rotary position embeddings (RoPE, Su et al., RoFormer) on the q and k parts
// of a qkv buffer; v is left alone. There are no parameters.
//
// Sizes: B sequences of T tokens, rows sequence-major (row n = b T + t is at
// position t = n % T); width C = H * D (H heads of size D, D even). Each row
// of qkv is [q | k | v], each of width C; head h uses columns [h D, (h + 1) D)
// of each part, the layout of ops::attention_forward.
//
// Convention: interleaved pairs, as in the RoFormer paper and Meta's LLaMA
// reference: dimensions (2i, 2i + 1) of each head form pair i, i in [0, D/2).
// (The half-split convention of GPT-NeoX pairs i with i + D/2; the two differ
// only by a fixed permutation of the rows of Wq and Wk, so they train alike.)
// Pair i at position t is rotated by the angle t theta_i:
//   theta_i = base^(-2i / D),  base = 10000
//   y[2i]     = cos(t theta_i) x[2i] - sin(t theta_i) x[2i + 1]
//   y[2i + 1] = sin(t theta_i) x[2i] + cos(t theta_i) x[2i + 1]
// that is y = R_t x with R_t block-diagonal of 2 x 2 rotations. Because
// R_p^T R_s = R_(s-p), the attention score <R_p q, R_s k> = <q, R_(s-p) k>
// depends on the positions only through the offset s - p.
// Backward: R_t is orthogonal, so dx = R_t^T dy (the rotation by -t theta_i):
//   dx[2i]     =  cos(t theta_i) dy[2i] + sin(t theta_i) dy[2i + 1]
//   dx[2i + 1] = -sin(t theta_i) dy[2i] + cos(t theta_i) dy[2i + 1]
// Both directions work in place (x -> R x, dx -> R^T dx) on the q and k parts;
// the v part of the buffer (and of its gradient: v is not rotated) is not touched.
//
// The angles come from a table built once (rope_table) in a caller-provided
// buffer, so forward and backward allocate nothing. Each row is one unit of
// work on the compute pool and every element is written by exactly one
// thread, so results do not depend on the thread count.
#pragma once

#include <cstdint>

namespace sy::ops {

inline constexpr double kRopeBase = 10000.0;

// cos_table[t, i] = cos(t theta_i), sin_table[t, i] = sin(t theta_i) for t < max_seq_len,
// i < D/2; angles and their cos/sin are computed in double, then rounded to T.
// D must be even and positive, max_seq_len positive, base > 0.
template <typename T>
void rope_table(T* cos_table,  // (max_seq_len, D/2)
                T* sin_table,  // (max_seq_len, D/2)
                int64_t max_seq_len, int64_t D, double base = kRopeBase);

// qkv: q and k rotated in place (q <- R q, k <- R k). The tables are from
// rope_table with the same D = C / H and max_seq_len >= T (the caller checks T).
template <typename T>
void rope_forward(T* qkv,        // (B, T, 3C), per row [q | k | v]
                  const T* cos_table,  // (>= T, D/2)
                  const T* sin_table,  // (>= T, D/2)
                  int64_t B, int64_t T_seq, int64_t C, int64_t H);

// dqkv: the q and k gradients rotated back in place (dq <- R^T dq, dk <- R^T dk),
// turning gradients with respect to the rotated q, k into gradients with
// respect to the unrotated ones; the dv part passes through unchanged.
template <typename T>
void rope_backward(T* dqkv,       // (B, T, 3C), per row [dq | dk | dv]
                   const T* cos_table,  // (>= T, D/2)
                   const T* sin_table,  // (>= T, D/2)
                   int64_t B, int64_t T_seq, int64_t C, int64_t H);

}  // namespace sy::ops
