#include "core/thread_pool.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <vector>

#include "core/error.hpp"

namespace sy {
namespace {

TEST(ThreadPool, RunsEveryTaskExactlyOnce) {
  ThreadPool pool(3);
  for (int round = 0; round < 50; ++round) {
    std::vector<std::atomic<int>> hits(97);
    pool.run(97, [&](int64_t i) { hits[i].fetch_add(1); });
    for (auto& h : hits) ASSERT_EQ(h.load(), 1);
  }
}

TEST(ThreadPool, ParallelForCoversRangeInGrainAlignedBlocks) {
  ThreadPool pool(4);
  std::vector<int> seen(1000, 0);
  pool.parallel_for(1000, 16, [&](int64_t b, int64_t e) {
    EXPECT_EQ(b % 16, 0);
    for (int64_t i = b; i < e; ++i) seen[i] += 1;
  });
  for (int v : seen) ASSERT_EQ(v, 1);
}

TEST(ThreadPool, RethrowsTaskExceptionAfterAllTasksFinish) {
  ThreadPool pool(2);
  std::atomic<int> done{0};
  EXPECT_THROW(pool.run(10,
                        [&](int64_t i) {
                          done.fetch_add(1);
                          if (i == 3) throw std::runtime_error("task 3");
                        }),
               std::runtime_error);
  EXPECT_EQ(done.load(), 10);
  // The pool stays usable.
  std::atomic<int> again{0};
  pool.run(5, [&](int64_t) { again.fetch_add(1); });
  EXPECT_EQ(again.load(), 5);
}

TEST(ThreadPool, NestedRunExecutesInline) {
  ThreadPool pool(2);
  std::atomic<int> inner{0};
  pool.run(4, [&](int64_t) { pool.run(3, [&](int64_t) { inner.fetch_add(1); }); });
  EXPECT_EQ(inner.load(), 12);
}

TEST(ThreadPool, RejectsBadThreadCount) { EXPECT_THROW(ThreadPool(0), InvalidArgument); }

}  // namespace
}  // namespace sy
