#include "data/dataset.hpp"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>
#include <unordered_map>
#include <utility>

#include "core/error.hpp"
#include "core/hdf5_check.hpp"
#include "core/hdf5_io.hpp"

namespace sy::data {

namespace {

using h5::fsync_path;

using h5::Array;
using h5::check_format_version;
using h5::describe_type;
using h5::H5File;
using h5::H5Type;
using h5::Hdf5Quiet;
using h5::Problem;  // read_dataset prefixes the path
using h5::read_all;
using h5::read_int_attr;
using h5::read_string_attr;
using h5::read_strings;
using h5::write_array;
using h5::write_int_attr;
using h5::write_string_attr;
using h5::write_strings;

std::string str(int64_t v) { return std::to_string(v); }

std::string merges_problem(const std::vector<BpeMerge>& merges) {
  std::unordered_map<uint64_t, size_t> seen;
  for (size_t i = 0; i < merges.size(); ++i) {
    const BpeMerge m = merges[i];
    const int64_t next_id = kByteVocab + int64_t(i);
    if (m.left < 0 || m.left >= next_id || m.right < 0 || m.right >= next_id)
      return "/bpe_merges row " + str(int64_t(i)) + " (" + str(m.left) + ", " + str(m.right) +
             ") must join ids below " + str(next_id);
    const uint64_t key = (uint64_t(uint32_t(m.left)) << 32) | uint32_t(m.right);
    if (const auto [it, fresh] = seen.emplace(key, i); !fresh)
      return "/bpe_merges row " + str(int64_t(i)) + " repeats row " + str(int64_t(it->second));
  }
  return "";
}

// --- reading ----------------------------------------------------------------

// The dataset /name, which must have `rank` dimensions.
Array open_root_array(hid_t file, const char* name, int rank) {
  if (H5Lexists(file, name, H5P_DEFAULT) <= 0) throw Problem(std::string("missing dataset /") + name);
  return h5::open_array(file, name, rank, std::string("/") + name);
}

// Requires a signed integer of `bytes` bytes (any byte order).
void require_signed(const Array& a, size_t bytes) {
  H5Type type(SY_HDF5_CHECK(H5Dget_type(a.ds.get())));
  if (H5Tget_class(type.get()) != H5T_INTEGER || H5Tget_size(type.get()) != bytes ||
      H5Tget_sign(type.get()) != H5T_SGN_2)
    throw Problem(a.what + " must be int" + std::to_string(bytes * 8) + ", got " + describe_type(type.get()));
}

TokenDataset read_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw Problem("no such file");
  if (std::filesystem::is_directory(path, ec)) throw Problem("is a folder, not a dataset file");
  if (H5Fis_hdf5(path.c_str()) <= 0) throw Problem("not an HDF5 file");
  H5File file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  if (!file.valid()) throw Problem("cannot open: " + detail::hdf5_error_text());
  const hid_t f = file.get();

  TokenDataset ds;
  check_format_version(f, kDatasetFormatVersion);
  ds.vocab_size = read_int_attr(f, "vocab_size");
  const std::string kind = read_string_attr(f, "tokenizer");
  if (kind == to_string(TokenizerKind::Byte)) {
    ds.tokenizer = TokenizerKind::Byte;
  } else if (kind == to_string(TokenizerKind::BPE)) {
    ds.tokenizer = TokenizerKind::BPE;
  } else {
    throw Problem("attribute tokenizer = '" + kind + "': expected byte or bpe");
  }

  const Array tokens = open_root_array(f, "tokens", 1);
  require_signed(tokens, 4);
  const Array offsets = open_root_array(f, "doc_offsets", 1);
  require_signed(offsets, 8);
  const Array domain = open_root_array(f, "doc_domain", 1);
  require_signed(domain, 4);
  const Array names = open_root_array(f, "domain_names", 1);
  const bool has_merges = H5Lexists(f, "bpe_merges", H5P_DEFAULT) > 0;
  if (ds.tokenizer == TokenizerKind::BPE) {
    const Array merges = open_root_array(f, "bpe_merges", 2);
    require_signed(merges, 4);
    if (merges.dims[1] != 2)
      throw Problem("/bpe_merges must be (M, 2), got (" + str(int64_t(merges.dims[0])) + ", " +
                    str(int64_t(merges.dims[1])) + ")");
    const auto flat = read_all<int32_t>(merges, H5T_NATIVE_INT32);
    ds.merges.resize(flat.size() / 2);
    for (size_t i = 0; i < ds.merges.size(); ++i) ds.merges[i] = {flat[2 * i], flat[2 * i + 1]};
  } else if (has_merges) {
    throw Problem("has /bpe_merges but tokenizer = 'byte'");
  }

