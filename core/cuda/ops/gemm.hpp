// Row-major GEMMs on cuBLAS: the CUDA counterpart of sy::gemm (core/gemm.hpp).
//
// Every product is row-major, as on the CPU:
//   C(m, n) = alpha * op(A)(m, k) * op(B)(k, n) + beta * C,  op(X) = X or X^T,
// lda, ldb, ldc the row strides (elements) of the stored, untransposed matrices.
// beta == 0 overwrites C; k == 0 gives C = beta * C (zero when beta == 0), as sy::gemm.
//
// cuBLAS is column-major. A row-major (r, c) matrix with row stride ld is the
// column-major (c, r) matrix with leading dimension ld, its transpose, so
//   row-major C = op(A) op(B)  <=>  column-major C^T = op(B)^T op(A)^T:
// one cuBLAS call with the operands swapped (cuBLAS's A is our B) and m, n
// swapped; the transpose flags stay with their operands. column_major() below
// is that mapping in plain C++, so the CPU tests check it (GemmLaunchTest).
//
// Precision: storage T in {float, __nv_bfloat16, __half}, accumulation in fp32
// (cublasGemmEx with CUBLAS_COMPUTE_32F; alpha and beta are float). For float
// this is plain fp32: no TF32 unless the caller switched the handle's math mode
// to CUBLAS_TF32_TENSOR_OP_MATH (cublasCreate's default is CUBLAS_DEFAULT_MATH).
// 16-bit storage uses tensor cores and rounds C once, after alpha AB + beta C.
//
// Every launcher sets the handle's stream to `stream` and its pointer mode to
// host (alpha, beta are host floats), adds CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION
// to its math mode (split-K partials in fp32), and leaves them so; none synchronizes, none
// allocates device memory (grouped_gemm builds its small plan in a host vector).
//
// Grouped GEMM (the expert FFNs, models/experts.hpp): G problems that share the
// transposes, alpha, beta and all sizes but one; group g's count sets either its
// m (row-wise products: h1 = x W1^T) or its k (weight gradients: dW1 += dh1^T x).
// Each operand is either Packed (group g is rows [offset[g], offset[g] + count[g])
// of one row-major buffer: the expert layout) or PerGroup (group g's matrix starts
// g * group_stride elements after the base: the (E, rows_w, cols_w) weights).
// plan_grouped_gemm() resolves that on the host into one row-major problem per
// non-empty group; grouped_gemm() runs the plan as one cublasGemmEx per problem,
// on one stream, in group order. Why not cublasGemmGroupedBatchedEx (CUDA >= 12.5):
// it takes its A/B/C pointer arrays in device memory, so every call would need a
// caller-provided device table and a host-to-device copy of it ahead of the GEMM
// (stream-ordered, the host table kept alive until the copy is staged); and, as
// for cublasGemmBatchedEx, cuBLAS asks for 16-byte-aligned matrix pointers with
// 16-bit types, which packed expert rows (offset * width elements in) do not
// guarantee, while cublasGemmEx takes any alignment. With the E local experts
// (tens) the per-call launch cost is small beside the GEMMs. The plan already
// holds the per-problem arrays the grouped call takes (group_size 1 each), so
// switching later touches grouped_gemm() only.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "core/cuda/storage.hpp"
#include "core/gemm.hpp"  // sy::Trans

