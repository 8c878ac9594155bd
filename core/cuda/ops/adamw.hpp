// CUDA AdamW update with fp32 master weights; models/optimizer.hpp adamw_update
// is the specification (same name, arguments in the same order, with the fp32
// master and the storage-type working copy in place of its single T* param, and
// the non-finite count written to a device counter instead of returned).
//
// AdamW (decoupled weight decay), step t >= 1, on each element:
//   m = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2
//   p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + lr wd p   (wd only where decay is set)
// Computed in double per element (core/cuda/ops/elementwise_math.hpp
// adamw_element, the CPU op's expression), from the fp32 master p, fp32 moments
// m and v and the gradient g in storage type T; stored back as fp32 (master, m,
// v) and as T (the working copy the forward pass reads). Element-wise, so a rank
// updates its own shard with its own m and v; each element is one thread's:
// deterministic.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/cuda/storage.hpp"
#include "models/optimizer.hpp"

namespace sy::cuda::ops {

// master, m, v (n) updated in place from grad (n); param_out (n) receives the new
// master rounded to T. param_out may be nullptr only when T is float (the master
// is then the working copy) and may equal master then. decay (n) may be nullptr
// (decay everywhere when weight_decay > 0) or a 0/1 mask per element.
// nonfinite, when not nullptr, is a device counter to which the op ADDS the number
// of updated elements whose new master value or working copy is not finite (zero
// it before the first shard of a step; the CPU op returns the count instead).
// All pointers are device pointers; n >= 0; asynchronous on `stream`.
template <typename T>
void adamw_update(float* master,          // (n) fp32 master weights, in place
                  T* param_out,           // (n) working copy, overwritten, or nullptr (T = float only)
                  const T* grad,          // (n)
                  float* m,               // (n) first moment, in place
                  float* v,               // (n) second moment, in place
                  const uint8_t* decay,   // (n) 0/1 mask, or nullptr
                  int64_t n, const models::AdamWStep& s,
                  int64_t* nonfinite,     // (1) device counter, +=, or nullptr
                  cudaStream_t stream);

}  // namespace sy::cuda::ops
