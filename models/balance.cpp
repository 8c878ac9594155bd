#include "models/balance.hpp"

#include <algorithm>
#include <cmath>

#include "core/error.hpp"

namespace sy::moe {

template <typename T>
Balancer<T>::Balancer(const MoeConfig& config, int64_t seq_len)
    : kind_(config.balance),
      balance_coeff_(config.balance_coeff),
      z_coeff_(config.z_loss_coeff),
      num_experts_(config.num_experts),
      num_null_(config.router == RouterKind::NullExperts ? config.num_null_experts : 0),
      num_logits_(0),
      seq_len_(seq_len) {
  SY_REQUIRE(config.num_experts > 0, "Balancer: moe.num_experts must be positive, got " << config.num_experts);
  SY_REQUIRE(num_null_ >= 0, "Balancer: moe.num_null_experts must be >= 0, got " << num_null_);
  SY_REQUIRE(kind_ != BalanceKind::Sequence || seq_len > 0,
             "Balancer: moe.balance = sequence needs a positive seq_len, got " << seq_len);
  num_logits_ = config.router == RouterKind::Hash ? 0 : num_experts_ + num_null_;
  const size_t L = static_cast<size_t>(num_logits_);
  for (auto* v : {&accumulated_, &counts_, &reduced_, &step_counts_, &fraction_, &seq_counts_, &seq_fraction_,
                  &prob_mean_})
    v->assign(L, 0.0);
}

template <typename T>
void Balancer<T>::reset() {
  std::fill(accumulated_.begin(), accumulated_.end(), 0.0);
}

template <typename T>
const std::vector<double>& Balancer<T>::reduced_step_counts() {
  if (kind_ == BalanceKind::Global) return accumulated_;  // reduced every micro-batch already
  step_counts_ = accumulated_;                              // same size: no allocation
  if (reduce_ && num_logits_ > 0) reduce_(step_counts_.data(), num_logits_);
  return step_counts_;
}

template <typename T>
void Balancer<T>::fraction_from(const std::vector<double>& counts, std::vector<double>& fraction) const {
  double total = 0.0;
  for (int i = 0; i < num_logits_; ++i) total += counts[i];
  const double inv = total > 0.0 ? 1.0 / total : 0.0;
  for (int i = 0; i < num_logits_; ++i) fraction[i] = counts[i] * inv;
  if (num_null_ > 0) {
    double null_sum = 0.0;
    for (int i = num_experts_; i < num_logits_; ++i) null_sum += fraction[i];
    const double null_mean = null_sum / num_null_;
    for (int i = num_experts_; i < num_logits_; ++i) fraction[i] = null_mean;
  }
}

template <typename T>
double Balancer<T>::balance_rows(const T* probs, int64_t t0, int64_t t1, const std::vector<double>& fraction,
                                 int64_t grad_tokens, T* dprobs) {
  const int64_t L = num_logits_;
  if (t1 <= t0) return 0.0;
  std::fill(prob_mean_.begin(), prob_mean_.end(), 0.0);
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t i = 0; i < L; ++i) prob_mean_[i] += double(probs[t * L + i]);
  const double inv_rows = 1.0 / double(t1 - t0);
  double dot = 0.0;
  for (int64_t i = 0; i < L; ++i) dot += fraction[i] * prob_mean_[i] * inv_rows;
  if (dprobs != nullptr) {
    const double scale = balance_coeff_ * double(L) / double(grad_tokens);
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t i = 0; i < L; ++i) dprobs[t * L + i] += static_cast<T>(scale * fraction[i]);
  }
  return balance_coeff_ * double(L) * dot;
}

template <typename T>
double Balancer<T>::z_loss(const T* logits, int64_t num_tokens, T* dlogits) const {
  const int64_t L = num_logits_;
  const double scale = z_coeff_ * 2.0 / double(num_tokens);
  double sum_sq = 0.0;
  for (int64_t t = 0; t < num_tokens; ++t) {
    const T* x = logits + t * L;
    double m = double(x[0]);
    for (int64_t i = 1; i < L; ++i) m = std::max(m, double(x[i]));
    double s = 0.0;
    for (int64_t i = 0; i < L; ++i) s += std::exp(double(x[i]) - m);
    const double lse = m + std::log(s);
    sum_sq += lse * lse;
    T* dx = dlogits + t * L;
    for (int64_t i = 0; i < L; ++i) dx[i] += static_cast<T>(scale * lse * std::exp(double(x[i]) - lse));
  }
  return z_coeff_ * sum_sq / double(num_tokens);
}

