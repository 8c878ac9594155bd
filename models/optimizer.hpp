// AdamW and the learning-rate schedule.
//
// AdamW (decoupled weight decay), step t >= 1, on each element:
//   m = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2
//   p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + lr wd p   (wd only where decay is set)
// The update is element-wise, so a rank updates its own shard of any
// parameter set (the dense shard of parallel/sharded_params.hpp, its own
// expert units) with its own m and v: sharding the optimizer state changes
// nothing in the result. Computed in double per element, stored as T.
//
// Schedule: linear warmup from lr / warmup to lr over warmup steps, then a
// cosine from lr down to min_lr_ratio * lr at the last step:
//   step s (1-based) <= W:  lr s / W
//   else:                   lr (r + (1 - r) (1 + cos(pi (s - W) / (S - W))) / 2)
#pragma once

#include <cstdint>

#include "core/config.hpp"

namespace sy::models {

struct AdamWStep {
  double lr, beta1, beta2, eps, weight_decay;
  int64_t t;  // 1-based step count (bias correction)
};

// param, m, v (n) updated in place from grad (n). decay (n) may be nullptr
// (decay everywhere when weight_decay > 0) or a 0/1 mask per element.
// Returns how many updated parameters are not finite (0 when all are).
template <typename T>
int64_t adamw_update(T* param, const T* grad, T* m, T* v, const uint8_t* decay, int64_t n, const AdamWStep& s);

// Learning rate of optimizer step `step` (1-based) of train.steps.
double learning_rate(const TrainConfig& train, int64_t step);

}  // namespace sy::models
