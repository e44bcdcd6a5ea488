// What the test client measured: one record per batch, and the run's summary (FPS,
// latency percentiles, bytes per frame each way). Pure functions and plain values;
// thread-compatible (callers serialize access to a record vector).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lipsync::client {

struct BatchRecord {
  int stream = 0;       // which of the --concurrency streams sent it
  int batch_index = 0;  // position in that stream
  int frames = 0;       // frames requested
  bool ok = false;
  std::string error;           // "UNAVAILABLE: ..." when !ok
  double latency_ms = 0;       // client wall time of the call
  double server_total_ms = 0;  // as reported by the server
  double inference_ms = 0;
  double composite_ms = 0;
  int64_t request_bytes = 0;      // serialized request size
  int64_t response_bytes = 0;     // serialized response size
  bool loaded_on_demand = false;  // the server loaded the model or avatar for this batch
};

struct ClientSummary {
  int batches = 0;
  int failed_batches = 0;
  int64_t frames = 0;  // frames received (successful batches only)
  double wall_seconds = 0;
  double fps = 0;  // frames / wall_seconds, all streams together
  double latency_p50_ms = 0;
  double latency_p99_ms = 0;
  double latency_mean_ms = 0;
  double latency_max_ms = 0;
  double server_total_mean_ms = 0;
  double inference_mean_ms = 0;
  double composite_mean_ms = 0;
  double request_bytes_per_frame = 0;
  double response_bytes_per_frame = 0;
};

// The p-th percentile (0..100) by linear interpolation between closest ranks
// (numpy's default); 0 for an empty input.
double Percentile(std::vector<double> values, double p);

// Latency and byte figures are over successful batches only.
ClientSummary Summarize(const std::vector<BatchRecord>& records, double wall_seconds);

// One line per batch, e.g. "stream 0 batch   3: 24 frames  512.3 ms (server 480.1,
// inference 400.2, composite 60.3)" or the error.
std::string FormatBatch(const BatchRecord& record);
// A few lines: batches, frames, FPS, latencies, bytes per frame.
std::string FormatSummary(const ClientSummary& summary);

}  // namespace lipsync::client
