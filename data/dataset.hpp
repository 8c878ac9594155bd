// HDF5 token datasets (DESIGN.md section 8), written by `switchyard prepare`.
//
// File format, version 1 (one HDF5 file):
//   /tokens         int32 (N)          every document's token ids, back to back
//   /doc_offsets    int64 (D + 1)      document i is tokens[doc_offsets[i], doc_offsets[i+1]);
//                                      0 first, N last, strictly increasing (no empty documents)
//   /doc_domain     int32 (D)          domain index of each document
//   /domain_names   string (K)         fixed-length, NUL-terminated (variable-length is read too)
//   /bpe_merges     int32 (M, 2)       only when tokenizer = "bpe": merge i joins
//                                      (row i) into id 256 + i (data/tokenizer.hpp)
//   attributes on /:
//     format_version  int64 = 1
//     vocab_size      int64           256 for "byte", 256 + M for "bpe"; every token id is below it
//     tokenizer       string          "byte" | "bpe" (the data.tokenizer spelling)
// Tokens are always int32, whatever the vocabulary: one type to check, and it
// is what the embedding and loss ops take (uint16 would halve the file for
// vocab <= 65536; a later version may add it).
//
// read_dataset validates all of it and throws IoError with one line
// "<path>: <problem>" (missing or mistyped dataset, bad offsets, an id out of
// range, an empty dataset, ...). write_dataset writes <path>.tmp, syncs it and
// renames it over <path>, so a failure never leaves a partial file at <path>.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/config.hpp"
#include "data/tokenizer.hpp"

namespace sy::data {

inline constexpr int64_t kDatasetFormatVersion = 1;

struct TokenDataset {
  int64_t vocab_size = 0;
  TokenizerKind tokenizer = TokenizerKind::Byte;
  std::vector<BpeMerge> merges;           // (M) bpe only
  std::vector<int32_t> tokens;            // (N)
  std::vector<int64_t> doc_offsets;       // (D + 1)
  std::vector<int32_t> doc_domain;        // (D)
  std::vector<std::string> domain_names;  // (K)

  int64_t num_tokens() const { return int64_t(tokens.size()); }
  int64_t num_docs() const { return int64_t(doc_domain.size()); }
  int num_domains() const { return int(domain_names.size()); }
  int64_t doc_begin(int64_t doc) const { return doc_offsets[doc]; }
  int64_t doc_size(int64_t doc) const { return doc_offsets[doc + 1] - doc_offsets[doc]; }
  std::span<const int32_t> doc_tokens(int64_t doc) const {
    return {tokens.data() + doc_offsets[doc], size_t(doc_size(doc))};
  }
};

// The first problem found in ds (empty string when it is consistent): the
// checks read_dataset applies after loading.
std::string dataset_problem(const TokenDataset& ds);

// Writes ds to path (via path.tmp and a rename). Throws InvalidArgument when
// dataset_problem(ds) is not empty, IoError when the file cannot be written.
void write_dataset(const std::string& path, const TokenDataset& ds);

// Loads and validates path; throws IoError "<path>: <problem>".
TokenDataset read_dataset(const std::string& path);

// The tokenizer that produced ds (bpe rebuilt from its merges).
Tokenizer dataset_tokenizer(const TokenDataset& ds);

// One document of text and the domain index it belongs to.
struct TextDocument {
  std::string_view text;
  int32_t domain = 0;
};

// Tokenizes docs (in order) into a dataset; empty documents are left out.
TokenDataset tokenize_documents(const Tokenizer& tokenizer, std::vector<std::string> domain_names,
                                std::span<const TextDocument> docs);

}  // namespace sy::data