  // Cheap shape checks before reading the big arrays.
  if (domain.dims[0] == 0) throw Problem("empty dataset: no documents");
  if (tokens.dims[0] == 0) throw Problem("empty dataset: no tokens");
  if (offsets.dims[0] != domain.dims[0] + 1)
    throw Problem("/doc_offsets has " + str(int64_t(offsets.dims[0])) + " entries, expected num_docs + 1 = " +
                  str(int64_t(domain.dims[0] + 1)));
  ds.domain_names = read_strings(names);
  ds.doc_offsets = read_all<int64_t>(offsets, H5T_NATIVE_INT64);
  ds.doc_domain = read_all<int32_t>(domain, H5T_NATIVE_INT32);
  ds.tokens = read_all<int32_t>(tokens, H5T_NATIVE_INT32);
  file.close();

  if (std::string problem = dataset_problem(ds); !problem.empty()) throw Problem(problem);
  return ds;
}

// --- writing ----------------------------------------------------------------

void write_file(const std::string& path, const TokenDataset& ds) {
  H5File file(SY_HDF5_CHECK(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT)));
  const hid_t f = file.get();
  write_int_attr(f, "format_version", kDatasetFormatVersion);
  write_int_attr(f, "vocab_size", ds.vocab_size);
  write_string_attr(f, "tokenizer", to_string(ds.tokenizer));
  write_array(f, "tokens", H5T_STD_I32LE, H5T_NATIVE_INT32, ds.tokens.data(), {hsize_t(ds.tokens.size())});
  write_array(f, "doc_offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, ds.doc_offsets.data(),
              {hsize_t(ds.doc_offsets.size())});
  write_array(f, "doc_domain", H5T_STD_I32LE, H5T_NATIVE_INT32, ds.doc_domain.data(), {hsize_t(ds.doc_domain.size())});
  write_strings(f, "domain_names", ds.domain_names);
  if (ds.tokenizer == TokenizerKind::BPE) {
    std::vector<int32_t> flat;  // (M, 2)
    flat.reserve(ds.merges.size() * 2);
    for (const BpeMerge& m : ds.merges) flat.insert(flat.end(), {m.left, m.right});
    write_array(f, "bpe_merges", H5T_STD_I32LE, H5T_NATIVE_INT32, flat.data(), {hsize_t(ds.merges.size()), 2});
  }
  SY_HDF5_CHECK(H5Fflush(f, H5F_SCOPE_GLOBAL));
  file.close();
}

}  // namespace

