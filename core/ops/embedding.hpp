// Token embedding: a row lookup into a (V, C) table.
//
// Forward:   out[n, :] = table[ids[n], :]
// Backward:  dtable[v, :] += sum over n with ids[n] == v of dout[n, :]   (accumulated)
// There is no input gradient (ids are integers). The scatter-add is split over
// columns, each thread adding the rows in order n = 0..N-1: no two threads touch
// the same element, and the result does not depend on the thread count even
// when an id repeats.
// Every id must be in [0, V); the first bad one throws InvalidArgument naming it.
#pragma once

#include <cstdint>

namespace sy::ops {

template <typename T>
void embedding_forward(T* out,             // (N, C)
                       const int32_t* ids, // (N)
                       const T* table,     // (V, C)
                       int64_t N, int64_t V, int64_t C);

template <typename T>
void embedding_backward(T* dtable,          // (V, C), +=
                        const int32_t* ids, // (N)
                        const T* dout,      // (N, C)
                        int64_t N, int64_t V, int64_t C);

}  // namespace sy::ops
