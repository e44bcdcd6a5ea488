// A fixed pool of worker threads for data-parallel work (e.g. the frames of a batch).
// Thread-safe. ParallelFor blocks until every index has run; the calling thread helps.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace lipsync {

class ThreadPool {
 public:
  // threads == 0: one per hardware thread.
  explicit ThreadPool(size_t threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  size_t size() const { return workers_.size(); }
  // Runs fn(i) for i in [0, n), spread over the pool and the caller.
  void ParallelFor(size_t n, const std::function<void(size_t)>& fn);
  // Queues fn to run on a worker.
  void Submit(std::function<void()> fn);

 private:
  void WorkerLoop();
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace lipsync
