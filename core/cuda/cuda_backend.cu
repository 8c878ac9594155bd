#include "core/cuda/cuda_backend.hpp"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "core/cuda/checks.hpp"
#include "core/cuda/handles.hpp"

namespace sy {

namespace {

cublasOperation_t to_cublas(Trans t) { return t == Trans::N ? CUBLAS_OP_N : CUBLAS_OP_T; }

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int ordinal) : ordinal_(ordinal) {
    SY_CUDA_CHECK(cudaSetDevice(ordinal_));
    stream_ = cuda::make_stream();
    cublas_ = cuda::make_cublas();
    SY_CUBLAS_CHECK(cublasSetStream(cublas_.get(), stream_.get()));
  }

  Device device() const override { return Device::CUDA; }

  std::string name() const override {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, ordinal_) != cudaSuccess) return "cuda";
    return std::string("cuda (") + prop.name + ")";
  }

  void* allocate(size_t bytes) override {
    void* p = nullptr;
    SY_CUDA_CHECK(cudaMalloc(&p, bytes == 0 ? kAlignment : bytes));  // cudaMalloc aligns to >= 256
    return p;
  }
  void deallocate(void* ptr) noexcept override { cudaFree(ptr); }

  void copy_from_host(void* dst, const void* src, size_t bytes) override {
    SY_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_.get()));
    SY_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
  }
  void copy_to_host(void* dst, const void* src, size_t bytes) override {
    SY_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_.get()));
    SY_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    SY_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_.get()));
  }
  void fill_zero(void* dst, size_t bytes) override { SY_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, stream_.get())); }

  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
  void gemm(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
            const float* b, int64_t ldb, float beta, float* c, int64_t ldc) override {
    SY_REQUIRE(m >= 0 && n >= 0 && k >= 0, "gemm sizes must be non-negative");
    if (m == 0 || n == 0) return;
    SY_CUBLAS_CHECK(cublasSgemm_64(cublas_.get(), to_cublas(trans_b), to_cublas(trans_a), n, m, k, &alpha, b, ldb,
                                   a, lda, &beta, c, ldc));
  }

  void synchronize() override { SY_CUDA_CHECK(cudaStreamSynchronize(stream_.get())); }

 private:
  int ordinal_;
  cuda::StreamPtr stream_;
  cuda::CublasPtr cublas_;
};

}  // namespace

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return count;
}

std::unique_ptr<Backend> make_cuda_backend(int device_ordinal) {
  const int count = cuda_device_count();
  SY_CHECK_AS(DeviceError, device_ordinal >= 0 && device_ordinal < count,
              "CUDA device " << device_ordinal << " requested, " << count << " available");
  return std::make_unique<CudaBackend>(device_ordinal);
}

}  // namespace sy
