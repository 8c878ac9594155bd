#include "models/optimizer.hpp"

#include <atomic>
#include <cmath>
#include <numbers>

#include "core/error.hpp"
#include "core/thread_pool.hpp"

namespace sy::models {

template <typename T>
int64_t adamw_update(T* param, const T* grad, T* m, T* v, const uint8_t* decay, int64_t n, const AdamWStep& s) {
  SY_REQUIRE(n >= 0, "adamw_update: negative element count " << n);
  if (n == 0) return 0;
  SY_REQUIRE(param && grad && m && v, "adamw_update: buffers must be non-null");
  SY_REQUIRE(s.t >= 1, "adamw_update: step count must be >= 1, got " << s.t);
  const double c1 = 1.0 - std::pow(s.beta1, double(s.t)), c2 = 1.0 - std::pow(s.beta2, double(s.t));
  const double step_size = s.lr / c1, wd = s.lr * s.weight_decay, b1 = s.beta1, b2 = s.beta2;
  std::atomic<int64_t> non_finite{0};
  compute_pool().parallel_for(n, 4096, [&](int64_t i0, int64_t i1) {
    int64_t bad = 0;
    for (int64_t i = i0; i < i1; ++i) {
      const double g = double(grad[i]);
      const double mi = b1 * double(m[i]) + (1.0 - b1) * g;
      const double vi = b2 * double(v[i]) + (1.0 - b2) * g * g;
      m[i] = T(mi);
      v[i] = T(vi);
      double p = double(param[i]);
      if (decay == nullptr || decay[i]) p -= wd * p;
      p -= step_size * mi / (std::sqrt(vi / c2) + s.eps);
      param[i] = T(p);
      bad += std::isfinite(param[i]) ? 0 : 1;
    }
    if (bad) non_finite += bad;
  });
  return non_finite.load();
}

double learning_rate(const TrainConfig& train, int64_t step) {
  const double lr = train.lr;
  const int64_t W = train.warmup_steps, S = train.steps;
  if (step <= W) return lr * double(step) / double(std::max<int64_t>(W, 1));
  if (S <= W) return lr;
  const double progress = std::min(1.0, double(step - W) / double(S - W));
  const double r = train.min_lr_ratio;
  return lr * (r + (1.0 - r) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress)));
}

template int64_t adamw_update<float>(float*, const float*, float*, float*, const uint8_t*, int64_t, const AdamWStep&);
template int64_t adamw_update<double>(double*, const double*, double*, double*, const uint8_t*, int64_t,
                                   const AdamWStep&);

}  // namespace sy::models
