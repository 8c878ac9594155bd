// The GPU MoE layer expert-parallel over the ranks of the world, one GPU per
// rank, NCCL bootstrapped through MPI: rank r computes experts
// [r El, (r + 1) El) for every rank's tokens. Against the CPU MoeLayer on one
// rank over all ranks' tokens (dropless and without balancing loss, so the
// per-token answers do not depend on how tokens are split): each rank's
// outputs and input gradients are its rows of the one-rank answer, its expert
// gradients are the one-rank gradients of its experts, and the router
// gradients summed over ranks are the one-rank router gradient. Needs one GPU
// per rank (NCCL refuses two ranks on one GPU); skips otherwise.
#include <mpi.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/cuda/cuda_backend.hpp"
#include "models/cuda/moe_layer_cuda.hpp"
#include "models/moe_layer.hpp"
#include "parallel/nccl/nccl_communicator.hpp"
#include "tests/support/cuda_test_support.hpp"
#include "tests/support/mpi_support.hpp"
#include "tests/support/test_support.hpp"

namespace sy::moe {
namespace {

double rel_to_max(const float* a, const float* b, size_t n) {
  double diff = 0, scale = 1e-30;
  for (size_t i = 0; i < n; ++i) {
    diff = std::max(diff, double(std::abs(a[i] - b[i])));
    scale = std::max(scale, double(std::abs(b[i])));
  }
  return diff / scale;
}

TEST(MoeLayerCudaMpi, ExpertParallelOverRanksMatchesOneRankOnAllTokens) {
  const int W = test::world_size(), r = test::world_rank();
  const int gpus = cuda_device_count();
  if (gpus < W) GTEST_SKIP() << "needs one GPU per rank: " << W << " ranks, " << gpus << " GPUs on this machine";
  SY_CUDA_CHECK(cudaSetDevice(r));
  for (int d : {1, 2, 4}) {
    SCOPED_TRACE("pipeline degree " + std::to_string(d));
    MoeConfig c;
    c.num_experts = 2 * W;
    c.top_k = 2;
    c.hidden_size = 48;
    c.activation = ActivationKind::GELU;
    c.capacity_factor = 0.0;  // dropless
    c.balance = BalanceKind::None;
    c.z_loss_coeff = 0.0;
    c.parallel_mode = 1;
    c.pipeline_degree = d;
    const int64_t M = 32, T = 96, El = 2;
    MoeLayer<float> full(c, M, W * T, W * T, 17);
    const auto x = test::random_vector<float>(size_t(W * T * M), 1);
    const auto dout = test::random_vector<float>(size_t(W * T * M), 2);
    std::vector<float> out(x.size()), dx(x.size());
    full.zero_grads();
    full.forward(x.data(), nullptr, W * T, out.data());
    full.backward(dout.data(), dx.data());

    auto ep = par::make_nccl_communicator(MPI_COMM_WORLD, r, "ep_group", 60.0);
    test::TestStream stream;
    CudaMoeLayer<float> gpu(c, M, T, stream.get(), ep.get());
    const int64_t n1 = El * 48 * M, n2 = El * M * 48;
    gpu.set_params(full.param("router_weight"), full.param("expert_w1") + r * n1, full.param("expert_w2") + r * n2);
    gpu.zero_grads();
    const std::vector<float> x_r(x.begin() + r * T * M, x.begin() + (r + 1) * T * M);
    const std::vector<float> dout_r(dout.begin() + r * T * M, dout.begin() + (r + 1) * T * M);
    auto dxin = test::DeviceBuffer<float>::from_host(x_r), ddout = test::DeviceBuffer<float>::from_host(dout_r);
    test::DeviceBuffer<float> dout_gpu(x_r.size()), ddx(x_r.size());
    gpu.forward(dxin.get(), T, dout_gpu.get());
    gpu.backward(ddout.get(), ddx.get());
    stream.sync();
    const auto out_r = dout_gpu.to_float(), dx_r = ddx.to_float();
    EXPECT_LT(rel_to_max(out_r.data(), out.data() + r * T * M, size_t(T * M)), 1e-4) << "out";
    EXPECT_LT(rel_to_max(dx_r.data(), dx.data() + r * T * M, size_t(T * M)), 1e-4) << "dx";
    std::vector<float> drouter(size_t(c.num_experts * M)), dw1(static_cast<size_t>(n1)), dw2(static_cast<size_t>(n2));
    gpu.get_grads(drouter.data(), dw1.data(), dw2.data());
    EXPECT_LT(rel_to_max(dw1.data(), full.grad("expert_w1") + r * n1, size_t(n1)), 1e-4) << "expert_w1 gradient";
    EXPECT_LT(rel_to_max(dw2.data(), full.grad("expert_w2") + r * n2, size_t(n2)), 1e-4) << "expert_w2 gradient";
    MPI_Allreduce(MPI_IN_PLACE, drouter.data(), int(drouter.size()), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    EXPECT_LT(rel_to_max(drouter.data(), full.grad("router_weight"), drouter.size()), 1e-4) << "router gradient";
  }
}

}  // namespace
}  // namespace sy::moe
