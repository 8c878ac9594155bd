#include "core/cuda/ops/adamw.hpp"

#include <type_traits>

#include "core/cuda/checks.hpp"
#include "core/cuda/launch.hpp"
#include "core/cuda/ops/elementwise_math.hpp"
#include "core/error.hpp"

namespace sy::cuda::ops {

namespace {

// Grid-stride over the elements; each block adds its non-finite count to the
// device counter with one integer atomic (integer sums do not depend on order).
template <typename T>
__global__ void adamw_kernel(float* master, T* param_out, const T* grad, float* m, float* v, const uint8_t* decay,
                             int64_t n, math::AdamWCoefficients c, unsigned long long* nonfinite) {
  __shared__ unsigned int block_bad;
  if (threadIdx.x == 0) block_bad = 0;
  __syncthreads();
  unsigned int bad = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    double mi = double(m[i]), vi = double(v[i]);
    const double p = math::adamw_element(double(master[i]), double(to_float(grad[i])), mi, vi,
                                         decay == nullptr || decay[i] != 0, c);
    m[i] = float(mi);
    v[i] = float(vi);
    const float p32 = float(p);
    master[i] = p32;
    bool finite = math::is_finite(p32);
    if (param_out != nullptr) {
      const T rounded = from_float<T>(p32);
      param_out[i] = rounded;
      finite = finite && math::is_finite(to_float(rounded));  // fp16 overflows where fp32 does not
    }
    bad += finite ? 0u : 1u;
  }
  if (nonfinite == nullptr) return;  // the same for every thread: no barrier is skipped by some only
  if (bad != 0) atomicAdd(&block_bad, bad);
  __syncthreads();
  if (threadIdx.x == 0 && block_bad != 0) atomicAdd(nonfinite, static_cast<unsigned long long>(block_bad));
}

}  // namespace

template <typename T>
void adamw_update(float* master, T* param_out, const T* grad, float* m, float* v, const uint8_t* decay, int64_t n,
                  const models::AdamWStep& s, int64_t* nonfinite, cudaStream_t stream) {
  SY_REQUIRE(n >= 0, "adamw_update: negative element count " << n);
  if (n == 0) return;
  SY_REQUIRE(master && grad && m && v, "adamw_update: buffers must be non-null");
  SY_REQUIRE((param_out != nullptr || std::is_same_v<T, float>),
             "adamw_update: the working copy param_out may be omitted only for fp32 storage, got "
                 << storage_name(storage_of<T>()));
  SY_REQUIRE(s.t >= 1, "adamw_update: step count must be >= 1, got " << s.t);
  static_assert(sizeof(int64_t) == sizeof(unsigned long long), "the counter is added to as unsigned long long");
  const Launch l = launch_elementwise(n);
  adamw_kernel<T><<<unsigned(l.blocks), l.threads, 0, stream>>>(master, param_out, grad, m, v, decay, n,
                                                                 math::adamw_coefficients(s),
                                                                 reinterpret_cast<unsigned long long*>(nonfinite));
  SY_CUDA_CHECK(cudaGetLastError());
}

#define SY_INSTANTIATE_ADAMW(T)                                                                                  \
  template void adamw_update<T>(float*, T*, const T*, float*, float*, const uint8_t*, int64_t,                \
                                const models::AdamWStep&, int64_t*, cudaStream_t);
SY_CUDA_FOR_EACH_STORAGE(SY_INSTANTIATE_ADAMW)
#undef SY_INSTANTIATE_ADAMW

}  // namespace sy::cuda::ops
