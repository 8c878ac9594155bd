// Helpers shared by the tests: seeded random fills and closeness checks.
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace sy::test {

// Uniform values in [lo, hi) from a fixed seed.
template <typename T>
std::vector<T> random_vector(size_t n, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(dist(rng));
  return v;
}

// Largest |a - b| / max(1, |b|) over the elements.
double max_rel_diff(const float* a, const float* b, size_t n);
double max_rel_diff(const double* a, const double* b, size_t n);

// Path of the switchyard binary and of the source tree (set by CMake).
std::string binary_path();
std::string source_dir();

// Runs a shell command, returns its exit code and combined stdout+stderr.
struct CommandResult {
  int exit_code;
  std::string output;
};
CommandResult run_command(const std::string& command);

// Runs fn and expects a sy::ConfigError whose message is one line holding every part.
void expect_config_error(const std::function<void()>& fn, const std::vector<std::string>& parts);

}  // namespace sy::test
