// The CUDA backend: device memory, one stream, cuBLAS GEMM. Same interface and
// semantics as the CPU backend, which is its specification; the kernels of
// later issues keep the CPU ops' names and arguments plus a stream.
#pragma once

#include <memory>

#include "core/backend.hpp"

namespace sy {

// Number of usable CUDA devices; 0 (not an error) when there is no driver or GPU.
int cuda_device_count();
std::unique_ptr<Backend> make_cuda_backend(int device_ordinal);

}  // namespace sy
