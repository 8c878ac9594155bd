#include "tests/support/test_support.hpp"

#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <memory>

#include <gtest/gtest.h>

#include "core/error.hpp"

namespace sy::test {

namespace {
template <typename T>
double max_rel_diff_impl(const T* a, const T* b, size_t n) {
  double worst = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double d = std::abs(double(a[i]) - double(b[i])) / std::max(1.0, std::abs(double(b[i])));
    if (!(d <= worst)) worst = d;  // NaN makes the result NaN-large
  }
  return worst;
}
}  // namespace

double max_rel_diff(const float* a, const float* b, size_t n) { return max_rel_diff_impl(a, b, n); }
double max_rel_diff(const double* a, const double* b, size_t n) { return max_rel_diff_impl(a, b, n); }

#ifndef SWITCHYARD_BINARY
#define SWITCHYARD_BINARY "build/switchyard"
#endif
#ifndef SWITCHYARD_SOURCE_DIR
#define SWITCHYARD_SOURCE_DIR "."
#endif

CommandResult run_command(const std::string& command) {
  const std::string full = command + " 2>&1";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(full.c_str(), "r"), pclose);
  CommandResult result{-1, ""};
  if (!pipe) return result;
  std::array<char, 4096> buf;
  size_t got;
  while ((got = fread(buf.data(), 1, buf.size(), pipe.get())) > 0) result.output.append(buf.data(), got);
  const int status = pclose(pipe.release());
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

void expect_config_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "expected a ConfigError containing '" << parts.front() << "'";
  } catch (const ConfigError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "not one line: " << msg;
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' missing from: " << msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected a ConfigError containing '" << parts.front() << "', got another exception: " << e.what();
  }
}

}  // namespace sy::test
