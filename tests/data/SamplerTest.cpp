// The sharded sampler: a pure function of (dataset, seed, step); the global
// batch does not depend on the data-parallel degree; validation and training
// documents never mix.
#include "data/sampler.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "core/error.hpp"

namespace sy::data {
namespace {

constexpr int kSeqLen = 8;

TokenDataset make_dataset(const std::vector<std::vector<int32_t>>& docs, const std::vector<int32_t>& domains,
                          int num_domains) {
  TokenDataset ds;
  ds.tokenizer = TokenizerKind::BPE;
  ds.doc_offsets = {0};
  for (size_t i = 0; i < docs.size(); ++i) {
    ds.tokens.insert(ds.tokens.end(), docs[i].begin(), docs[i].end());
    ds.doc_offsets.push_back(ds.num_tokens());
    ds.doc_domain.push_back(domains[i]);
  }
  for (int k = 0; k < num_domains; ++k) ds.domain_names.push_back("d" + std::to_string(k));
  ds.vocab_size = 1 << 20;
  return ds;
}

// 60 documents of 1..23 tokens in 3 domains (doc i in domain i % 3); token value
// = its position in the file, so every token says where it came from.
TokenDataset positional_dataset() {
  std::vector<std::vector<int32_t>> docs;
  std::vector<int32_t> domains;
  int32_t next = 0;
  for (int i = 0; i < 60; ++i) {
    std::vector<int32_t> doc(size_t(1 + (i * 7) % 23));
    for (auto& t : doc) t = next++;
    docs.push_back(doc);
    domains.push_back(i % 3);
  }
  return make_dataset(docs, domains, 3);
}

int64_t doc_of(const TokenDataset& ds, int32_t token) {
  return std::upper_bound(ds.doc_offsets.begin(), ds.doc_offsets.end(), int64_t(token)) - ds.doc_offsets.begin() - 1;
}

// Tokens of the documents that pass keep(doc), concatenated in file order.
template <typename Keep>
std::vector<int32_t> stream_of(const TokenDataset& ds, Keep keep) {
  std::vector<int32_t> s;
  for (int64_t d = 0; d < ds.num_docs(); ++d)
    if (keep(d)) s.insert(s.end(), ds.doc_tokens(d).begin(), ds.doc_tokens(d).end());
  return s;
}

SamplerOptions options(double val_fraction, uint64_t seed = 5) {
  SamplerOptions o;
  o.seq_len = kSeqLen;
  o.seed = seed;
  o.val_fraction = val_fraction;
  return o;
}

bool same(const TokenBatch& a, const TokenBatch& b) {
  return a.rows == b.rows && a.inputs == b.inputs && a.targets == b.targets && a.domain == b.domain;
}

// The rows of several rank batches, concatenated.
TokenBatch concat(const std::vector<TokenBatch>& parts) {
  TokenBatch all;
  for (const auto& p : parts) {
    all.rows += p.rows;
    all.seq_len = p.seq_len;
    all.inputs.insert(all.inputs.end(), p.inputs.begin(), p.inputs.end());
    all.targets.insert(all.targets.end(), p.targets.begin(), p.targets.end());
    all.domain.insert(all.domain.end(), p.domain.begin(), p.domain.end());
  }
  return all;
}

TEST(Sampler, SplitHoldsOutTheRoundedShareOfEachDomainWhateverTheSeed) {
  const TokenDataset ds = positional_dataset();
  const std::vector<std::pair<double, int>> cases = {{0.1, 2}, {0.25, 5}, {0.01, 1}, {0.0, 0}};  // held out per domain
  for (const auto& [fraction, per_domain] : cases) {
    const Sampler a(ds, options(fraction, 1)), b(ds, options(fraction, 999));
    std::vector<int> held(3, 0);
    for (int64_t d = 0; d < ds.num_docs(); ++d) {
      held[size_t(ds.doc_domain[d])] += a.is_validation(d);
      EXPECT_EQ(a.is_validation(d), b.is_validation(d)) << "doc " << d;
    }
    for (int k = 0; k < 3; ++k) EXPECT_EQ(held[size_t(k)], per_domain) << "fraction " << fraction << " domain " << k;
    EXPECT_EQ(a.num_train_docs(), 60 - 3 * per_domain);
  }
}

TEST(Sampler, SplitFollowsDocumentContentNotPosition) {
  // 15 distinct documents, each present twice: copies land on the same side, and
  // reversing the file order holds out the same contents.
  std::vector<std::vector<int32_t>> docs;
  std::vector<int32_t> domains;
  for (int i = 0; i < 30; ++i) {
    const int id = i / 2;
    docs.push_back({id * 100, id * 100 + 1, id * 100 + 2});
    domains.push_back(id % 3);
  }
  const TokenDataset ds = make_dataset(docs, domains, 3);
  const Sampler s(ds, options(0.3));
  std::set<std::vector<int32_t>> held;
  for (int64_t d = 0; d < ds.num_docs(); d += 2) {
    EXPECT_EQ(s.is_validation(d), s.is_validation(d + 1)) << "copies of document " << d / 2 << " were split";
    if (s.is_validation(d)) held.insert(docs[size_t(d)]);
  }
  EXPECT_FALSE(held.empty());
  std::reverse(docs.begin(), docs.end());
  std::reverse(domains.begin(), domains.end());
  const TokenDataset reversed = make_dataset(docs, domains, 3);
  const Sampler r(reversed, options(0.3));
  std::set<std::vector<int32_t>> held_reversed;
  for (int64_t d = 0; d < reversed.num_docs(); ++d)
    if (r.is_validation(d)) held_reversed.insert(docs[size_t(d)]);
  EXPECT_EQ(held, held_reversed);
}

TEST(Sampler, TrainingRowsAreWindowsOfTheTrainingStream) {
  const TokenDataset ds = positional_dataset();
  const Sampler s(ds, options(0.25));
  const auto stream = stream_of(ds, [&](int64_t d) { return !s.is_validation(d); });
  ASSERT_EQ(int64_t(stream.size()), s.num_train_tokens());
  std::vector<int64_t> where(size_t(ds.num_tokens()), -1);  // token -> position in the stream
  for (size_t p = 0; p < stream.size(); ++p) where[size_t(stream[p])] = int64_t(p);

  TokenBatch b;
  int64_t lowest = INT64_MAX, highest = -1;
  for (int64_t step = 0; step < 30; ++step) {
    s.train_batch(step, 16, 0, 1, b);
    ASSERT_EQ(b.rows, 16);
    for (int r = 0; r < b.rows; ++r) {
      const int32_t* in = &b.inputs[size_t(r * kSeqLen)];
      const int32_t* tg = &b.targets[size_t(r * kSeqLen)];
      const int64_t start = where[size_t(in[0])];
      ASSERT_GE(start, 0) << "step " << step << " row " << r << " starts in a validation document";
      EXPECT_EQ(start, s.train_window_start(step, r));
      ASSERT_LE(start + kSeqLen + 1, int64_t(stream.size()));
      for (int j = 0; j < kSeqLen; ++j) {
        EXPECT_EQ(in[j], stream[size_t(start + j)]);
        EXPECT_EQ(tg[j], stream[size_t(start + j + 1)]);
      }
      EXPECT_EQ(b.domain[size_t(r)], ds.doc_domain[size_t(doc_of(ds, in[0]))]);
      lowest = std::min(lowest, start);
      highest = std::max(highest, start);
    }
  }
  // 480 draws reach both ends of the stream.
  const int64_t last_start = s.num_train_tokens() - kSeqLen - 1;
  EXPECT_LT(lowest, last_start / 10);
  EXPECT_GT(highest, last_start * 9 / 10);
}

TEST(Sampler, BatchIsAFunctionOfSeedAndStepOnly) {
  const TokenDataset ds = positional_dataset();
  const Sampler a(ds, options(0.1, 42)), b(ds, options(0.1, 42)), other_seed(ds, options(0.1, 43));
  TokenBatch x, y, z;
  b.train_batch(9, 8, 0, 1, y);  // another step first: no hidden state
  a.train_batch(5, 8, 0, 1, x);
  b.train_batch(5, 8, 0, 1, y);
  EXPECT_TRUE(same(x, y));
  a.train_batch(6, 8, 0, 1, z);
  EXPECT_FALSE(same(x, z));
  other_seed.train_batch(5, 8, 0, 1, z);
  EXPECT_FALSE(same(x, z));
}

TEST(Sampler, GlobalBatchIsTheSameForAnyDataParallelSize) {
  const TokenDataset ds = positional_dataset();
  const Sampler s(ds, options(0.1));
  for (const int global : {8, 6}) {
    for (int64_t step : {0, 3, 117}) {
      TokenBatch whole;
      s.train_batch(step, global, 0, 1, whole);
      for (const int dp : {2, 4}) {
        std::vector<TokenBatch> parts(static_cast<size_t>(dp));
        for (int r = 0; r < dp; ++r) {
          s.train_batch(step, global, r, dp, parts[size_t(r)]);
          EXPECT_EQ(parts[size_t(r)].rows, (r + 1) * global / dp - r * global / dp);
        }
        EXPECT_TRUE(same(concat(parts), whole)) << "B " << global << " D " << dp << " step " << step;
      }
    }
  }
}

TEST(Sampler, ValidationBatchesAreFixedConsecutiveWindowsOfEachDomain) {
  const TokenDataset ds = positional_dataset();
  const Sampler s(ds, options(0.25));
  for (int k = 0; k < 3; ++k) {
    SCOPED_TRACE("domain " + std::to_string(k));
    const auto stream = stream_of(ds, [&](int64_t d) { return s.is_validation(d) && ds.doc_domain[d] == k; });
    ASSERT_EQ(int64_t(stream.size()), s.num_val_tokens(k));
    const int64_t windows = (int64_t(stream.size()) - 1) / kSeqLen;
    ASSERT_GE(windows, 4);
    EXPECT_EQ(s.num_val_windows(k), windows);

    ValidationIterator it(s, k, 3);
    EXPECT_EQ(it.num_batches(), (windows + 2) / 3);
    TokenBatch b;
    std::vector<TokenBatch> first_pass;
    while (it.next(b)) first_pass.push_back(b);
    const TokenBatch all = concat(first_pass);
    ASSERT_EQ(all.rows, windows);
    for (int r = 0; r < all.rows; ++r) {
      EXPECT_EQ(all.domain[size_t(r)], k);
      for (int j = 0; j < kSeqLen; ++j) {
        EXPECT_EQ(all.inputs[size_t(r * kSeqLen + j)], stream[size_t(r * kSeqLen + j)]);
        EXPECT_EQ(all.targets[size_t(r * kSeqLen + j)], stream[size_t(r * kSeqLen + j + 1)]);
      }
    }
    it.reset();
    for (const auto& expected : first_pass) {
      ASSERT_TRUE(it.next(b));
      EXPECT_TRUE(same(b, expected));
    }
    EXPECT_FALSE(it.next(b));
    // Split over 2 data-parallel ranks, the rows are the same.
    ValidationIterator r0(s, k, 3, 0, 2), r1(s, k, 3, 1, 2);
    for (const auto& expected : first_pass) {
      TokenBatch p0, p1;
      ASSERT_TRUE(r0.next(p0));
      ASSERT_TRUE(r1.next(p1));
      EXPECT_TRUE(same(concat({p0, p1}), expected));
    }
    EXPECT_EQ(ValidationIterator(s, k, 3, 0, 1, 1).num_batches(), 1);
  }
}

TEST(Sampler, ValidationAndTrainingTokensNeverMix) {
  const TokenDataset ds = positional_dataset();
  const Sampler s(ds, options(0.25));
  std::set<int32_t> train, val;
  TokenBatch b;
  for (int64_t step = 0; step < 50; ++step) {
    s.train_batch(step, 16, 0, 1, b);
    train.insert(b.inputs.begin(), b.inputs.end());
    train.insert(b.targets.begin(), b.targets.end());
  }
  for (int k = 0; k < 3; ++k)
    for (ValidationIterator it(s, k, 4); it.next(b);) {
      val.insert(b.inputs.begin(), b.inputs.end());
      val.insert(b.targets.begin(), b.targets.end());
    }
  ASSERT_FALSE(train.empty());
  ASSERT_FALSE(val.empty());
  for (const int32_t t : val) {
    EXPECT_EQ(train.count(t), 0u) << "token " << t << " is in both";
    EXPECT_TRUE(s.is_validation(doc_of(ds, t)));
  }
  for (const int32_t t : train) EXPECT_FALSE(s.is_validation(doc_of(ds, t)));
}

TEST(Sampler, RefusesATrainingSplitShorterThanOneWindow) {
  const TokenDataset ds = make_dataset({{1, 2, 3, 4, 5}, {6, 7, 8, 9, 10}}, {0, 0}, 1);
  SamplerOptions too_long = options(0.0);
  too_long.seq_len = 10;  // a window is 11 tokens
  try {
    Sampler s(ds, too_long);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("training split has 10 tokens"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("seq_len + 1 = 11"), std::string::npos) << e.what();
  }
  SamplerOptions fits = options(0.0);
  fits.seq_len = 9;
  EXPECT_NO_THROW(Sampler(ds, fits));
}

}  // namespace
}  // namespace sy::data
