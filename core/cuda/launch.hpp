// Launch configurations of the CUDA kernels, in plain C++ so that the CPU
// tests check them (tests/core/cuda/LaunchTest.cpp) on machines without a GPU.
//
// Two shapes cover every kernel of core/cuda:
//  - element-wise: a 1-D grid-stride loop over n elements. The grid is capped
//    (kMaxBlocks) so huge tensors need no 64-bit grid arithmetic and small
//    ones do not launch empty blocks.
//  - row-wise: one block per row (softmax, norms, cross-entropy, top-k), its
//    threads striding over the row's columns and reducing in shared memory.
//    The block is a whole number of warps, at most kMaxThreads, and no wider
//    than the row needs; rows beyond the grid limit are grid-strided too.
#pragma once

#include <algorithm>
#include <cstdint>

namespace sy::cuda {

inline constexpr int kWarp = 32;
inline constexpr int kBlock = 256;       // threads per element-wise block
inline constexpr int kMaxThreads = 1024;  // per block, every architecture we build for
inline constexpr int64_t kMaxBlocks = int64_t(1) << 16;

struct Launch {
  int64_t blocks = 0;  // 0: nothing to launch
  int threads = 0;
  size_t shared_bytes = 0;
};

// Element-wise: ceil(n / threads) blocks, capped at kMaxBlocks (the kernel grid-strides).
inline Launch launch_elementwise(int64_t n, int threads = kBlock) {
  if (n <= 0) return {};
  const int64_t blocks = std::min<int64_t>((n + threads - 1) / threads, kMaxBlocks);
  return {blocks, threads, 0};
}

// Row-wise: one block per row (capped; the kernel grid-strides over rows), threads
// the smallest whole number of warps that gives each thread >= 1 column, at most
// kMaxThreads; shared memory holds one float (or reduction_width floats) per warp.
inline Launch launch_rows(int64_t rows, int64_t cols, int reduction_width = 1) {
  if (rows <= 0) return {};
  const int64_t want = std::max<int64_t>(cols, 1);
  const int threads = static_cast<int>(std::min<int64_t>(kMaxThreads, (want + kWarp - 1) / kWarp * kWarp));
  const int64_t blocks = std::min<int64_t>(rows, kMaxBlocks);
  const size_t shared = sizeof(float) * static_cast<size_t>(reduction_width) * static_cast<size_t>(threads / kWarp);
  return {blocks, threads, shared};
}

}  // namespace sy::cuda
