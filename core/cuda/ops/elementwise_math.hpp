// Per-element math of the CUDA activation and optimizer kernels, as SY_HD
// functions: the kernels call them on the device and the CPU tests
// (tests/core/cuda/ElementwiseMathTest.cpp) call the very same code on the host
// and compare it with the CPU ops, so the formulas are checked without a GPU.
//
// Each formula repeats the CPU op's expression in the same order of operations
// (core/ops/activation.cpp, models/optimizer.cpp), so host results agree with
// the CPU ops to the last bit up to the compiler's FMA contraction; on the device
// tanhf/expf differ from the host's by at most 2 ulp.
//
// Includable by the host compiler: no kernels, no device-only intrinsics.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/cuda/storage.hpp"
#include "models/optimizer.hpp"

namespace sy::cuda::math {

// GELU, tanh approximation (GPT-2):
//   gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
inline constexpr float kGeluScale = 0.7978845608028654f;  // sqrt(2 / pi)
inline constexpr float kGeluCubic = 0.044715f;

SY_HD inline float gelu(float x) {
  const float u = kGeluScale * (x + kGeluCubic * x * x * x);
  return 0.5f * x * (1.0f + tanhf(u));
}

// d gelu / dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) du/dx,  du/dx = sqrt(2/pi) (1 + 3 0.044715 x^2)
SY_HD inline float gelu_grad(float x) {
  const float u = kGeluScale * (x + kGeluCubic * x * x * x);
  const float th = tanhf(u);
  const float du_dx = kGeluScale * (1.0f + 3.0f * kGeluCubic * x * x);
  return 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * du_dx;
}

// relu(x) = max(x, 0) (-0 and NaN give +0, as the CPU op's `x > 0 ? x : 0`).
SY_HD inline float relu(float x) { return x > 0.0f ? x : 0.0f; }
// relu'(x) dy, with the derivative at exactly 0 taken as 0.
SY_HD inline float relu_backward(float x, float dy) { return x > 0.0f ? dy : 0.0f; }

SY_HD inline float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
// silu(g) = g sigmoid(g)
SY_HD inline float silu(float g) { return g * sigmoid(g); }
// silu'(g) = s (1 + g (1 - s)),  s = sigmoid(g)
SY_HD inline float silu_grad(float g) {
  const float s = sigmoid(g);
  return s * (1.0f + g * (1.0f - s));
}

// SwiGLU on one (gate, up) pair: out = silu(gate) up, in the CPU op's order (g s) up.
SY_HD inline float swiglu(float g, float up) { return g * sigmoid(g) * up; }
// Its gradients for the output gradient d, in the CPU op's order:
//   dgate = d up s (1 + g (1 - s)),  dup = d g s
struct SwigluGrad {
  float dgate, dup;
};
SY_HD inline SwigluGrad swiglu_backward(float g, float up, float d) {
  const float s = sigmoid(g);
  return {d * up * s * (1.0f + g * (1.0f - s)), d * g * s};
}

// True unless x is +-inf or NaN (x - x is NaN exactly for those; no fast-math here).
SY_HD inline bool is_finite(float x) { return x - x == 0.0f; }

// AdamW (models/optimizer.hpp), the per-step constants computed once on the host:
//   c1 = 1 - b1^t, c2 = 1 - b2^t, step_size = lr / c1, decay_step = lr wd.
struct AdamWCoefficients {
  double beta1, beta2, step_size, decay_step, bias_correction2, eps;
};

inline AdamWCoefficients adamw_coefficients(const models::AdamWStep& s) {
  const double c1 = 1.0 - std::pow(s.beta1, double(s.t));
  const double c2 = 1.0 - std::pow(s.beta2, double(s.t));
  return {s.beta1, s.beta2, s.lr / c1, s.lr * s.weight_decay, c2, s.eps};
}

// One element, in double as the CPU op: m and v are updated in place (the caller
// stores them rounded, the update itself uses the unrounded values), the new
// parameter is returned.
//   m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2
//   p -= lr wd p (where decay), then p -= step_size m / (sqrt(v / c2) + eps)
SY_HD inline double adamw_element(double p, double g, double& m, double& v, bool decay, const AdamWCoefficients& c) {
  m = c.beta1 * m + (1.0 - c.beta1) * g;
  v = c.beta2 * v + (1.0 - c.beta2) * g * g;
  if (decay) p -= c.decay_step * p;
  p -= c.step_size * m / (sqrt(v / c.bias_correction2) + c.eps);
  return p;
}

}  // namespace sy::cuda::math
