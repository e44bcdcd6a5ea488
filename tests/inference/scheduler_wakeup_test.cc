// Scheduler wake-ups: one queue and one condition variable per device (notify_one),
// and a gatherer woken by the task it gathers for. Each test would hang (and fail at
// the test timeout) if the wake-up it checks were lost: the batching windows are far
// longer than any test, so nothing finishes by a window running out. No timings are
// asserted.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "inference/scheduler.h"

namespace lipsync::inference {
namespace {

constexpr int kTenMinutesUs = 600'000'000;

// Blocks the runner for tasks of `blocked_key` until opened.
class KeyGate {
 public:
  explicit KeyGate(std::string key) : key_(std::move(key)) {}
  void MaybeWait(const Task& task) {
    if (task.batch_key != key_) return;
    std::unique_lock<std::mutex> lock(mu_);
    ++inside_;
    cv_.notify_all();
    cv_.wait(lock, [&] { return open_; });
  }
  void WaitInside(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return inside_ >= n; });
  }
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  const std::string key_;
  std::mutex mu_;
  std::condition_variable cv_;
  int inside_ = 0;
  bool open_ = false;
};

struct RecordingTask : Task {
  WorkerInfo ran_on;
  size_t group_size = 0;
};

Scheduler::Runner Recording(KeyGate* gate) {
  return [gate](std::span<Task* const> group, const WorkerInfo& worker) {
    if (gate) gate->MaybeWait(*group.front());
    for (Task* task : group) {
      auto* recording = static_cast<RecordingTask*>(task);
      recording->ran_on = worker;
      recording->group_size = group.size();
    }
  };
}

TEST(SchedulerWakeupTest, BusyDeviceQueueDoesNotHoldUpAnotherDevice) {
  KeyGate gate("slow");
  Scheduler scheduler({.devices = {0, 1}, .workers_per_device = 1, .queue_size = 8},
                      Recording(&gate));
  RecordingTask busy, waiting;
  busy.device_id = waiting.device_id = 0;
  busy.batch_key = waiting.batch_key = "slow";
  auto r_busy = std::async(std::launch::async, [&] { return scheduler.Submit(&busy); });
  gate.WaitInside(1);
  auto r_waiting = std::async(std::launch::async, [&] { return scheduler.Submit(&waiting); });
  while (scheduler.device_load(0) < 2) std::this_thread::yield();
  // Device 0's worker is busy and a task waits on its queue; device 1 serves at once.
  for (int i = 0; i < 20; ++i) {
    RecordingTask other;
    other.device_id = 1;
    ASSERT_TRUE(scheduler.Submit(&other).ok());
    EXPECT_EQ(other.ran_on.device_id, 1);
  }
  EXPECT_EQ(scheduler.queue_depth(), 1);
  gate.Open();
  EXPECT_TRUE(r_busy.get().ok());
  EXPECT_TRUE(r_waiting.get().ok());
  EXPECT_EQ(waiting.ran_on.device_id, 0);
}

TEST(SchedulerWakeupTest, GathererIsWokenByTheTaskThatFillsItsBatch) {
  // A ten-minute window: the batch can only run because the second task's submit
  // woke its gatherer (not an idle worker that may not take it).
  Scheduler scheduler({.devices = {-1},
                       .workers_per_device = 3,
                       .queue_size = 8,
                       .max_queue_delay_us = kTenMinutesUs,
                       .max_batch_frames = 2},
                      Recording(nullptr));
  RecordingTask a, b;
  a.batch_key = b.batch_key = "model";
  auto ra = std::async(std::launch::async, [&] { return scheduler.Submit(&a); });
  while (scheduler.device_load(-1) < 1 || scheduler.queue_depth() > 0) std::this_thread::yield();
  // `a` is taken (its worker is gathering); `b` fills the batch.
  ASSERT_TRUE(scheduler.Submit(&b).ok());
  ASSERT_TRUE(ra.get().ok());
  EXPECT_EQ(a.group_size, 2u);
  EXPECT_EQ(b.group_size, 2u);
  EXPECT_EQ(a.ran_on.worker_id, b.ran_on.worker_id);
}

TEST(SchedulerWakeupTest, OtherModelsRunWhileABatchIsGathered) {
  Scheduler scheduler({.devices = {-1},
                       .workers_per_device = 2,
                       .queue_size = 8,
                       .max_queue_delay_us = kTenMinutesUs,
                       .max_batch_frames = 2},
                      Recording(nullptr));
  RecordingTask gathered;
  gathered.batch_key = "gathered";
  auto r_gathered = std::async(std::launch::async, [&] { return scheduler.Submit(&gathered); });
  while (scheduler.device_load(-1) < 1 || scheduler.queue_depth() > 0) std::this_thread::yield();
  // Tasks without a key and of another model are taken by the idle worker meanwhile
  // (another model's task starts its own gathering: fill it too).
  for (int i = 0; i < 5; ++i) {
    RecordingTask plain;
    ASSERT_TRUE(scheduler.Submit(&plain).ok());
    EXPECT_EQ(plain.group_size, 1u);
  }
  RecordingTask fill;
  fill.batch_key = "gathered";
  ASSERT_TRUE(scheduler.Submit(&fill).ok());
  ASSERT_TRUE(r_gathered.get().ok());
  EXPECT_EQ(gathered.group_size, 2u);
}

TEST(SchedulerWakeupTest, ManyDevicesManyWorkersAllComplete) {
  std::atomic<int> ran{0};
  Scheduler scheduler({.devices = {0, 1, 2, 3}, .workers_per_device = 4, .queue_size = 1000},
                      [&](std::span<Task* const> group, const WorkerInfo&) {
                        ran += static_cast<int>(group.size());
                      });
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 300; ++i) {
        Task task;
        task.device_id = (t + i) % 4;
        ASSERT_TRUE(scheduler.Submit(&task).ok());
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(ran.load(), 8 * 300);
  EXPECT_EQ(scheduler.queue_depth(), 0);
}

}  // namespace
}  // namespace lipsync::inference
