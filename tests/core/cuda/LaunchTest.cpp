// The launch configurations of core/cuda/launch.hpp, checked on the CPU: a
// grid-stride loop with the returned grid visits every element exactly once,
// and a row launch is a whole number of warps within the block limit.
#include "core/cuda/launch.hpp"

#include <gtest/gtest.h>

#include <vector>

namespace sy {
namespace {

// What the kernels do: for (i = block * threads + thread; i < n; i += blocks * threads).
std::vector<int> visits(const cuda::Launch& l, int64_t n) {
  std::vector<int> seen(static_cast<size_t>(n), 0);
  for (int64_t b = 0; b < l.blocks; ++b)
    for (int t = 0; t < l.threads; ++t)
      for (int64_t i = b * l.threads + t; i < n; i += l.blocks * l.threads) ++seen[static_cast<size_t>(i)];
  return seen;
}

TEST(CudaLaunch, ElementwiseGridVisitsEachElementOnce) {
  for (int64_t n : {int64_t(1), int64_t(255), int64_t(256), int64_t(257), int64_t(100003)}) {
    const cuda::Launch l = cuda::launch_elementwise(n);
    EXPECT_GE(l.blocks, 1);
    EXPECT_LE(l.blocks, cuda::kMaxBlocks);
    for (int v : visits(l, n)) ASSERT_EQ(v, 1) << "n = " << n;
  }
}

TEST(CudaLaunch, ElementwiseGridIsCappedForHugeTensors) {
  const int64_t n = int64_t(1) << 40;  // more elements than a 32-bit grid could index
  const cuda::Launch l = cuda::launch_elementwise(n);
  EXPECT_EQ(l.blocks, cuda::kMaxBlocks);
  EXPECT_EQ(l.threads, cuda::kBlock);
}

TEST(CudaLaunch, NothingToLaunchForEmptyInput) {
  EXPECT_EQ(cuda::launch_elementwise(0).blocks, 0);
  EXPECT_EQ(cuda::launch_rows(0, 64).blocks, 0);
}

TEST(CudaLaunch, RowLaunchIsWholeWarpsWithinTheBlockLimit) {
  for (int64_t cols : {int64_t(1), int64_t(31), int64_t(33), int64_t(1000), int64_t(1024), int64_t(50257)}) {
    const cuda::Launch l = cuda::launch_rows(7, cols, 2);
    EXPECT_EQ(l.blocks, 7);
    EXPECT_EQ(l.threads % cuda::kWarp, 0) << cols;
    EXPECT_GE(l.threads, cuda::kWarp);
    EXPECT_LE(l.threads, cuda::kMaxThreads);
    if (cols <= cuda::kMaxThreads) EXPECT_GE(l.threads, cols);  // one column per thread at least
    EXPECT_EQ(l.shared_bytes, sizeof(float) * 2 * size_t(l.threads / cuda::kWarp));
  }
  EXPECT_EQ(cuda::launch_rows(int64_t(1) << 20, 8).blocks, cuda::kMaxBlocks);  // rows grid-strided
}

}  // namespace
}  // namespace sy
