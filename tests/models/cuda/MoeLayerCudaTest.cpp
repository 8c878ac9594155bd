// The GPU MoE layer (models/cuda/moe_layer_cuda.hpp) against the CPU MoeLayer
// on one rank, the specification: same parameters, same input, then the
// outputs, the balancing loss, the routing counts, the input gradient and
// every parameter gradient must agree (fp32 to summation order; bf16 and fp16
// to their storage precision). The configs it refuses are checked on the CPU.
// The expert-parallel path runs here over a one-rank NCCL communicator (its
// exchanges are self-sends, chunked d ways): the same answers as without it.
// Several GPUs: MoeLayerCudaMpiTest.cpp.
#include "models/cuda/moe_layer_cuda.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "models/moe_layer.hpp"
#include "parallel/nccl/nccl_communicator.hpp"
#include "tests/support/cuda_test_support.hpp"
#include "tests/support/test_support.hpp"

namespace sy::moe {
namespace {

MoeConfig gpu_config() {
  MoeConfig c;
  c.num_experts = 4;
  c.top_k = 2;
  c.hidden_size = 48;
  c.activation = ActivationKind::GELU;
  c.capacity_factor = 1.0;  // slots drop
  c.balance = BalanceKind::Micro;
  c.balance_coeff = 0.05;
  c.z_loss_coeff = 0.0;
  c.parallel_mode = 1;
  c.pipeline_degree = 1;
  return c;
}

TEST(MoeLayerCuda, RefusesWhatItDoesNotRunYetBeforeTouchingTheGpu) {
  const auto refused = [](MoeConfig c, const std::string& key) {
    try {
      CudaMoeLayer<float> layer(c, 32, 64, nullptr);
      FAIL() << "expected ConfigError for " << key;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
    }
  };
  MoeConfig c = gpu_config();
  c.router = RouterKind::TopP;
  refused(c, "moe.router");
  c = gpu_config();
  c.z_loss_coeff = 0.001;
  refused(c, "moe.z_loss_coeff");
  c = gpu_config();
  c.balance = BalanceKind::Global;
  refused(c, "moe.balance");
  c = gpu_config();
  c.num_shared_experts = 1;
  refused(c, "moe.num_shared_experts");
  c = gpu_config();
  c.router = RouterKind::Switch;
  c.jitter = 0.1;
  refused(c, "moe.jitter");
  c = gpu_config();
  c.pipeline_degree = 3;
  refused(c, "moe.pipeline_degree");
  c = gpu_config();
  c.router = RouterKind::Switch;  // top_k stays 2
  refused(c, "moe.top_k");
}

// Largest |a - b| over the elements, relative to the largest |b|.
double rel_to_max(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, scale = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, double(std::abs(a[i] - b[i])));
    scale = std::max(scale, double(std::abs(b[i])));
  }
  return diff / scale;
}

