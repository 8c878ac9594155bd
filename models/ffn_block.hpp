// The dense feed-forward sublayer of a pre-norm decoder block (the layers
// that are not MoE layers).
//
// Forward   y = x + W2 gelu(W1 LN(x) + b1) + b2
//   a  = LN(x)               (N, C)
//   h  = a W1^T + b1         (N, F)   F = model.ffn_hidden_size (0: 4 C)
//   g  = gelu(h)             (N, F)
//   y  = x + g W2^T + b2     (N, C)
// Backward (dy -> dx): dW2 += dy^T g, db2 += sum dy, dg = dy W2, dh = gelu'(h) dg,
//   dW1 += dh^T a, db1 += sum dh, da = dh W1, dx = LN_backward(da) + dy.
// Parameter gradients accumulate with +=, dx is overwritten. Under tensor
// parallelism the block is replicated on the tp peers (same tokens, same
// gradients): its gradients are summed over the data-parallel ranks only.
//
// Parameters, one flat buffer with named views:
//   norm_weight (C) ones, norm_bias (C) zeros (absent for RMSNorm),
//   w1 (F, C), b1 (F) zeros, w2 (C, F), b2 (C) zeros;
//   w1, w2 uniform(+-1/sqrt(fan_in)) from mt19937_64(seed).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/config.hpp"

namespace sy::models {

template <typename T>
class FfnBlock {
 public:
  FfnBlock(const ModelConfig& model, int64_t max_tokens, uint64_t seed, T eps = T(1e-5));

  // x (N, C) -> out (N, C), out must not alias x (x is kept for backward).
  void forward(const T* x, int64_t N, T* out);
  // dout (N, C) -> dx (N, C) overwritten; parameter gradients +=.
  void backward(const T* dout, T* dx);

  T* params() { return params_.data(); }
  T* grads() { return grads_.data(); }
  int64_t num_params() const { return int64_t(params_.size()); }
  void zero_grads();
  T* param(const std::string& name);
  T* grad(const std::string& name);
  int64_t param_size(const std::string& name) const;
  std::vector<std::string> param_names() const;
  int64_t hidden() const { return F_; }
  double forward_flops() const { return 4.0 * double(N_) * double(C_) * double(F_); }

 private:
  struct View {
    std::string name;
    int64_t offset, size;
  };
  const View* find(const std::string& name) const;

  int64_t C_, F_, max_tokens_;
  NormKind norm_;
  T eps_;
  std::vector<View> views_;
  std::vector<T> params_, grads_;
  T *norm_w_, *norm_b_, *w1_, *b1_, *w2_, *b2_;
  T *norm_dw_, *norm_db_, *dw1_, *db1_, *dw2_, *db2_;

  std::vector<T> work_;
  T* ln_;    // (N, C)
  T* mean_;  // (N)
  T* rstd_;  // (N)
  T* h_;     // (N, F)
  T* g_;     // (N, F)
  T* dg_;    // (N, F)
  T* dln_;   // (N, C)
  const T* x_ = nullptr;
  int64_t N_ = 0;
};

}  // namespace sy::models
