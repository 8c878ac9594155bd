#include "core/ops/embedding.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.hpp"
#include "tests/core/ops/grad_check.hpp"
#include "tests/support/test_support.hpp"

namespace sy::ops {
namespace {

using test::random_vector;

TEST(Embedding, ForwardCopiesTableRows) {
  const int64_t V = 4, C = 3;
  const std::vector<double> table = {0, 1, 2, 10, 11, 12, 20, 21, 22, 30, 31, 32};
  const std::vector<int32_t> ids = {2, 0, 2, 3};
  std::vector<double> out(ids.size() * C, test::kGarbage);
  embedding_forward(out.data(), ids.data(), table.data(), int64_t(ids.size()), V, C);
  EXPECT_EQ(out, (std::vector<double>{20, 21, 22, 0, 1, 2, 20, 21, 22, 30, 31, 32}));
}

TEST(Embedding, BackwardMatchesFiniteDifferences) {
  const int64_t N = 7, V = 5, C = 4;
  const std::vector<int32_t> ids = {1, 3, 1, 0, 4, 1, 3};  // repeats accumulate; id 2 gets no gradient
  auto table = random_vector<double>(V * C, 1);
  const auto r = random_vector<double>(N * C, 2);
  std::vector<double> out(N * C);
  auto loss = [&] {
    embedding_forward(out.data(), ids.data(), table.data(), N, V, C);
    return test::dot(out, r);
  };
  auto dtable = random_vector<double>(V * C, 3);
  const auto dtable0 = dtable;
  embedding_backward(dtable.data(), ids.data(), r.data(), N, V, C);
  EXPECT_TRUE(test::grad_close("dtable (+=)", test::minus(dtable, dtable0), test::numeric_gradient(table, loss)));
  for (int64_t c = 0; c < C; ++c) EXPECT_EQ(dtable[2 * C + c], dtable0[2 * C + c]);
}

TEST(Embedding, FloatPathMatchesDoublePath) {
  const int64_t N = 8, V = 6, C = 12;
  std::vector<int32_t> ids(N);
  for (int64_t n = 0; n < N; ++n) ids[n] = int32_t((n * 5) % V);
  const auto table = random_vector<double>(V * C, 1);
  const auto dy = random_vector<double>(N * C, 2);
  std::vector<double> out(N * C), dtable(V * C, 0.0);
  embedding_forward(out.data(), ids.data(), table.data(), N, V, C);
  embedding_backward(dtable.data(), ids.data(), dy.data(), N, V, C);
  const auto tablef = test::cast<float>(table), dyf = test::cast<float>(dy);
  std::vector<float> outf(N * C), dtablef(V * C, 0.0f);
  embedding_forward(outf.data(), ids.data(), tablef.data(), N, V, C);
  embedding_backward(dtablef.data(), ids.data(), dyf.data(), N, V, C);
  EXPECT_LT(test::max_rel_diff(test::cast<double>(outf).data(), out.data(), out.size()), 1e-7);
  EXPECT_LT(test::max_rel_diff(test::cast<double>(dtablef).data(), dtable.data(), dtable.size()), 1e-6);
}

TEST(Embedding, BackwardDoesNotDependOnThreadCount) {
  const int64_t N = 64, V = 5, C = 300;  // few ids, many repeats, several column tasks
  std::vector<int32_t> ids(N);
  for (int64_t n = 0; n < N; ++n) ids[n] = int32_t((n * n) % V);
  const auto dy = random_vector<double>(N * C, 1);
  auto run = [&](int threads) {
    test::ScopedThreads scoped(threads);
    std::vector<double> dtable(V * C, 0.0);
    embedding_backward(dtable.data(), ids.data(), dy.data(), N, V, C);
    return dtable;
  };
  EXPECT_EQ(run(1), run(4));
}

TEST(Embedding, OutOfRangeIdThrowsNamingIt) {
  const int64_t V = 4, C = 2;
  const std::vector<double> table(V * C, 1.0);
  std::vector<double> out(3 * C), dtable(V * C);
  const std::vector<int32_t> too_big = {0, 1, 4};
  try {
    embedding_forward(out.data(), too_big.data(), table.data(), 3, V, C);
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("token id 4 at position 2"), std::string::npos) << e.what();
  }
  const std::vector<int32_t> negative = {0, -1, 1};
  try {
    embedding_backward(dtable.data(), negative.data(), out.data(), 3, V, C);
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("token id -1 at position 1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(embedding_forward<double>(out.data(), too_big.data(), nullptr, 2, V, C), InvalidArgument);
  EXPECT_THROW(embedding_forward(out.data(), too_big.data(), table.data(), 2, V, 0), InvalidArgument);
}

}  // namespace
}  // namespace sy::ops
