// Scheduler wake-up cost: submit -> run latency (from Submit() to the Runner starting)
// and tasks per second, for N devices x M workers per device and S submitter threads,
// each placing its tasks on one device (as production does: a request runs on its
// model's device). The Runner sleeps --work-us to stand in for a Run on an
// accelerator (the worker thread waits, the CPU is free). Also reported: the process's
// CPU time per task (getrusage), where waking idle workers that find nothing to do
// shows up.
//
//   build/bench/inference/scheduler_bench [--tasks 4000] [--work-us 200] [--rounds 3]
//
// Prints one line per configuration and round (progress), then a table of medians.
// Figures: docs/PERFORMANCE.md, "Scheduler wake-ups".
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <sys/resource.h>

#include "bench_util.h"
#include "inference/scheduler.h"

namespace {

using lipsync::inference::Scheduler;
using lipsync::inference::SchedulerOptions;
using lipsync::inference::Task;
using lipsync::inference::WorkerInfo;
using SteadyClock = std::chrono::steady_clock;

struct TimedTask : Task {
  SteadyClock::time_point submitted;
  double latency_us = 0;
};

struct Figures {
  double p50_us = 0, p99_us = 0, tasks_per_s = 0, cpu_us_per_task = 0;
};

double CpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

using lipsync::bench::Percentile;

Figures RunOnce(int devices, int workers, int submitters, int tasks, int work_us) {
  SchedulerOptions options;
  options.devices.clear();
  for (int d = 0; d < devices; ++d) options.devices.push_back(d);
  options.workers_per_device = workers;
  options.queue_size = 100000;
  Scheduler scheduler(options, [work_us](std::span<Task* const> group, const WorkerInfo&) {
    const auto start = SteadyClock::now();
    for (Task* task : group) {
      auto* timed = static_cast<TimedTask*>(task);
      timed->latency_us =
          std::chrono::duration<double, std::micro>(start - timed->submitted).count();
    }
    std::this_thread::sleep_for(std::chrono::microseconds(work_us));
  });
  std::vector<std::vector<double>> latencies(submitters);
  std::atomic<int> next{0};
  const auto start = SteadyClock::now();
  const double cpu_start = CpuSeconds();
  std::vector<std::thread> threads;
  for (int s = 0; s < submitters; ++s) {
    threads.emplace_back([&, s] {
      while (next.fetch_add(1) < tasks) {
        TimedTask task;
        task.device_id = s % devices;
        task.submitted = SteadyClock::now();
        if (scheduler.Submit(&task).ok()) latencies[s].push_back(task.latency_us);
      }
    });
  }
  for (auto& t : threads) t.join();
  const double seconds = std::chrono::duration<double>(SteadyClock::now() - start).count();
  const double cpu = CpuSeconds() - cpu_start;
  std::vector<double> all;
  for (auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  const double n = static_cast<double>(std::max<size_t>(1, all.size()));
  return {Percentile(all, 0.5), Percentile(all, 0.99), n / seconds, cpu * 1e6 / n};
}

}  // namespace

int main(int argc, char** argv) {
  int tasks = 4000, work_us = 200, rounds = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--tasks")) tasks = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--work-us")) work_us = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--rounds")) rounds = std::atoi(argv[i + 1]);
  }
  struct Config {
    int devices, workers, submitters;
  };
  // Busy (2 submitters per worker: queues never empty) and light (one stream per
  // device: most workers idle, where waking all of them on each submit costs most).
  const std::vector<Config> configs = {{1, 1, 2}, {1, 8, 16}, {4, 8, 64}, {1, 8, 1}, {4, 8, 4}};
  std::vector<std::vector<Figures>> results(configs.size());
  // Interleaved rounds: every configuration once per round.
  for (int round = 0; round < rounds; ++round) {
    for (size_t c = 0; c < configs.size(); ++c) {
      const Figures f =
          RunOnce(configs[c].devices, configs[c].workers, configs[c].submitters, tasks, work_us);
      results[c].push_back(f);
      std::fprintf(stderr,
                   "round %d: %d devices x %d workers: p50 %.0f us, p99 %.0f us, %.0f/s, "
                   "%.0f CPU us/task\n",
                   round + 1, configs[c].devices, configs[c].workers, f.p50_us, f.p99_us,
                   f.tasks_per_s, f.cpu_us_per_task);
    }
  }
  std::printf(
      "| devices x workers | submitters | submit->run p50 (us) | p99 (us) | tasks/s | CPU us/task "
      "|\n");
  std::printf("| --- | --- | --- | --- | --- | --- |\n");
  for (size_t c = 0; c < configs.size(); ++c) {
    std::vector<double> p50, p99, rate, cpu;
    for (const auto& f : results[c]) {
      p50.push_back(f.p50_us);
      p99.push_back(f.p99_us);
      rate.push_back(f.tasks_per_s);
      cpu.push_back(f.cpu_us_per_task);
    }
    std::printf("| %d x %d | %d | %.0f | %.0f | %.0f | %.0f |\n", configs[c].devices,
                configs[c].workers, configs[c].submitters, Percentile(p50, 0.5),
                Percentile(p99, 0.5), Percentile(rate, 0.5), Percentile(cpu, 0.5));
  }
  return 0;
}
