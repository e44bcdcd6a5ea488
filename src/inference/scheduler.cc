#include "inference/scheduler.h"

#include <algorithm>
#include <cstdio>
#include <string>

namespace lipsync::inference {
namespace {

double MsBetween(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

std::string ShareText(double share) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", share);
  return text;
}

}  // namespace

Scheduler::Scheduler(SchedulerOptions options, Runner runner)
    : options_([&] {
        if (options.devices.empty()) options.devices = {-1};
        options.workers_per_device = std::max(1, options.workers_per_device);
        options.queue_size = std::max(1, options.queue_size);
        options.max_batch_frames = std::max(1, options.max_batch_frames);
        options.max_queue_delay_us = std::max(0, options.max_queue_delay_us);
        if (!(options.max_queue_share > 0)) options.max_queue_share = 1.0;  // NaN too
        return options;
      }()),
      tenant_limit_(std::clamp(static_cast<int>(options_.max_queue_share * options_.queue_size), 1,
                               options_.queue_size)),
      runner_(std::move(runner)) {
  for (int device : options_.devices) devices_.emplace_back().device_id = device;
  int next_worker_id = 0;
  for (int device : options_.devices) {
    for (int i = 0; i < options_.workers_per_device; ++i) {
      WorkerInfo info{device, next_worker_id++};
      workers_.emplace_back([this, info] { WorkerLoop(info); });
    }
  }
}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    accepting_ = false;
    stopping_ = true;
    for (auto& device : devices_) device.cv.notify_all();
    for (const auto& gathering : gathering_) gathering.cv->notify_all();
  }
  for (auto& worker : workers_) worker.join();
}

void Scheduler::StopAccepting() {
  std::lock_guard<std::mutex> lock(mu_);
  accepting_ = false;
}

int Scheduler::queue_depth() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queued_total_;
}

int Scheduler::tenant_queue_depth(const std::string& tenant) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = queued_per_tenant_.find(tenant);
  return it == queued_per_tenant_.end() ? 0 : it->second;
}

void Scheduler::LeaveQueue(const Task* task) {
  if (task->tenant.empty()) return;
  auto it = queued_per_tenant_.find(task->tenant);
  if (it != queued_per_tenant_.end() && --it->second <= 0) queued_per_tenant_.erase(it);
}

int Scheduler::device_load(int device_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  const DeviceState* device = FindDevice(device_id);
  return device ? device->queued + device->running : 0;
}

Scheduler::DeviceState* Scheduler::FindDevice(int device_id) {
  for (auto& device : devices_) {
    if (device.device_id == device_id) return &device;
  }
  return nullptr;
}

const Scheduler::DeviceState* Scheduler::FindDevice(int device_id) const {
  for (const auto& device : devices_) {
    if (device.device_id == device_id) return &device;
  }
  return nullptr;
}

int Scheduler::PickDevice() {
  if (devices_.size() == 1) return devices_.front().device_id;
  if (options_.assignment == DeviceAssignment::kRoundRobin) {
    return devices_[round_robin_++ % devices_.size()].device_id;
  }
  const DeviceState* best = &devices_.front();
  for (const auto& device : devices_) {
    if (device.queued + device.running < best->queued + best->running) best = &device;
  }
  return best->device_id;
}

Status Scheduler::Submit(Task* task) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!accepting_) {
    return Status::Unavailable("server is shutting down; not accepting new requests");
  }
  if (task->frames < 1) {
    return Status::InvalidArgument("task has " + std::to_string(task->frames) +
                                   " frames; expected at least 1");
  }
  const Clock::time_point now = Clock::now();
  if (task->deadline && *task->deadline <= now) {
    return Status::DeadlineExceeded(
        "request deadline had already passed when it reached the "
        "inference queue; it was not run");
  }
  if (task->device_id == Task::kAnyDevice) task->device_id = PickDevice();
  DeviceState* device = FindDevice(task->device_id);
  if (device == nullptr) {
    return Status::InvalidArgument("no workers for device " + std::to_string(task->device_id) +
                                   "; expected one of the scheduler's devices");
  }
  if (queued_total_ >= options_.queue_size) {
    return Status::ResourceExhausted(
        "inference queue full (" + std::to_string(queued_total_) +
        " requests waiting, queue_size=" + std::to_string(options_.queue_size) + "); retry later");
  }
  if (!task->tenant.empty() && tenant_limit_ < options_.queue_size) {
    auto it = queued_per_tenant_.find(task->tenant);
    if (it != queued_per_tenant_.end() && it->second >= tenant_limit_) {
      return Status::ResourceExhausted(
          "model '" + task->tenant + "' holds its share of the inference queue: " +
          std::to_string(it->second) + " requests waiting (server.max_queue_share_per_model " +
          ShareText(options_.max_queue_share) + " x queue_size " +
          std::to_string(options_.queue_size) + " = " + std::to_string(tenant_limit_) +
          "); other models are still served; retry later");
    }
  }
  task->state_ = Task::State::kQueued;
  task->enqueued_at_ = now;
  device->queue.push_back(task);
  ++queued_total_;
  if (!task->tenant.empty()) ++queued_per_tenant_[task->tenant];
  ++device->queued;
  WakeFor(task, *device);

  while (task->state_ != Task::State::kDone && task->state_ != Task::State::kExpired) {
    if (task->deadline && task->state_ == Task::State::kQueued) {
      task->done_cv_.wait_until(lock, *task->deadline);
      if (task->state_ == Task::State::kQueued && Clock::now() >= *task->deadline) {
        device->queue.erase(std::find(device->queue.begin(), device->queue.end(), task));
        Expire(task);
      }
    } else {
      task->done_cv_.wait(lock);
    }
  }
  if (task->state_ == Task::State::kExpired) {
    return Status::DeadlineExceeded(
        "request deadline passed after " +
        std::to_string(static_cast<int>(MsBetween(task->enqueued_at_, Clock::now()))) +
        " ms waiting in the inference queue (" + std::to_string(queued_total_) +
        " requests waiting on " + std::to_string(worker_count()) +
        " workers); it was not run. Raise the deadline or add workers");
  }
  return Status::Ok();
}

