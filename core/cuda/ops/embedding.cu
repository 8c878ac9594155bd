#include "core/cuda/ops/embedding.hpp"

#include <algorithm>

#include "core/cuda/checks.hpp"
#include "core/cuda/launch.hpp"
#include "core/error.hpp"

namespace sy::cuda::ops {

namespace {

// One thread per output element (n, c).
template <typename T>
__global__ void embedding_forward_kernel(T* out, const int32_t* ids, const T* table, int64_t N, int64_t V, int64_t C) {
  const int64_t total = N * C;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i / C, c = i - n * C;
    const int32_t id = ids[n];
    out[i] = (id >= 0 && id < V) ? table[int64_t(id) * C + c] : from_float<T>(__int_as_float(0x7fc00000));
  }
}

// Thread (bucket b, column c) owns the elements (v, c) with v mod buckets == b and
// adds the rows of those ids in the order n = 0..N-1. Adjacent threads of a warp
// take adjacent columns of one bucket: the id loads are broadcasts and the dout
// and dtable accesses coalesce.
template <typename T>
__global__ void embedding_backward_kernel(T* dtable, const int32_t* ids, const T* dout, int64_t N, int64_t V,
                                          int64_t C, int64_t buckets) {
  const int64_t total = buckets * C;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t bucket = i / C, c = i - bucket * C;
    for (int64_t n = 0; n < N; ++n) {
      const int32_t id = ids[n];
      if (id < 0 || id >= V || id % buckets != bucket) continue;
      T* dst = dtable + int64_t(id) * C + c;
      *dst = from_float<T>(to_float(*dst) + to_float(dout[n * C + c]));
    }
  }
}

void check_sizes(const char* fn, int64_t N, int64_t V, int64_t C) {
  SY_REQUIRE(N >= 0 && V >= 0 && C >= 0,
             fn << ": sizes must be non-negative, got N=" << N << " V=" << V << " C=" << C);
}

}  // namespace

template <typename T>
void embedding_forward(T* out, const int32_t* ids, const T* table, int64_t N, int64_t V, int64_t C,
                       cudaStream_t stream) {
  check_sizes("embedding_forward", N, V, C);
  if (N == 0 || C == 0) return;
  SY_REQUIRE(out != nullptr && ids != nullptr && (table != nullptr || V == 0),
             "embedding_forward: buffers must be non-null");
  const Launch l = launch_elementwise(N * C);
  embedding_forward_kernel<T><<<unsigned(l.blocks), l.threads, 0, stream>>>(out, ids, table, N, V, C);
  SY_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void embedding_backward(T* dtable, const int32_t* ids, const T* dout, int64_t N, int64_t V, int64_t C,
                        cudaStream_t stream) {
  check_sizes("embedding_backward", N, V, C);
  if (N == 0 || V == 0 || C == 0) return;
  SY_REQUIRE(dtable != nullptr && ids != nullptr && dout != nullptr, "embedding_backward: buffers must be non-null");
  const int64_t buckets = std::min(V, kEmbeddingBuckets);
  const Launch l = launch_elementwise(buckets * C);
  embedding_backward_kernel<T><<<unsigned(l.blocks), l.threads, 0, stream>>>(dtable, ids, dout, N, V, C, buckets);
  SY_CUDA_CHECK(cudaGetLastError());
}

#define SY_INSTANTIATE_EMBEDDING(T)                                                                       \
  template void embedding_forward<T>(T*, const int32_t*, const T*, int64_t, int64_t, int64_t, cudaStream_t); \
  template void embedding_backward<T>(T*, const int32_t*, const T*, int64_t, int64_t, int64_t, cudaStream_t);
SY_CUDA_FOR_EACH_STORAGE(SY_INSTANTIATE_EMBEDDING)
#undef SY_INSTANTIATE_EMBEDDING

}  // namespace sy::cuda::ops
