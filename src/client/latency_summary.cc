#include "client/latency_summary.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace lipsync::client {

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  double rank = std::clamp(p, 0.0, 100.0) / 100.0 * double(values.size() - 1);
  size_t lo = size_t(std::floor(rank));
  size_t hi = std::min(lo + 1, values.size() - 1);
  double frac = rank - double(lo);
  return values[lo] + (values[hi] - values[lo]) * frac;
}

ClientSummary Summarize(const std::vector<BatchRecord>& records, double wall_seconds) {
  ClientSummary s;
  s.wall_seconds = wall_seconds;
  std::vector<double> latencies;
  int64_t request_bytes = 0, response_bytes = 0;
  double server_sum = 0, inference_sum = 0, composite_sum = 0;
  for (const auto& r : records) {
    ++s.batches;
    if (!r.ok) {
      ++s.failed_batches;
      continue;
    }
    s.frames += r.frames;
    latencies.push_back(r.latency_ms);
    request_bytes += r.request_bytes;
    response_bytes += r.response_bytes;
    server_sum += r.server_total_ms;
    inference_sum += r.inference_ms;
    composite_sum += r.composite_ms;
  }
  if (!latencies.empty()) {
    double n = double(latencies.size());
    s.latency_p50_ms = Percentile(latencies, 50);
    s.latency_p99_ms = Percentile(latencies, 99);
    s.latency_max_ms = *std::max_element(latencies.begin(), latencies.end());
    double sum = 0;
    for (double v : latencies) sum += v;
    s.latency_mean_ms = sum / n;
    s.server_total_mean_ms = server_sum / n;
    s.inference_mean_ms = inference_sum / n;
    s.composite_mean_ms = composite_sum / n;
  }
  if (s.frames > 0) {
    s.request_bytes_per_frame = double(request_bytes) / double(s.frames);
    s.response_bytes_per_frame = double(response_bytes) / double(s.frames);
  }
  if (wall_seconds > 0) s.fps = double(s.frames) / wall_seconds;
  return s;
}

std::string FormatBatch(const BatchRecord& r) {
  char line[512];
  if (!r.ok) {
    std::snprintf(line, sizeof line, "stream %d batch %3d: FAILED after %.1f ms: %s", r.stream,
                  r.batch_index, r.latency_ms, r.error.c_str());
    return line;
  }
  std::snprintf(line, sizeof line,
                "stream %d batch %3d: %d frames %8.1f ms (server %.1f, inference %.1f, "
                "composite %.1f) %.0f B/frame in",
                r.stream, r.batch_index, r.frames, r.latency_ms, r.server_total_ms, r.inference_ms,
                r.composite_ms, r.frames > 0 ? double(r.response_bytes) / r.frames : 0.0);
  return line;
}

static std::string HumanBytes(double bytes) {
  char buf[64];
  if (bytes >= 1024.0 * 1024.0) {
    std::snprintf(buf, sizeof buf, "%.2f MB", bytes / (1024.0 * 1024.0));
  } else if (bytes >= 1024.0) {
    std::snprintf(buf, sizeof buf, "%.1f KB", bytes / 1024.0);
  } else {
    std::snprintf(buf, sizeof buf, "%.0f B", bytes);
  }
  return buf;
}

std::string FormatSummary(const ClientSummary& s) {
  char buf[1024];
  std::snprintf(buf, sizeof buf,
                "Summary\n"
                "  batches:        %d (%d failed)\n"
                "  frames:         %lld in %.2f s\n"
                "  throughput:     %.1f FPS\n"
                "  latency/batch:  p50 %.1f ms, p99 %.1f ms, mean %.1f ms, max %.1f ms\n"
                "  server (mean):  total %.1f ms, inference %.1f ms, composite %.1f ms\n"
                "  bytes/frame:    %s sent, %s received\n",
                s.batches, s.failed_batches, static_cast<long long>(s.frames), s.wall_seconds,
                s.fps, s.latency_p50_ms, s.latency_p99_ms, s.latency_mean_ms, s.latency_max_ms,
                s.server_total_mean_ms, s.inference_mean_ms, s.composite_mean_ms,
                HumanBytes(s.request_bytes_per_frame).c_str(),
                HumanBytes(s.response_bytes_per_frame).c_str());
  return buf;
}

}  // namespace lipsync::client
