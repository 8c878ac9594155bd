// Expert FFNs over the dispatched token rows (grouped GEMM).
//
// E experts, each y = act(x W1^T) W2^T, no biases:
//   W1: (E, H1, M) with H1 = H, or 2H for SwiGLU (rows [gate | up])
//   W2: (E, M, H)
// The dispatched rows of expert e are rows [offset[e], offset[e] + count[e])
// of one packed (rows, M) buffer: the (E, C, M) layout of DESIGN.md with the
// unused capacity squeezed out, so only executed rows cost anything.
// Each expert's GEMMs run on the compute pool (row blocks over threads).
// Gradient rule: dW1, dW2 +=; dx (rows, M) overwritten.
#pragma once

#include <cstdint>

#include "core/config.hpp"

namespace sy::moe {

struct ExpertShape {
  int64_t num_experts;  // E
  int64_t model_dim;    // M
  int64_t hidden;       // H
  ActivationKind activation;
  int64_t h1() const { return activation == ActivationKind::SwiGLU ? 2 * hidden : hidden; }
};

// Fills h1 (rows, H1) = pre-activation, act (rows, H), y (rows, M).
template <typename T>
void experts_forward(const ExpertShape& s, const int64_t* offset, const int64_t* count,  // (E), (E)
                     const T* x,   // (rows, M)
                     const T* w1,  // (E, H1, M)
                     const T* w2,  // (E, M, H)
                     T* h1,        // (rows, H1)
                     T* act,       // (rows, H)
                     T* y);        // (rows, M)

// dy (rows, M) -> dx (rows, M) overwritten; dw1, dw2 +=. dact (rows, H) and
// dh1 (rows, H1) are scratch.
template <typename T>
void experts_backward(const ExpertShape& s, const int64_t* offset, const int64_t* count,
                      const T* x, const T* w1, const T* w2, const T* h1, const T* act,
                      const T* dy,  // (rows, M)
                      T* dact,      // (rows, H) scratch
                      T* dh1,       // (rows, H1) scratch
                      T* dx,        // (rows, M) overwritten
                      T* dw1,       // (E, H1, M) +=
                      T* dw2);      // (E, M, H) +=

// GEMM flops of experts_forward for `rows` rows (backward is twice this).
double experts_forward_flops(const ExpertShape& s, int64_t rows);

}  // namespace sy::moe
