// The inference scheduler: one bounded queue of waiting requests in front of a pool of
// workers per device (`worker_count_per_gpu` each). It owns the worker threads; the
// caller owns each Task and the work it describes.
//
// A request's journey: Submit() places the task on a device (the one given, or by
// round-robin / least-loaded), waits in the queue, is taken by a worker of that device,
// which calls the Runner with it, and Submit() returns once the Runner has finished.
// A full queue is refused at once (RESOURCE_EXHAUSTED); a task whose deadline passes
// while it waits is dropped and never run (DEADLINE_EXCEEDED).
//
// Per-tenant share: a task names its tenant (the model id). One tenant may hold at
// most max_queue_share x queue_size of the waiting tasks (at least 1); a tenant at
// its share is refused at once (RESOURCE_EXHAUSTED naming it and its share) while
// other tenants are still admitted, so a noisy tenant cannot fill the whole queue.
//
// Dynamic batching (max_queue_delay_us > 0): a worker that takes a task with a
// non-empty batch_key waits up to max_queue_delay_us from that task's arrival for more
// queued tasks with the SAME key and device, up to max_batch_frames frames in all, and
// hands them to the Runner as one group. Different keys (models) are never mixed.
//
// Wake-ups (Triton's instance queues): each device has its own queue of waiting tasks
// and its own condition variable; a submit wakes ONE worker of the task's device
// (notify_one), or, when a worker of that device is gathering a batch of the task's
// key, that gatherer alone (each gatherer waits on its own condition variable). A
// worker that takes a task while more takeable ones wait passes the wake-up on to
// the next idle worker. Nothing wakes the workers of other devices. queue_size and
// the per-tenant share count the waiting tasks of all devices together.
//
// Thread-safe. The destructor stops accepting, runs what is queued, and joins.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/status.h"
#include "inference/api.h"

namespace lipsync::inference {

enum class DeviceAssignment { kRoundRobin, kLeastLoaded };

struct SchedulerOptions {
  std::vector<int> devices{-1};  // device ids (-1 = CPU); one worker pool each
  int workers_per_device = 1;
  int queue_size = 50;  // tasks waiting (not running) at most
  DeviceAssignment assignment = DeviceAssignment::kRoundRobin;
  int max_queue_delay_us = 0;  // 0: no dynamic batching
  int max_batch_frames = 64;   // frames in one dynamic batch
  // Fraction of queue_size one tenant may hold (server.max_queue_share_per_model);
  // >= 1: no per-tenant limit beyond queue_size.
  double max_queue_share = 1.0;
};

// Where and how a task ran; filled in by the scheduler before the Runner is called.
struct WorkerInfo {
  int device_id = -1;
  int worker_id = -1;  // unique across devices
};

// One unit of work. Callers derive from it to carry their payload; the scheduler only
// reads the public routing fields and writes the timing fields.
struct Task {
  virtual ~Task() = default;
  // Routing (set by the caller before Submit).
  static constexpr int kAnyDevice = -2;
  int device_id = kAnyDevice;  // a device from SchedulerOptions::devices, or kAnyDevice
  std::string batch_key;       // "" = never grouped with other tasks
  std::string tenant;          // model id, for the per-tenant queue share ("" = none)
  int frames = 1;
  std::optional<Clock::time_point> deadline;
  // Filled by the scheduler.
  double queue_wait_ms = 0;
  int group_frames = 0;  // frames in the group this task ran in

 private:
  friend class Scheduler;
  enum class State { kNew, kQueued, kTaken, kDone, kExpired };
  State state_ = State::kNew;
  Clock::time_point enqueued_at_;
  std::condition_variable done_cv_;
};

class Scheduler {
 public:
  // Runs a group of tasks (one task unless dynamic batching grouped several) on a
  // worker. It must record each task's outcome in the task itself.
  using Runner = std::function<void(std::span<Task* const> group, const WorkerInfo& worker)>;

  Scheduler(SchedulerOptions options, Runner runner);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Blocks until `task` has been run (OK), or returns at once with RESOURCE_EXHAUSTED
  // (queue full) or UNAVAILABLE (shutting down), or DEADLINE_EXCEEDED when its deadline
  // passes while it waits (it is then never run). INVALID_ARGUMENT for an unknown device.
  // A task already taken by a worker is always waited for, deadline or not.
  Status Submit(Task* task);

  // Stops accepting (later Submits get UNAVAILABLE); queued tasks still run. Idempotent.
  void StopAccepting();

  int queue_depth() const;
  int queue_capacity() const { return options_.queue_size; }
  // Waiting tasks one tenant may hold (from max_queue_share).
  int tenant_queue_limit() const { return tenant_limit_; }
  // Waiting (not running) tasks of `tenant`.
  int tenant_queue_depth(const std::string& tenant) const;
  // Tasks queued or running on `device`.
  int device_load(int device_id) const;
  int worker_count() const { return static_cast<int>(workers_.size()); }
  const SchedulerOptions& options() const { return options_; }

 private:
  struct DeviceState {
    int device_id = -1;
    int queued = 0;  // == queue.size()
    int running = 0;
    std::deque<Task*> queue;     // this device's waiting tasks, in arrival order
    std::condition_variable cv;  // its idle workers wait here
  };
  // A worker gathering a dynamic batch for (device, key); it waits on its own cv.
  struct Gathering {
    int device_id;
    std::string key;
    std::condition_variable* cv;
  };
  DeviceState* FindDevice(int device_id);
  const DeviceState* FindDevice(int device_id) const;
  int PickDevice();
  void WorkerLoop(WorkerInfo info);
  // Whether a worker of `device_id` may take `task` now: a task whose model another
  // worker of the device is gathering a batch for is left to that worker (otherwise
  // concurrent streams would be split across workers, each waiting for a batch).
  bool Takeable(const Task* task, int device_id) const;
  bool HasTakeable(const DeviceState& device) const;
  // Removes and returns the first live, takeable task of `device`; drops expired ones
  // on the way.
  Task* TakeFirst(DeviceState& device, Clock::time_point now);
  // Adds same-key tasks of `device` to `group` until max_batch_frames; returns the
  // frames in it.
  int GatherSameKey(DeviceState& device, std::vector<Task*>& group, int frames,
                    Clock::time_point now);
  // Wakes the one worker that should look at `task` (its gatherer, or one idle worker
  // of its device).
  void WakeFor(const Task* task, DeviceState& device);
  void Expire(Task* task);
  // The task left the queue (taken or expired): its tenant holds one less.
  void LeaveQueue(const Task* task);
  // For a task just removed from the queue: expires it (false) if its deadline has
  // passed, otherwise marks it taken and moves it from queued to running (true).
  bool Claim(Task* task, Clock::time_point now);
  // Batches some worker is gathering now.
  std::vector<Gathering> gathering_;

  const SchedulerOptions options_;
  const int tenant_limit_;
  const Runner runner_;
  mutable std::mutex mu_;
  int queued_total_ = 0;                          // waiting tasks over all devices
  std::map<std::string, int> queued_per_tenant_;  // only tenants with waiting tasks
  std::deque<DeviceState> devices_;               // stable addresses (each holds a cv)
  bool accepting_ = true;
  bool stopping_ = false;
  uint64_t round_robin_ = 0;
  std::vector<std::thread> workers_;
};

}  // namespace lipsync::inference
