// CUDA pointwise activations of the expert FFN; the CPU ops of
// core/ops/activation.hpp are the specification (same names, same arguments,
// plus a stream).
//
// GELU uses the tanh approximation, as GPT-2 does (not the exact erf form):
//   gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
// ReLU:    relu(x) = max(x, 0); its derivative at exactly 0 is taken as 0.
// SwiGLU:  each input row of width 2H is [gate | up];
//   out[n, j] = silu(gate[n, j]) * up[n, j],  silu(g) = g * sigmoid(g)
//   dgate = dout * up * silu'(g),  silu'(g) = s (1 + g (1 - s)),  s = sigmoid(g)
//   dup   = dout * silu(g)
// Backward passes recompute from the saved input; din is overwritten (these
// ops have no parameters, activation gradients are overwritten).
//
// Storage T is float, __nv_bfloat16 or __half; every element is widened to
// float, computed with the SY_HD math of core/cuda/ops/elementwise_math.hpp, and
// rounded once to T. Each element is written by one thread: deterministic.
// Sizes must be >= 0; nothing is launched for an empty tensor. All pointers are
// device pointers; the ops are asynchronous on `stream`.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/cuda/storage.hpp"

namespace sy::cuda::ops {

template <typename T>
void gelu_forward(T* out,       // (n)
                  const T* in,  // (n)
                  int64_t n, cudaStream_t stream);
template <typename T>
void gelu_backward(T* din,         // (n), overwritten
                   const T* in,    // (n), the forward input
                   const T* dout,  // (n)
                   int64_t n, cudaStream_t stream);

template <typename T>
void relu_forward(T* out,       // (n)
                  const T* in,  // (n)
                  int64_t n, cudaStream_t stream);
template <typename T>
void relu_backward(T* din,         // (n), overwritten
                   const T* in,    // (n), the forward input
                   const T* dout,  // (n)
                   int64_t n, cudaStream_t stream);

template <typename T>
void swiglu_forward(T* out,       // (N, H)
                    const T* in,  // (N, 2H), per row [gate | up]
                    int64_t N, int64_t H, cudaStream_t stream);
template <typename T>
void swiglu_backward(T* din,         // (N, 2H), per row [dgate | dup], overwritten
                     const T* in,    // (N, 2H), the forward input
                     const T* dout,  // (N, H)
                     int64_t N, int64_t H, cudaStream_t stream);

}  // namespace sy::cuda::ops
