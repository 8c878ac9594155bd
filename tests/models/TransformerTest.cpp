// The transformer LM on one process: central finite differences of the
// total loss (LM + auxiliary) against backward for elements of every
// parameter tensor, with dense and MoE blocks, tied and untied heads; the
// readiness stages; the global mapping of the tensors.
#include "models/transformer.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <vector>

#include "core/config.hpp"
#include "core/rng.hpp"

namespace sy::models {
namespace {

struct Tiny {
  ModelConfig model;
  MoeConfig moe;
  Tiny() {
    model.dim = 8;
    model.layers = 2;
    model.heads = 2;
    model.vocab_size = 11;
    model.seq_len = 5;
    model.ffn_hidden_size = 12;
    moe.num_experts = 4;
    moe.top_k = 2;
    moe.hidden_size = 6;
    moe.every = 2;
    moe.capacity_factor = 0.0;  // dropless: the loss is smooth in the parameters
    moe.balance_coeff = 0.05;
    moe.z_loss_coeff = 0.01;
  }
};

void batch(std::vector<int32_t>& ids, std::vector<int32_t>& targets, int64_t n, int V) {
  ids.resize(size_t(n));
  targets.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) {
    ids[size_t(i)] = int32_t(splitmix64(uint64_t(i) * 7 + 1) % uint64_t(V));
    targets[size_t(i)] = int32_t(splitmix64(uint64_t(i) * 13 + 5) % uint64_t(V));
  }
}

void check_gradients(const Tiny& cfg) {
  const int64_t B = 2, T = cfg.model.seq_len;
  TransformerLM<double> lm(cfg.model, cfg.moe, B, 42);
  std::vector<int32_t> ids, targets;
  batch(ids, targets, B * T, cfg.model.vocab_size);
  lm.zero_grads();
  lm.forward(ids.data(), targets.data(), B, T);
  std::vector<int> stages;
  lm.backward([&](int s) { stages.push_back(s); });
  ASSERT_EQ(int(stages.size()), lm.num_stages());
  for (size_t i = 0; i < stages.size(); ++i) EXPECT_EQ(stages[i], lm.num_stages() - 1 - int(i));

  const double eps = 1e-6;
  int checked = 0;
  for (auto& t : lm.tensors()) {
    for (int probe = 0; probe < 4; ++probe) {
      const int64_t k = int64_t(splitmix64(uint64_t(probe) * 31 + t.numel) % uint64_t(t.numel));
      const double saved = t.param[k];
      t.param[k] = saved + eps;
      const double up = lm.forward(ids.data(), targets.data(), B, T).loss;
      t.param[k] = saved - eps;
      const double down = lm.forward(ids.data(), targets.data(), B, T).loss;
      t.param[k] = saved;
      const double fd = (up - down) / (2 * eps);
      const double an = t.grad[k];
      EXPECT_NEAR(an, fd, 1e-6 + 1e-5 * std::abs(fd)) << t.name << "[" << k << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 40);
}

TEST(TransformerTest, GradientsMatchFiniteDifferencesTiedHead) { check_gradients(Tiny{}); }

TEST(TransformerTest, GradientsMatchFiniteDifferencesUntiedRmsNormSwiGlu) {
  Tiny cfg;
  cfg.model.tie_embeddings = false;
  cfg.model.norm = NormKind::RMSNorm;
  cfg.moe.activation = ActivationKind::SwiGLU;
  cfg.moe.every = 1;
  cfg.moe.num_shared_experts = 1;
  check_gradients(cfg);
}

TEST(TransformerTest, GradientsMatchFiniteDifferencesRope) {
  Tiny cfg;
  cfg.model.position = PositionKind::Rope;
  cfg.model.dim = 16;  // head size 8 (even)
  check_gradients(cfg);
}

TEST(TransformerTest, TensorsCoverTheOneRankModelOnce) {
  Tiny cfg;
  TransformerLM<float> lm(cfg.model, cfg.moe, 1, 1);
  std::set<std::string> names;
  for (const auto& t : lm.tensors()) {
    EXPECT_TRUE(names.insert(t.name).second) << t.name;
    int64_t covered = 0;
    for (const auto& r : t.runs) {
      EXPECT_LE(r.local_offset + r.count, t.numel) << t.name;
      EXPECT_LE(r.global_begin + r.count, t.global_numel) << t.name;
      covered += r.count;
    }
    EXPECT_EQ(covered, t.numel) << t.name;  // one rank holds everything
    EXPECT_EQ(t.numel, t.global_numel) << t.name;
  }
  EXPECT_TRUE(names.count("layers.1.moe.expert_w1"));
  EXPECT_TRUE(names.count("layers.0.ffn.w1"));
  EXPECT_FALSE(names.count("head.weight"));  // tied
}

}  // namespace
}  // namespace sy::models
