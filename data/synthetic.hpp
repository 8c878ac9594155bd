// A small synthetic multi-domain text corpus for tests and demos.
//
// Three domains with clearly different byte statistics, so a tokenizer has
// something to learn and per-domain metrics have something to separate:
//   prose    lowercase words built from a fixed set of syllables (Zipf-like
//            word frequencies), sentences, paragraphs
//   code     C-like lines: identifiers, keywords, operators, braces, indentation
//   numbers  CSV rows of integers and decimals
// Every document is a pure function of (seed, domain, index, bytes): no
// global random state, identical on every machine.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sy::data {

struct SyntheticCorpusOptions {
  int docs_per_domain = 6;
  int64_t bytes_per_doc = 4096;  // each document has exactly this many bytes
  uint64_t seed = 1;
};

// {"prose", "code", "numbers"}
const std::vector<std::string>& synthetic_domain_names();

// Document `index` of domain `domain` (an index into synthetic_domain_names()).
std::string synthetic_document(int domain, int64_t index, int64_t bytes, uint64_t seed);

// Writes dir/<domain>/doc_<index>.txt for every domain (creating the folders);
// returns the domain folders in synthetic_domain_names() order. Throws IoError.
std::vector<std::string> write_synthetic_corpus(const std::string& dir, const SyntheticCorpusOptions& options);

}  // namespace sy::data
