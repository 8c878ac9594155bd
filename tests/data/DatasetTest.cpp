// HDF5 token datasets: round trip, atomic writes, and every malformed file
// refused with one line naming the file and the problem.
#include "data/dataset.hpp"

#include <gtest/gtest.h>
#include <hdf5.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "core/error.hpp"

namespace sy::data {
namespace {

namespace fs = std::filesystem;

std::string temp_path(const std::string& name) {
  const fs::path dir = fs::path(testing::TempDir()) / "sy_dataset";
  fs::create_directories(dir);
  return (dir / name).string();
}

// 3 documents in 2 domains; bpe: "ab" = 256, "abc" = 257.
TokenDataset small_dataset(TokenizerKind kind) {
  TokenDataset ds;
  ds.tokenizer = kind;
  if (kind == TokenizerKind::BPE) ds.merges = {{'a', 'b'}, {256, 'c'}};
  ds.vocab_size = kByteVocab + int64_t(ds.merges.size());
  ds.tokens = {'h', 'i', '!', 'x', '=', '1', ';', 'o', 'k', '.'};
  if (kind == TokenizerKind::BPE) ds.tokens[4] = 257;
  ds.doc_offsets = {0, 3, 7, 10};
  ds.doc_domain = {0, 1, 0};
  ds.domain_names = {"web", "code"};
  return ds;
}

void expect_same(const TokenDataset& a, const TokenDataset& b) {
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.tokenizer, b.tokenizer);
  EXPECT_EQ(a.merges, b.merges);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.doc_offsets, b.doc_offsets);
  EXPECT_EQ(a.doc_domain, b.doc_domain);
  EXPECT_EQ(a.domain_names, b.domain_names);
}

// --- raw HDF5 edits for the corruption cases ----------------------------------

class File {
 public:
  explicit File(const std::string& path) : id_(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT)) {}
  ~File() {
    if (id_ >= 0) H5Fclose(id_);
  }
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  hid_t get() const { return id_; }

 private:
  hid_t id_;
};

void remove_dataset(hid_t f, const char* name) {
  if (H5Lexists(f, name, H5P_DEFAULT) > 0) {
    ASSERT_GE(H5Ldelete(f, name, H5P_DEFAULT), 0) << name;
  }
}

