// Multi-rank: a GEMM split by row blocks over the ranks, gathered, equals the
// one-rank GEMM bit for bit (each row block is computed by the same kernel).
#include <gtest/gtest.h>
#include <mpi.h>

#include <vector>

#include "core/error.hpp"
#include "core/gemm.hpp"
#include "core/mpi_check.hpp"
#include "tests/support/test_support.hpp"

namespace sy {
namespace {

TEST(GemmMpi, RowBlocksOverRanksEqualOneRank) {
  int rank = 0, world = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  const int64_t rows_per_rank = 24, m = rows_per_rank * world, n = 40, k = 300;
  const auto a = test::random_vector<float>(m * k, 11);  // same seed on every rank
  const auto b = test::random_vector<float>(k * n, 12);
  std::vector<float> full(m * n), mine(rows_per_rank * n), gathered(m * n);
  gemm<float>(Trans::N, Trans::N, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, full.data(), n);
  gemm<float>(Trans::N, Trans::N, rows_per_rank, n, k, 1.0f, a.data() + rank * rows_per_rank * k, k, b.data(), n,
              0.0f, mine.data(), n);
  SY_MPI_CHECK(MPI_Allgather(mine.data(), static_cast<int>(mine.size()), MPI_FLOAT, gathered.data(),
                             static_cast<int>(mine.size()), MPI_FLOAT, MPI_COMM_WORLD));
  EXPECT_EQ(test::max_rel_diff(gathered.data(), full.data(), full.size()), 0.0);
}

TEST(GemmMpi, MpiCheckNamesTheFailingCall) {
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  int value = 1, out = 0;
  try {
    SY_MPI_CHECK(MPI_Allreduce(&value, &out, -1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
    FAIL() << "expected CommError";
  } catch (const CommError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("MPI_Allreduce"), std::string::npos) << msg;
    EXPECT_NE(msg.find("GemmMpiTest.cpp:"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace sy
