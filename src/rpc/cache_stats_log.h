// logging.log_cache_stats (the deployment guide's switch): one INFO line per server every
// interval with its cache statistics, the same numbers GET /metrics exports (the
// avatar cache on compositing: background frame hits and misses, avatars loaded, bytes;
// the model cache on inference: models loaded, loads, failures, evictions, idle unloads,
// bytes per device). They are read from the server's scrape-time gauge sources
// (ServerOps), so the log and the metrics never disagree.
//
// Thread-safe. The logger's thread starts in Start() and stops in the destructor (or
// Stop()), which waits for a line being written; the source must stay valid until then.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "rpc/metrics.h"

namespace lipsync::rpc {

// True for the gauges that describe a cache (by name: caches, loaded/max models, model
// loads, failures, evictions, idle unloads, model memory).
bool IsCacheStat(const Gauge& gauge);

// "cache stats (compositing): background_cache_hits_total=120 ..." with every cache
// gauge of `gauges` in their order ("lipsync_" dropped, labels as {k=v}); empty when
// there is none.
std::string FormatCacheStats(const std::string& server, const std::vector<Gauge>& gauges);

class CacheStatsLogger {
 public:
  using Source = std::function<std::vector<Gauge>()>;
  using Sink = std::function<void(const std::string& line)>;  // default: LOG_INFO

  CacheStatsLogger(std::string server, Source source, std::chrono::milliseconds interval,
                   Sink sink = {});
  ~CacheStatsLogger();
  CacheStatsLogger(const CacheStatsLogger&) = delete;
  CacheStatsLogger& operator=(const CacheStatsLogger&) = delete;

  // Starts the periodic thread (first line after one interval). Idempotent.
  void Start();
  void Stop();
  // Writes one line now (on the calling thread).
  void LogNow();

 private:
  void Run();

  const std::string server_;
  const Source source_;
  const std::chrono::milliseconds interval_;
  const Sink sink_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace lipsync::rpc
