// Byte and BPE tokenizers: exact round trips, deterministic training, compression.
#include "data/tokenizer.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.hpp"
#include "core/rng.hpp"
#include "data/synthetic.hpp"

namespace sy::data {
namespace {

std::string random_bytes(size_t n, uint64_t seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = char(splitmix64(seed * 1000003 + i) & 0xff);
  return s;
}

// The synthetic corpus, docs_per_domain documents of `bytes` bytes per domain.
std::vector<std::string> corpus(int docs_per_domain, int64_t bytes) {
  std::vector<std::string> docs;
  for (int d = 0; d < 3; ++d)
    for (int i = 0; i < docs_per_domain; ++i) docs.push_back(synthetic_document(d, i, bytes, 7));
  return docs;
}

std::vector<std::string_view> views(const std::vector<std::string>& docs) {
  return std::vector<std::string_view>(docs.begin(), docs.end());
}

std::vector<std::string> chunks(std::string_view text) {
  std::vector<std::string> out;
  for (size_t b = 0; b < text.size();) {
    const size_t e = bpe_chunk_end(text, b);
    out.emplace_back(text.substr(b, e - b));
    b = e;
  }
  return out;
}

TEST(Tokenizer, ByteRoundTripsEveryByte) {
  const Tokenizer t;
  EXPECT_EQ(t.kind(), TokenizerKind::Byte);
  EXPECT_EQ(t.vocab_size(), 256);
  std::string all(256, '\0');
  for (int b = 0; b < 256; ++b) all[b] = char(b);
  const auto ids = t.encode(all);
  ASSERT_EQ(ids.size(), 256u);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(ids[b], b);
  EXPECT_EQ(t.decode(ids), all);
  const std::string noise = random_bytes(5000, 1);
  EXPECT_EQ(t.decode(t.encode(noise)), noise);
  EXPECT_TRUE(t.encode("").empty());
}

TEST(Tokenizer, DecodeRefusesIdsOutsideTheVocabulary) {
  const Tokenizer t;
  const std::vector<int32_t> bad = {'a', 256};
  EXPECT_THROW(t.decode(bad), InvalidArgument);
  const std::vector<int32_t> negative = {-1};
  EXPECT_THROW(t.decode(negative), InvalidArgument);
}

TEST(Tokenizer, ChunksKeepWordsWithTheirLeadingSpace) {
  EXPECT_EQ(chunks("hello world, 42  x\n\ny"),
            (std::vector<std::string>{"hello", " world", ",", " 42", " ", " x", "\n\n", "y"}));
  EXPECT_EQ(chunks("caf\xc3\xa9 ok"), (std::vector<std::string>{"caf\xc3\xa9", " ok"}));  // UTF-8 stays whole
  const std::string long_word(70, 'z');
  const auto pieces = chunks(long_word);
  ASSERT_EQ(pieces.size(), 3u);
  EXPECT_EQ(pieces[0].size(), kMaxChunkBytes);
  EXPECT_EQ(pieces[2].size(), 70 - 2 * kMaxChunkBytes);
}

TEST(Tokenizer, BpeMergesTheMostFrequentPairFirst) {
  const std::vector<std::string_view> text = {"ab ab ab cd"};
  const Tokenizer t = Tokenizer::train_bpe(text, 300);
  // (a, b) x3, then (' ', ab) x2; the rest occur once, so training stops short of 300.
  EXPECT_EQ(t.merges(), (std::vector<BpeMerge>{{'a', 'b'}, {' ', 256}}));
  EXPECT_EQ(t.vocab_size(), 258);
  EXPECT_EQ(t.piece(257), " ab");
  EXPECT_EQ(t.encode("ab ab cd"), (std::vector<int32_t>{256, 257, ' ', 'c', 'd'}));
}

TEST(Tokenizer, BpeBreaksTiesTowardTheSmallestPair) {
  const std::vector<std::string_view> text = {"ab ab cd cd"};
  // (' ', c), (a, b) and (c, d) all occur twice: (32, 99) < (97, 98) < (99, 100).
  const Tokenizer t = Tokenizer::train_bpe(text, 300);
  EXPECT_EQ(t.merges(), (std::vector<BpeMerge>{{' ', 'c'}, {'a', 'b'}, {256, 'd'}}));
}

// The specification of training: recount every pair after every merge.
std::vector<BpeMerge> naive_bpe(const std::vector<std::string>& docs, int vocab_size) {
  std::map<std::string, int64_t> counts;
  for (const auto& d : docs)
    for (size_t b = 0; b < d.size();) {
      const size_t e = bpe_chunk_end(d, b);
      ++counts[d.substr(b, e - b)];
      b = e;
    }
  std::vector<std::pair<std::vector<int32_t>, int64_t>> words;
  for (const auto& [w, n] : counts) words.push_back({std::vector<int32_t>(w.begin(), w.end()), n});
  for (auto& [syms, n] : words)
    for (auto& s : syms) s = int32_t(uint8_t(s));
  std::vector<BpeMerge> merges;
  while (int(merges.size()) + 256 < vocab_size) {
    std::map<std::pair<int32_t, int32_t>, int64_t> pairs;
    for (const auto& [syms, n] : words)
      for (size_t i = 0; i + 1 < syms.size(); ++i) pairs[{syms[i], syms[i + 1]}] += n;
    std::pair<int32_t, int32_t> best{-1, -1};
    int64_t best_count = 1;
    for (const auto& [p, n] : pairs)  // ascending pairs: the first of the largest count wins
      if (n > best_count) best = p, best_count = n;
    if (best.first < 0) break;
    const int32_t id = 256 + int32_t(merges.size());
    merges.push_back({best.first, best.second});
    for (auto& [syms, n] : words) {
      std::vector<int32_t> out;
      for (size_t i = 0; i < syms.size(); ++i) {
        if (i + 1 < syms.size() && syms[i] == best.first && syms[i + 1] == best.second) {
          out.push_back(id);
          ++i;
        } else {
          out.push_back(syms[i]);
        }
      }
      syms = out;
    }
  }
  return merges;
}

TEST(Tokenizer, BpeIncrementalCountsMatchAFullRecountEveryMerge) {
  const auto docs = corpus(2, 1500);
  const std::string noise = random_bytes(3000, 9);
  for (const auto& text : {docs, std::vector<std::string>{noise, "aaaaaaa aaaa aaa"}}) {
    const auto expected = naive_bpe(text, 380);
    ASSERT_GT(expected.size(), 20u);
    EXPECT_EQ(Tokenizer::train_bpe(views(text), 380).merges(), expected);
  }
}

TEST(Tokenizer, BpeTrainingIsDeterministicAndIgnoresDocumentOrder) {
  const auto docs = corpus(4, 3000);
  const Tokenizer a = Tokenizer::train_bpe(views(docs), 500);
  const Tokenizer b = Tokenizer::train_bpe(views(docs), 500);
  auto reversed = views(docs);
  std::reverse(reversed.begin(), reversed.end());
  const Tokenizer c = Tokenizer::train_bpe(reversed, 500);
  EXPECT_EQ(a.vocab_size(), 500);  // the corpus has enough pairs for the full vocabulary
  EXPECT_EQ(a.merges(), b.merges());
  EXPECT_EQ(a.merges(), c.merges());
  // Rebuilt from its merges (as from a dataset file) it encodes the same.
  const Tokenizer rebuilt = Tokenizer::bpe(a.merges());
  EXPECT_EQ(rebuilt.encode(docs[5]), a.encode(docs[5]));
}

TEST(Tokenizer, BpeRoundTripsRandomBytes) {
  const auto docs = corpus(2, 2000);
  const std::string noise_corpus = random_bytes(20000, 3);
  const std::vector<std::string_view> noise_view = {noise_corpus};
  for (const Tokenizer& t : {Tokenizer::train_bpe(views(docs), 400), Tokenizer::train_bpe(noise_view, 400)}) {
    ASSERT_GT(t.merges().size(), 10u);
    for (uint64_t seed = 0; seed < 20; ++seed) {
      const std::string s = random_bytes(size_t(seed * 97), seed + 100);
      EXPECT_EQ(t.decode(t.encode(s)), s) << "seed " << seed;
    }
    for (const auto& d : docs) EXPECT_EQ(t.decode(t.encode(d)), d);
    const std::string edge = std::string("\0\0ab\xff\xff   \n\t", 13) + std::string(100, 'a');
    EXPECT_EQ(t.decode(t.encode(edge)), edge);
  }
}

TEST(Tokenizer, BpeCompressesEveryDomainOfTheSyntheticCorpus) {
  const auto train = corpus(4, 4000);
  const Tokenizer t = Tokenizer::train_bpe(views(train), 512);
  // Random digits carry about 3.3 bits a byte, so "numbers" compresses least.
  const double max_tokens_per_byte[3] = {0.45, 0.6, 0.8};
  for (int d = 0; d < 3; ++d) {
    const std::string held_out = synthetic_document(d, 99, 8000, 7);  // not in the training text
    const size_t tokens = t.encode(held_out).size();
    EXPECT_LT(double(tokens), max_tokens_per_byte[d] * double(held_out.size()))
        << synthetic_domain_names()[d] << ": " << tokens << " tokens for " << held_out.size() << " bytes";
  }
}

TEST(Tokenizer, BpeRefusesMalformedMergesAndVocabularies) {
  EXPECT_THROW(Tokenizer::bpe({{'a', 256}}), InvalidArgument);             // names itself
  EXPECT_THROW(Tokenizer::bpe({{'a', 'b'}, {'a', 'b'}}), InvalidArgument);  // repeats a pair
  EXPECT_THROW(Tokenizer::bpe({{-1, 'b'}}), InvalidArgument);
  const std::vector<std::string_view> text = {"abc"};
  EXPECT_THROW(Tokenizer::train_bpe(text, 255), InvalidArgument);
  EXPECT_EQ(Tokenizer::train_bpe(text, 256).vocab_size(), 256);
}

}  // namespace
}  // namespace sy::data
