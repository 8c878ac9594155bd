#include "core/thread_pool.hpp"

#include <cstdlib>
#include <memory>
#include <string>

#include "core/error.hpp"

namespace sy {

namespace {
thread_local bool t_inside_task = false;
}

ThreadPool::ThreadPool(int num_threads) : num_threads_(num_threads) {
  SY_REQUIRE(num_threads >= 1 && num_threads <= 1024, "thread count must be in [1, 1024], got " << num_threads);
  workers_.reserve(num_threads - 1);
  for (int i = 1; i < num_threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& w : workers_) w.join();
}

// Claims tasks until none are left; each finished task is counted under the lock
// so the caller can wait for the last one.
void ThreadPool::drain() {
  const bool was_inside = t_inside_task;
  t_inside_task = true;
  int64_t finished = 0;
  for (;;) {
    const int64_t i = next_task_.fetch_add(1, std::memory_order_relaxed);
    if (i >= num_tasks_) break;
    try {
      (*task_)(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
    }
    ++finished;
  }
  t_inside_task = was_inside;
  if (finished > 0) {
    std::lock_guard<std::mutex> lock(mutex_);
    tasks_done_ += finished;
    if (tasks_done_ == num_tasks_) done_.notify_all();
  }
}

void ThreadPool::worker_loop() {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
    }
    drain();
  }
}

void ThreadPool::run(int64_t num_tasks, const std::function<void(int64_t)>& task) {
  if (num_tasks <= 0) return;
  if (num_tasks == 1 || workers_.empty() || t_inside_task) {
    for (int64_t i = 0; i < num_tasks; ++i) task(i);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    task_ = &task;
    num_tasks_ = num_tasks;
    next_task_.store(0, std::memory_order_relaxed);
    tasks_done_ = 0;
    error_ = nullptr;
    ++generation_;
  }
  wake_.notify_all();
  drain();
  std::exception_ptr error;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return tasks_done_ == num_tasks_; });
    task_ = nullptr;
    error = error_;
    error_ = nullptr;
  }
  if (error) std::rethrow_exception(error);
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  const int64_t units = (n + grain - 1) / grain;
  const int64_t parts = std::min<int64_t>(units, num_threads_);
  const int64_t units_per_part = (units + parts - 1) / parts;
  const int64_t used_parts = (units + units_per_part - 1) / units_per_part;
  run(used_parts, [&](int64_t p) {
    const int64_t begin = p * units_per_part * grain;
    const int64_t end = std::min(n, (p + 1) * units_per_part * grain);
    if (begin < end) body(begin, end);
  });
}

namespace {
int default_thread_count() {
  if (const char* env = std::getenv("SWITCHYARD_THREADS")) {
    try {
      const int n = std::stoi(env);
      if (n >= 1) return n;
    } catch (...) {
    }
    throw ConfigError(std::string("SWITCHYARD_THREADS must be a positive integer, got '") + env + "'");
  }
  return 1;
}
std::unique_ptr<ThreadPool>& pool_slot() {
  static std::unique_ptr<ThreadPool> pool;
  return pool;
}
}  // namespace

ThreadPool& compute_pool() {
  auto& slot = pool_slot();
  if (!slot) slot = std::make_unique<ThreadPool>(default_thread_count());
  return *slot;
}

void set_num_threads(int n) {
  auto& slot = pool_slot();
  if (slot && slot->num_threads() == n) return;
  slot = std::make_unique<ThreadPool>(n);
}

int num_threads() { return compute_pool().num_threads(); }

}  // namespace sy
