// Fully connected layer: y = x W^T + b.
//
// Forward:   y(N, out) = x(N, in) W(out, in)^T + b(out)
// Backward:  dx = dy W          (overwritten)
//            dW += dy^T x       (accumulated)
//            db += sum_n dy[n]  (accumulated)
// Parameter gradients accumulate with +=, activation gradients are overwritten,
// so gradient accumulation over micro-batches needs no extra buffers.
// All products go through sy::gemm on the compute pool.
#pragma once

#include <cstdint>

namespace sy::ops {

// bias may be nullptr (no bias).
template <typename T>
void linear_forward(T* out,           // (N, out_features)
                    const T* x,       // (N, in_features)
                    const T* weight,  // (out_features, in_features)
                    const T* bias,    // (out_features) or nullptr
                    int64_t N, int64_t in_features, int64_t out_features);

// dx == nullptr skips the input gradient (first layer); dbias == nullptr skips
// the bias gradient (layer without bias). dweight is required.
template <typename T>
void linear_backward(T* dx,            // (N, in_features), overwritten, or nullptr
                     T* dweight,       // (out_features, in_features), +=
                     T* dbias,         // (out_features), +=, or nullptr
                     const T* dout,    // (N, out_features)
                     const T* x,       // (N, in_features)
                     const T* weight,  // (out_features, in_features)
                     int64_t N, int64_t in_features, int64_t out_features);

}  // namespace sy::ops
