#include "core/cuda/ops/gemm.hpp"

#include "core/cuda/checks.hpp"
#include "core/cuda/launch.hpp"
#include "core/error.hpp"

namespace sy::cuda::ops {

namespace {

template <typename T>
constexpr cudaDataType_t data_type();
template <>
constexpr cudaDataType_t data_type<float>() {
  return CUDA_R_32F;
}
template <>
constexpr cudaDataType_t data_type<__nv_bfloat16>() {
  return CUDA_R_16BF;
}
template <>
constexpr cudaDataType_t data_type<__half>() {
  return CUDA_R_16F;
}

cublasOperation_t to_cublas(Trans t) { return t == Trans::N ? CUBLAS_OP_N : CUBLAS_OP_T; }

// C = beta * C on `batch` (m, n) blocks (row stride ldc, block stride stride_c):
// the k == 0 product, which we do ourselves rather than rely on cuBLAS's k == 0
// path. beta == 0 writes exact zeros (NaNs in C are not propagated, as sy::gemm).
template <typename T>
__global__ void scale_kernel(T* c, int64_t batch, int64_t m, int64_t n, int64_t ldc, int64_t stride_c, float beta) {
  const int64_t per_block = m * n;
  const int64_t total = batch * per_block;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t bi = i / per_block, rem = i % per_block;
    T* x = c + bi * stride_c + (rem / n) * ldc + rem % n;
    *x = from_float<T>(beta == 0.0f ? 0.0f : beta * to_float(*x));
  }
}

template <typename T>
void scale_c(T* c, int64_t batch, int64_t m, int64_t n, int64_t ldc, int64_t stride_c, float beta,
             cudaStream_t stream) {
  if (beta == 1.0f) return;
  const Launch l = launch_elementwise(batch * m * n);
  if (l.blocks == 0) return;
  scale_kernel<T><<<static_cast<unsigned>(l.blocks), l.threads, 0, stream>>>(c, batch, m, n, ldc, stride_c, beta);
  SY_CUDA_CHECK(cudaGetLastError());
}

void bind(cublasHandle_t handle, cudaStream_t stream) {
  SY_CUBLAS_CHECK(cublasSetStream(handle, stream));
  // alpha and beta are host floats.
  SY_CUBLAS_CHECK(cublasSetPointerMode(handle, CUBLAS_POINTER_MODE_HOST));
  // By default cuBLAS may add split-K partial sums in the output type (bf16/fp16);
  // keep them in fp32 so C is rounded once, as documented. The caller's other
  // math-mode bits (TF32) are kept.
  cublasMath_t mode = CUBLAS_DEFAULT_MATH;
  SY_CUBLAS_CHECK(cublasGetMathMode(handle, &mode));
  const auto fp32_reductions = static_cast<cublasMath_t>(mode | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
  if (fp32_reductions != mode) SY_CUBLAS_CHECK(cublasSetMathMode(handle, fp32_reductions));
}

}  // namespace

template <typename T>
void gemm(cublasHandle_t handle, Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha,
          const T* a, int64_t lda, const T* b, int64_t ldb, float beta, T* c, int64_t ldc, cudaStream_t stream) {
  check_gemm_args("gemm", trans_a, trans_b, m, n, k, lda, ldb, ldc);
  SY_REQUIRE(handle != nullptr, "gemm: the cuBLAS handle must be non-null");
  if (m == 0 || n == 0) return;
  SY_REQUIRE(c != nullptr && (k == 0 || (a != nullptr && b != nullptr)),
             "gemm: a, b and c must be non-null for a non-empty product");
  if (k == 0) {
    scale_c(c, 1, m, n, ldc, 0, beta, stream);
    return;
  }
  bind(handle, stream);
  const ColumnMajorGemm cm = column_major(trans_a, trans_b, m, n, k, lda, ldb, ldc);
  SY_CUBLAS_CHECK(cublasGemmEx_64(handle, to_cublas(cm.trans_first), to_cublas(cm.trans_second), cm.m, cm.n, cm.k,
                                  &alpha, b, data_type<T>(), cm.ld_first, a, data_type<T>(), cm.ld_second, &beta, c,
                                  data_type<T>(), cm.ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

template <typename T>
void gemm_strided_batched(cublasHandle_t handle, Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k,
                          float alpha, const T* a, int64_t lda, int64_t stride_a, const T* b, int64_t ldb,
                          int64_t stride_b, float beta, T* c, int64_t ldc, int64_t stride_c, int64_t batch,
                          cudaStream_t stream) {
  check_gemm_args("gemm_strided_batched", trans_a, trans_b, m, n, k, lda, ldb, ldc);
  SY_REQUIRE(batch >= 0 && stride_a >= 0 && stride_b >= 0 && stride_c >= 0,
             "gemm_strided_batched: batch and strides must be non-negative, got batch="
                 << batch << " strides " << stride_a << ", " << stride_b << ", " << stride_c);
  SY_REQUIRE(handle != nullptr, "gemm_strided_batched: the cuBLAS handle must be non-null");
  if (batch == 0 || m == 0 || n == 0) return;
  SY_REQUIRE(c != nullptr && (k == 0 || (a != nullptr && b != nullptr)),
             "gemm_strided_batched: a, b and c must be non-null for a non-empty product");
  if (k == 0) {
    scale_c(c, batch, m, n, ldc, stride_c, beta, stream);
    return;
  }
  bind(handle, stream);
  const ColumnMajorGemm cm = column_major(trans_a, trans_b, m, n, k, lda, ldb, ldc);
  SY_CUBLAS_CHECK(cublasGemmStridedBatchedEx_64(
      handle, to_cublas(cm.trans_first), to_cublas(cm.trans_second), cm.m, cm.n, cm.k, &alpha, b, data_type<T>(),
      cm.ld_first, static_cast<long long>(stride_b), a, data_type<T>(), cm.ld_second, static_cast<long long>(stride_a),
      &beta, c, data_type<T>(), cm.ldc, static_cast<long long>(stride_c), batch, CUBLAS_COMPUTE_32F,
      CUBLAS_GEMM_DEFAULT));
}

template <typename T>
void grouped_gemm(cublasHandle_t handle, Trans trans_a, Trans trans_b, const GroupedSizes& sizes, int64_t groups,
                  const int64_t* offset, const int64_t* count, float alpha, const T* a, const GroupedOperand& a_layout,
                  const T* b, const GroupedOperand& b_layout, float beta, T* c, const GroupedOperand& c_layout,
                  cudaStream_t stream) {
  const std::vector<GroupedProblem> plan =
      plan_grouped_gemm(trans_a, trans_b, sizes, groups, offset, count, a_layout, b_layout, c_layout);
  if (plan.empty()) return;
  SY_REQUIRE(handle != nullptr, "grouped_gemm: the cuBLAS handle must be non-null");
  SY_REQUIRE(a != nullptr && b != nullptr && c != nullptr, "grouped_gemm: a, b and c must be non-null");
  for (const GroupedProblem& p : plan)
    gemm<T>(handle, trans_a, trans_b, p.m, p.n, p.k, alpha, a + p.a_offset, a_layout.ld, b + p.b_offset, b_layout.ld,
            beta, c + p.c_offset, c_layout.ld, stream);
}

#define SY_INSTANTIATE_GEMM(T)                                                                                     \
  template void gemm<T>(cublasHandle_t, Trans, Trans, int64_t, int64_t, int64_t, float, const T*, int64_t,        \
                        const T*, int64_t, float, T*, int64_t, cudaStream_t);                                      \
  template void gemm_strided_batched<T>(cublasHandle_t, Trans, Trans, int64_t, int64_t, int64_t, float, const T*, \
                                        int64_t, int64_t, const T*, int64_t, int64_t, float, T*, int64_t, int64_t,  \
                                        int64_t, cudaStream_t);                                                    \
  template void grouped_gemm<T>(cublasHandle_t, Trans, Trans, const GroupedSizes&, int64_t, const int64_t*,       \
                                const int64_t*, float, const T*, const GroupedOperand&, const T*,                 \
                                const GroupedOperand&, float, T*, const GroupedOperand&, cudaStream_t);
SY_CUDA_FOR_EACH_STORAGE(SY_INSTANTIATE_GEMM)
#undef SY_INSTANTIATE_GEMM

}  // namespace sy::cuda::ops
