// Host-side planning of the cuBLAS GEMMs (core/cuda/ops/gemm.hpp): plain C++,
// checked on the CPU by tests/core/cuda/GemmLaunchTest.cpp.
#include <algorithm>

#include "core/cuda/ops/gemm.hpp"
#include "core/error.hpp"

namespace sy::cuda::ops {

namespace {

const char* name(Trans t) { return t == Trans::N ? "N" : "T"; }

const char* name(GroupedDim d) { return d == GroupedDim::M ? "M" : "K"; }

}  // namespace

void check_gemm_args(const char* fn, Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, int64_t lda,
                     int64_t ldb, int64_t ldc) {
  SY_REQUIRE(m >= 0 && n >= 0 && k >= 0,
             fn << ": GEMM sizes must be non-negative, got m=" << m << " n=" << n << " k=" << k);
  const int64_t a_cols = trans_a == Trans::N ? k : m;
  const int64_t b_cols = trans_b == Trans::N ? n : k;
  SY_REQUIRE(lda >= std::max<int64_t>(1, a_cols), fn << ": lda=" << lda << " is below the stored A's width "
                                                     << a_cols << " (trans_a=" << name(trans_a) << ")");
  SY_REQUIRE(ldb >= std::max<int64_t>(1, b_cols), fn << ": ldb=" << ldb << " is below the stored B's width "
                                                     << b_cols << " (trans_b=" << name(trans_b) << ")");
  SY_REQUIRE(ldc >= std::max<int64_t>(1, n), fn << ": ldc=" << ldc << " is below C's width " << n);
}

ColumnMajorGemm column_major(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb,
                             int64_t ldc) {
  // Row-major C (m, n) is column-major C^T (n, m) = op(B)^T (n, k) op(A)^T (k, m);
  // the stored row-major B read column-major is B^T, so op(B)^T keeps B's flag.
  return ColumnMajorGemm{trans_b, trans_a, n, m, k, ldb, lda, ldc};
}

std::vector<GroupedProblem> plan_grouped_gemm(Trans trans_a, Trans trans_b, const GroupedSizes& sizes,
                                              int64_t groups, const int64_t* offset, const int64_t* count,
                                              const GroupedOperand& a, const GroupedOperand& b,
                                              const GroupedOperand& c) {
  const char* fn = "grouped_gemm";
  SY_REQUIRE(groups >= 0, fn << ": group count must be non-negative, got " << groups);
  SY_REQUIRE(groups == 0 || (offset != nullptr && count != nullptr),
             fn << ": offset and count (host arrays of " << groups << ") must be non-null");
  SY_REQUIRE(sizes.n >= 0, fn << ": n must be non-negative, got " << sizes.n);
  if (sizes.dim == GroupedDim::M)
    SY_REQUIRE(sizes.k >= 0, fn << ": k must be non-negative, got " << sizes.k);
  else
    SY_REQUIRE(sizes.m >= 0, fn << ": m must be non-negative, got " << sizes.m);

  // A packed operand is cut along its stored rows, so those must be the grouped dimension.
  const GroupedDim a_rows = trans_a == Trans::N ? GroupedDim::M : GroupedDim::K;
  const bool b_rows_are_k = trans_b == Trans::N;  // stored B is (k, n) for N, (n, k) for T
  if (a.layout == GroupedLayout::Packed)
    SY_REQUIRE(a_rows == sizes.dim, fn << ": a packed A needs its stored rows to be the grouped dimension "
                                       << name(sizes.dim) << " (trans_a=" << name(trans_a) << ")");
  if (b.layout == GroupedLayout::Packed)
    SY_REQUIRE(sizes.dim == GroupedDim::K && b_rows_are_k,
               fn << ": a packed B needs grouped dimension K and trans_b=N, got " << name(sizes.dim) << " and "
                  << name(trans_b));
  if (c.layout == GroupedLayout::Packed)
    SY_REQUIRE(sizes.dim == GroupedDim::M, fn << ": a packed C needs grouped dimension M (C's rows)");
  for (const GroupedOperand* op : {&a, &b, &c})
    if (op->layout == GroupedLayout::PerGroup)
      SY_REQUIRE(op->group_stride >= 0, fn << ": group_stride must be non-negative, got " << op->group_stride);

  auto start = [&](const GroupedOperand& op, int64_t g) {
    return op.layout == GroupedLayout::Packed ? offset[g] * op.ld : g * op.group_stride;
  };

  std::vector<GroupedProblem> plan;
  for (int64_t g = 0; g < groups; ++g) {
    SY_REQUIRE(count[g] >= 0 && offset[g] >= 0,
               fn << ": group " << g << " has offset " << offset[g] << " and count " << count[g]
                  << "; both must be non-negative");
    if (count[g] == 0) continue;
    const int64_t m = sizes.dim == GroupedDim::M ? count[g] : sizes.m;
    const int64_t k = sizes.dim == GroupedDim::K ? count[g] : sizes.k;
    if (m == 0 || sizes.n == 0) continue;  // an empty C: nothing to write
    check_gemm_args(fn, trans_a, trans_b, m, sizes.n, k, a.ld, b.ld, c.ld);
    plan.push_back(GroupedProblem{g, m, sizes.n, k, start(a, g), start(b, g), start(c, g)});
  }
  return plan;
}

}  // namespace sy::cuda::ops
