// `switchyard prepare`, run as a user would run it, on the synthetic corpus.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "data/dataset.hpp"
#include "data/synthetic.hpp"
#include "tests/support/test_support.hpp"

namespace sy::data {
namespace {

namespace fs = std::filesystem;

test::CommandResult prepare(const std::string& args) {
  return test::run_command(test::binary_path() + " prepare " + args);
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// A fresh folder under the test temp dir.
std::string fresh_dir(const std::string& name) {
  const fs::path dir = fs::path(testing::TempDir()) / ("sy_prepare_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::string slurp(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream os;
  os << f.rdbuf();
  return os.str();
}

void write(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

// The synthetic corpus: dir/corpus/{prose,code,numbers}, 4 documents of 3000 bytes each.
std::vector<std::string> corpus(const std::string& dir) {
  SyntheticCorpusOptions o;
  o.docs_per_domain = 4;
  o.bytes_per_doc = 3000;
  return write_synthetic_corpus(dir + "/corpus", o);
}

TEST(PrepareCli, HelpDescribesEveryFlag) {
  const auto r = prepare("--help");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (const char* flag : {"usage: switchyard prepare", "--out FILE", "--input PATH[:DOMAIN]", "--tokenizer byte|bpe",
                           "--vocab-size N", "--max-bytes-per-domain N"})
    EXPECT_TRUE(contains(r.output, flag)) << flag << " missing from\n" << r.output;
}

TEST(PrepareCli, ByteDatasetHoldsEveryDomainDocumentAndByte) {
  const std::string dir = fresh_dir("byte");
  const auto folders = corpus(dir);
  const std::string out = dir + "/byte.h5";
  const auto r = prepare("--out " + out + " --input " + folders[0] + " --input " + folders[1] + ":src --input " +
                         folders[2] + " --tokenizer byte");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* line : {"prose", "src", "numbers", "total"})
    EXPECT_TRUE(contains(r.output, line)) << line << " missing from\n" << r.output;
  EXPECT_TRUE(contains(r.output, "12 documents        36000 bytes        36000 tokens")) << r.output;

  const TokenDataset ds = read_dataset(out);
  EXPECT_EQ(ds.tokenizer, TokenizerKind::Byte);
  EXPECT_EQ(ds.vocab_size, 256);
  EXPECT_EQ(ds.domain_names, (std::vector<std::string>{"prose", "src", "numbers"}));
  ASSERT_EQ(ds.num_docs(), 12);
  EXPECT_EQ(ds.num_tokens(), 36000);
  const Tokenizer t = dataset_tokenizer(ds);
  for (int64_t d = 0; d < ds.num_docs(); ++d) {
    EXPECT_EQ(ds.doc_domain[d], d / 4);
    const fs::path file = fs::path(folders[size_t(d / 4)]) / ("doc_00" + std::to_string(d % 4) + ".txt");
    EXPECT_EQ(t.decode(ds.doc_tokens(d)), slurp(file)) << file;
  }
  EXPECT_FALSE(fs::exists(out + ".tmp"));
}

TEST(PrepareCli, BpeDatasetCompressesAndCarriesItsTokenizer) {
  const std::string dir = fresh_dir("bpe");
  const auto folders = corpus(dir);
  const std::string out = dir + "/bpe.h5";
  const auto r = prepare("--out " + out + " --input " + folders[0] + " --input " + folders[1] + " --input " +
                         folders[2] + " --tokenizer bpe --vocab-size 400");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "vocab 400")) << r.output;
  const TokenDataset ds = read_dataset(out);
  EXPECT_EQ(ds.tokenizer, TokenizerKind::BPE);
  EXPECT_EQ(ds.vocab_size, 400);
  EXPECT_EQ(ds.merges.size(), 144u);
  EXPECT_LT(ds.num_tokens(), 36000 * 6 / 10) << "BPE compresses the synthetic corpus (about 1.9 bytes a token)";
  const Tokenizer t = dataset_tokenizer(ds);
  for (int64_t d = 0; d < ds.num_docs(); ++d) {
    const fs::path file = fs::path(folders[size_t(d / 4)]) / ("doc_00" + std::to_string(d % 4) + ".txt");
    EXPECT_EQ(t.decode(ds.doc_tokens(d)), slurp(file)) << file;
  }
  // Same input, same file content (deterministic training and tokenization).
  const std::string again = dir + "/bpe_again.h5";
  ASSERT_EQ(prepare("--out " + again + " --input " + folders[0] + " --input " + folders[1] + " --input " + folders[2] +
                    " --data.tokenizer=bpe --model.vocab_size=400")
                .exit_code,
            0);
  const TokenDataset ds2 = read_dataset(again);
  EXPECT_EQ(ds2.merges, ds.merges);
  EXPECT_EQ(ds2.tokens, ds.tokens);
}

TEST(PrepareCli, FoldersAreReadRecursivelyInPathOrderSkippingBinaryHiddenAndEmptyFiles) {
  const std::string dir = fresh_dir("folder");
  write(dir + "/in/b.txt", "second\n");
  write(dir + "/in/a/c.txt", "first\n");
  write(dir + "/in/empty.txt", "");
  write(dir + "/in/blob.bin", std::string("PK\0\3binary", 10));
  write(dir + "/in/.hidden.txt", "secret\n");
  write(dir + "/in/.git/config", "[core]\n");
  const std::string out = dir + "/out.h5";
  const auto r = prepare("--out " + out + " --input " + dir + "/in/");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "(2 empty or binary files skipped)")) << r.output;
  const TokenDataset ds = read_dataset(out);
  EXPECT_EQ(ds.domain_names, std::vector<std::string>{"in"});
  ASSERT_EQ(ds.num_docs(), 2);
  const Tokenizer t;
  EXPECT_EQ(t.decode(ds.doc_tokens(0)), "first\n");
  EXPECT_EQ(t.decode(ds.doc_tokens(1)), "second\n");
}

