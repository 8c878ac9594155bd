// The sharded sampler: which tokens each data-parallel rank trains and
// evaluates on, as a pure function of (dataset, seed, step).
//
// Validation split (data.val_fraction = f), independent of the seed so runs
// with different seeds are scored on the same documents: within each domain
// of n documents, the round(f * n) documents with the smallest hash of their
// tokens (ties by index) are held out; when f > 0 and n >= 2 at least one and
// at most n - 1 are. Identical documents hash alike and the cut is moved off a
// run of equal hashes, so duplicates never straddle the split (which may then
// hold out a few more or fewer). A one-document domain stays in training.
//
// Training: the training documents, concatenated in file order, form one token
// stream of N tokens (no separator token between documents). Row i of the
// global batch of step s is the window of seq_len + 1 tokens starting at
//   start(s, i) = floor(N_w * u / 2^64),  u = splitmix64 chain of (seed, s, i),  N_w = N - seq_len
// inputs = window[0, T), targets = window[1, T + 1). Data-parallel rank d of D
// gets rows [d * B / D, (d + 1) * B / D) of the B global rows, so the global
// batch is the same for every D, and the state to resume from is the step.
//
// Validation: per domain, its held-out documents concatenated in file order
// and cut into consecutive windows of seq_len + 1 tokens with stride seq_len
// (every token is a target exactly once, except the first); batch j holds
// windows [j * B, (j + 1) * B), the last batch possibly fewer. Fixed: the same
// batches at every evaluation.
#pragma once

#include <cstdint>
#include <vector>

#include "data/dataset.hpp"

namespace sy::data {

struct SamplerOptions {
  int seq_len = 128;           // T (model.seq_len)
  uint64_t seed = 1234;        // train.seed
  double val_fraction = 0.05;  // data.val_fraction, in [0, 1)
};

// Rows of token windows; buffers are reused across calls (no allocation once sized).
struct TokenBatch {
  int rows = 0;                  // sequences in this batch (B or a rank's share of it)
  int seq_len = 0;               // T
  std::vector<int32_t> inputs;   // (rows, T)
  std::vector<int32_t> targets;  // (rows, T) inputs shifted left by one
  std::vector<int32_t> domain;   // (rows) domain of the document holding each row's first token
};

class Sampler {
 public:
  // The dataset must outlive the sampler. Throws ConfigError when the
  // training split is shorter than seq_len + 1 tokens.
  Sampler(const TokenDataset& dataset, const SamplerOptions& options);

  const TokenDataset& dataset() const { return *ds_; }
  const SamplerOptions& options() const { return options_; }
  bool is_validation(int64_t doc) const { return is_val_[size_t(doc)] != 0; }
  int64_t num_train_docs() const { return int64_t(train_.docs.size()); }
  int64_t num_train_tokens() const { return train_.size(); }
  int64_t num_val_tokens(int domain) const { return val_[size_t(domain)].size(); }

  // Start of row `row` of step `step` in the training stream.
  int64_t train_window_start(int64_t step, int64_t row) const;
  // This rank's rows of the global batch of `step` (global_batch rows in all).
  void train_batch(int64_t step, int global_batch, int dp_rank, int dp_size, TokenBatch& out) const;

  // Validation windows and batches of one domain (0 when it has no held-out tokens).
  int64_t num_val_windows(int domain) const;
  int64_t num_val_batches(int domain, int batch_size) const;
  // This rank's rows of validation batch `index` of `domain`.
  void val_batch(int domain, int64_t index, int batch_size, int dp_rank, int dp_size, TokenBatch& out) const;

 private:
  // Documents concatenated in order: position p lies in docs[k] with starts[k] <= p < starts[k + 1].
  struct Stream {
    std::vector<int64_t> docs;
    std::vector<int64_t> starts{0};  // (docs + 1)
    int64_t size() const { return starts.back(); }
  };
  // Copies stream tokens [pos, pos + T + 1) into row `row` of out.
  void fill_row(const Stream& stream, int64_t pos, int row, TokenBatch& out) const;
  static void shape(TokenBatch& out, int rows, int seq_len);

  const TokenDataset* ds_;
  SamplerOptions options_;
  std::vector<uint8_t> is_val_;  // (num_docs)
  Stream train_;
  std::vector<Stream> val_;      // (num_domains)
};

// Walks the validation batches of one domain: for (b = 0; it.next(batch); ++b).
class ValidationIterator {
 public:
  // max_batches < 0: all of them.
  ValidationIterator(const Sampler& sampler, int domain, int batch_size, int dp_rank = 0, int dp_size = 1,
                     int64_t max_batches = -1);
  bool next(TokenBatch& out);
  void reset() { next_ = 0; }
  int64_t num_batches() const { return count_; }

 private:
  const Sampler* sampler_;
  int domain_, batch_size_, dp_rank_, dp_size_;
  int64_t count_, next_ = 0;
};

}  // namespace sy::data
