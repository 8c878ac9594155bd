// CUDA token embedding: a row lookup into a (V, C) table; the CPU ops of
// core/ops/embedding.hpp are the specification (same names and arguments plus
// a stream).
//
// Forward:   out[n, :] = table[ids[n], :]
// Backward:  dtable[v, :] += sum over n with ids[n] == v of dout[n, :]   (accumulated)
// There is no input gradient (ids are integers). The scatter-add gives each
// element (v, c) of dtable to exactly one thread, which adds the rows n with
// ids[n] == v in the order n = 0..N-1, as the CPU op does: no atomics, and the
// result is bitwise reproducible even when an id repeats. (Threads are one per
// column c and id bucket v mod kEmbeddingBuckets, so short rows still fill the GPU;
// the bucketing changes which thread adds, never the order of the additions.)
// Each addition is rounded to the storage type T (dtable is read and written
// per row): keep dtable in fp32 where many repeats of one id must add up exactly.
//
// Ids live on the device, so they are not validated here the way the CPU op
// validates them (it throws): an id outside [0, V) is never used as an index;
// the forward fills that output row with NaN (the loss then turns non-finite
// and the trainer's check reports it) and the backward skips the row. Validate
// ids on the host (the data loader has them there) when the exception is wanted.
//
// Storage T is float, __nv_bfloat16 or __half. Sizes >= 0 (nothing is launched
// for an empty output); all pointers are device pointers; asynchronous on `stream`.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/cuda/storage.hpp"

namespace sy::cuda::ops {

// Id buckets of the backward (see above): threads = C * min(V, kEmbeddingBuckets).
inline constexpr int64_t kEmbeddingBuckets = 64;

template <typename T>
void embedding_forward(T* out,              // (N, C)
                       const int32_t* ids,  // (N)
                       const T* table,      // (V, C)
                       int64_t N, int64_t V, int64_t C, cudaStream_t stream);

template <typename T>
void embedding_backward(T* dtable,           // (V, C), +=
                        const int32_t* ids,  // (N)
                        const T* dout,       // (N, C)
                        int64_t N, int64_t V, int64_t C, cudaStream_t stream);

}  // namespace sy::cuda::ops