TEST(PrepareCli, LargeFilesAreCutIntoDocumentsAndMaxBytesCapsADomain) {
  const std::string dir = fresh_dir("large");
  std::string text;
  for (int i = 0; text.size() < 200000; ++i) text += "line " + std::to_string(i) + " of a long file\n";
  write(dir + "/big.txt", text);
  write(dir + "/other/x.txt", std::string(5000, 'x'));
  const std::string out = dir + "/out.h5";
  ASSERT_EQ(prepare("--out " + out + " --input " + dir + "/big.txt:big").exit_code, 0);
  TokenDataset ds = read_dataset(out);
  ASSERT_EQ(ds.num_docs(), 4);  // 200 KB in pieces of at most 64 KiB
  std::string joined;
  const Tokenizer t;
  for (int64_t d = 0; d < ds.num_docs(); ++d) {
    const std::string doc = t.decode(ds.doc_tokens(d));
    EXPECT_LE(doc.size(), 65536u);
    if (d + 1 < ds.num_docs()) {
      EXPECT_EQ(doc.back(), '\n') << "document " << d << " is not cut at a newline";
    }
    joined += doc;
  }
  EXPECT_EQ(joined, text);

  const auto r = prepare("--out " + out + " --input " + dir + "/big.txt:big --input " + dir +
                         "/other --max-bytes-per-domain 1000");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ds = read_dataset(out);
  EXPECT_EQ(ds.num_tokens(), 2000);
  EXPECT_EQ(t.decode(ds.doc_tokens(0)), text.substr(0, 1000));
}

TEST(PrepareCli, ErrorsAreOneLineAndLeaveNoFile) {
  const std::string dir = fresh_dir("errors");
  const auto folders = corpus(dir);
  write(dir + "/only_binary/a.bin", std::string("\0\1\2", 3));
  fs::create_directories(dir + "/empty_folder");
  const std::string out = dir + "/out.h5";
  const std::string good = " --input " + folders[0];
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--out " + out + " --input " + dir + "/no_such_path", "--input " + dir + "/no_such_path: " + dir +
                                                                  "/no_such_path does not exist"},
      {"--out " + out + good + " --input " + dir + "/empty_folder", "empty_folder: no text to read (0 files"},
      {"--out " + out + good + " --input " + dir + "/only_binary", "only_binary: no text to read (1 files"},
      {"--out " + dir + "/no_such_folder/out.h5" + good, "cannot write " + dir + "/no_such_folder/out.h5"},
      {good, "--out FILE is required"},
      {"--out " + out, "give at least one --input"},
      {"--out " + out + good + " --tokenizer wordpiece", "data.tokenizer = 'wordpiece'"},
      {"--out " + out + good + " --tokenizer bpe", "--tokenizer bpe needs a vocabulary in (256"},
      {"--out " + out + good + " --vocab-size 512", "--vocab-size 512 with --tokenizer byte"},
      {"--out " + out + good + " --max-bytes-per-domain 0", "--max-bytes-per-domain = '0'"},
      {"--out " + out + good + " --input " + folders[1] + ":prose", "domain 'prose' is also --input"},
      {"--out " + out + good + " --frobnicate", "unknown argument '--frobnicate'"},
  };
  for (const auto& [args, expect] : cases) {
    SCOPED_TRACE(args);
    const auto r = prepare(args);
    EXPECT_NE(r.exit_code, 0);
    EXPECT_EQ(r.output.rfind("switchyard: error: ", 0), 0u) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
    EXPECT_TRUE(contains(r.output, expect)) << "expected '" << expect << "' in\n" << r.output;
    EXPECT_FALSE(fs::exists(out));
    EXPECT_FALSE(fs::exists(out + ".tmp"));
  }
}

TEST(PrepareCli, AFailedRunKeepsTheOldFile) {
  const std::string dir = fresh_dir("keep");
  const auto folders = corpus(dir);
  const std::string out = dir + "/out.h5";
  ASSERT_EQ(prepare("--out " + out + " --input " + folders[0]).exit_code, 0);
  const TokenDataset before = read_dataset(out);
  EXPECT_NE(prepare("--out " + out + " --input " + folders[1] + " --input " + dir + "/missing").exit_code, 0);
  const TokenDataset after = read_dataset(out);
  EXPECT_EQ(after.tokens, before.tokens);
  EXPECT_FALSE(fs::exists(out + ".tmp"));
}

}  // namespace
}  // namespace sy::data
