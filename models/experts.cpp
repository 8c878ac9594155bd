#include "models/experts.hpp"

#include "core/error.hpp"
#include "core/ops/activation.hpp"
#include "core/ops/linear.hpp"

namespace sy::moe {

namespace {

template <typename T>
void activation_forward(ActivationKind kind, T* out, const T* in, int64_t rows, int64_t hidden) {
  switch (kind) {
    case ActivationKind::ReLU: ops::relu_forward(out, in, rows * hidden); break;
    case ActivationKind::GELU: ops::gelu_forward(out, in, rows * hidden); break;
    case ActivationKind::SwiGLU: ops::swiglu_forward(out, in, rows, hidden); break;
  }
}

template <typename T>
void activation_backward(ActivationKind kind, T* din, const T* in, const T* dout, int64_t rows, int64_t hidden) {
  switch (kind) {
    case ActivationKind::ReLU: ops::relu_backward(din, in, dout, rows * hidden); break;
    case ActivationKind::GELU: ops::gelu_backward(din, in, dout, rows * hidden); break;
    case ActivationKind::SwiGLU: ops::swiglu_backward(din, in, dout, rows, hidden); break;
  }
}

}  // namespace

template <typename T>
void experts_forward(const ExpertShape& s, const int64_t* offset, const int64_t* count, const T* x, const T* w1,
                     const T* w2, T* h1, T* act, T* y) {
  const int64_t M = s.model_dim, H = s.hidden, H1 = s.h1();
  for (int64_t e = 0; e < s.num_experts; ++e) {
    const int64_t n = count[e], r = offset[e];
    if (n == 0) continue;
    ops::linear_forward(h1 + r * H1, x + r * M, w1 + e * H1 * M, static_cast<const T*>(nullptr), n, M, H1);
    activation_forward(s.activation, act + r * H, h1 + r * H1, n, H);
    ops::linear_forward(y + r * M, act + r * H, w2 + e * M * H, static_cast<const T*>(nullptr), n, H, M);
  }
}

template <typename T>
void experts_backward(const ExpertShape& s, const int64_t* offset, const int64_t* count, const T* x, const T* w1,
                      const T* w2, const T* h1, const T* act, const T* dy, T* dact, T* dh1, T* dx, T* dw1,
                      T* dw2) {
  const int64_t M = s.model_dim, H = s.hidden, H1 = s.h1();
  for (int64_t e = 0; e < s.num_experts; ++e) {
    const int64_t n = count[e], r = offset[e];
    if (n == 0) continue;
    ops::linear_backward(dact + r * H, dw2 + e * M * H, static_cast<T*>(nullptr), dy + r * M, act + r * H,
                         w2 + e * M * H, n, H, M);
    activation_backward(s.activation, dh1 + r * H1, h1 + r * H1, dact + r * H, n, H);
    ops::linear_backward(dx + r * M, dw1 + e * H1 * M, static_cast<T*>(nullptr), dh1 + r * H1, x + r * M,
                         w1 + e * H1 * M, n, M, H1);
  }
}

double experts_forward_flops(const ExpertShape& s, int64_t rows) {
  return 2.0 * static_cast<double>(rows) * static_cast<double>(s.model_dim) *
         static_cast<double>(s.h1() + s.hidden);
}

#define SY_INSTANTIATE_EXPERTS(T)                                                                             \
  template void experts_forward<T>(const ExpertShape&, const int64_t*, const int64_t*, const T*, const T*,    \
                                   const T*, T*, T*, T*);                                                     \
  template void experts_backward<T>(const ExpertShape&, const int64_t*, const int64_t*, const T*, const T*,   \
                                    const T*, const T*, const T*, const T*, T*, T*, T*, T*, T*);
SY_INSTANTIATE_EXPERTS(float)
SY_INSTANTIATE_EXPERTS(double)
#undef SY_INSTANTIATE_EXPERTS

}  // namespace sy::moe
