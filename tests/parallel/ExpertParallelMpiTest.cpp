// Expert parallelism (ep = world) against one rank: each rank routes its own
// tokens, holds E/P experts and exchanges rows with alltoallv; outputs, input
// gradients and every parameter gradient equal those of one rank running the
// concatenated batch with the same seed.
#include <gtest/gtest.h>
#include <mpi.h>

#include <vector>

#include "core/config.hpp"
#include "core/error.hpp"
#include "models/moe_layer.hpp"
#include "parallel/moe_hooks.hpp"
#include "parallel/process_grid.hpp"
#include "tests/support/test_support.hpp"

namespace sy::par {
namespace {

void expect_ep_equals_one_rank(MoeConfig mc, const std::string& label) {
  SCOPED_TRACE(label);
  int W = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &W);
  ParallelConfig pc;
  pc.ep = W;
  ProcessGrid grid(pc);
  const int r = grid.world_rank();
  const int64_t T = 24, M = 8;
  CommExpertExchange<double> exchange(grid.ep_group());
  moe::MoeLayer<double> ep(mc, M, T, T, 9, &exchange);
  moe::MoeLayer<double> one(mc, M, T * W, T * W, 9);
  connect_moe_layer(ep, grid.token_group(), grid.ep_group());
  EXPECT_EQ(ep.expert_shape().num_experts, mc.num_experts / W);

  const auto x = test::random_vector<double>(T * W * M, 31, -2, 2);
  const auto g = test::random_vector<double>(T * W * M, 32);
  std::vector<double> out(T * M), dx(T * M), out1(T * W * M), dx1(T * W * M);
  ep.forward(x.data() + r * T * M, nullptr, T, out.data());
  one.forward(x.data(), nullptr, T * W, out1.data());
  EXPECT_LT(test::max_rel_diff(out.data(), out1.data() + r * T * M, T * M), 1e-12);
  ep.zero_grads();
  one.zero_grads();
  ep.backward(g.data() + r * T * M, dx.data());
  one.backward(g.data(), dx1.data());
  EXPECT_LT(test::max_rel_diff(dx.data(), dx1.data() + r * T * M, T * M), 1e-10);
  // Experts: this rank's gradient is the one-rank gradient of its experts.
  for (const char* name : {"expert_w1", "expert_w2"}) {
    const int64_t n = ep.param_size(name);
    EXPECT_LT(test::max_rel_diff(ep.grad(name), one.grad(name) + r * n, n), 1e-10) << name;
    EXPECT_EQ(test::max_rel_diff(ep.param(name), one.param(name) + r * n, n), 0.0) << name;  // the same draws
  }
  // The router is replicated: its gradient summed over ranks.
  const int64_t nr = ep.param_size("router_weight");
  std::vector<double> router(ep.grad("router_weight"), ep.grad("router_weight") + nr);
  grid.world().allreduce(router.data(), router.data(), nr, ElemType::F64, ReduceOp::Sum);
  EXPECT_LT(test::max_rel_diff(router.data(), one.grad("router_weight"), nr), 1e-10);
}

MoeConfig base_config() {
  MoeConfig mc;
  mc.num_experts = 4;
  mc.top_k = 2;
  mc.hidden_size = 6;
  mc.activation = ActivationKind::GELU;
  mc.capacity_factor = 0;  // dropless: per-rank and one-rank capacities agree
  // Auxiliary losses are means over each rank's own tokens, so with them the
  // ranks' gradients would be W times a one-rank mean's; scaling them is the
  // trainer's loss definition, not the layer's. Compared here without them.
  mc.balance = BalanceKind::None;
  mc.z_loss_coeff = 0;
  mc.entropy_coeff = 0;
  return mc;
}

TEST(ExpertParallelMpi, TopKEqualsOneRank) { expect_ep_equals_one_rank(base_config(), "topk"); }

TEST(ExpertParallelMpi, OtherRoutersAndSwiGLUEqualOneRank) {
  MoeConfig sw = base_config();
  sw.activation = ActivationKind::SwiGLU;
  expect_ep_equals_one_rank(sw, "swiglu");
  MoeConfig topp = base_config();
  topp.router = RouterKind::TopP;
  topp.top_p = 0.7;
  expect_ep_equals_one_rank(topp, "topp");
  MoeConfig nulls = base_config();
  nulls.router = RouterKind::NullExperts;
  nulls.num_null_experts = 2;
  expect_ep_equals_one_rank(nulls, "null_experts");
}

// Every (dp, ep) layout of the world: after the gradient sync each rank's
// gradients are the one-rank gradients of the parameters it holds.
TEST(ExpertParallelMpi, EveryDataAndExpertLayoutEqualsOneRankAfterGradientSync) {
  int W = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &W);
  const MoeConfig mc = base_config();
  const int64_t T = 16, M = 8;
  const auto x = test::random_vector<double>(T * W * M, 41, -2, 2);
  const auto g = test::random_vector<double>(T * W * M, 42);
  moe::MoeLayer<double> one(mc, M, T * W, T * W, 9);
  std::vector<double> out1(T * W * M), dx1(T * W * M);
  one.forward(x.data(), nullptr, T * W, out1.data());
  one.backward(g.data(), dx1.data());
  for (int ep = 1; ep <= W; ep *= 2) {
    if (mc.num_experts % ep) continue;
    SCOPED_TRACE("ep=" + std::to_string(ep) + " dp=" + std::to_string(W / ep));
    ParallelConfig pc;
    pc.ep = ep;
    pc.dp = W / ep;
    ProcessGrid grid(pc);
    const int r = grid.world_rank();
    CommExpertExchange<double> exchange(grid.ep_group());
    moe::MoeLayer<double> layer(mc, M, T, T, 9, &exchange);
    connect_moe_layer(layer, grid.token_group(), grid.ep_group());
    std::vector<double> out(T * M), dx(T * M);
    layer.forward(x.data() + r * T * M, nullptr, T, out.data());
    layer.backward(g.data() + r * T * M, dx.data());
    sync_moe_gradients(layer, grid.token_group(), grid.dp_group());
    EXPECT_LT(test::max_rel_diff(out.data(), out1.data() + r * T * M, T * M), 1e-12);
    EXPECT_LT(test::max_rel_diff(dx.data(), dx1.data() + r * T * M, T * M), 1e-10);
    const int64_t n1 = layer.param_size("expert_w1"), n2 = layer.param_size("expert_w2");
    const int64_t shard = layer.first_local_expert() / layer.expert_shape().num_experts;
    EXPECT_LT(test::max_rel_diff(layer.grad("expert_w1"), one.grad("expert_w1") + shard * n1, n1), 1e-10);
    EXPECT_LT(test::max_rel_diff(layer.grad("expert_w2"), one.grad("expert_w2") + shard * n2, n2), 1e-10);
    EXPECT_LT(test::max_rel_diff(layer.grad("router_weight"), one.grad("router_weight"),
                                 layer.param_size("router_weight")),
              1e-10);
  }
}

TEST(ExpertParallelMpi, ExpertsNotDivisibleByRanksIsAConfigError) {
  int W = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &W);
  ParallelConfig pc;
  pc.ep = W;
  ProcessGrid grid(pc);
  CommExpertExchange<double> exchange(grid.ep_group());
  MoeConfig mc = base_config();
  mc.num_experts = 3;
  mc.top_k = 1;
  EXPECT_THROW(moe::MoeLayer<double>(mc, 8, 16, 16, 1, &exchange), sy::ConfigError);
}

}  // namespace
}  // namespace sy::par
