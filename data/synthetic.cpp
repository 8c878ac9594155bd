#include "data/synthetic.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/error.hpp"
#include "core/rng.hpp"

namespace sy::data {

namespace {

// Counter-based stream: value i is splitmix64(base + i).
class Stream {
 public:
  explicit Stream(uint64_t base) : base_(base) {}
  uint64_t next() { return splitmix64(base_ + counter_++); }
  int below(int n) { return int(next() % uint64_t(n)); }
  // Zipf-like: small indices much more often (index = floor(n * u^3)).
  int skewed(int n) {
    const double u = uniform01(base_ + counter_++);
    return std::min(n - 1, int(double(n) * u * u * u));
  }

 private:
  uint64_t base_;
  uint64_t counter_ = 0;
};

constexpr const char* kSyllables[] = {"the", "an", "ing", "er", "on", "re", "at", "en", "es", "or", "ti", "de",
                                      "ar", "st", "al", "le", "ma", "ve", "co", "ro", "li", "ne", "ra", "se"};
constexpr const char* kKeywords[] = {"int", "float", "return", "if", "for", "while", "const", "auto", "void"};
constexpr const char* kNames[] = {"count", "index", "value", "buffer", "tokens", "expert", "size", "offset",
                                  "router", "scale", "grad", "weight"};
constexpr const char* kOps[] = {" = ", " + ", " - ", " * ", " < ", " == ", " += "};

void prose(Stream& s, std::string& out) {
  const int words = 6 + s.below(12);
  for (int w = 0; w < words; ++w) {
    if (w) out += ' ';
    const int syllables = 1 + s.below(3);
    for (int k = 0; k < syllables; ++k) out += kSyllables[s.skewed(std::size(kSyllables))];
    if (w + 1 < words && s.below(10) == 0) out += ',';
  }
  out += s.below(6) == 0 ? ".\n\n" : ". ";
}

void code(Stream& s, std::string& out) {
  out.append(size_t(2 * s.below(3)), ' ');
  switch (s.below(4)) {
    case 0:
      out += std::string(kKeywords[s.below(std::size(kKeywords))]) + " " + kNames[s.skewed(std::size(kNames))] +
             "_" + std::to_string(s.below(8)) + kOps[0] + std::to_string(s.below(100)) + ";\n";
      break;
    case 1:
      out += std::string("if (") + kNames[s.skewed(std::size(kNames))] + kOps[1 + s.below(std::size(kOps) - 1)] +
             kNames[s.skewed(std::size(kNames))] + ") {\n";
      break;
    case 2:
      out += std::string(kNames[s.skewed(std::size(kNames))]) + "[i]" + kOps[6] + kNames[s.skewed(std::size(kNames))] +
             "(x, " + std::to_string(s.below(16)) + ");\n";
      break;
    default:
      out += s.below(2) ? "}\n" : "return 0;\n";
  }
}

void numbers(Stream& s, std::string& out) {
  const int cols = 3 + s.below(4);
  for (int c = 0; c < cols; ++c) {
    if (c) out += ',';
    if (s.below(3) == 0) out += '-';
    out += std::to_string(s.below(10000));
    if (s.below(2)) {
      out += '.';
      out += std::to_string(s.below(100));
    }
  }
  out += '\n';
}

}  // namespace

const std::vector<std::string>& synthetic_domain_names() {
  static const std::vector<std::string> names = {"prose", "code", "numbers"};
  return names;
}

std::string synthetic_document(int domain, int64_t index, int64_t bytes, uint64_t seed) {
  SY_REQUIRE(domain >= 0 && domain < int(synthetic_domain_names().size()),
             "synthetic domain " << domain << " is outside [0, " << synthetic_domain_names().size() << ")");
  SY_REQUIRE(index >= 0 && bytes >= 0, "index and bytes must be >= 0, got " << index << " and " << bytes);
  Stream s(splitmix64(splitmix64(seed) ^ (uint64_t(domain) << 48) ^ uint64_t(index)));
  std::string out;
  out.reserve(size_t(bytes) + 128);
  while (int64_t(out.size()) < bytes) {
    if (domain == 0) prose(s, out);
    else if (domain == 1) code(s, out);
    else numbers(s, out);
  }
  out.resize(size_t(bytes));
  return out;
}

std::vector<std::string> write_synthetic_corpus(const std::string& dir, const SyntheticCorpusOptions& options) {
  SY_REQUIRE(options.docs_per_domain >= 0 && options.bytes_per_doc >= 0,
             "docs_per_domain and bytes_per_doc must be >= 0");
  std::vector<std::string> folders;
  for (int d = 0; d < int(synthetic_domain_names().size()); ++d) {
    const std::filesystem::path folder = std::filesystem::path(dir) / synthetic_domain_names()[d];
    std::error_code ec;
    std::filesystem::create_directories(folder, ec);
    if (ec) throw IoError("cannot create " + folder.string() + ": " + ec.message());
    for (int i = 0; i < options.docs_per_domain; ++i) {
      char name[32];
      std::snprintf(name, sizeof(name), "doc_%03d.txt", i);
      const std::string path = (folder / name).string();
      const std::string text = synthetic_document(d, i, options.bytes_per_doc, options.seed);
      std::ofstream f(path, std::ios::binary | std::ios::trunc);
      f.write(text.data(), std::streamsize(text.size()));
      if (!f.good()) throw IoError("cannot write " + path);
    }
    folders.push_back(folder.string());
  }
  return folders;
}

}  // namespace sy::data
