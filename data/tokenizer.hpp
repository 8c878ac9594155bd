// Tokenizers (config key data.tokenizer): byte and byte-level BPE.
//
// byte: token id = byte value, ids 0..255, vocab 256; encode is the identity on bytes.
// bpe:  ids 0..255 are the bytes; merge i joins the adjacent pair (left, right)
//       into the new id 256 + i, so vocab_size = 256 + number of merges and a
//       token's bytes are the concatenation of its parts' bytes.
//
// Both are exact on any byte string: decode(encode(s)) == s, NUL and invalid
// UTF-8 included.
//
// BPE pre-splits text into chunks and never merges across a chunk boundary
// (as GPT-2 does, so a merge cannot swallow "word. The"): a chunk is a run of
// one byte class (letters = ASCII letters and every byte >= 0x80, so UTF-8
// stays whole; digits; whitespace; other), a single space followed by a
// non-space run joins that run (" the"), and no chunk is longer than
// kMaxChunkBytes. Training and encoding split identically.
//
// Training (train_bpe) counts the chunks of the corpus, then repeatedly merges
// the most frequent adjacent pair, counts weighted by chunk frequency; ties go
// to the smallest (left, right). It stops at the requested vocab_size or when
// no pair occurs twice. Pair counts are updated incrementally (only the chunks
// that hold the merged pair are revisited), so the merges depend only on the
// multiset of chunks: the same text in any document order gives the same merges.
// Encoding applies merges lowest id first, each to every occurrence left to
// right, which reproduces training's segmentation.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/config.hpp"

namespace sy::data {

inline constexpr int kByteVocab = 256;
inline constexpr int kMaxVocab = 1 << 24;    // token ids must fit int32 and the pair key
inline constexpr size_t kMaxChunkBytes = 32; // BPE chunk cap (see above)

// Merge i creates token 256 + i from the adjacent pair (left, right).
struct BpeMerge {
  int32_t left = 0;
  int32_t right = 0;
  bool operator==(const BpeMerge&) const = default;
};

class Tokenizer {
 public:
  // The byte tokenizer.
  Tokenizer();
  // A BPE tokenizer from its merges (as stored in a dataset file). Throws
  // InvalidArgument when a merge names an id >= 256 + i or repeats an earlier pair.
  static Tokenizer bpe(std::vector<BpeMerge> merges);
  // Trains BPE on texts up to vocab_size ids (>= 256; fewer when no pair occurs twice).
  static Tokenizer train_bpe(std::span<const std::string_view> texts, int vocab_size);

  TokenizerKind kind() const { return kind_; }
  int vocab_size() const { return static_cast<int>(pieces_.size()); }
  const std::vector<BpeMerge>& merges() const { return merges_; }
  // The bytes of one token.
  const std::string& piece(int32_t id) const;

  std::vector<int32_t> encode(std::string_view text) const;
  // Appends the ids of text to out.
  void encode_append(std::string_view text, std::vector<int32_t>& out) const;
  // Throws InvalidArgument on an id outside [0, vocab_size).
  std::string decode(std::span<const int32_t> ids) const;

 private:
  void encode_chunk(const uint8_t* bytes, size_t n, std::vector<int32_t>& scratch, std::vector<int32_t>& out) const;

  TokenizerKind kind_ = TokenizerKind::Byte;
  std::vector<BpeMerge> merges_;
  std::vector<std::string> pieces_;                  // (vocab_size) bytes of each id
  std::unordered_map<uint64_t, int32_t> merge_rank_;  // pair key -> merge index
};

// End of the BPE chunk that starts at text[begin] (exposed for tests).
size_t bpe_chunk_end(std::string_view text, size_t begin);

}  // namespace sy::data