// ep_degree > 0: through the expert-parallel path on a one-rank NCCL
// communicator, pipelined over ep_degree chunks.
template <typename T>
void compare_with_cpu(const MoeConfig& config, int64_t tokens, int64_t dim, double tol, int ep_degree = 0) {
  const int64_t M = dim;
  MoeLayer<float> cpu(config, M, tokens, tokens, 17);
  const int64_t n1 = cpu.param_size("expert_w1"), n2 = cpu.param_size("expert_w2"), nr = cpu.param_size("router_weight");
  // The CPU layer computes with the parameters and inputs the GPU stores (rounded to T).
  std::vector<float> w1(cpu.param("expert_w1"), cpu.param("expert_w1") + n1);
  std::vector<float> w2(cpu.param("expert_w2"), cpu.param("expert_w2") + n2);
  w1 = test::rounded<T>(w1);
  w2 = test::rounded<T>(w2);
  std::copy(w1.begin(), w1.end(), cpu.param("expert_w1"));
  std::copy(w2.begin(), w2.end(), cpu.param("expert_w2"));
  const std::vector<float> x = test::rounded<T>(test::random_vector<float>(size_t(tokens * M), 1, -1.0, 1.0));
  const std::vector<float> dout = test::rounded<T>(test::random_vector<float>(size_t(tokens * M), 2, -1.0, 1.0));

  std::vector<float> out_cpu(size_t(tokens * M)), dx_cpu(size_t(tokens * M));
  cpu.zero_grads();
  const double aux_cpu = cpu.forward(x.data(), nullptr, tokens, out_cpu.data());
  cpu.backward(dout.data(), dx_cpu.data());

  test::TestStream stream;
  std::unique_ptr<par::NcclCommunicator> ep;
  MoeConfig gpu_config = config;
  if (ep_degree > 0) {
    ep = par::make_local_nccl_communicator(0, "ep_group", 60.0);
    gpu_config.pipeline_degree = ep_degree;
  }
  CudaMoeLayer<T> gpu(gpu_config, M, tokens, stream.get(), ep.get());
  gpu.set_params(cpu.param("router_weight"), w1.data(), w2.data());
  gpu.zero_grads();
  auto dx_in = test::DeviceBuffer<T>::from_host(x);
  auto ddout = test::DeviceBuffer<T>::from_host(dout);
  test::DeviceBuffer<T> dout_gpu(static_cast<size_t>(tokens * M)), ddx(static_cast<size_t>(tokens * M));
  const double aux_gpu = gpu.forward(dx_in.get(), tokens, dout_gpu.get());
  gpu.backward(ddout.get(), ddx.get());
  stream.sync();

  EXPECT_NEAR(aux_gpu, aux_cpu, 1e-4 * std::max(1.0, std::abs(aux_cpu)));
  EXPECT_EQ(gpu.stats().routed_per_expert, cpu.stats().routed_per_expert);
  EXPECT_EQ(gpu.stats().tokens_per_expert, cpu.stats().tokens_per_expert);
  EXPECT_EQ(gpu.stats().dropped_slots, cpu.stats().dropped_slots);
  EXPECT_LT(rel_to_max(dout_gpu.to_float(), out_cpu), tol) << "out";
  EXPECT_LT(rel_to_max(ddx.to_float(), dx_cpu), tol) << "dx";
  std::vector<float> drouter(static_cast<size_t>(nr)), dw1(static_cast<size_t>(n1)), dw2(static_cast<size_t>(n2));
  gpu.get_grads(drouter.data(), dw1.data(), dw2.data());
  const auto grad = [&](const char* name, int64_t n) { return std::vector<float>(cpu.grad(name), cpu.grad(name) + n); };
  EXPECT_LT(rel_to_max(drouter, grad("router_weight", nr)), tol) << "router_weight gradient";
  EXPECT_LT(rel_to_max(dw1, grad("expert_w1", n1)), tol) << "expert_w1 gradient";
  EXPECT_LT(rel_to_max(dw2, grad("expert_w2", n2)), tol) << "expert_w2 gradient";
}

template <typename T>
class MoeLayerCudaTyped : public testing::Test {};
TYPED_TEST_SUITE(MoeLayerCudaTyped, test::StorageTypes, test::StorageName);

// Storage rounding of the hidden activations and outputs: a few storage ulps.
template <typename T>
double layer_tolerance() {
  return 4 * test::tolerance<T>();
}

TYPED_TEST(MoeLayerCudaTyped, TopKWithDropsByPositionMatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  compare_with_cpu<TypeParam>(gpu_config(), 300, 64, layer_tolerance<TypeParam>());
}

TYPED_TEST(MoeLayerCudaTyped, SwitchSwiGluDropByScoreMatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  MoeConfig c = gpu_config();
  c.router = RouterKind::Switch;
  c.top_k = 1;
  c.activation = ActivationKind::SwiGLU;
  c.drop_policy = DropPolicy::Score;
  c.capacity_factor = 0.8;
  compare_with_cpu<TypeParam>(c, 257, 40, layer_tolerance<TypeParam>());
}

TYPED_TEST(MoeLayerCudaTyped, ExpertParallelPathOnOneRankMatchesCpuForEveryPipelineDegree) {
  SY_SKIP_WITHOUT_GPU();
  for (int d : {1, 2, 4, 8}) {
    SCOPED_TRACE("pipeline degree " + std::to_string(d));
    compare_with_cpu<TypeParam>(gpu_config(), 300, 64, layer_tolerance<TypeParam>(), d);
  }
}

TYPED_TEST(MoeLayerCudaTyped, DroplessReluWithoutBalanceMatchesCpu) {
  SY_SKIP_WITHOUT_GPU();
  MoeConfig c = gpu_config();
  c.capacity_factor = 0.0;
  c.activation = ActivationKind::ReLU;
  c.balance = BalanceKind::None;
  c.normalize_weights = false;
  c.num_experts = 8;
  compare_with_cpu<TypeParam>(c, 129, 32, layer_tolerance<TypeParam>());
}

}  // namespace
}  // namespace sy::moe
