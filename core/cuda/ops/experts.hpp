// Expert FFNs over the dispatched token rows on the GPU (grouped GEMM). The CPU
// op (models/experts.hpp) is the specification; same names and arguments plus a
// cuBLAS handle and a stream.
//
// E experts, each y = act(x W1^T) W2^T, no biases:
//   W1: (E, H1, M) with H1 = H, or 2H for SwiGLU (rows [gate | up])
//   W2: (E, M, H)
// The dispatched rows of expert e are rows [offset[e], offset[e] + count[e])
// of one packed (rows, M) buffer. Experts with count 0 cost nothing and their
// rows, gradients and weight gradients are left untouched, as on the CPU.
// Gradient rule: dW1, dW2 +=; dx (rows, M) overwritten.
//
// Each product is one grouped_gemm (core/cuda/ops/gemm.hpp) over the experts:
// forward h1 = x W1^T, y = act W2^T (grouped over rows, M); backward dact = dy W2,
// dx = dh1 W1 (grouped over rows), dW2 += dy^T act, dW1 += dh1^T x (grouped over
// the reduction, K). The activation (core/cuda/ops/activation.hpp) runs once per
// run of adjacent non-empty experts' rows (expert_row_runs), never on rows that no
// expert owns. offset and count are HOST arrays (the MoE layer knows them on the
// host after the count exchange). Sets `handle`'s stream; no synchronization, no
// device allocation.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "core/cuda/ops/gemm.hpp"
#include "core/cuda/storage.hpp"
#include "models/experts.hpp"  // sy::moe::ExpertShape

namespace sy::cuda::ops {

using moe::ExpertShape;

// Fills h1 (rows, H1) = pre-activation, act (rows, H), y (rows, M). Device buffers
// except offset and count.
template <typename T>
void experts_forward(const ExpertShape& s, const int64_t* offset, const int64_t* count,  // host (E), (E)
                     const T* x,   // (rows, M)
                     const T* w1,  // (E, H1, M)
                     const T* w2,  // (E, M, H)
                     T* h1,        // (rows, H1)
                     T* act,       // (rows, H)
                     T* y,         // (rows, M)
                     cublasHandle_t handle, cudaStream_t stream);

// dy (rows, M) -> dx (rows, M) overwritten; dw1, dw2 +=. dact (rows, H) and
// dh1 (rows, H1) are scratch.
template <typename T>
void experts_backward(const ExpertShape& s, const int64_t* offset, const int64_t* count,  // host (E), (E)
                      const T* x,    // (rows, M)
                      const T* w1,   // (E, H1, M)
                      const T* w2,   // (E, M, H)
                      const T* h1,   // (rows, H1), from experts_forward
                      const T* act,  // (rows, H), from experts_forward
                      const T* dy,   // (rows, M)
                      T* dact,       // (rows, H) scratch
                      T* dh1,        // (rows, H1) scratch
                      T* dx,         // (rows, M) overwritten
                      T* dw1,        // (E, H1, M) +=
                      T* dw2,        // (E, M, H) +=
                      cublasHandle_t handle, cudaStream_t stream);

// The six grouped products of the expert FFN (alpha = 1), in the operand roles
// named on each line; experts_forward/backward run exactly these. Plain C++ so the
// CPU tests execute them with a reference GEMM against the CPU experts.
struct ExpertGemm {
  Trans trans_a, trans_b;
  GroupedSizes sizes;
  GroupedOperand a, b, c;
  float beta;
};
struct ExpertGemms {
  ExpertGemm h1;    // h1 (n_e, H1) = x_e (n_e, M) W1[e]^T             a = x,   b = w1,  c = h1
  ExpertGemm y;     // y (n_e, M) = act_e (n_e, H) W2[e]^T             a = act, b = w2,  c = y
  ExpertGemm dact;  // dact (n_e, H) = dy_e (n_e, M) W2[e] (M, H)      a = dy,  b = w2,  c = dact
  ExpertGemm dw2;   // dW2[e] (M, H) += dy_e^T (M, n_e) act_e (n_e, H) a = dy,  b = act, c = dw2
  ExpertGemm dx;    // dx (n_e, M) = dh1_e (n_e, H1) W1[e] (H1, M)     a = dh1, b = w1,  c = dx
  ExpertGemm dw1;   // dW1[e] (H1, M) += dh1_e^T (H1, n_e) x_e (n_e, M) a = dh1, b = x,  c = dw1
};
inline ExpertGemms expert_gemms(const ExpertShape& s) {
  const int64_t M = s.model_dim, H = s.hidden, H1 = s.h1();
  // Packed token rows of width w; one (rows_w, cols_w) weight matrix per expert.
  const auto rows = [](int64_t w) { return GroupedOperand{GroupedLayout::Packed, w, 0}; };
  const auto weight = [](int64_t rows_w, int64_t cols_w) {
    return GroupedOperand{GroupedLayout::PerGroup, cols_w, rows_w * cols_w};
  };
  ExpertGemms g{};
  g.h1 = {Trans::N, Trans::T, {GroupedDim::M, 0, H1, M}, rows(M), weight(H1, M), rows(H1), 0.0f};
  g.y = {Trans::N, Trans::T, {GroupedDim::M, 0, M, H}, rows(H), weight(M, H), rows(M), 0.0f};
  g.dact = {Trans::N, Trans::N, {GroupedDim::M, 0, H, M}, rows(M), weight(M, H), rows(H), 0.0f};
  g.dw2 = {Trans::T, Trans::N, {GroupedDim::K, M, H, 0}, rows(M), rows(H), weight(M, H), 1.0f};
  g.dx = {Trans::N, Trans::N, {GroupedDim::M, 0, M, H1}, rows(H1), weight(H1, M), rows(M), 0.0f};
  g.dw1 = {Trans::T, Trans::N, {GroupedDim::K, H1, M, 0}, rows(H1), rows(M), weight(H1, M), 1.0f};
  return g;
}

// Maximal runs of rows owned by consecutive non-empty experts whose rows are
// adjacent (offset[e] + count[e] == offset[next non-empty e]); the activation is
// one launch per run. Plain C++ so the CPU tests check it.
struct RowRun {
  int64_t first_row;
  int64_t rows;
};
inline std::vector<RowRun> expert_row_runs(int64_t num_experts, const int64_t* offset, const int64_t* count) {
  std::vector<RowRun> runs;
  for (int64_t e = 0; e < num_experts; ++e) {
    if (count[e] == 0) continue;
    if (!runs.empty() && runs.back().first_row + runs.back().rows == offset[e])
      runs.back().rows += count[e];
    else
      runs.push_back(RowRun{offset[e], count[e]});
  }
  return runs;
}

}  // namespace sy::cuda::ops
