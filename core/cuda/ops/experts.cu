#include "core/cuda/ops/experts.hpp"

#include "core/cuda/checks.hpp"
#include "core/cuda/ops/activation.hpp"
#include "core/error.hpp"

namespace sy::cuda::ops {

namespace {

void check_args(const char* fn, const ExpertShape& s, const int64_t* offset, const int64_t* count) {
  SY_REQUIRE(s.num_experts > 0 && s.model_dim > 0 && s.hidden > 0,
             fn << ": expert sizes must be positive, got E=" << s.num_experts << " M=" << s.model_dim
                << " H=" << s.hidden);
  SY_REQUIRE(offset != nullptr && count != nullptr, fn << ": offset and count (host arrays of E) must be non-null");
  for (int64_t e = 0; e < s.num_experts; ++e)
    SY_REQUIRE(offset[e] >= 0 && count[e] >= 0,
               fn << ": expert " << e << " has offset " << offset[e] << " and count " << count[e]
                  << "; both must be non-negative");
}

template <typename T>
void activation_forward(ActivationKind kind, T* out, const T* in, int64_t rows, int64_t hidden,
                        cudaStream_t stream) {
  switch (kind) {
    case ActivationKind::ReLU: relu_forward<T>(out, in, rows * hidden, stream); break;
    case ActivationKind::GELU: gelu_forward<T>(out, in, rows * hidden, stream); break;
    case ActivationKind::SwiGLU: swiglu_forward<T>(out, in, rows, hidden, stream); break;
  }
}

template <typename T>
void activation_backward(ActivationKind kind, T* din, const T* in, const T* dout, int64_t rows, int64_t hidden,
                         cudaStream_t stream) {
  switch (kind) {
    case ActivationKind::ReLU: relu_backward<T>(din, in, dout, rows * hidden, stream); break;
    case ActivationKind::GELU: gelu_backward<T>(din, in, dout, rows * hidden, stream); break;
    case ActivationKind::SwiGLU: swiglu_backward<T>(din, in, dout, rows, hidden, stream); break;
  }
}

template <typename T>
void run(cublasHandle_t handle, const ExpertGemm& g, const ExpertShape& s, const int64_t* offset,
         const int64_t* count, const T* a, const T* b, T* c, cudaStream_t stream) {
  grouped_gemm<T>(handle, g.trans_a, g.trans_b, g.sizes, s.num_experts, offset, count, 1.0f, a, g.a, b, g.b, g.beta,
                  c, g.c, stream);
}

}  // namespace

template <typename T>
void experts_forward(const ExpertShape& s, const int64_t* offset, const int64_t* count, const T* x, const T* w1,
                     const T* w2, T* h1, T* act, T* y, cublasHandle_t handle, cudaStream_t stream) {
  check_args("experts_forward", s, offset, count);
  const std::vector<RowRun> runs = expert_row_runs(s.num_experts, offset, count);
  if (runs.empty()) return;
  SY_REQUIRE(x != nullptr && w1 != nullptr && w2 != nullptr && h1 != nullptr && act != nullptr && y != nullptr,
             "experts_forward: buffers must be non-null");
  SY_REQUIRE(handle != nullptr, "experts_forward: the cuBLAS handle must be non-null");
  const int64_t H = s.hidden, H1 = s.h1();
  const ExpertGemms g = expert_gemms(s);
  run<T>(handle, g.h1, s, offset, count, x, w1, h1, stream);
  for (const RowRun& r : runs)
    activation_forward<T>(s.activation, act + r.first_row * H, h1 + r.first_row * H1, r.rows, H, stream);
  run<T>(handle, g.y, s, offset, count, act, w2, y, stream);
}

template <typename T>
void experts_backward(const ExpertShape& s, const int64_t* offset, const int64_t* count, const T* x, const T* w1,
                      const T* w2, const T* h1, const T* act, const T* dy, T* dact, T* dh1, T* dx, T* dw1, T* dw2,
                      cublasHandle_t handle, cudaStream_t stream) {
  check_args("experts_backward", s, offset, count);
  const std::vector<RowRun> runs = expert_row_runs(s.num_experts, offset, count);
  if (runs.empty()) return;
  SY_REQUIRE(x != nullptr && w1 != nullptr && w2 != nullptr && h1 != nullptr && act != nullptr && dy != nullptr &&
                 dact != nullptr && dh1 != nullptr && dx != nullptr && dw1 != nullptr && dw2 != nullptr,
             "experts_backward: buffers must be non-null");
  SY_REQUIRE(handle != nullptr, "experts_backward: the cuBLAS handle must be non-null");
  const int64_t H = s.hidden, H1 = s.h1();
  const ExpertGemms g = expert_gemms(s);
  run<T>(handle, g.dact, s, offset, count, dy, w2, dact, stream);
  run<T>(handle, g.dw2, s, offset, count, dy, act, dw2, stream);
  for (const RowRun& r : runs)
    activation_backward<T>(s.activation, dh1 + r.first_row * H1, h1 + r.first_row * H1, dact + r.first_row * H,
                           r.rows, H, stream);
  run<T>(handle, g.dx, s, offset, count, dh1, w1, dx, stream);
  run<T>(handle, g.dw1, s, offset, count, dh1, x, dw1, stream);
}

#define SY_INSTANTIATE_EXPERTS(T)                                                                                 \
  template void experts_forward<T>(const ExpertShape&, const int64_t*, const int64_t*, const T*, const T*,        \
                                   const T*, T*, T*, T*, cublasHandle_t, cudaStream_t);                           \
  template void experts_backward<T>(const ExpertShape&, const int64_t*, const int64_t*, const T*, const T*,       \
                                    const T*, const T*, const T*, const T*, T*, T*, T*, T*, T*, cublasHandle_t,  \
                                    cudaStream_t);
SY_CUDA_FOR_EACH_STORAGE(SY_INSTANTIATE_EXPERTS)
#undef SY_INSTANTIATE_EXPERTS

}  // namespace sy::cuda::ops