// Replaces dataset `name` with data of the given types and shape.
void put(hid_t f, const char* name, hid_t file_type, hid_t mem_type, const void* data, std::vector<hsize_t> dims) {
  remove_dataset(f, name);
  const hid_t space = H5Screate_simple(int(dims.size()), dims.data(), nullptr);
  const hid_t ds = H5Dcreate2(f, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(ds, 0) << name;
  hsize_t n = 1;
  for (auto d : dims) n *= d;
  if (n > 0) {
    EXPECT_GE(H5Dwrite(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), 0) << name;
  }
  H5Dclose(ds);
  H5Sclose(space);
}
void put_i32(hid_t f, const char* name, const std::vector<int32_t>& v) {
  put(f, name, H5T_STD_I32LE, H5T_NATIVE_INT32, v.data(), {v.size()});
}
void put_i64(hid_t f, const char* name, const std::vector<int64_t>& v) {
  put(f, name, H5T_STD_I64LE, H5T_NATIVE_INT64, v.data(), {v.size()});
}

void remove_attr(hid_t f, const char* name) {
  if (H5Aexists(f, name) > 0) {
    ASSERT_GE(H5Adelete(f, name), 0) << name;
  }
}
void put_int_attr(hid_t f, const char* name, int64_t value) {
  remove_attr(f, name);
  const hid_t space = H5Screate(H5S_SCALAR);
  const hid_t attr = H5Acreate2(f, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(attr, 0) << name;
  EXPECT_GE(H5Awrite(attr, H5T_NATIVE_INT64, &value), 0);
  H5Aclose(attr);
  H5Sclose(space);
}
void put_string_attr(hid_t f, const char* name, const std::string& value) {
  remove_attr(f, name);
  const hid_t type = H5Tcopy(H5T_C_S1);
  H5Tset_size(type, value.size() + 1);
  const hid_t space = H5Screate(H5S_SCALAR);
  const hid_t attr = H5Acreate2(f, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(attr, 0) << name;
  EXPECT_GE(H5Awrite(attr, type, value.c_str()), 0);
  H5Aclose(attr);
  H5Sclose(space);
  H5Tclose(type);
}
// Strings as h5py writes them: variable length.
void put_vlen_strings(hid_t f, const char* name, const std::vector<std::string>& strings) {
  const hid_t type = H5Tcopy(H5T_C_S1);
  H5Tset_size(type, H5T_VARIABLE);
  std::vector<const char*> ptrs;
  for (const auto& s : strings) ptrs.push_back(s.c_str());
  put(f, name, type, type, ptrs.data(), {ptrs.size()});
  H5Tclose(type);
}

struct Corruption {
  const char* name;
  std::function<void(hid_t)> edit;
  const char* expect;  // in the message
};

const std::vector<Corruption>& corruptions() {
  static const std::vector<Corruption> cases = {
      {"no tokens", [](hid_t f) { remove_dataset(f, "tokens"); }, "missing dataset /tokens"},
      {"no doc_offsets", [](hid_t f) { remove_dataset(f, "doc_offsets"); }, "missing dataset /doc_offsets"},
      {"no doc_domain", [](hid_t f) { remove_dataset(f, "doc_domain"); }, "missing dataset /doc_domain"},
      {"no domain_names", [](hid_t f) { remove_dataset(f, "domain_names"); }, "missing dataset /domain_names"},
      {"no bpe_merges", [](hid_t f) { remove_dataset(f, "bpe_merges"); }, "missing dataset /bpe_merges"},
      {"float tokens",
       [](hid_t f) {
         const std::vector<double> v(10, 1.0);
         put(f, "tokens", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, v.data(), {v.size()});
       },
       "/tokens must be int32, got float64"},
      {"uint16 tokens",
       [](hid_t f) {
         const std::vector<uint16_t> v(10, 1);
         put(f, "tokens", H5T_STD_U16LE, H5T_NATIVE_UINT16, v.data(), {v.size()});
       },
       "/tokens must be int32, got uint16"},
      {"2-D tokens",
       [](hid_t f) {
         const std::vector<int32_t> v(10, 1);
         put(f, "tokens", H5T_STD_I32LE, H5T_NATIVE_INT32, v.data(), {5, 2});
       },
       "/tokens must be 1-D, has 2 dimensions"},
      {"int32 offsets",
       [](hid_t f) {
         put_i32(f, "doc_offsets", {0, 3, 7, 10});
       },
       "/doc_offsets must be int64, got int32"},
      {"offsets not monotone", [](hid_t f) { put_i64(f, "doc_offsets", {0, 7, 3, 10}); },
       "/doc_offsets must increase strictly, but document 1 runs from 7 to 3"},
      {"empty document", [](hid_t f) { put_i64(f, "doc_offsets", {0, 3, 3, 10}); },
       "document 1 runs from 3 to 3"},
      {"offsets past the end", [](hid_t f) { put_i64(f, "doc_offsets", {0, 3, 12, 14}); },
       "/doc_offsets[2] = 12 is past the end of /tokens (10 tokens)"},
      {"offsets end early", [](hid_t f) { put_i64(f, "doc_offsets", {0, 3, 7, 9}); },
       "/doc_offsets ends at 9 but /tokens has 10 tokens"},
      {"offsets start late", [](hid_t f) { put_i64(f, "doc_offsets", {1, 3, 7, 10}); },
       "/doc_offsets[0] is 1, expected 0"},
      {"offsets count", [](hid_t f) { put_i64(f, "doc_offsets", {0, 3, 10}); },
       "/doc_offsets has 3 entries, expected num_docs + 1 = 4"},
      {"token id = vocab_size",
       [](hid_t f) { put_i32(f, "tokens", {'h', 'i', '!', 'x', 258, '1', ';', 'o', 'k', '.'}); },
       "/tokens[4] = 258 is outside [0, vocab_size = 258)"},
      {"negative token id",
       [](hid_t f) { put_i32(f, "tokens", {'h', 'i', '!', 'x', 'y', '1', ';', 'o', 'k', -3}); },
       "/tokens[9] = -3 is outside"},
      {"domain index", [](hid_t f) { put_i32(f, "doc_domain", {0, 2, 0}); },
       "/doc_domain[1] = 2 is not a domain index (2 domains)"},
      {"empty dataset",
       [](hid_t f) {
         put_i32(f, "tokens", {});
         put_i64(f, "doc_offsets", {0});
         put_i32(f, "doc_domain", {});
       },
       "empty dataset: no documents"},
      {"no tokens, some documents", [](hid_t f) { put_i32(f, "tokens", {}); }, "empty dataset: no tokens"},
      {"no vocab_size", [](hid_t f) { remove_attr(f, "vocab_size"); }, "missing attribute vocab_size"},
      {"string vocab_size", [](hid_t f) { put_string_attr(f, "vocab_size", "258"); },
       "attribute vocab_size must be an integer, got string"},
      {"vocab_size vs merges", [](hid_t f) { put_int_attr(f, "vocab_size", 300); },
       "vocab_size 300 does not match 2 BPE merges (expected 258)"},
      {"no tokenizer", [](hid_t f) { remove_attr(f, "tokenizer"); }, "missing attribute tokenizer"},
      {"unknown tokenizer", [](hid_t f) { put_string_attr(f, "tokenizer", "wordpiece"); },
       "attribute tokenizer = 'wordpiece': expected byte or bpe"},
      {"byte tokenizer with merges", [](hid_t f) { put_string_attr(f, "tokenizer", "byte"); },
       "has /bpe_merges but tokenizer = 'byte'"},
      {"merge names a later id",
       [](hid_t f) {
         const std::vector<int32_t> m = {'a', 'b', 257, 'c'};
         put(f, "bpe_merges", H5T_STD_I32LE, H5T_NATIVE_INT32, m.data(), {2, 2});
       },
       "/bpe_merges row 1 (257, 99) must join ids below 257"},
      {"merges not (M, 2)",
       [](hid_t f) {
         const std::vector<int32_t> m = {'a', 'b', 'c', 256, 'c', 'd'};
         put(f, "bpe_merges", H5T_STD_I32LE, H5T_NATIVE_INT32, m.data(), {2, 3});
       },
       "/bpe_merges must be (M, 2), got (2, 3)"},
      {"no format_version", [](hid_t f) { remove_attr(f, "format_version"); }, "missing attribute format_version"},
      {"future format_version", [](hid_t f) { put_int_attr(f, "format_version", 2); },
       "format_version 2 is not supported"},
      {"numeric domain names", [](hid_t f) { put_i32(f, "domain_names", {1, 2}); },
       "/domain_names must hold strings, got int32"},
      {"repeated domain name", [](hid_t f) { put_vlen_strings(f, "domain_names", {"web", "web"}); },
       "/domain_names repeats 'web'"},
  };
  return cases;
}

TEST(Dataset, RoundTripByteAndBpe) {
  for (const TokenizerKind kind : {TokenizerKind::Byte, TokenizerKind::BPE}) {
    SCOPED_TRACE(to_string(kind));
    const TokenDataset ds = small_dataset(kind);
    ASSERT_EQ(dataset_problem(ds), "");
    const std::string path = temp_path(std::string("round_trip_") + to_string(kind) + ".h5");
    write_dataset(path, ds);
    const TokenDataset back = read_dataset(path);
    expect_same(back, ds);
    EXPECT_EQ(back.num_docs(), 3);
    EXPECT_EQ(back.doc_size(1), 4);
    EXPECT_FALSE(fs::exists(path + ".tmp"));
  }
}

TEST(Dataset, TokenizerIsRebuiltFromTheFile) {
  const std::string path = temp_path("rebuild.h5");
  write_dataset(path, small_dataset(TokenizerKind::BPE));
  const TokenDataset back = read_dataset(path);
  const Tokenizer t = dataset_tokenizer(back);
  EXPECT_EQ(t.kind(), TokenizerKind::BPE);
  EXPECT_EQ(t.vocab_size(), 258);
  EXPECT_EQ(t.decode(back.doc_tokens(1)), "xabc1;");
  EXPECT_EQ(t.encode("xabc1;"), std::vector<int32_t>(back.doc_tokens(1).begin(), back.doc_tokens(1).end()));
}

TEST(Dataset, TokenizeDocumentsSkipsEmptyOnesAndKeepsDomains) {
  const std::vector<TextDocument> docs = {{"hello", 1}, {"", 0}, {"x", 0}};
  const TokenDataset ds = tokenize_documents(Tokenizer(), {"a", "b"}, docs);
  EXPECT_EQ(ds.doc_offsets, (std::vector<int64_t>{0, 5, 6}));
  EXPECT_EQ(ds.doc_domain, (std::vector<int32_t>{1, 0}));
  EXPECT_EQ(dataset_problem(ds), "");
}

TEST(Dataset, WriteReplacesTheOldFileWhole) {
  const std::string path = temp_path("replace.h5");
  write_dataset(path, small_dataset(TokenizerKind::BPE));
  TokenDataset second = small_dataset(TokenizerKind::Byte);
  second.tokens[0] = 'H';
  write_dataset(path, second);
  expect_same(read_dataset(path), second);
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

TEST(Dataset, WriteIntoAMissingFolderFailsAndLeavesNothing) {
  const std::string path = temp_path("no_such_folder/out.h5");
  try {
    write_dataset(path, small_dataset(TokenizerKind::Byte));
    FAIL() << "expected IoError";
  } catch (const IoError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find("No such file or directory"), std::string::npos) << msg;
  }
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

TEST(Dataset, WriteRefusesAnInconsistentDatasetBeforeTouchingTheDisk) {
  const std::string path = temp_path("inconsistent.h5");
  fs::remove(path);
  TokenDataset ds = small_dataset(TokenizerKind::Byte);
  ds.tokens[2] = 256;
  EXPECT_THROW(write_dataset(path, ds), InvalidArgument);
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

TEST(Dataset, ReadsVariableLengthDomainNames) {
  const std::string path = temp_path("vlen_names.h5");
  write_dataset(path, small_dataset(TokenizerKind::BPE));
  {
    File f(path);
    ASSERT_GE(f.get(), 0);
    put_vlen_strings(f.get(), "domain_names", {"forum", "source"});
  }
  EXPECT_EQ(read_dataset(path).domain_names, (std::vector<std::string>{"forum", "source"}));
}

TEST(Dataset, EveryCorruptionIsRefusedWithOneLineNamingFileAndProblem) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // the edits below may probe missing objects
  int i = 0;
  for (const Corruption& c : corruptions()) {
    SCOPED_TRACE(c.name);
    const std::string path = temp_path("corrupt_" + std::to_string(i++) + ".h5");
    write_dataset(path, small_dataset(TokenizerKind::BPE));
    ASSERT_NO_THROW(read_dataset(path));  // the edit alone makes it bad
    {
      File f(path);
      ASSERT_GE(f.get(), 0);
      c.edit(f.get());
    }
    try {
      read_dataset(path);
      ADD_FAILURE() << "read_dataset accepted the file";
    } catch (const IoError& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << msg;
      EXPECT_NE(msg.find(c.expect), std::string::npos) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  }
}

TEST(Dataset, RefusesWhatIsNotADatasetFile) {
  const std::string text = temp_path("notes.txt");
  std::ofstream(text) << "just some text\n";
  const std::string folder = temp_path("a_folder");
  fs::create_directories(folder);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {temp_path("missing.h5"), "no such file"},
      {text, "not an HDF5 file"},
      {folder, "is a folder, not a dataset file"}};
  for (const auto& [path, expect] : cases) {
    try {
      read_dataset(path);
      ADD_FAILURE() << path << " was accepted";
    } catch (const IoError& e) {
      EXPECT_EQ(std::string(e.what()), path + ": " + expect);
    }
  }
}

}  // namespace
}  // namespace sy::data