template <typename T>
BalanceParts Balancer<T>::forward_backward(const RouterOutput<T>& routing, const T* logits, T* dprobs,
                                           T* dlogits) {
  SY_REQUIRE(routing.num_logits == num_logits_,
             "Balancer: routing has " << routing.num_logits << " logits per token but the config (moe.router, "
                                      << "moe.num_experts, moe.num_null_experts) gives " << num_logits_);
  BalanceParts parts;
  if (num_logits_ == 0) return parts;  // hash: no learned router, nothing to balance

  const int64_t T_ = routing.num_tokens;
  const int64_t L = num_logits_;
  SY_REQUIRE(T_ >= 0, "Balancer: num_tokens must be >= 0, got " << T_);
  SY_REQUIRE(routing.probs.size() == static_cast<size_t>(T_ * L),
             "Balancer: probs must be (T, L) = (" << T_ << ", " << L << "), got " << routing.probs.size()
                                                  << " values");
  SY_REQUIRE(routing.token_begin.size() == static_cast<size_t>(T_ + 1) || (T_ == 0 && routing.token_begin.empty()),
             "Balancer: token_begin must have T + 1 = " << T_ + 1 << " entries, got "
                                                         << routing.token_begin.size());
  const int64_t S = routing.num_slots();
  SY_REQUIRE(routing.token_begin.empty() || routing.token_begin[0] == 0,
             "Balancer: token_begin[0] must be 0, got " << routing.token_begin[0]);
  for (int64_t t = 0; t < T_; ++t)
    SY_REQUIRE(routing.token_begin[t] <= routing.token_begin[t + 1],
               "Balancer: token_begin must be non-decreasing, token " << t << " has [" << routing.token_begin[t]
                                                                      << ", " << routing.token_begin[t + 1] << ")");
  SY_REQUIRE(routing.expert.size() >= static_cast<size_t>(S),
             "Balancer: expert has " << routing.expert.size() << " entries for " << S << " slots");
  const bool balance_grad = kind_ != BalanceKind::None && balance_coeff_ != 0.0 && T_ > 0;
  const bool z_on = logits != nullptr && z_coeff_ != 0.0 && T_ > 0;
  SY_REQUIRE(!balance_grad || dprobs != nullptr, "Balancer: dprobs must be non-null for moe.balance = "
                                                     << to_string(kind_) << " with balance_coeff != 0");
  SY_REQUIRE(!z_on || dlogits != nullptr, "Balancer: dlogits must be non-null when logits are given and "
                                          "z_loss_coeff != 0");
  if (kind_ == BalanceKind::Sequence)
    SY_REQUIRE(T_ % seq_len_ == 0, "Balancer: moe.balance = sequence needs whole sequences: " << T_
                                       << " tokens is not a multiple of seq_len " << seq_len_);

  std::fill(counts_.begin(), counts_.end(), 0.0);
  for (int64_t s = 0; s < S; ++s) {
    const int32_t e = routing.expert[s];
    SY_REQUIRE(e >= 0 && e < num_logits_,
               "Balancer: slot " << s << " has expert " << e << ", outside [0, " << num_logits_ << ")");
    counts_[e] += 1.0;
  }

  if (kind_ == BalanceKind::Global) {
    reduced_ = counts_;  // same size: no allocation
    if (reduce_) reduce_(reduced_.data(), num_logits_);
    for (int64_t i = 0; i < L; ++i) accumulated_[i] += reduced_[i];
    fraction_from(accumulated_, fraction_);
  } else {
    for (int64_t i = 0; i < L; ++i) accumulated_[i] += counts_[i];
    fraction_from(counts_, fraction_);
  }

  const T* probs = routing.probs.data();
  T* grad = balance_grad ? dprobs : nullptr;
  switch (kind_) {
    case BalanceKind::Micro:
    case BalanceKind::Global:
      parts.balance = balance_rows(probs, 0, T_, fraction_, T_, grad);
      break;
    case BalanceKind::Sequence: {
      const int64_t num_seq = T_ / seq_len_;
      double sum = 0.0;
      for (int64_t q = 0; q < num_seq; ++q) {
        const int64_t t0 = q * seq_len_, t1 = t0 + seq_len_;
        std::fill(seq_counts_.begin(), seq_counts_.end(), 0.0);
        for (int64_t s = routing.token_begin[t0]; s < routing.token_begin[t1]; ++s) seq_counts_[routing.expert[s]] += 1.0;
        fraction_from(seq_counts_, seq_fraction_);
        sum += balance_rows(probs, t0, t1, seq_fraction_, T_, grad);
      }
      parts.balance = num_seq > 0 ? sum / double(num_seq) : 0.0;
      break;
    }
    case BalanceKind::None:
      break;
  }

  if (z_on) parts.z = z_loss(logits, T_, dlogits);
  return parts;
}

template class Balancer<float>;
template class Balancer<double>;

}  // namespace sy::moe
