// A server's metrics (docs/OPERATIONS.md "Metrics"), kept in a prometheus-cpp registry
// (Debian prometheus-cpp-dev) and rendered by its text serializer for GET /metrics.
// Names follow Prometheus conventions (Triton's are the model): counters end in
// _total, durations are histograms in seconds, sizes in bytes; every series carries the
// constant label server="inference"|"compositing".
//
// Recorded per call (ServerOps' call wrapper, the one place): requests and frames by
// method, model and gRPC status code; the call's duration (histogram by method; live
// sessions in their own histogram); the stage times a call reports (queue wait,
// inference, audio, compositing, encode); a live session reports each batch's stages and
// each frame it encodes as they happen (RecordStages). Values only the server's owner knows (loaded
// models, memory, caches, GPUs) come from gauge sources run at scrape time.
//
// Label cardinality is bounded: the model label is the model id once a call for it
// succeeded (a tenant that exists and the caller may use), for at most
// max_model_labels ids; every other id is counted under model="_other". Calls that
// name no model have model="".
//
// Thread-safe: Record from any thread (prometheus-cpp's atomics plus one small mutex
// for the model labels); Render runs the gauge sources outside every lock.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace prometheus {
class Registry;
class Counter;
class Histogram;
template <typename T>
class Family;
}  // namespace prometheus

namespace lipsync::rpc {

using MetricLabels = std::map<std::string, std::string>;

// One value known at scrape time. kGauge: a level now; kCounter: a count kept since
// start elsewhere (exported as a counter; the name ends in _total); kSummary: a sum
// (`value`) and a `count` (exported as a summary without quantiles).
struct Gauge {
  enum class Kind { kGauge, kCounter, kSummary };
  std::string name;  // e.g. "lipsync_loaded_models"
  std::string help;
  MetricLabels labels;  // besides server
  double value = 0;
  Kind kind = Kind::kGauge;
  uint64_t count = 0;  // kSummary only
};

// Stage times a call reports; negative: not measured.
struct StageTimings {
  double queue_wait_ms = -1;
  double inference_ms = -1;
  double audio_ms = -1;
  double composite_ms = -1;
  double encode_ms = -1;
};

// What one finished call contributes.
struct CallSample {
  std::string method;
  std::string model;   // the model id the call named (any; labelled per the bound)
  std::string code;    // gRPC status code name
  int64_t frames = 0;  // requested (unary) or sent (streams)
  double duration_ms = 0;
  bool stream = false;  // a live session: its duration goes to the session histogram
  StageTimings timings;
};

class MetricsRegistry {
 public:
  static constexpr int kDefaultMaxModelLabels = 256;
  explicit MetricsRegistry(std::string server, int max_model_labels = kDefaultMaxModelLabels);
  ~MetricsRegistry();
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  void Record(const CallSample& sample);
  // Stage times outside a call's own sample (a live session's batches and frames).
  void RecordStages(const StageTimings& timings);
  // Replaces the scrape-time gauge source (may be empty).
  void SetGaugeSource(std::function<std::vector<Gauge>()> source);
  // The whole exposition text (Prometheus text format 0.0.4).
  std::string Render() const;

 private:
  std::string ModelLabel(const std::string& model, bool ok);

  const std::string server_;
  const int max_model_labels_;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Counter>* frames_;
  prometheus::Family<prometheus::Histogram>* duration_;
  prometheus::Family<prometheus::Histogram>* session_duration_;
  prometheus::Histogram* queue_wait_;
  prometheus::Histogram* inference_;
  prometheus::Histogram* audio_;
  prometheus::Histogram* composite_;
  prometheus::Histogram* encode_;
  mutable std::mutex mu_;
  std::set<std::string, std::less<>> model_labels_;
  std::function<std::vector<Gauge>()> gauge_source_;
};

// The content type of Render's text.
inline constexpr const char* kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace lipsync::rpc