namespace sy::cuda::ops {

// ---------------------------------------------------------------------------
// Host-side planning (plain C++, core/cuda/ops/gemm_plan.cpp).

// Validates a row-major GEMM's sizes and strides (sizes >= 0; lda >= the stored
// A's width (k for N, m for T), ldb likewise (n for N, k for T), ldc >= n, each
// at least 1). Throws InvalidArgument naming `fn`.
void check_gemm_args(const char* fn, Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, int64_t lda,
                     int64_t ldb, int64_t ldc);

// The column-major (cuBLAS) call that computes a row-major product. Its first
// operand is the row-major B (with ldb), its second the row-major A (with lda).
struct ColumnMajorGemm {
  Trans trans_first;   // cuBLAS transa: the row-major trans_b
  Trans trans_second;  // cuBLAS transb: the row-major trans_a
  int64_t m, n, k;     // cuBLAS sizes: (n, m, k) of the row-major product
  int64_t ld_first;    // row-major ldb
  int64_t ld_second;   // row-major lda
  int64_t ldc;
};
ColumnMajorGemm column_major(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb,
                             int64_t ldc);

// Which GEMM dimension the group counts set.
enum class GroupedDim : uint8_t {
  M,  // group g: C_g (count[g], n) = op(A_g) (count[g], k) op(B_g) (k, n)
  K,  // group g: C_g (m, n) = op(A_g) (m, count[g]) op(B_g) (count[g], n)
};
enum class GroupedLayout : uint8_t {
  Packed,    // rows [offset[g], offset[g] + count[g]) of one row-major buffer; the
             // stored matrix's rows must be the grouped dimension (checked)
  PerGroup,  // group g's matrix at base + g * group_stride
};
struct GroupedOperand {
  GroupedLayout layout;
  int64_t ld;                // row stride (elements) of the stored row-major matrix
  int64_t group_stride = 0;  // PerGroup only: elements between consecutive groups
};
struct GroupedSizes {
  GroupedDim dim;
  int64_t m;  // the shared m (dim == K); ignored when dim == M
  int64_t n;  // shared
  int64_t k;  // the shared k (dim == M); ignored when dim == K
};
// One non-empty group as a row-major GEMM; offsets in elements from the operand bases.
struct GroupedProblem {
  int64_t group;
  int64_t m, n, k;
  int64_t a_offset, b_offset, c_offset;
};

// One problem per group with count[g] > 0, in group order. A group with count 0
// is skipped entirely: its C is left untouched even when beta != 1 (the CPU
// experts skip such experts too). offset and count are host arrays of `groups`.
std::vector<GroupedProblem> plan_grouped_gemm(Trans trans_a, Trans trans_b, const GroupedSizes& sizes,
                                              int64_t groups, const int64_t* offset, const int64_t* count,
                                              const GroupedOperand& a, const GroupedOperand& b,
                                              const GroupedOperand& c);

// ---------------------------------------------------------------------------
// Launchers (core/cuda/ops/gemm.cu), explicit for float, __nv_bfloat16, __half.

// Row-major C = alpha op(A) op(B) + beta C, as sy::gemm; a, b, c device pointers.
template <typename T>
void gemm(cublasHandle_t handle, Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha,
          const T* a, int64_t lda,  // op(A): (m, k)
          const T* b, int64_t ldb,  // op(B): (k, n)
          float beta, T* c, int64_t ldc,  // (m, n)
          cudaStream_t stream);

// `batch` independent row-major GEMMs; problem i uses a + i * stride_a,
// b + i * stride_b, c + i * stride_c (strides in elements, may be smaller than a
// matrix: interleaved column blocks such as attention heads). The C blocks of
// different problems must not share elements.
template <typename T>
void gemm_strided_batched(cublasHandle_t handle, Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k,
                          float alpha, const T* a, int64_t lda, int64_t stride_a, const T* b, int64_t ldb,
                          int64_t stride_b, float beta, T* c, int64_t ldc, int64_t stride_c, int64_t batch,
                          cudaStream_t stream);

// The grouped GEMM described at the top: plan_grouped_gemm() then one gemm() per
// non-empty group on `stream`. offset and count are HOST arrays of `groups`.
template <typename T>
void grouped_gemm(cublasHandle_t handle, Trans trans_a, Trans trans_b, const GroupedSizes& sizes, int64_t groups,
                  const int64_t* offset, const int64_t* count,  // host, (groups), (groups)
                  float alpha, const T* a, const GroupedOperand& a_layout, const T* b,
                  const GroupedOperand& b_layout, float beta, T* c, const GroupedOperand& c_layout,
                  cudaStream_t stream);

}  // namespace sy::cuda::ops
