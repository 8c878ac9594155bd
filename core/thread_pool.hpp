// A small fixed thread pool for CPU compute.
//
// Eigen is built single-threaded (EIGEN_DONT_PARALLELIZE); all CPU parallelism
// is ours: a caller splits its work into tasks (row blocks, experts) and
// run() executes them on the workers plus the calling thread, returning when
// all are done. One run() at a time per pool; run() from inside a task runs
// the nested tasks serially on the calling thread (no deadlock, no oversubscription).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace sy {

class ThreadPool {
 public:
  // num_threads counts the calling thread: 1 means no workers.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Runs task(i) for i in [0, num_tasks), distributed dynamically; rethrows the
  // first exception a task threw after all tasks have finished.
  void run(int64_t num_tasks, const std::function<void(int64_t task)>& task);

  // Splits [0, n) into at most num_threads() contiguous ranges, each a multiple
  // of `grain` except the last, and runs body(begin, end) on each.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t begin, int64_t end)>& body);

 private:
  void worker_loop();
  void drain();

  int num_threads_;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(int64_t)>* task_ = nullptr;
  int64_t num_tasks_ = 0;
  std::atomic<int64_t> next_task_{0};
  int64_t tasks_done_ = 0;  // guarded by mutex_
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

// The process-wide compute pool. Size: set_num_threads(), else the
// SWITCHYARD_THREADS environment variable, else 1.
ThreadPool& compute_pool();
void set_num_threads(int num_threads);
int num_threads();

}  // namespace sy
