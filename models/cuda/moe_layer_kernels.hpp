// The two small kernels the GPU MoE layer needs beside the core/cuda ops: the
// balancing loss's column sums of the router probabilities, and the addition
// of its (constant per expert) gradient to every row of dprobs.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace sy::moe::cuda_kernels {

// sums[c] = sum over rows of x[r, c], in double, one block per column with a
// fixed reduction tree (deterministic).
void column_sums(const float* x,  // (rows, cols)
                 int64_t rows, int cols,
                 double* sums,  // (cols)
                 cudaStream_t stream);

// x[r, c] += v[c] for every row.
void add_row_vector(float* x,        // (rows, cols)
                    const float* v,  // (cols)
                    int64_t rows, int cols, cudaStream_t stream);

}  // namespace sy::moe::cuda_kernels
