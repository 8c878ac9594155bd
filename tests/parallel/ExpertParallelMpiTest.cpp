// The expert layout against one rank (models/expert_layout.hpp): each rank
// stores 1/W of the experts and routes its own tokens; in every process-grid
// layout and every parallel mode r, outputs, input gradients and every
// parameter gradient equal those of one rank that runs the W ranks' batches
// one after another with the same seed (capacity is per batch, as on the
// ranks; parameter gradients accumulate over the batches), and switching
// modes between calls moves no stored parameter.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "core/error.hpp"
#include "models/moe_layer.hpp"
#include "parallel/moe_hooks.hpp"
#include "parallel/process_grid.hpp"
#include "tests/support/mpi_support.hpp"
#include "tests/support/test_support.hpp"

namespace sy::par {
namespace {

using test::world_size;

MoeConfig base_config() {
  MoeConfig mc;
  mc.num_experts = 4;
  mc.top_k = 2;
  mc.hidden_size = 8;
  mc.activation = ActivationKind::GELU;
  mc.capacity_factor = 1.0;  // drops slots: capacity is per rank's batch in every mode
  // Auxiliary losses are means over each rank's own tokens, so with them the
  // ranks' gradients would be W times a one-rank mean's; scaling them is the
  // trainer's loss definition, not the layer's. Compared here without them.
  mc.balance = BalanceKind::None;
  mc.z_loss_coeff = 0;
  mc.entropy_coeff = 0;
  return mc;
}

// This rank's units cut from a one-rank layer's (E, H1, M) / (E, M, H) tensors.
std::vector<double> units_of(const moe::ExpertLayout& layout, const MoeConfig& mc, int64_t M, const double* w1,
                             const double* w2) {
  const int64_t H = mc.hidden_size, H1 = mc.activation == ActivationKind::SwiGLU ? 2 * H : H;
  const int64_t nu = layout.units_per_rank(), u1 = layout.unit_w1_size(M), u2 = layout.unit_w2_size(M);
  std::vector<double> out(nu * (u1 + u2));
  std::vector<double> e1(H1 * M), e2(M * H);
  for (int64_t j = 0; j < nu; ++j) {
    const int64_t u = layout.first_unit() + j, e = layout.unit_expert(u);
    e1.assign(w1 + e * H1 * M, w1 + (e + 1) * H1 * M);
    e2.assign(w2 + e * M * H, w2 + (e + 1) * M * H);
    moe::copy_unit(true, out.data() + j * u1, out.data() + nu * u1 + j * u2, e1.data(), e2.data(),
                   layout.unit_slice(u), layout.unit_hidden(), H, M, mc.activation == ActivationKind::SwiGLU);
  }
  return out;
}

std::vector<double> stored_units(moe::MoeLayer<double>& layer, bool grads) {
  std::vector<double> out;
  for (const char* name : {"expert_w1", "expert_w2"}) {
    const double* p = grads ? layer.grad(name) : layer.param(name);
    out.insert(out.end(), p, p + layer.param_size(name));
  }
  return out;
}

struct Layout {
  int dp = 1, ep = 1, tp = 1;
  std::string label() const {
    return "dp=" + std::to_string(dp) + " ep=" + std::to_string(ep) + " tp=" + std::to_string(tp);
  }
};

// Runs the layer on one grid layout; `modes` lists the parallel modes r to
// run one after another on the same layer (empty: the layout's parallel.ep).
void expect_layout_equals_one_rank(const MoeConfig& mc, const Layout& lay, const std::vector<int>& modes,
                                   bool expect_drops = false) {
  SCOPED_TRACE(lay.label());
  ParallelConfig pc;
  pc.dp = lay.dp;
  pc.ep = lay.ep;
  pc.tp = lay.tp;
  ProcessGrid grid(pc);
  Communicator& tokens = grid.token_group();
  const int W = tokens.size(), g = tokens.rank();  // token-group rank = this rank's slice of the batch
  const int64_t T = 16, M = 8;
  const auto x = test::random_vector<double>(T * W * M, 31, -2, 2);
  const auto dout = test::random_vector<double>(T * W * M, 32);
  moe::MoeLayer<double> one(mc, M, T, T, 9);
  std::vector<double> out1(T * W * M), dx1(T * W * M);
  int64_t dropped = 0;
  one.zero_grads();
  for (int s = 0; s < W; ++s) {
    one.forward(x.data() + s * T * M, nullptr, T, out1.data() + s * T * M);
    one.backward(dout.data() + s * T * M, dx1.data() + s * T * M);
    dropped += one.stats().dropped_slots;
  }
  if (expect_drops) {
    EXPECT_GT(dropped, 0) << "the capacity should drop slots in this test";
  }

  // The layout runs over the token group ordered (ep, dp): exchange degree
  // parallel.ep exchanges tokens over the grid's ep_group.
  EXPECT_EQ(grid.expert_group().rank(), grid.ep_index() * lay.dp + grid.dp_index());
  CommExpertComm<double> comm(grid.expert_group());
  moe::MoeLayer<double> layer(mc, M, T, T, 9, &comm);
  connect_moe_layer(layer, tokens, lay.ep);
  const auto want_units = units_of(layer.layout(), mc, M, one.param("expert_w1"), one.param("expert_w2"));
  const auto want_grads = units_of(layer.layout(), mc, M, one.grad("expert_w1"), one.grad("expert_w2"));
  ASSERT_EQ(stored_units(layer, false), want_units) << "the stored units are the one-rank experts' (same draws)";

  std::vector<int> degrees;
  for (int r : modes) degrees.push_back(layer.layout().degree_for_mode(r));
  if (degrees.empty()) degrees.push_back(layer.expert_degree());
  for (const int P : degrees) {
    SCOPED_TRACE("expert degree P=" + std::to_string(P));
    layer.set_expert_degree(P);
    std::vector<double> out(T * M), dx(T * M);
    layer.zero_grads();
    layer.forward(x.data() + g * T * M, nullptr, T, out.data());
    layer.backward(dout.data() + g * T * M, dx.data());
    sync_moe_gradients(layer, tokens);
    EXPECT_LT(test::max_rel_diff(out.data(), out1.data() + g * T * M, T * M), 1e-12);
    EXPECT_LT(test::max_rel_diff(dx.data(), dx1.data() + g * T * M, T * M), 1e-12);
    const auto got = stored_units(layer, true);
    EXPECT_LT(test::max_rel_diff(got.data(), want_grads.data(), got.size()), 1e-12) << "expert gradients";
    for (const char* name : {"router_weight", "shared_w1", "shared_w2"}) {
      if (layer.param_size(name) > 0) {
        EXPECT_LT(test::max_rel_diff(layer.grad(name), one.grad(name), layer.param_size(name)), 1e-12) << name;
      }
    }
    // No mode moves a stored parameter.
    EXPECT_EQ(stored_units(layer, false), want_units);
    // A second call accumulates (+=) into the stored units' gradients.
    layer.forward(x.data() + g * T * M, nullptr, T, out.data());
    layer.backward(dout.data() + g * T * M, dx.data());
    const auto twice = stored_units(layer, true);
    for (size_t i = 0; i < twice.size(); ++i) ASSERT_NEAR(twice[i], 2 * want_grads[i], 1e-12) << "unit grad " << i;
  }
}

TEST(ExpertParallelMpi, EveryDataAndExpertLayoutEqualsOneRank) {
  const int W = world_size();
  const MoeConfig mc = base_config();
  for (int ep = 1; ep <= W; ep *= 2) expect_layout_equals_one_rank(mc, {W / ep, ep, 1}, {}, true);
}

TEST(ExpertParallelMpi, TensorAndDataParallelLayoutEqualsOneRank) {
  const int W = world_size();
  if (W % 2) GTEST_SKIP() << "needs an even number of ranks";
  MoeConfig mc = base_config();
  mc.num_shared_experts = 1;  // replicated on tp peers and over the token group
  expect_layout_equals_one_rank(mc, {W / 2, 1, 2}, {});
}

// E = 2 experts: on 4 ranks each expert is cut into S = 2 slices, and every
// valid r (0, 1, 2) runs on the same layer, switched between calls.
TEST(ExpertParallelMpi, EveryModeOfSlicedExpertsEqualsOneRank) {
  const int W = world_size();
  MoeConfig mc = base_config();
  mc.num_experts = 2;
  mc.top_k = 1;
  std::vector<int> modes{0, 1};
  if (W >= 4) modes.push_back(2);
  if (W >= 4) modes.push_back(0);  // and back: the switch is per call
  expect_layout_equals_one_rank(mc, {W, 1, 1}, modes, true);
}

// Shared experts run whole on every token while the routed experts are
// sliced (their piece's hidden width must not leak into the shared ones).
TEST(ExpertParallelMpi, SharedExpertsBesideSlicedExperts) {
  const int W = world_size();
  MoeConfig mc = base_config();
  mc.num_experts = 1;
  mc.top_k = 1;
  mc.num_shared_experts = 2;
  std::vector<int> modes{0};
  for (int r = 1; r <= W; ++r)
    if (W % r == 0) modes.push_back(r);
  expect_layout_equals_one_rank(mc, {W, 1, 1}, modes);
  mc.num_experts = 2;
  expect_layout_equals_one_rank(mc, {W, 1, 1}, W >= 4 ? std::vector<int>{2, 0} : std::vector<int>{1, 0});
}

TEST(ExpertParallelMpi, SwiGLUAndOtherRoutersInEveryMode) {
  const int W = world_size();
  MoeConfig sw = base_config();
  sw.num_experts = 2;
  sw.top_k = 1;
  sw.activation = ActivationKind::SwiGLU;
  const std::vector<int> all = W >= 4 ? std::vector<int>{2, 1, 0} : std::vector<int>{1, 0};
  expect_layout_equals_one_rank(sw, {W, 1, 1}, all);
  MoeConfig topp = base_config();
  topp.router = RouterKind::TopP;
  topp.top_p = 0.7;
  topp.capacity_factor = 0;  // dropless
  expect_layout_equals_one_rank(topp, {1, W, 1}, {0, 1});
  MoeConfig nulls = base_config();
  nulls.router = RouterKind::NullExperts;
  nulls.num_null_experts = 2;
  expect_layout_equals_one_rank(nulls, {1, W, 1}, {1, 0});
}

// Pipelining (moe.pipeline_degree d) and the all-to-all algorithm
// (parallel.a2a_algo): the exchange and the experts in d chunks, by linear,
// 2dh or flowsplit, give the outputs and gradients of d = 1 linear, in every
// mode, for whole and sliced experts (up to summation order of the weight
// gradients). Nodes of 2 ranks (1 on 2 ranks) and leaves of 1 rank under 3
// spine paths, so that 2dh has two levels on 4 ranks and flowsplit splits
// flows at path boundaries.
void expect_pipelined_equals_unpipelined(const MoeConfig& mc) {
  const int W = world_size();
  ParallelConfig pc;
  pc.ep = W;
  ProcessGrid grid(pc);
  Communicator& tokens = grid.token_group();
  const int g = tokens.rank();
  const int64_t T = 24, M = 8;
  const auto x = test::random_vector<double>(T * W * M, 41, -2, 2);
  const auto dout = test::random_vector<double>(T * W * M, 42);
  ExchangePlacement placement;
  placement.node = grid.world_rank() / std::min(W, 2);
  placement.leaf = grid.world_rank();
  placement.spine_paths = 3;
  CommExpertComm<double> comm(grid.expert_group(), placement);
  moe::MoeLayer<double> layer(mc, M, T, T, 9, &comm);
  connect_moe_layer(layer, tokens, W);
  auto run = [&](int P, int d, AllToAllAlgo algo, std::vector<double>& out, std::vector<double>& dx,
                 std::vector<double>& units, std::vector<double>& router) {
    layer.set_expert_degree(P);
    layer.set_pipeline_degree(d);
    layer.set_alltoall(algo);
    out.assign(T * M, 0);
    dx.assign(T * M, 0);
    layer.zero_grads();
    layer.forward(x.data() + g * T * M, nullptr, T, out.data());
    layer.backward(dout.data() + g * T * M, dx.data());
    units = stored_units(layer, true);
    router.assign(layer.grad("router_weight"), layer.grad("router_weight") + layer.param_size("router_weight"));
  };
  for (const int P : layer.sized_degrees()) {
    std::vector<double> out1, dx1, units1, router1;
    run(P, 1, AllToAllAlgo::Linear, out1, dx1, units1, router1);
    for (const AllToAllAlgo algo : {AllToAllAlgo::Linear, AllToAllAlgo::TwoDH, AllToAllAlgo::FlowSplit}) {
      ASSERT_TRUE(comm.supports(P, algo)) << to_string(algo) << " at P=" << P;
      for (const int d : {1, 2, 4, 8}) {
        if (d == 1 && algo == AllToAllAlgo::Linear) continue;
        SCOPED_TRACE("P=" + std::to_string(P) + " d=" + std::to_string(d) + " " + to_string(algo));
        std::vector<double> out, dx, units, router;
        run(P, d, algo, out, dx, units, router);
        EXPECT_LT(test::max_rel_diff(out.data(), out1.data(), out.size()), 1e-12);
        EXPECT_LT(test::max_rel_diff(dx.data(), dx1.data(), dx.size()), 1e-12);
        EXPECT_LT(test::max_rel_diff(units.data(), units1.data(), units.size()), 1e-12) << "expert gradients";
        EXPECT_LT(test::max_rel_diff(router.data(), router1.data(), router.size()), 1e-12) << "router gradient";
      }
    }
  }
}

TEST(ExpertParallelMpi, PipelinedExchangeEqualsUnpipelinedInEveryModeAndAlgorithm) {
  MoeConfig mc = base_config();
  expect_pipelined_equals_unpipelined(mc);
  mc.num_experts = 2;  // sliced on 4 ranks: partial results summed
  mc.activation = ActivationKind::SwiGLU;
  mc.capacity_factor = 0;  // dropless
  expect_pipelined_equals_unpipelined(mc);
}

// Nodes that do not form whole blocks of the exchange group: 2dh is refused
// by name; linear still runs.
TEST(ExpertParallelMpi, AlgorithmThatCannotSplitTheGroupIsAConfigError) {
  const int W = world_size();
  if (W < 4) GTEST_SKIP() << "needs 4 ranks for uneven nodes";
  ParallelConfig pc;
  pc.ep = W;
  ProcessGrid grid(pc);
  ExchangePlacement placement;
  placement.node = grid.world_rank() == 0 ? 0 : 1;  // nodes of 1 and W - 1 ranks
  placement.leaf = placement.node;
  CommExpertComm<double> comm(grid.expert_group(), placement);
  EXPECT_FALSE(comm.supports(W, AllToAllAlgo::TwoDH));
  EXPECT_FALSE(comm.supports(W, AllToAllAlgo::FlowSplit));
  EXPECT_TRUE(comm.supports(W, AllToAllAlgo::Linear));
  moe::MoeLayer<double> layer(base_config(), 8, 16, 16, 9, &comm);
  connect_moe_layer(layer, grid.token_group(), W);
  try {
    layer.set_alltoall(AllToAllAlgo::TwoDH);
    ADD_FAILURE() << "2dh over uneven nodes should be refused";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("parallel.a2a_algo = 2dh"), std::string::npos) << e.what();
  }
}

TEST(ExpertParallelMpi, PipelineDegreeIsCheckedAndNeedsItsBuffer) {
  MoeConfig mc = base_config();
  moe::MoeLayer<double> layer(mc, 8, 16, 16, 9);
  EXPECT_THROW(layer.set_pipeline_degree(3), ConfigError);
  mc.pipeline_degree = 1;
  moe::MoeLayer<double> plain(mc, 8, 16, 16, 9);
  EXPECT_THROW(plain.set_pipeline_degree(2), ConfigError);
  plain.set_pipeline_degree(1);
}

TEST(ExpertParallelMpi, ExpertsThatCannotBeSplitAreAConfigError) {
  const int W = world_size();
  if (W == 1) GTEST_SKIP() << "every expert count fits one rank";
  ParallelConfig pc;
  pc.ep = W;
  ProcessGrid grid(pc);
  CommExpertComm<double> comm(grid.expert_group());
  MoeConfig mc = base_config();
  mc.num_experts = 3;
  mc.top_k = 1;
  try {
    moe::MoeLayer<double> layer(mc, 8, 16, 16, 1, &comm);
    ADD_FAILURE() << "3 experts on " << W << " ranks should be refused";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("moe.num_experts = 3"), std::string::npos) << e.what();
  }
  // A mode r that does not divide S is refused by name.
  mc.num_experts = 1;
  mc.parallel_mode = W + 1;
  EXPECT_THROW(moe::MoeLayer<double>(mc, 8, 16, 16, 1, &comm), ConfigError);
}

}  // namespace
}  // namespace sy::par
