#include "data/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.hpp"
#include "core/rng.hpp"

namespace sy::data {

namespace {

// Content hash of a document's tokens (FNV-1a, then mixed): the split key.
uint64_t doc_hash(std::span<const int32_t> tokens) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const int32_t t : tokens) h = (h ^ uint32_t(t)) * 0x100000001b3ull;
  return splitmix64(h ^ tokens.size());
}

constexpr uint64_t kTrainSalt = 0x747261696e2d7331ull;  // separates this stream from other users of the seed

}  // namespace

Sampler::Sampler(const TokenDataset& dataset, const SamplerOptions& options) : ds_(&dataset), options_(options) {
  SY_REQUIRE(options.seq_len >= 1, "seq_len must be >= 1, got " << options.seq_len);
  SY_REQUIRE(options.val_fraction >= 0.0 && options.val_fraction < 1.0,
             "val_fraction must be in [0, 1), got " << options.val_fraction);
  SY_REQUIRE(int64_t(dataset.doc_offsets.size()) == dataset.num_docs() + 1 && dataset.num_domains() >= 1,
             "the dataset is not consistent (see dataset_problem)");
  const int64_t num_docs = dataset.num_docs();
  const int num_domains = dataset.num_domains();

  // Held-out documents: per domain, the round(f * n) smallest hashes.
  is_val_.assign(size_t(num_docs), 0);
  std::vector<std::vector<std::pair<uint64_t, int64_t>>> by_domain(static_cast<size_t>(num_domains));
  for (int64_t d = 0; d < num_docs; ++d)
    by_domain[size_t(dataset.doc_domain[d])].push_back({doc_hash(dataset.doc_tokens(d)), d});
  for (auto& docs : by_domain) {
    const int64_t n = int64_t(docs.size());
    int64_t k = std::llround(options.val_fraction * double(n));
    if (n < 2) k = 0;
    else if (options.val_fraction > 0.0) k = std::clamp<int64_t>(k, 1, n - 1);
    std::sort(docs.begin(), docs.end());
    // Move the cut off a run of equal hashes (identical documents): up, or down when up would take all.
    if (k > 0 && k < n && docs[k - 1].first == docs[k].first) {
      int64_t up = k, down = k;
      while (up < n && docs[up].first == docs[k - 1].first) ++up;
      while (down > 0 && docs[down - 1].first == docs[k].first) --down;
      k = up < n ? up : down;
    }
    for (int64_t i = 0; i < k; ++i) is_val_[size_t(docs[i].second)] = 1;
  }

  val_.resize(size_t(num_domains));
  for (int64_t d = 0; d < num_docs; ++d) {
    Stream& s = is_val_[size_t(d)] ? val_[size_t(dataset.doc_domain[d])] : train_;
    s.docs.push_back(d);
    s.starts.push_back(s.starts.back() + dataset.doc_size(d));
  }
  if (train_.size() < int64_t(options.seq_len) + 1)
    throw ConfigError("the training split has " + std::to_string(train_.size()) + " tokens (" +
                      std::to_string(train_.docs.size()) + " of " + std::to_string(num_docs) +
                      " documents), fewer than seq_len + 1 = " + std::to_string(options.seq_len + 1) +
                      ": use more data, a shorter model.seq_len or a smaller data.val_fraction");
}

int64_t Sampler::train_window_start(int64_t step, int64_t row) const {
  SY_REQUIRE(step >= 0 && row >= 0, "step and row must be >= 0, got " << step << " and " << row);
  const uint64_t u = splitmix64(splitmix64(splitmix64(options_.seed ^ kTrainSalt) ^ uint64_t(step)) ^ uint64_t(row));
  const uint64_t windows = uint64_t(train_.size() - options_.seq_len);  // starts 0 .. N - T - 1
  return int64_t((static_cast<unsigned __int128>(u) * windows) >> 64);
}

void Sampler::shape(TokenBatch& out, int rows, int seq_len) {
  out.rows = rows;
  out.seq_len = seq_len;
  out.inputs.resize(size_t(rows) * size_t(seq_len));
  out.targets.resize(size_t(rows) * size_t(seq_len));
  out.domain.resize(size_t(rows));
}

