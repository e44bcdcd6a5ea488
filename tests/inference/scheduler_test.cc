// Scheduler: bounded queue, deadlines, device assignment, dynamic batching. Workers
// are real threads; a Gate blocks them to build up a queue deterministically.
#include "inference/scheduler.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

namespace lipsync::inference {
namespace {

using namespace std::chrono_literals;

// Blocks runners until opened; counts how many are inside.
class Gate {
 public:
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    ++inside_;
    cv_.notify_all();
    cv_.wait(lock, [&] { return open_; });
  }
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  void WaitInside(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return inside_ >= n; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
  int inside_ = 0;
};

struct CountingTask : Task {
  int runs = 0;
  WorkerInfo ran_on;
  size_t group_size = 0;
};

// Records every run; optionally blocks on a gate first.
struct Recorder {
  Gate* gate = nullptr;
  std::mutex mu;
  std::vector<std::vector<Task*>> groups;
  Scheduler::Runner Runner() {
    return [this](std::span<Task* const> group, const WorkerInfo& worker) {
      if (gate) gate->Wait();
      std::lock_guard<std::mutex> lock(mu);
      groups.emplace_back(group.begin(), group.end());
      for (Task* task : group) {
        auto* counting = static_cast<CountingTask*>(task);
        ++counting->runs;
        counting->ran_on = worker;
        counting->group_size = group.size();
      }
    };
  }
};

void WaitForDepth(const Scheduler& scheduler, int depth) {
  while (scheduler.queue_depth() < depth) std::this_thread::sleep_for(1ms);
}

TEST(SchedulerTest, RunsTaskAndReportsWorker) {
  Recorder recorder;
  Scheduler scheduler({.devices = {-1}, .workers_per_device = 2}, recorder.Runner());
  CountingTask task;
  ASSERT_TRUE(scheduler.Submit(&task).ok());
  EXPECT_EQ(task.runs, 1);
  EXPECT_EQ(task.ran_on.device_id, -1);
  EXPECT_GE(task.ran_on.worker_id, 0);
  EXPECT_LT(task.ran_on.worker_id, 2);
  EXPECT_GE(task.queue_wait_ms, 0.0);
  EXPECT_EQ(task.group_frames, 1);
  EXPECT_EQ(scheduler.queue_depth(), 0);
}

TEST(SchedulerTest, FullQueueIsRefusedAtOnceWithMessage) {
  Gate gate;
  Recorder recorder{.gate = &gate};
  Scheduler scheduler({.devices = {-1}, .workers_per_device = 1, .queue_size = 2},
                      recorder.Runner());
  std::vector<std::unique_ptr<CountingTask>> tasks;
  std::vector<std::future<Status>> results;
  for (int i = 0; i < 3; ++i) {
    tasks.push_back(std::make_unique<CountingTask>());
    CountingTask* task = tasks.back().get();
    results.push_back(std::async(std::launch::async, [&, task] { return scheduler.Submit(task); }));
    if (i == 0) gate.WaitInside(1);  // the worker holds task 0; 1 and 2 wait
  }
  WaitForDepth(scheduler, 2);
  CountingTask refused;
  Status status = scheduler.Submit(&refused);
  EXPECT_EQ(status.code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(status.message(),
            "inference queue full (2 requests waiting, queue_size=2); retry later");
  EXPECT_EQ(refused.runs, 0);
  gate.Open();
  for (auto& result : results) EXPECT_TRUE(result.get().ok());
  for (auto& task : tasks) EXPECT_EQ(task->runs, 1);
}

// One model may hold max_queue_share x queue_size of the waiting tasks; at its share
// it is refused at once while other models are still admitted.
TEST(SchedulerTest, NoisyTenantIsCappedAtItsQueueShareOthersStillAdmitted) {
  Gate gate;
  Recorder recorder{.gate = &gate};
  Scheduler scheduler(
      {.devices = {-1}, .workers_per_device = 1, .queue_size = 6, .max_queue_share = 0.5},
      recorder.Runner());
  EXPECT_EQ(scheduler.tenant_queue_limit(), 3);
  std::vector<std::unique_ptr<CountingTask>> tasks;
  std::vector<std::future<Status>> results;
  auto submit = [&](const std::string& tenant) {
    tasks.push_back(std::make_unique<CountingTask>());
    CountingTask* task = tasks.back().get();
    task->tenant = tenant;
    results.push_back(std::async(std::launch::async, [&, task] { return scheduler.Submit(task); }));
  };
  submit("noisy");  // taken by the worker, which blocks: running, not waiting
  gate.WaitInside(1);
  for (int i = 0; i < 3; ++i) submit("noisy");
  WaitForDepth(scheduler, 3);
  EXPECT_EQ(scheduler.tenant_queue_depth("noisy"), 3);

  CountingTask refused;
  refused.tenant = "noisy";
  Status status = scheduler.Submit(&refused);
  EXPECT_EQ(status.code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(status.message(),
            "model 'noisy' holds its share of the inference queue: 3 requests waiting "
            "(server.max_queue_share_per_model 0.5 x queue_size 6 = 3); other models are "
            "still served; retry later");
  EXPECT_EQ(refused.runs, 0);

  // Another tenant is admitted while the noisy one is at its share.
  submit("quiet");
  WaitForDepth(scheduler, 4);
  EXPECT_EQ(scheduler.tenant_queue_depth("quiet"), 1);
  gate.Open();
  for (auto& result : results) EXPECT_TRUE(result.get().ok());
  for (auto& task : tasks) EXPECT_EQ(task->runs, 1);
  EXPECT_EQ(scheduler.tenant_queue_depth("noisy"), 0);
  // Once its tasks left the queue, the noisy tenant is admitted again.
  CountingTask later;
  later.tenant = "noisy";
  EXPECT_TRUE(scheduler.Submit(&later).ok());
}

TEST(SchedulerTest, ExpiredTasksGiveBackTheirTenantsShare) {
  Gate gate;
  Recorder recorder{.gate = &gate};
  Scheduler scheduler(
      {.devices = {-1}, .workers_per_device = 1, .queue_size = 4, .max_queue_share = 0.25},
      recorder.Runner());
  CountingTask blocker;
  auto blocker_result = std::async(std::launch::async, [&] { return scheduler.Submit(&blocker); });
  gate.WaitInside(1);
  CountingTask late;
  late.tenant = "t";
  late.deadline = Clock::now() + 20ms;
  EXPECT_EQ(scheduler.Submit(&late).code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(scheduler.tenant_queue_depth("t"), 0);
  CountingTask next;
  next.tenant = "t";
  auto next_result = std::async(std::launch::async, [&] { return scheduler.Submit(&next); });
  WaitForDepth(scheduler, 1);
  gate.Open();
  EXPECT_TRUE(blocker_result.get().ok());
  EXPECT_TRUE(next_result.get().ok());
}

TEST(SchedulerTest, TaskWhoseDeadlinePassesWhileQueuedIsNeverRun) {
  Gate gate;
  Recorder recorder{.gate = &gate};
  Scheduler scheduler({.devices = {-1}, .workers_per_device = 1, .queue_size = 4},
                      recorder.Runner());
  CountingTask blocker;
  auto blocker_result = std::async(std::launch::async, [&] { return scheduler.Submit(&blocker); });
  gate.WaitInside(1);
  CountingTask late;
  late.deadline = Clock::now() + 50ms;
  Status status = scheduler.Submit(&late);
  EXPECT_EQ(status.code(), StatusCode::kDeadlineExceeded) << status.ToString();
  EXPECT_NE(status.message().find("not run"), std::string::npos) << status.message();
  EXPECT_EQ(scheduler.queue_depth(), 0);
  gate.Open();
  EXPECT_TRUE(blocker_result.get().ok());
  EXPECT_EQ(late.runs, 0);
  EXPECT_EQ(blocker.runs, 1);
}

TEST(SchedulerTest, PastDeadlineIsRefusedBeforeQueueing) {
  Recorder recorder;
  Scheduler scheduler({}, recorder.Runner());
  CountingTask task;
  task.deadline = Clock::now() - 1ms;
  EXPECT_EQ(scheduler.Submit(&task).code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(task.runs, 0);
}

TEST(SchedulerTest, StopAcceptingRefusesNewButFinishesQueued) {
  Gate gate;
  Recorder recorder{.gate = &gate};
  Scheduler scheduler({.devices = {-1}, .workers_per_device = 1, .queue_size = 4},
                      recorder.Runner());
  CountingTask running, queued;
  auto r1 = std::async(std::launch::async, [&] { return scheduler.Submit(&running); });
  gate.WaitInside(1);
  auto r2 = std::async(std::launch::async, [&] { return scheduler.Submit(&queued); });
  WaitForDepth(scheduler, 1);
  scheduler.StopAccepting();
  CountingTask refused;
  Status status = scheduler.Submit(&refused);
  EXPECT_EQ(status.code(), StatusCode::kUnavailable);
  EXPECT_NE(status.message().find("shutting down"), std::string::npos);
  gate.Open();
  EXPECT_TRUE(r1.get().ok());
  EXPECT_TRUE(r2.get().ok());
  EXPECT_EQ(queued.runs, 1);
  EXPECT_EQ(refused.runs, 0);
}

TEST(SchedulerTest, RoundRobinSpreadsOverDevices) {
  Recorder recorder;
  Scheduler scheduler({.devices = {0, 1, 2}, .workers_per_device = 1}, recorder.Runner());
  std::map<int, int> per_device;
  for (int i = 0; i < 6; ++i) {
    CountingTask task;
    ASSERT_TRUE(scheduler.Submit(&task).ok());
    ++per_device[task.ran_on.device_id];
    EXPECT_EQ(task.device_id, task.ran_on.device_id);
  }
  EXPECT_EQ(per_device, (std::map<int, int>{{0, 2}, {1, 2}, {2, 2}}));
}

TEST(SchedulerTest, LeastLoadedAvoidsBusyDevice) {
  Gate gate;
  Recorder recorder{.gate = &gate};
  Scheduler scheduler({.devices = {0, 1},
                       .workers_per_device = 1,
                       .queue_size = 8,
                       .assignment = DeviceAssignment::kLeastLoaded},
                      recorder.Runner());
  CountingTask pinned;
  pinned.device_id = 0;
  auto r0 = std::async(std::launch::async, [&] { return scheduler.Submit(&pinned); });
  gate.WaitInside(1);
  EXPECT_EQ(scheduler.device_load(0), 1);
  CountingTask free_task;
  auto r1 = std::async(std::launch::async, [&] { return scheduler.Submit(&free_task); });
  gate.WaitInside(2);
  EXPECT_EQ(scheduler.device_load(1), 1);
  gate.Open();
  ASSERT_TRUE(r0.get().ok());
  ASSERT_TRUE(r1.get().ok());
  EXPECT_EQ(free_task.ran_on.device_id, 1);
}

TEST(SchedulerTest, UnknownDeviceIsInvalidArgument) {
  Recorder recorder;
  Scheduler scheduler({.devices = {0}}, recorder.Runner());
  CountingTask task;
  task.device_id = 5;
  EXPECT_EQ(scheduler.Submit(&task).code(), StatusCode::kInvalidArgument);
}

TEST(SchedulerTest, DynamicBatchingGroupsSameKeyOnlyUpToMaxFrames) {
  Gate gate;
  Recorder recorder{.gate = &gate};
  // One worker, blocked by a first task while the others queue up; the window is long
  // enough for all of them to arrive.
  Scheduler scheduler({.devices = {-1},
                       .workers_per_device = 1,
                       .queue_size = 16,
                       .max_queue_delay_us = 200000,
                       .max_batch_frames = 8},
                      recorder.Runner());
  CountingTask blocker;
  auto rb = std::async(std::launch::async, [&] { return scheduler.Submit(&blocker); });
  gate.WaitInside(1);
  struct Spec {
    std::string key;
    int frames;
  };
  const std::vector<Spec> specs = {{"a", 3}, {"b", 2}, {"a", 4}, {"a", 2}, {"b", 1}, {"", 1}};
  std::vector<std::unique_ptr<CountingTask>> tasks;
  std::vector<std::future<Status>> results;
  for (const auto& spec : specs) {
    tasks.push_back(std::make_unique<CountingTask>());
    tasks.back()->batch_key = spec.key;
    tasks.back()->frames = spec.frames;
    CountingTask* task = tasks.back().get();
    results.push_back(std::async(std::launch::async, [&, task] { return scheduler.Submit(task); }));
    WaitForDepth(scheduler, static_cast<int>(tasks.size()));
  }
  gate.Open();
  ASSERT_TRUE(rb.get().ok());
  for (auto& result : results) ASSERT_TRUE(result.get().ok());
  for (auto& task : tasks) EXPECT_EQ(task->runs, 1);
  // "a": 3+4 = 7 fit in 8, the third (2) would make 9 -> its own group.
  EXPECT_EQ(tasks[0]->group_size, 2u);
  EXPECT_EQ(tasks[2]->group_size, 2u);
  EXPECT_EQ(tasks[0]->group_frames, 7);
  EXPECT_EQ(tasks[3]->group_size, 1u);
  EXPECT_EQ(tasks[1]->group_size, 2u);
  EXPECT_EQ(tasks[1]->group_frames, 3);
  EXPECT_EQ(tasks[5]->group_size, 1u);  // empty key: never grouped
  for (const auto& group : recorder.groups) {
    std::set<std::string> keys;
    for (Task* task : group) keys.insert(task->batch_key);
    EXPECT_EQ(keys.size(), 1u) << "a group mixed models";
  }
}

TEST(SchedulerTest, IdleWorkersLeaveABatchBeingGatheredToItsGatherer) {
  // Four idle workers, four concurrent single-frame streams of one model: without
  // coordination each worker would take one task and wait out the window alone.
  Recorder recorder;
  Scheduler scheduler({.devices = {-1},
                       .workers_per_device = 4,
                       .queue_size = 16,
                       .max_queue_delay_us = 300000,
                       .max_batch_frames = 4},
                      recorder.Runner());
  std::vector<std::unique_ptr<CountingTask>> tasks;
  std::vector<std::future<Status>> results;
  for (int i = 0; i < 4; ++i) {
    tasks.push_back(std::make_unique<CountingTask>());
    tasks.back()->batch_key = "model";
    CountingTask* task = tasks.back().get();
    results.push_back(std::async(std::launch::async, [&, task] { return scheduler.Submit(task); }));
  }
  for (auto& result : results) ASSERT_TRUE(result.get().ok());
  for (auto& task : tasks) {
    EXPECT_EQ(task->runs, 1);
    EXPECT_EQ(task->group_size, 4u);  // one Run of all four
  }
}

TEST(SchedulerTest, BatchingOffRunsEachTaskAlone) {
  Gate gate;
  Recorder recorder{.gate = &gate};
  Scheduler scheduler({.devices = {-1}, .workers_per_device = 1, .queue_size = 8},
                      recorder.Runner());
  CountingTask blocker;
  auto rb = std::async(std::launch::async, [&] { return scheduler.Submit(&blocker); });
  gate.WaitInside(1);
  CountingTask a1, a2;
  a1.batch_key = a2.batch_key = "a";
  auto r1 = std::async(std::launch::async, [&] { return scheduler.Submit(&a1); });
  WaitForDepth(scheduler, 1);
  auto r2 = std::async(std::launch::async, [&] { return scheduler.Submit(&a2); });
  WaitForDepth(scheduler, 2);
  gate.Open();
  ASSERT_TRUE(rb.get().ok() && r1.get().ok() && r2.get().ok());
  EXPECT_EQ(a1.group_size, 1u);
  EXPECT_EQ(a2.group_size, 1u);
}

TEST(SchedulerTest, ManyConcurrentSubmittersAllComplete) {
  std::atomic<int> total{0};
  Scheduler scheduler({.devices = {0, 1}, .workers_per_device = 3, .queue_size = 1000},
                      [&](std::span<Task* const> group, const WorkerInfo&) {
                        total += static_cast<int>(group.size());
                      });
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        Task task;
        if (scheduler.Submit(&task).ok()) ++ok;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(ok.load(), 1600);
  EXPECT_EQ(total.load(), 1600);
}

}  // namespace
}  // namespace lipsync::inference
