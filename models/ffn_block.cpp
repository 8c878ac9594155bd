#include "models/ffn_block.hpp"

#include <algorithm>
#include <cmath>
#include <random>

#include "core/error.hpp"
#include "core/ops/activation.hpp"
#include "core/ops/linear.hpp"
#include "core/ops/norm.hpp"

namespace sy::models {

template <typename T>
FfnBlock<T>::FfnBlock(const ModelConfig& model, int64_t max_tokens, uint64_t seed, T eps)
    : C_(model.dim),
      F_(model.ffn_hidden_size > 0 ? model.ffn_hidden_size : 4 * int64_t(model.dim)),
      max_tokens_(max_tokens),
      norm_(model.norm),
      eps_(eps) {
  SY_REQUIRE(C_ > 0 && max_tokens_ > 0, "FfnBlock: model.dim and max_tokens must be positive");
  int64_t offset = 0;
  auto add = [&](const char* name, int64_t size) {
    views_.push_back({name, offset, size});
    offset += size;
  };
  add("norm_weight", C_);
  if (norm_ == NormKind::LayerNorm) add("norm_bias", C_);
  add("w1", F_ * C_);
  add("b1", F_);
  add("w2", C_ * F_);
  add("b2", C_);
  params_.assign(size_t(offset), T(0));
  grads_.assign(size_t(offset), T(0));
  auto bind = [&](const char* name, T*& p, T*& g) {
    const View* v = find(name);
    p = v ? params_.data() + v->offset : nullptr;
    g = v ? grads_.data() + v->offset : nullptr;
  };
  bind("norm_weight", norm_w_, norm_dw_);
  bind("norm_bias", norm_b_, norm_db_);
  bind("w1", w1_, dw1_);
  bind("b1", b1_, db1_);
  bind("w2", w2_, dw2_);
  bind("b2", b2_, db2_);

  std::mt19937_64 rng(seed);
  auto fill = [&](T* w, int64_t n, int64_t fan_in) {
    std::uniform_real_distribution<double> dist(-1.0 / std::sqrt(double(fan_in)), 1.0 / std::sqrt(double(fan_in)));
    for (int64_t i = 0; i < n; ++i) w[i] = static_cast<T>(dist(rng));
  };
  fill(w1_, F_ * C_, C_);
  fill(w2_, C_ * F_, F_);
  std::fill(norm_w_, norm_w_ + C_, T(1));

  const int64_t N = max_tokens_;
  work_.assign(size_t(N * C_ * 2 + N * 2 + N * F_ * 3), T(0));
  T* p = work_.data();
  auto take = [&](int64_t n) {
    T* out = p;
    p += n;
    return out;
  };
  ln_ = take(N * C_);
  mean_ = take(N);
  rstd_ = take(N);
  h_ = take(N * F_);
  g_ = take(N * F_);
  dg_ = take(N * F_);
  dln_ = take(N * C_);
}

template <typename T>
const typename FfnBlock<T>::View* FfnBlock<T>::find(const std::string& name) const {
  for (const auto& v : views_)
    if (v.name == name) return &v;
  return nullptr;
}

template <typename T>
T* FfnBlock<T>::param(const std::string& name) {
  const View* v = find(name);
  return v ? params_.data() + v->offset : nullptr;
}

template <typename T>
T* FfnBlock<T>::grad(const std::string& name) {
  const View* v = find(name);
  return v ? grads_.data() + v->offset : nullptr;
}

template <typename T>
int64_t FfnBlock<T>::param_size(const std::string& name) const {
  const View* v = find(name);
  return v ? v->size : 0;
}

template <typename T>
std::vector<std::string> FfnBlock<T>::param_names() const {
  std::vector<std::string> out;
  for (const auto& v : views_) out.push_back(v.name);
  return out;
}

template <typename T>
void FfnBlock<T>::zero_grads() {
  std::fill(grads_.begin(), grads_.end(), T(0));
}

template <typename T>
void FfnBlock<T>::forward(const T* x, int64_t N, T* out) {
  SY_REQUIRE(x != nullptr && out != nullptr && out != x, "FfnBlock::forward: x and out must be distinct, non-null");
  SY_REQUIRE(N > 0 && N <= max_tokens_, "FfnBlock::forward: " << N << " tokens, max_tokens = " << max_tokens_);
  x_ = x;
  N_ = N;
  if (norm_ == NormKind::LayerNorm)
    ops::layernorm_forward(ln_, mean_, rstd_, x, norm_w_, norm_b_, N, C_, eps_);
  else
    ops::rmsnorm_forward(ln_, rstd_, x, norm_w_, N, C_, eps_);
  ops::linear_forward(h_, ln_, w1_, b1_, N, C_, F_);
  ops::gelu_forward(g_, h_, N * F_);
  ops::linear_forward(out, g_, w2_, b2_, N, F_, C_);
  for (int64_t i = 0; i < N * C_; ++i) out[i] += x[i];
}

template <typename T>
void FfnBlock<T>::backward(const T* dout, T* dx) {
  SY_REQUIRE(x_ != nullptr, "FfnBlock::backward before forward");
  SY_REQUIRE(dout != nullptr && dx != nullptr && dx != dout, "FfnBlock::backward: dout and dx must be distinct");
  const int64_t N = N_;
  ops::linear_backward(dg_, dw2_, db2_, dout, g_, w2_, N, F_, C_);
  ops::gelu_backward(dg_, h_, dg_, N * F_);
  ops::linear_backward(dln_, dw1_, db1_, dg_, ln_, w1_, N, C_, F_);
  if (norm_ == NormKind::LayerNorm)
    ops::layernorm_backward(dx, norm_dw_, norm_db_, dln_, x_, norm_w_, mean_, rstd_, N, C_);
  else
    ops::rmsnorm_backward(dx, norm_dw_, dln_, x_, norm_w_, rstd_, N, C_);
  for (int64_t i = 0; i < N * C_; ++i) dx[i] += dout[i];
}

template class FfnBlock<float>;
template class FfnBlock<double>;

}  // namespace sy::models
