// Server metrics in Prometheus text format (the guide's "Add Prometheus metrics
// export"): request counts by method and status code, frames served, and sums+counts
// of call duration, queue wait, inference and compositing time. Gauges that only the
// owner of the server knows (loaded models, GPU memory) come from a callback run at
// scrape time.
//
// Thread-safe (one mutex; a record is a few map updates). Names follow Prometheus
// conventions: counters end in _total, durations are in seconds.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

namespace lipsync::rpc {

struct Gauge {
  std::string name;  // e.g. "lipsync_loaded_models"
  std::string help;
  std::string labels;  // already formatted, e.g. "gpu=\"0\""; may be empty
  double value = 0;
};

// What one finished call contributes. Negative timings mean "not measured".
struct CallSample {
  std::string method;
  std::string code;  // gRPC status code name
  int64_t frames = 0;
  double duration_ms = 0;
  double queue_wait_ms = -1;
  double inference_ms = -1;
  double composite_ms = -1;
};

class MetricsRegistry {
 public:
  explicit MetricsRegistry(std::string server) : server_(std::move(server)) {}

  void Record(const CallSample& sample);
  // Replaces the scrape-time gauge source (may be empty).
  void SetGaugeSource(std::function<std::vector<Gauge>()> source);
  // The whole exposition text (ends with a newline).
  std::string Render() const;

 private:
  struct Sum {
    double seconds = 0;
    int64_t count = 0;
  };
  const std::string server_;
  mutable std::mutex mu_;
  std::map<std::pair<std::string, std::string>, int64_t> requests_;  // (method, code)
  std::map<std::string, Sum> durations_;                             // by method
  int64_t frames_ = 0;
  Sum queue_wait_, inference_, composite_;
  std::function<std::vector<Gauge>()> gauge_source_;
};

}  // namespace lipsync::rpc