void Sampler::fill_row(const Stream& stream, int64_t pos, int row, TokenBatch& out) const {
  const int64_t T = options_.seq_len;
  size_t k = size_t(std::upper_bound(stream.starts.begin(), stream.starts.end(), pos) - stream.starts.begin() - 1);
  out.domain[size_t(row)] = ds_->doc_domain[stream.docs[k]];
  int32_t* inputs = out.inputs.data() + row * T;    // (T)
  int32_t* targets = out.targets.data() + row * T;  // (T)
  for (int64_t j = 0; j <= T; ++j, ++pos) {
    while (pos >= stream.starts[k + 1]) ++k;
    const int32_t token = ds_->tokens[size_t(ds_->doc_begin(stream.docs[k]) + (pos - stream.starts[k]))];
    if (j < T) inputs[j] = token;
    if (j > 0) targets[j - 1] = token;
  }
}

void Sampler::train_batch(int64_t step, int global_batch, int dp_rank, int dp_size, TokenBatch& out) const {
  SY_REQUIRE(global_batch >= 1, "global_batch must be >= 1, got " << global_batch);
  SY_REQUIRE(dp_size >= 1 && dp_rank >= 0 && dp_rank < dp_size,
             "dp_rank " << dp_rank << " is outside [0, dp_size = " << dp_size << ")");
  const int64_t lo = int64_t(dp_rank) * global_batch / dp_size;
  const int64_t hi = int64_t(dp_rank + 1) * global_batch / dp_size;
  shape(out, int(hi - lo), options_.seq_len);
  for (int64_t r = lo; r < hi; ++r) fill_row(train_, train_window_start(step, r), int(r - lo), out);
}

int64_t Sampler::num_val_windows(int domain) const {
  SY_REQUIRE(domain >= 0 && domain < int(val_.size()), "domain " << domain << " is outside [0, " << val_.size() << ")");
  const int64_t n = val_[size_t(domain)].size();
  return n >= options_.seq_len + 1 ? (n - 1) / options_.seq_len : 0;
}

int64_t Sampler::num_val_batches(int domain, int batch_size) const {
  SY_REQUIRE(batch_size >= 1, "batch_size must be >= 1, got " << batch_size);
  return (num_val_windows(domain) + batch_size - 1) / batch_size;
}

void Sampler::val_batch(int domain, int64_t index, int batch_size, int dp_rank, int dp_size, TokenBatch& out) const {
  const int64_t batches = num_val_batches(domain, batch_size);
  SY_REQUIRE(index >= 0 && index < batches,
             "validation batch " << index << " of domain " << domain << " is outside [0, " << batches << ")");
  SY_REQUIRE(dp_size >= 1 && dp_rank >= 0 && dp_rank < dp_size,
             "dp_rank " << dp_rank << " is outside [0, dp_size = " << dp_size << ")");
  const int64_t first = index * batch_size;
  const int64_t rows = std::min<int64_t>(batch_size, num_val_windows(domain) - first);
  const int64_t lo = dp_rank * rows / dp_size, hi = (dp_rank + 1) * rows / dp_size;
  shape(out, int(hi - lo), options_.seq_len);
  for (int64_t r = lo; r < hi; ++r) fill_row(val_[size_t(domain)], (first + r) * options_.seq_len, int(r - lo), out);
}

ValidationIterator::ValidationIterator(const Sampler& sampler, int domain, int batch_size, int dp_rank, int dp_size,
                                       int64_t max_batches)
    : sampler_(&sampler), domain_(domain), batch_size_(batch_size), dp_rank_(dp_rank), dp_size_(dp_size) {
  count_ = sampler.num_val_batches(domain, batch_size);
  if (max_batches >= 0) count_ = std::min(count_, max_batches);
}

bool ValidationIterator::next(TokenBatch& out) {
  if (next_ >= count_) return false;
  sampler_->val_batch(domain_, next_++, batch_size_, dp_rank_, dp_size_, out);
  return true;
}

}  // namespace sy::data
