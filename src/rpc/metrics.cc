#include "rpc/metrics.h"

#include <cstdio>

namespace lipsync::rpc {
namespace {

std::string Number(double value) {
  char text[40];
  std::snprintf(text, sizeof(text), "%.9g", value);
  return text;
}

// Label values are ours or method names, but escape anyway: the format demands it.
std::string Escape(const std::string& value) {
  std::string out;
  for (char ch : value) {
    if (ch == '\\' || ch == '"') out += '\\';
    if (ch == '\n') {
      out += "\\n";
      continue;
    }
    out += ch;
  }
  return out;
}

void Header(std::string* out, const std::string& name, const char* type, const char* help) {
  *out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

}  // namespace

void MetricsRegistry::Record(const CallSample& sample) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_[{sample.method, sample.code}];
  Sum& duration = durations_[sample.method];
  duration.seconds += sample.duration_ms / 1000.0;
  ++duration.count;
  if (sample.code == "OK") frames_ += sample.frames;
  auto add = [](Sum& sum, double ms) {
    if (ms < 0) return;
    sum.seconds += ms / 1000.0;
    ++sum.count;
  };
  add(queue_wait_, sample.queue_wait_ms);
  add(inference_, sample.inference_ms);
  add(composite_, sample.composite_ms);
}

void MetricsRegistry::SetGaugeSource(std::function<std::vector<Gauge>()> source) {
  std::lock_guard<std::mutex> lock(mu_);
  gauge_source_ = std::move(source);
}

std::string MetricsRegistry::Render() const {
  std::function<std::vector<Gauge>()> source;
  std::string out;
  const std::string server = "server=\"" + Escape(server_) + "\"";
  {
    std::lock_guard<std::mutex> lock(mu_);
    source = gauge_source_;
    Header(&out, "lipsync_requests_total", "counter", "RPCs answered, by method and status code.");
    for (const auto& [key, count] : requests_) {
      out += "lipsync_requests_total{" + server + ",method=\"" + Escape(key.first) + "\",code=\"" +
             Escape(key.second) + "\"} " + std::to_string(count) + "\n";
    }
    Header(&out, "lipsync_frames_total", "counter", "Frames returned by successful calls.");
    out += "lipsync_frames_total{" + server + "} " + std::to_string(frames_) + "\n";
    Header(&out, "lipsync_request_duration_seconds", "summary",
           "Time from the call's arrival to its answer, by method.");
    for (const auto& [method, sum] : durations_) {
      const std::string labels = "{" + server + ",method=\"" + Escape(method) + "\"}";
      out += "lipsync_request_duration_seconds_sum" + labels + " " + Number(sum.seconds) + "\n";
      out += "lipsync_request_duration_seconds_count" + labels + " " + std::to_string(sum.count) +
             "\n";
    }
    auto summary = [&](const char* name, const char* help, const Sum& sum) {
      Header(&out, name, "summary", help);
      out += std::string(name) + "_sum{" + server + "} " + Number(sum.seconds) + "\n";
      out += std::string(name) + "_count{" + server + "} " + std::to_string(sum.count) + "\n";
    };
    summary("lipsync_queue_wait_seconds", "Time requests waited for an inference worker.",
            queue_wait_);
    summary("lipsync_inference_seconds", "Time spent running the network.", inference_);
    summary("lipsync_composite_seconds", "Time spent compositing and encoding frames.", composite_);
  }
  // Outside the lock: the source may query the server, which may be slow.
  if (source) {
    std::string last_name;
    for (const Gauge& gauge : source()) {
      if (gauge.name != last_name) {
        Header(&out, gauge.name, "gauge", gauge.help.c_str());
        last_name = gauge.name;
      }
      std::string labels = server;
      if (!gauge.labels.empty()) labels += "," + gauge.labels;
      out += gauge.name + "{" + labels + "} " + Number(gauge.value) + "\n";
    }
  }
  return out;
}

}  // namespace lipsync::rpc
