// `switchyard prepare`: text files -> one HDF5 token dataset (data/dataset.hpp).
//
// Each --input is a file or a folder and becomes one domain. A folder is read
// recursively: regular files in byte-wise path order, leaving out hidden
// entries (names starting with '.'), empty files and binary files (any NUL
// byte). Each file is one document, except that files over kMaxDocumentBytes
// are cut into documents of at most that size, at the last newline in the
// second half of each piece when there is one: the validation split works per
// document, and one huge file would otherwise land wholly on one side.
// --max-bytes-per-domain stops reading a domain at that many bytes (the last
// document is cut short). With --tokenizer bpe the tokenizer is trained on all
// the text read and its merges are stored in the file.
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "core/config.hpp"
#include "core/error.hpp"
#include "data/dataset.hpp"
#include "data/tokenizer.hpp"
#include "launch/cli/commands.hpp"

namespace sy::cli {

namespace {

namespace fs = std::filesystem;

constexpr int64_t kMaxDocumentBytes = 64 * 1024;

constexpr const char* kHelp =
    "usage: switchyard prepare --out FILE --input PATH[:DOMAIN] [--input ...] [options]\n\n"
    "Builds an HDF5 token dataset from text: one domain per --input, one document per\n"
    "file (files over 64 KiB are cut into documents of at most 64 KiB, at a newline\n"
    "when possible). A folder is read recursively in sorted path order; hidden, empty\n"
    "and binary files (any NUL byte) are skipped. Prints documents, bytes and tokens\n"
    "per domain and in total. The file is written whole or not at all.\n\n"
    "  --out FILE                   the dataset to write (replaced when it exists)\n"
    "  --input PATH[:DOMAIN]        a text file or folder; DOMAIN defaults to PATH's\n"
    "                               last component (letters, digits, '_', '-', '.')\n"
    "  --tokenizer byte|bpe         data.tokenizer (default byte: ids 0..255)\n"
    "  --vocab-size N               BPE vocabulary, > 256 (default model.vocab_size);\n"
    "                               fewer when the text has no pair left twice\n"
    "  --max-bytes-per-domain N     read at most N bytes of text per domain\n"
    "  --config FILE                take data.tokenizer and model.vocab_size from an INI\n"
    "  --section.key=value          config overrides, as for `switchyard config`\n";

struct Input {
  std::string arg;     // as given
  fs::path path;
  std::string domain;
};

struct DomainText {
  std::string name;
  std::vector<std::string> docs;
  int64_t files = 0, skipped = 0, bytes = 0;
};

bool valid_domain_name(const std::string& name) {
  if (name.empty() || name == "." || name == "..") return false;
  for (const char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.')) return false;
  return true;
}

// PATH[:DOMAIN]: an existing path wins over a ':' split, so "a:b.txt" can be a file.
Input parse_input(const std::string& arg) {
  Input in{arg, arg, ""};
  std::error_code ec;
  const auto colon = arg.rfind(':');
  if (!fs::exists(in.path, ec) && colon != std::string::npos) {
    in.path = arg.substr(0, colon);
    in.domain = arg.substr(colon + 1);
    if (!valid_domain_name(in.domain))
      throw ConfigError("--input " + arg + ": domain '" + in.domain +
                        "' must be letters, digits, '_', '-' or '.'");
  }
  if (!fs::exists(in.path, ec)) throw ConfigError("--input " + arg + ": " + in.path.string() + " does not exist");
  if (in.domain.empty()) {
    in.domain = fs::weakly_canonical(in.path, ec).filename().string();
    if (!valid_domain_name(in.domain))
      throw ConfigError("--input " + arg + ": cannot name a domain after '" + in.domain +
                        "'; give one as PATH:DOMAIN");
  }
  return in;
}

std::string read_file(const fs::path& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw IoError("cannot read " + path.string() + ": " + std::strerror(errno));
  std::string text(size_t(f.tellg()), '\0');
  f.seekg(0);
  if (!f.read(text.data(), std::streamsize(text.size()))) throw IoError("cannot read " + path.string());
  return text;
}

bool hidden(const fs::path& p) { return p.filename().string().starts_with("."); }

// The files of an input, in byte-wise path order.
std::vector<fs::path> list_files(const Input& in) {
  std::error_code ec;
  if (fs::is_regular_file(in.path, ec)) return {in.path};
  if (!fs::is_directory(in.path, ec))
    throw ConfigError("--input " + in.arg + ": " + in.path.string() + " is neither a file nor a folder");
  std::vector<fs::path> files;
  fs::recursive_directory_iterator it(in.path, ec), end;
  if (ec) throw IoError("cannot list " + in.path.string() + ": " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) throw IoError("cannot list " + in.path.string() + ": " + ec.message());
    if (hidden(it->path())) {
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file(ec)) files.push_back(it->path());
  }
  std::sort(files.begin(), files.end(), [](const fs::path& a, const fs::path& b) { return a.string() < b.string(); });
  return files;
}

// Appends text as documents of at most kMaxDocumentBytes, honoring the byte budget left.
void add_documents(std::string_view text, int64_t& budget, DomainText& out) {
  while (!text.empty() && budget > 0) {
    size_t take = std::min<size_t>({text.size(), size_t(kMaxDocumentBytes), size_t(budget)});
    if (take < text.size() && take == size_t(kMaxDocumentBytes)) {
      const auto nl = text.rfind('\n', take - 1);
      if (nl != std::string_view::npos && nl >= take / 2) take = nl + 1;
    }
    out.docs.emplace_back(text.substr(0, take));
    out.bytes += int64_t(take);
    budget -= int64_t(take);
    text.remove_prefix(take);
  }
}

DomainText read_domain(const Input& in, int64_t max_bytes) {
  DomainText d;
  d.name = in.domain;
  int64_t budget = max_bytes;
  for (const fs::path& file : list_files(in)) {
    if (budget <= 0) break;
    const std::string text = read_file(file);
    if (text.empty() || std::memchr(text.data(), 0, text.size()) != nullptr) {
      ++d.skipped;
      continue;
    }
    ++d.files;
    add_documents(text, budget, d);
  }
  if (d.docs.empty())
    throw ConfigError("--input " + in.arg + ": no text to read (" + std::to_string(d.skipped) +
                      " files, all empty or binary)");
  return d;
}

int64_t parse_count(const std::string& flag, const std::string& value, int64_t lo) {
  size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != value.size() || value.empty() || v < lo)
    throw ConfigError("command line: " + flag + " = '" + value + "': expected an integer >= " + std::to_string(lo));
  return v;
}

std::string human_bytes(int64_t bytes) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(1);
  if (bytes >= (1 << 20)) os << double(bytes) / double(1 << 20) << " MiB";
  else if (bytes >= 1024) os << double(bytes) / 1024.0 << " KiB";
  else os << bytes << " B";
  return os.str();
}

}  // namespace

