#include "rpc/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <sstream>

namespace lipsync::rpc {
namespace {

// Seconds, for calls (1 ms .. 30 s) and for their stages (0.5 ms .. 5 s).
const prometheus::Histogram::BucketBoundaries kCallBuckets = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
const prometheus::Histogram::BucketBoundaries kStageBuckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
// Live sessions last seconds to hours.
const prometheus::Histogram::BucketBoundaries kSessionBuckets = {1,   5,    15,   60,  300,
                                                                 900, 1800, 3600, 7200};

const char* const kOtherModel = "_other";

prometheus::MetricType TypeOf(Gauge::Kind kind) {
  switch (kind) {
    case Gauge::Kind::kCounter:
      return prometheus::MetricType::Counter;
    case Gauge::Kind::kSummary:
      return prometheus::MetricType::Summary;
    case Gauge::Kind::kGauge:
      break;
  }
  return prometheus::MetricType::Gauge;
}

}  // namespace

MetricsRegistry::MetricsRegistry(std::string server, int max_model_labels)
    : server_(std::move(server)),
      max_model_labels_(max_model_labels),
      registry_(std::make_shared<prometheus::Registry>()) {
  const prometheus::Labels constant{{"server", server_}};
  requests_ = &prometheus::BuildCounter()
                   .Name("lipsync_requests_total")
                   .Help("Calls answered, by method, model and gRPC status code.")
                   .Labels(constant)
                   .Register(*registry_);
  frames_ = &prometheus::BuildCounter()
                 .Name("lipsync_frames_total")
                 .Help(
                     "Frames asked for by calls (live sessions: frames sent), by method, "
                     "model and gRPC status code.")
                 .Labels(constant)
                 .Register(*registry_);
  duration_ = &prometheus::BuildHistogram()
                   .Name("lipsync_request_duration_seconds")
                   .Help("Time from a call's arrival to its answer, by method.")
                   .Labels(constant)
                   .Register(*registry_);
  session_duration_ = &prometheus::BuildHistogram()
                           .Name("lipsync_session_duration_seconds")
                           .Help("Length of live sessions (gRPC and WebSocket), by method.")
                           .Labels(constant)
                           .Register(*registry_);
  auto stage = [&](const char* name, const char* help) {
    return &prometheus::BuildHistogram()
                .Name(name)
                .Help(help)
                .Labels(constant)
                .Register(*registry_)
                .Add({}, kStageBuckets);
  };
  queue_wait_ = stage("lipsync_queue_wait_seconds",
                      "Time a batch waited for an inference worker (scheduler queue).");
  inference_ = stage("lipsync_inference_seconds", "Time running the network (ONNX Runtime Run).");
  audio_ = stage("lipsync_audio_seconds", "Time turning raw audio into the network's features.");
  composite_ = stage("lipsync_compositing_seconds",
                     "Time pasting generated faces back into the backgrounds and encoding (wall).");
  encode_ = stage("lipsync_encode_seconds", "Time encoding output frames (summed over frames).");
}

MetricsRegistry::~MetricsRegistry() = default;

std::string MetricsRegistry::ModelLabel(const std::string& model, bool ok) {
  if (model.empty()) return {};
  std::lock_guard<std::mutex> lock(mu_);
  if (model_labels_.count(model) > 0) return model;
  if (!ok || static_cast<int>(model_labels_.size()) >= max_model_labels_) return kOtherModel;
  model_labels_.insert(model);
  return model;
}

void MetricsRegistry::Record(const CallSample& sample) {
  const std::string model = ModelLabel(sample.model, sample.code == "OK");
  const prometheus::Labels labels{
      {"method", sample.method}, {"model", model}, {"code", sample.code}};
  requests_->Add(labels).Increment();
  if (sample.frames > 0) frames_->Add(labels).Increment(static_cast<double>(sample.frames));
  const double seconds = sample.duration_ms / 1000.0;
  if (sample.stream) {
    session_duration_->Add({{"method", sample.method}}, kSessionBuckets).Observe(seconds);
  } else {
    duration_->Add({{"method", sample.method}}, kCallBuckets).Observe(seconds);
  }
  RecordStages(sample.timings);
}

void MetricsRegistry::RecordStages(const StageTimings& timings) {
  auto observe = [](prometheus::Histogram* histogram, double ms) {
    if (ms >= 0) histogram->Observe(ms / 1000.0);
  };
  observe(queue_wait_, timings.queue_wait_ms);
  observe(inference_, timings.inference_ms);
  observe(audio_, timings.audio_ms);
  observe(composite_, timings.composite_ms);
  observe(encode_, timings.encode_ms);
}

void MetricsRegistry::SetGaugeSource(std::function<std::vector<Gauge>()> source) {
  std::lock_guard<std::mutex> lock(mu_);
  gauge_source_ = std::move(source);
}

std::string MetricsRegistry::Render() const {
  std::function<std::vector<Gauge>()> source;
  {
    std::lock_guard<std::mutex> lock(mu_);
    source = gauge_source_;
  }
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  // Outside every lock: the source may query the server, which may be slow.
  if (source) {
    std::map<std::string, size_t> index;  // name -> position in families
    for (const Gauge& gauge : source()) {
      auto [it, added] = index.try_emplace(gauge.name, families.size());
      if (added) {
        prometheus::MetricFamily family;
        family.name = gauge.name;
        family.help = gauge.help;
        family.type = TypeOf(gauge.kind);
        families.push_back(std::move(family));
      }
      prometheus::MetricFamily& family = families[it->second];
      if (family.type != TypeOf(gauge.kind)) continue;  // one type per name
      prometheus::ClientMetric metric;
      metric.label.push_back({"server", server_});
      for (const auto& [name, value] : gauge.labels) metric.label.push_back({name, value});
      switch (gauge.kind) {
        case Gauge::Kind::kGauge:
          metric.gauge.value = gauge.value;
          break;
        case Gauge::Kind::kCounter:
          metric.counter.value = gauge.value;
          break;
        case Gauge::Kind::kSummary:
          metric.summary.sample_sum = gauge.value;
          metric.summary.sample_count = gauge.count;
          break;
      }
      family.metric.push_back(std::move(metric));
    }
  }
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

}  // namespace lipsync::rpc
