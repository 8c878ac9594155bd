// Finite-difference gradient checks shared by the ops tests.
//
// Every backward is checked the same way: a scalar loss L = sum(out * R) with a
// fixed random R (so dout = R), central differences with h = 1e-6 in double on
// every input element, and the analytic gradient compared element by element.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "core/thread_pool.hpp"

namespace sy::test {

// Step of the central differences: truncation error ~h^2, rounding ~1e-16 |L| / h.
inline constexpr double kFdStep = 1e-6;
// Error measure: |analytic - numeric| / max(kGradFloor, |analytic| + |numeric|).
// Correct code measures ~1e-9 here; a wrong sign, a missing term, a factor of 2 or
// a wrong transpose measures ~1e-2 to 1.
inline constexpr double kGradFloor = 1e-3;
inline constexpr double kGradTol = 1e-6;

// Fill for buffers an op must overwrite: any value left behind poisons the check.
inline constexpr double kGarbage = std::numeric_limits<double>::quiet_NaN();

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

inline std::vector<double> minus(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
  return d;
}

// dL/dx by central differences; x is perturbed in place and restored exactly.
template <typename LossFn>
std::vector<double> numeric_gradient(std::vector<double>& x, LossFn&& loss, double h = kFdStep) {
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + h;
    const double plus = loss();
    x[i] = saved - h;
    const double minus_loss = loss();
    x[i] = saved;
    g[i] = (plus - minus_loss) / (2 * h);
  }
  return g;
}

inline double grad_error(double analytic, double numeric) {
  return std::abs(analytic - numeric) / std::max(kGradFloor, std::abs(analytic) + std::abs(numeric));
}

// Passes when every element is within kGradTol; the message names the worst element.
inline testing::AssertionResult grad_close(const std::string& what, const std::vector<double>& analytic,
                                           const std::vector<double>& numeric) {
  if (analytic.size() != numeric.size())
    return testing::AssertionFailure() << what << ": size " << analytic.size() << " vs " << numeric.size();
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < analytic.size(); ++i) {
    const double e = grad_error(analytic[i], numeric[i]);
    if (!(e <= worst)) {  // NaN counts as the worst
      worst = e;
      at = i;
      if (std::isnan(e)) break;
    }
  }
  if (worst <= kGradTol) return testing::AssertionSuccess();
  return testing::AssertionFailure() << what << ": gradient error " << worst << " > " << kGradTol << " at element "
                                     << at << " (analytic " << analytic[at] << ", numeric " << numeric[at] << ")";
}

// Runs a block with the compute pool at a given size, restoring the old size after.
class ScopedThreads {
 public:
  explicit ScopedThreads(int n) : saved_(sy::num_threads()) { sy::set_num_threads(n); }
  ~ScopedThreads() { sy::set_num_threads(saved_); }
  ScopedThreads(const ScopedThreads&) = delete;
  ScopedThreads& operator=(const ScopedThreads&) = delete;

 private:
  int saved_;
};

template <typename To, typename From>
std::vector<To> cast(const std::vector<From>& v) {
  return std::vector<To>(v.begin(), v.end());
}

}  // namespace sy::test
