#include "data/tokenizer.hpp"

#include <algorithm>
#include <queue>
#include <utility>

#include "core/error.hpp"

namespace sy::data {

namespace {

enum class ByteClass : uint8_t { Letter, Digit, Space, Other };

constexpr ByteClass classify(uint8_t b) {
  if ((b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || b >= 0x80) return ByteClass::Letter;
  if (b >= '0' && b <= '9') return ByteClass::Digit;
  if (b == ' ' || b == '\t' || b == '\n' || b == '\r' || b == '\f' || b == '\v') return ByteClass::Space;
  return ByteClass::Other;
}

// Sorted by (left, right): the tie-break order of training.
constexpr uint64_t pair_key(int32_t left, int32_t right) {
  return (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
}
constexpr int32_t key_left(uint64_t key) { return int32_t(key >> 32); }
constexpr int32_t key_right(uint64_t key) { return int32_t(key & 0xffffffffu); }

std::vector<std::string> byte_pieces() {
  std::vector<std::string> pieces(kByteVocab);
  for (int b = 0; b < kByteVocab; ++b) pieces[b] = std::string(1, char(b));
  return pieces;
}

}  // namespace

size_t bpe_chunk_end(std::string_view text, size_t begin) {
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  SY_REQUIRE(begin < n, "chunk start " << begin << " is past the text (" << n << " bytes)");
  auto space_before_word = [&](size_t i) {
    return s[i] == ' ' && i + 1 < n && classify(s[i + 1]) != ByteClass::Space;
  };
  size_t i = begin;
  if (space_before_word(i)) ++i;  // " word": the space leads the run after it
  const ByteClass cls = classify(s[i]);
  size_t j = i + 1;
  if (cls == ByteClass::Space) {
    while (j < n && classify(s[j]) == ByteClass::Space && !space_before_word(j)) ++j;
  } else {
    while (j < n && classify(s[j]) == cls) ++j;
  }
  return std::min(j, begin + kMaxChunkBytes);
}

Tokenizer::Tokenizer() : pieces_(byte_pieces()) {}

Tokenizer Tokenizer::bpe(std::vector<BpeMerge> merges) {
  SY_REQUIRE(merges.size() <= size_t(kMaxVocab - kByteVocab),
             merges.size() << " merges exceed the largest vocabulary " << kMaxVocab);
  Tokenizer t;
  t.kind_ = TokenizerKind::BPE;
  t.pieces_.reserve(kByteVocab + merges.size());
  t.merge_rank_.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const BpeMerge m = merges[i];
    const int32_t next_id = int32_t(kByteVocab + i);
    SY_REQUIRE(m.left >= 0 && m.left < next_id && m.right >= 0 && m.right < next_id,
               "merge " << i << " (" << m.left << ", " << m.right << ") must join ids below " << next_id);
    const auto [it, fresh] = t.merge_rank_.emplace(pair_key(m.left, m.right), int32_t(i));
    SY_REQUIRE(fresh, "merge " << i << " (" << m.left << ", " << m.right << ") repeats merge " << it->second);
    t.pieces_.push_back(t.pieces_[m.left] + t.pieces_[m.right]);
  }
  t.merges_ = std::move(merges);
  return t;
}

const std::string& Tokenizer::piece(int32_t id) const {
  SY_REQUIRE(id >= 0 && id < vocab_size(), "token id " << id << " is outside [0, " << vocab_size() << ")");
  return pieces_[id];
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out;
  out.reserve(kind_ == TokenizerKind::Byte ? text.size() : text.size() / 2);
  encode_append(text, out);
  return out;
}

void Tokenizer::encode_append(std::string_view text, std::vector<int32_t>& out) const {
  const auto* bytes = reinterpret_cast<const uint8_t*>(text.data());
  if (kind_ == TokenizerKind::Byte || merges_.empty()) {
    out.insert(out.end(), bytes, bytes + text.size());
    return;
  }
  std::vector<int32_t> scratch;
  scratch.reserve(kMaxChunkBytes);
  for (size_t begin = 0; begin < text.size();) {
    const size_t end = bpe_chunk_end(text, begin);
    encode_chunk(bytes + begin, end - begin, scratch, out);
    begin = end;
  }
}

void Tokenizer::encode_chunk(const uint8_t* bytes, size_t n, std::vector<int32_t>& symbols,
                             std::vector<int32_t>& out) const {
  symbols.assign(bytes, bytes + n);
  // Lowest merge index first; merges made later only create pairs with higher
  // indices, so this is training's order replayed on one chunk.
  while (symbols.size() > 1) {
    int32_t best = INT32_MAX;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      const auto it = merge_rank_.find(pair_key(symbols[i], symbols[i + 1]));
      if (it != merge_rank_.end() && it->second < best) best = it->second;
    }
    if (best == INT32_MAX) break;
    const BpeMerge m = merges_[best];
    size_t w = 0;
    for (size_t r = 0; r < symbols.size(); ++w) {
      if (r + 1 < symbols.size() && symbols[r] == m.left && symbols[r + 1] == m.right) {
        symbols[w] = kByteVocab + best;
        r += 2;
      } else {
        symbols[w] = symbols[r++];
      }
    }
    symbols.resize(w);
  }
  out.insert(out.end(), symbols.begin(), symbols.end());
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  std::string text;
  text.reserve(ids.size() * 2);
  for (const int32_t id : ids) text += piece(id);
  return text;
}

Tokenizer Tokenizer::train_bpe(std::span<const std::string_view> texts, int vocab_size) {
  SY_REQUIRE(vocab_size >= kByteVocab && vocab_size <= kMaxVocab,
             "BPE vocab_size must be in [" << kByteVocab << ", " << kMaxVocab << "], got " << vocab_size);

  // Distinct chunks ("words") with their frequencies, in a fixed order.
  std::unordered_map<std::string_view, int64_t> chunk_counts;
  for (const std::string_view text : texts)
    for (size_t begin = 0; begin < text.size();) {
      const size_t end = bpe_chunk_end(text, begin);
      if (end - begin > 1) ++chunk_counts[text.substr(begin, end - begin)];  // 1-byte chunks hold no pair
      begin = end;
    }
  std::vector<std::pair<std::string_view, int64_t>> sorted(chunk_counts.begin(), chunk_counts.end());
  std::sort(sorted.begin(), sorted.end());
  std::vector<std::vector<int32_t>> words(sorted.size());  // symbols of each distinct chunk
  std::vector<int64_t> freq(sorted.size());
  for (size_t w = 0; w < sorted.size(); ++w) {
    const auto* b = reinterpret_cast<const uint8_t*>(sorted[w].first.data());
    words[w].assign(b, b + sorted[w].first.size());
    freq[w] = sorted[w].second;
  }

  std::unordered_map<uint64_t, int64_t> pair_count;
  std::unordered_map<uint64_t, std::vector<int32_t>> pair_words;  // words that held the pair (may be stale)
  for (size_t w = 0; w < words.size(); ++w)
    for (size_t i = 0; i + 1 < words[w].size(); ++i) {
      const uint64_t key = pair_key(words[w][i], words[w][i + 1]);
      pair_count[key] += freq[w];
      auto& list = pair_words[key];
      if (list.empty() || list.back() != int32_t(w)) list.push_back(int32_t(w));
    }

  // Max-heap on (count, smallest key); entries whose count changed since are skipped.
  struct Entry {
    int64_t count;
    uint64_t key;
    bool operator<(const Entry& o) const { return count != o.count ? count < o.count : key > o.key; }
  };
  std::priority_queue<Entry> heap;
  for (const auto& [key, count] : pair_count) heap.push({count, key});

  std::vector<BpeMerge> merges;
  std::vector<int32_t> visited(words.size(), -1);  // last merge that revisited the word
  std::vector<uint64_t> touched;
  const size_t target = size_t(vocab_size - kByteVocab);
  while (merges.size() < target && !heap.empty()) {
    const Entry top = heap.top();
    heap.pop();
    const auto cur = pair_count.find(top.key);
    if (cur == pair_count.end() || cur->second != top.count) continue;  // stale
    if (top.count < 2) break;
    const int32_t left = key_left(top.key), right = key_right(top.key);
    const int32_t id = int32_t(kByteVocab + merges.size());
    merges.push_back({left, right});

    std::vector<int32_t> holders = std::move(pair_words[top.key]);
    pair_words.erase(top.key);
    touched.clear();
    for (const int32_t w : holders) {
      if (visited[w] == id) continue;
      visited[w] = id;
      auto& sym = words[w];
      bool holds = false;
      for (size_t i = 0; i + 1 < sym.size() && !holds; ++i) holds = sym[i] == left && sym[i + 1] == right;
      if (!holds) continue;
      for (size_t i = 0; i + 1 < sym.size(); ++i) {
        const uint64_t key = pair_key(sym[i], sym[i + 1]);
        pair_count[key] -= freq[w];
        touched.push_back(key);
      }
      size_t out = 0;
      for (size_t r = 0; r < sym.size(); ++out) {
        if (r + 1 < sym.size() && sym[r] == left && sym[r + 1] == right) {
          sym[out] = id;
          r += 2;
        } else {
          sym[out] = sym[r++];
        }
      }
      sym.resize(out);
      for (size_t i = 0; i + 1 < sym.size(); ++i) {
        const uint64_t key = pair_key(sym[i], sym[i + 1]);
        pair_count[key] += freq[w];
        touched.push_back(key);
        if (sym[i] == id || sym[i + 1] == id) {  // a pair that did not exist before this merge
          auto& list = pair_words[key];
          if (list.empty() || list.back() != w) list.push_back(w);
        }
      }
    }
    std::sort(touched.begin(), touched.end());
    touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
    for (const uint64_t key : touched) {
      const auto it = pair_count.find(key);
      if (it->second <= 0) {
        pair_count.erase(it);
      } else {
        heap.push({it->second, key});
      }
    }
  }
  return bpe(std::move(merges));
}

}  // namespace sy::data