void Scheduler::Expire(Task* task) {
  task->state_ = Task::State::kExpired;
  --FindDevice(task->device_id)->queued;
  --queued_total_;
  LeaveQueue(task);
  task->done_cv_.notify_all();
}

void Scheduler::WakeFor(const Task* task, DeviceState& device) {
  if (!task->batch_key.empty()) {
    for (const auto& gathering : gathering_) {
      if (gathering.device_id == device.device_id && gathering.key == task->batch_key) {
        gathering.cv->notify_one();  // only its gatherer may take it
        return;
      }
    }
  }
  device.cv.notify_one();
}

bool Scheduler::HasTakeable(const DeviceState& device) const {
  return std::any_of(device.queue.begin(), device.queue.end(),
                     [&](const Task* t) { return Takeable(t, device.device_id); });
}

bool Scheduler::Takeable(const Task* task, int device_id) const {
  if (task->device_id != device_id) return false;
  if (task->batch_key.empty() || gathering_.empty()) return true;
  return std::none_of(gathering_.begin(), gathering_.end(), [&](const Gathering& g) {
    return g.device_id == device_id && g.key == task->batch_key;
  });
}

Task* Scheduler::TakeFirst(DeviceState& device, Clock::time_point now) {
  for (auto it = device.queue.begin(); it != device.queue.end();) {
    Task* task = *it;
    if (!Takeable(task, device.device_id)) {
      ++it;
      continue;
    }
    it = device.queue.erase(it);
    if (Claim(task, now)) return task;
  }
  return nullptr;
}

bool Scheduler::Claim(Task* task, Clock::time_point now) {
  if (task->deadline && *task->deadline <= now) {
    Expire(task);
    return false;
  }
  task->state_ = Task::State::kTaken;
  LeaveQueue(task);
  DeviceState* device = FindDevice(task->device_id);
  --device->queued;
  --queued_total_;
  ++device->running;
  return true;
}

int Scheduler::GatherSameKey(DeviceState& device, std::vector<Task*>& group, int frames,
                             Clock::time_point now) {
  const Task* first = group.front();
  for (auto it = device.queue.begin();
       it != device.queue.end() && frames < options_.max_batch_frames;) {
    Task* task = *it;
    if (task->batch_key != first->batch_key || frames + task->frames > options_.max_batch_frames) {
      ++it;
      continue;
    }
    it = device.queue.erase(it);
    if (!Claim(task, now)) continue;
    frames += task->frames;
    group.push_back(task);
  }
  return frames;
}

void Scheduler::WorkerLoop(WorkerInfo info) {
  std::unique_lock<std::mutex> lock(mu_);
  DeviceState& device = *FindDevice(info.device_id);
  std::condition_variable gather_cv;  // wakes this worker alone while it gathers
  for (;;) {
    device.cv.wait(lock, [&] { return stopping_ || HasTakeable(device); });
    Task* first = TakeFirst(device, Clock::now());
    if (first == nullptr) {
      if (stopping_ && !HasTakeable(device)) return;
      continue;
    }
    std::vector<Task*> group{first};
    int frames = first->frames;
    if (options_.max_queue_delay_us > 0 && !first->batch_key.empty()) {
      const Clock::time_point batch_end =
          first->enqueued_at_ + std::chrono::microseconds(options_.max_queue_delay_us);
      frames = GatherSameKey(device, group, frames, Clock::now());
      if (frames < options_.max_batch_frames) {
        gathering_.push_back(Gathering{info.device_id, first->batch_key, &gather_cv});
        while (frames < options_.max_batch_frames && !stopping_ && Clock::now() < batch_end) {
          gather_cv.wait_until(lock, batch_end);
          frames = GatherSameKey(device, group, frames, Clock::now());
        }
        gathering_.erase(std::find_if(gathering_.begin(), gathering_.end(),
                                      [&](const Gathering& g) { return g.cv == &gather_cv; }));
        // Tasks of this model left over (batch full) are takeable by others again.
        if (HasTakeable(device)) device.cv.notify_all();
      }
    }
    // More work waiting on this device: pass the wake-up on to an idle worker (the one
    // woken for it may have been this one, busy until now).
    if (HasTakeable(device)) device.cv.notify_one();
    const Clock::time_point started = Clock::now();
    for (Task* task : group) {
      task->queue_wait_ms = MsBetween(task->enqueued_at_, started);
      task->group_frames = frames;
    }
    lock.unlock();
    runner_(std::span<Task* const>(group.data(), group.size()), info);
    lock.lock();
    for (Task* task : group) {
      --device.running;
      task->state_ = Task::State::kDone;
      task->done_cv_.notify_all();
    }
  }
}

}  // namespace lipsync::inference