std::string dataset_problem(const TokenDataset& ds) {
  // Tokenizer and vocabulary.
  if (ds.tokenizer == TokenizerKind::Byte) {
    if (ds.vocab_size != kByteVocab) return "vocab_size " + str(ds.vocab_size) + " with tokenizer 'byte' (must be 256)";
    if (!ds.merges.empty()) return "tokenizer 'byte' has no merges, got " + str(int64_t(ds.merges.size()));
  } else {
    if (std::string p = merges_problem(ds.merges); !p.empty()) return p;
    if (ds.vocab_size != kByteVocab + int64_t(ds.merges.size()))
      return "vocab_size " + str(ds.vocab_size) + " does not match " + str(int64_t(ds.merges.size())) +
             " BPE merges (expected " + str(kByteVocab + int64_t(ds.merges.size())) + ")";
  }
  // Domains.
  if (ds.domain_names.empty()) return "/domain_names is empty";
  std::set<std::string> names;
  for (size_t k = 0; k < ds.domain_names.size(); ++k) {
    const std::string& name = ds.domain_names[k];
    if (name.empty() || name.find('\0') != std::string::npos)
      return "/domain_names[" + str(int64_t(k)) + "] is empty or holds a NUL byte";
    if (!names.insert(name).second) return "/domain_names repeats '" + name + "'";
  }
  // Documents.
  const int64_t num_docs = ds.num_docs(), num_tokens = ds.num_tokens();
  if (num_docs == 0) return "empty dataset: no documents";
  if (num_tokens == 0) return "empty dataset: no tokens";
  if (int64_t(ds.doc_offsets.size()) != num_docs + 1)
    return "/doc_offsets has " + str(int64_t(ds.doc_offsets.size())) + " entries, expected num_docs + 1 = " +
           str(num_docs + 1);
  if (ds.doc_offsets[0] != 0) return "/doc_offsets[0] is " + str(ds.doc_offsets[0]) + ", expected 0";
  for (int64_t i = 0; i < num_docs; ++i) {
    const int64_t lo = ds.doc_offsets[i], hi = ds.doc_offsets[i + 1];
    if (hi <= lo)
      return "/doc_offsets must increase strictly, but document " + str(i) + " runs from " + str(lo) + " to " + str(hi);
    if (hi > num_tokens)
      return "/doc_offsets[" + str(i + 1) + "] = " + str(hi) + " is past the end of /tokens (" + str(num_tokens) +
             " tokens)";
  }
  if (ds.doc_offsets[num_docs] != num_tokens)
    return "/doc_offsets ends at " + str(ds.doc_offsets[num_docs]) + " but /tokens has " + str(num_tokens) +
           " tokens";
  for (int64_t i = 0; i < num_docs; ++i)
    if (ds.doc_domain[i] < 0 || ds.doc_domain[i] >= ds.num_domains())
      return "/doc_domain[" + str(i) + "] = " + str(ds.doc_domain[i]) + " is not a domain index (" +
             str(ds.num_domains()) + " domains)";
  for (int64_t i = 0; i < num_tokens; ++i) {
    const int32_t t = ds.tokens[i];
    if (t < 0 || t >= ds.vocab_size)
      return "/tokens[" + str(i) + "] = " + str(t) + " is outside [0, vocab_size = " + str(ds.vocab_size) + ")";
  }
  return "";
}

void write_dataset(const std::string& path, const TokenDataset& ds) {
  if (std::string problem = dataset_problem(ds); !problem.empty())
    throw InvalidArgument("write_dataset " + path + ": " + problem);
  const std::string tmp = path + ".tmp";
  // A plain open first, for an error a user can act on (missing folder, no permission).
  if (FILE* probe = std::fopen(tmp.c_str(), "wb")) {
    std::fclose(probe);
  } else {
    throw IoError(path + ": cannot write " + tmp + ": " + std::strerror(errno));
  }
  Hdf5Quiet quiet;
  try {
    write_file(tmp, ds);
    fsync_path(tmp);
    std::filesystem::rename(tmp, path);
  } catch (const std::exception& e) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw IoError(path + ": write failed: " + e.what());
  }
  // The rename is durable once the folder is synced; a failure here leaves a complete file.
  const std::string folder = std::filesystem::absolute(path).parent_path().string();
  try {
    fsync_path(folder);
  } catch (const IoError&) {
  }
}

TokenDataset read_dataset(const std::string& path) {
  Hdf5Quiet quiet;
  try {
    return read_file(path);
  } catch (const Problem& e) {
    throw IoError(path + ": " + e.what());
  } catch (const IoError& e) {
    throw IoError(path + ": " + e.what());
  }
}

Tokenizer dataset_tokenizer(const TokenDataset& ds) {
  return ds.tokenizer == TokenizerKind::BPE ? Tokenizer::bpe(ds.merges) : Tokenizer();
}

TokenDataset tokenize_documents(const Tokenizer& tokenizer, std::vector<std::string> domain_names,
                                std::span<const TextDocument> docs) {
  TokenDataset ds;
  ds.vocab_size = tokenizer.vocab_size();
  ds.tokenizer = tokenizer.kind();
  ds.merges = tokenizer.merges();
  ds.domain_names = std::move(domain_names);
  ds.doc_offsets.push_back(0);
  for (const TextDocument& doc : docs) {
    SY_REQUIRE(doc.domain >= 0 && doc.domain < ds.num_domains(),
               "document domain " << doc.domain << " is outside [0, " << ds.num_domains() << ")");
    if (doc.text.empty()) continue;
    tokenizer.encode_append(doc.text, ds.tokens);
    ds.doc_offsets.push_back(ds.num_tokens());
    ds.doc_domain.push_back(doc.domain);
  }
  return ds;
}

}  // namespace sy::data
