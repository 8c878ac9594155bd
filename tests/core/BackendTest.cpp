#include "core/backend.hpp"

#include <gtest/gtest.h>

#include <vector>

#include "core/error.hpp"
#include "tests/support/test_support.hpp"

namespace sy {
namespace {

TEST(Backend, CpuCopiesAndZeroes) {
  auto cpu = make_backend(Device::CPU);
  EXPECT_EQ(cpu->device(), Device::CPU);
  EXPECT_NE(cpu->name().find("cpu"), std::string::npos);
  float* buf = static_cast<float*>(cpu->allocate(64 * sizeof(float)));
  std::vector<float> host(64, 3.0f), back(64, 0.0f);
  cpu->copy_from_host(buf, host.data(), 64 * sizeof(float));
  cpu->copy_to_host(back.data(), buf, 64 * sizeof(float));
  EXPECT_EQ(back, host);
  cpu->fill_zero(buf, 64 * sizeof(float));
  cpu->copy_to_host(back.data(), buf, 64 * sizeof(float));
  for (float v : back) EXPECT_EQ(v, 0.0f);
  cpu->deallocate(buf);
}

TEST(Backend, CudaIsRefusedClearlyWhenAbsent) {
  if (cuda_available()) GTEST_SKIP() << "a CUDA device is present";
  try {
    make_backend(Device::CUDA);
    FAIL() << "expected DeviceError";
  } catch (const DeviceError& e) {
    EXPECT_NE(std::string(e.what()).find("CUDA"), std::string::npos);
  }
}

// STYLE rule 1: the CPU is the specification; the CUDA backend must match it.
TEST(Backend, CudaGemmMatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device (built with CUDA: " << (cuda_built() ? "yes" : "no") << ")";
  auto cpu = make_backend(Device::CPU);
  auto gpu = make_backend(Device::CUDA);
  const int64_t m = 67, n = 45, k = 33;
  for (Trans ta : {Trans::N, Trans::T})
    for (Trans tb : {Trans::N, Trans::T}) {
      const auto a = test::random_vector<float>(m * k, 1), b = test::random_vector<float>(k * n, 2);
      auto c_cpu = test::random_vector<float>(m * n, 3);
      auto c_gpu = c_cpu;
      const int64_t lda = ta == Trans::N ? k : m, ldb = tb == Trans::N ? n : k;
      cpu->gemm(ta, tb, m, n, k, 0.5f, a.data(), lda, b.data(), ldb, 0.25f, c_cpu.data(), n);
      float* da = static_cast<float*>(gpu->allocate(a.size() * 4));
      float* db = static_cast<float*>(gpu->allocate(b.size() * 4));
      float* dc = static_cast<float*>(gpu->allocate(c_gpu.size() * 4));
      gpu->copy_from_host(da, a.data(), a.size() * 4);
      gpu->copy_from_host(db, b.data(), b.size() * 4);
      gpu->copy_from_host(dc, c_gpu.data(), c_gpu.size() * 4);
      gpu->gemm(ta, tb, m, n, k, 0.5f, da, lda, db, ldb, 0.25f, dc, n);
      gpu->synchronize();
      gpu->copy_to_host(c_gpu.data(), dc, c_gpu.size() * 4);
      EXPECT_LT(test::max_rel_diff(c_gpu.data(), c_cpu.data(), c_cpu.size()), 1e-4);
      gpu->deallocate(da);
      gpu->deallocate(db);
      gpu->deallocate(dc);
    }
}

}  // namespace
}  // namespace sy
