#include "rpc/cache_stats_log.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string_view>

#include "common/log.h"

namespace lipsync::rpc {
namespace {

std::string Number(double value) {
  char text[32];
  if (std::isfinite(value) && value == std::floor(value) && std::fabs(value) < 1e15) {
    std::snprintf(text, sizeof text, "%.0f", value);
  } else {
    std::snprintf(text, sizeof text, "%.6g", value);
  }
  return text;
}

}  // namespace

bool IsCacheStat(const Gauge& gauge) {
  const std::string_view name = gauge.name;
  for (std::string_view part :
       {"cache", "loaded_models", "max_models", "model_loads", "model_load_failures", "evictions",
        "idle_unloads", "model_memory_bytes"}) {
    if (name.find(part) != std::string_view::npos) return true;
  }
  return false;
}

std::string FormatCacheStats(const std::string& server, const std::vector<Gauge>& gauges) {
  std::string line;
  for (const Gauge& gauge : gauges) {
    if (!IsCacheStat(gauge)) continue;
    std::string_view name = gauge.name;
    if (name.substr(0, 8) == "lipsync_") name.remove_prefix(8);
    line += ' ';
    line += name;
    if (!gauge.labels.empty()) {
      line += '{';
      bool first = true;
      for (const auto& [key, value] : gauge.labels) {
        if (!first) line += ',';
        first = false;
        // Label values may be tenant ids: bounded like every logged value.
        line += key + "=" + (value.size() > 64 ? value.substr(0, 64) + "..." : value);
      }
      line += '}';
    }
    line += '=' + Number(gauge.value);
  }
  if (line.empty()) return line;
  return "cache stats (" + server + "):" + line;
}

CacheStatsLogger::CacheStatsLogger(std::string server, Source source,
                                   std::chrono::milliseconds interval, Sink sink)
    : server_(std::move(server)),
      source_(std::move(source)),
      interval_(std::max(interval, std::chrono::milliseconds(1))),
      sink_(sink ? std::move(sink)
                 : Sink([](const std::string& line) { LOG_INFO("%s", line.c_str()); })) {}

CacheStatsLogger::~CacheStatsLogger() { Stop(); }

void CacheStatsLogger::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (thread_.joinable() || stopping_) return;
  thread_ = std::thread([this] { Run(); });
}

void CacheStatsLogger::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void CacheStatsLogger::LogNow() {
  // The sources run outside the logger's mutex (they take the servers' own locks).
  const std::string line = FormatCacheStats(server_, source_());
  if (!line.empty()) sink_(line);
}

void CacheStatsLogger::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, interval_, [this] { return stopping_; })) {
    lock.unlock();
    LogNow();
    lock.lock();
  }
}

}  // namespace lipsync::rpc