int prepare_main(const Args& args) {
  std::string out_path, config_path;
  std::vector<std::string> input_args, overrides;
  std::string tokenizer_flag, vocab_flag;
  int64_t max_bytes = INT64_MAX;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      std::cout << kHelp;
      return 0;
    }
    auto is = [&](const std::string& flag) { return a == flag || a.rfind(flag + "=", 0) == 0; };
    auto value = [&](const std::string& flag) -> std::string {
      if (a.size() > flag.size()) return a.substr(flag.size() + 1);
      if (i + 1 >= args.size()) throw ConfigError("command line: " + flag + " needs a value");
      return args[++i];
    };
    if (is("--out")) out_path = value("--out");
    else if (is("--input")) input_args.push_back(value("--input"));
    else if (is("--tokenizer")) tokenizer_flag = value("--tokenizer");
    else if (is("--vocab-size")) vocab_flag = value("--vocab-size");
    else if (is("--max-bytes-per-domain"))
      max_bytes = parse_count("--max-bytes-per-domain", value("--max-bytes-per-domain"), 1);
    else if (is("--config")) config_path = value("--config");
    else if (a.rfind("--", 0) == 0 && a.find('.') != std::string::npos) overrides.push_back(a);
    else throw ConfigError("prepare: unknown argument '" + a + "' (see switchyard prepare --help)");
  }
  if (out_path.empty()) throw ConfigError("prepare: --out FILE is required (see switchyard prepare --help)");
  if (input_args.empty()) throw ConfigError("prepare: give at least one --input PATH[:DOMAIN]");

  // The flags are config keys under another name, validated the same way.
  if (!tokenizer_flag.empty()) overrides.push_back("--data.tokenizer=" + tokenizer_flag);
  if (!vocab_flag.empty()) overrides.push_back("--model.vocab_size=" + vocab_flag);
  const Config config = load_config(config_path, overrides);
  const TokenizerKind kind = config.data.tokenizer;
  const int vocab_size = config.model.vocab_size;
  if (kind == TokenizerKind::Byte && !vocab_flag.empty() && vocab_size != data::kByteVocab)
    throw ConfigError("command line: --vocab-size " + vocab_flag + " with --tokenizer byte (its vocabulary is 256)");
  if (kind == TokenizerKind::BPE && (vocab_size <= data::kByteVocab || vocab_size > data::kMaxVocab))
    throw ConfigError("--tokenizer bpe needs a vocabulary in (256, " + std::to_string(data::kMaxVocab) + "], got " +
                      std::to_string(vocab_size) + " (give --vocab-size N or --model.vocab_size=N)");

  // Fail on an unwritable output before reading or training anything.
  {
    const std::string probe = out_path + ".tmp";
    FILE* f = std::fopen(probe.c_str(), "wb");
    if (!f) throw IoError("cannot write " + out_path + ": " + std::strerror(errno));
    std::fclose(f);
    std::remove(probe.c_str());
  }

  std::vector<Input> inputs;
  for (const auto& arg : input_args) {
    inputs.push_back(parse_input(arg));
    for (size_t j = 0; j + 1 < inputs.size(); ++j)
      if (inputs[j].domain == inputs.back().domain)
        throw ConfigError("--input " + arg + ": domain '" + inputs.back().domain + "' is also --input " +
                          inputs[j].arg + "; name one with PATH:DOMAIN");
  }
  std::vector<DomainText> domains;
  for (const auto& in : inputs) domains.push_back(read_domain(in, max_bytes));

  std::vector<std::string> names;
  std::vector<data::TextDocument> docs;
  std::vector<std::string_view> texts;
  for (size_t k = 0; k < domains.size(); ++k) {
    names.push_back(domains[k].name);
    for (const auto& text : domains[k].docs) {
      docs.push_back({text, int32_t(k)});
      texts.push_back(text);
    }
  }

  data::Tokenizer tokenizer;
  if (kind == TokenizerKind::BPE) {
    const auto t0 = std::chrono::steady_clock::now();
    tokenizer = data::Tokenizer::train_bpe(texts, vocab_size);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::cout << "bpe: " << tokenizer.merges().size() << " merges, vocab " << tokenizer.vocab_size() << " (asked "
              << vocab_size << "), trained in " << std::fixed << std::setprecision(2) << seconds << " s\n";
  }
  const data::TokenDataset ds = data::tokenize_documents(tokenizer, names, docs);
  data::write_dataset(out_path, ds);

  std::vector<int64_t> tokens(domains.size(), 0);
  for (int64_t d = 0; d < ds.num_docs(); ++d) tokens[size_t(ds.doc_domain[d])] += ds.doc_size(d);
  int64_t total_bytes = 0;
  size_t width = 5;
  for (const auto& d : domains) width = std::max(width, d.name.size());
  auto line = [&](const std::string& name, int64_t n_docs, int64_t bytes, int64_t n_tokens, const std::string& extra) {
    std::cout << std::left << std::setw(int(width)) << name << std::right << "  " << std::setw(7) << n_docs
              << " documents  " << std::setw(11) << bytes << " bytes  " << std::setw(11) << n_tokens << " tokens  "
              << std::fixed << std::setprecision(2) << double(bytes) / double(std::max<int64_t>(n_tokens, 1))
              << " bytes/token" << extra << "\n";
  };
  for (size_t k = 0; k < domains.size(); ++k) {
    const auto& d = domains[k];
    total_bytes += d.bytes;
    line(d.name, int64_t(d.docs.size()), d.bytes, tokens[k],
         d.skipped ? "  (" + std::to_string(d.skipped) + " empty or binary files skipped)" : "");
  }
  line("total", ds.num_docs(), total_bytes, ds.num_tokens(), "");
  std::cout << "wrote " << out_path << " (" << human_bytes(int64_t(fs::file_size(out_path))) << ", tokenizer "
            << to_string(kind) << ", vocab " << ds.vocab_size << ")\n";
  return 0;
}

}  // namespace sy::cli
