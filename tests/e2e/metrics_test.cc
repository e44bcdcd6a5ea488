// Metrics on real servers on loopback: an inference server behind its gRPC service and
// a compositing server reaching it over gRPC, each with its /metrics endpoint on the
// product's HTTP server. After known traffic:
//  - Debian's `promtool check metrics` accepts both servers' output;
//  - the counters and histogram counts are exactly the traffic sent;
//  - `promtool check rules` accepts deploy/prometheus/alerts.yaml;
//  - every metric the alert rules, the adapter rules, the HPA and the Grafana dashboard
//    name exists in the servers' real output (NVML's GPU metrics only where a GPU is).
// GCC 12 reports a false -Wmaybe-uninitialized inside std::regex's NFA (GCC PR 105562)
// when this file is built with -fsanitize=address (scripts/sanitize.sh asan); the
// warning is placed in <functional>, which gtest includes first, so the pragma leads.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "common/loopback_http.h"
#include "e2e/e2e_cluster.h"
#include "inference/gpu_info.h"

namespace lipsync::e2e {
namespace {

namespace pb = ::compositing;
namespace ipb = ::inference;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

constexpr const char* kPromtool = "/usr/bin/promtool";

// One exposition sample: name, labels, value.
struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// Parses the text format's sample lines (label values here hold no escaped quotes).
std::vector<Sample> ParseSamples(const std::string& text) {
  std::vector<Sample> samples;
  std::istringstream in(text);
  static const std::regex label_re(R"re(([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)")re");
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    Sample s;
    const size_t brace = line.find('{');
    const size_t space = line.rfind(' ');
    if (space == std::string::npos) continue;
    if (brace != std::string::npos && brace < space) {
      s.name = line.substr(0, brace);
      const std::string labels = line.substr(brace + 1, line.rfind('}') - brace - 1);
      for (std::sregex_iterator it(labels.begin(), labels.end(), label_re), end; it != end; ++it) {
        s.labels[(*it)[1]] = (*it)[2];
      }
    } else {
      s.name = line.substr(0, line.find(' '));
    }
    s.value = std::stod(line.substr(space + 1));
    samples.push_back(std::move(s));
  }
  return samples;
}

// The value of the one sample named `name` whose labels include `labels`; -1 if none.
double Value(const std::vector<Sample>& samples, const std::string& name,
             const std::map<std::string, std::string>& labels = {}) {
  double found = -1;
  int matches = 0;
  for (const Sample& s : samples) {
    if (s.name != name) continue;
    bool all = true;
    for (const auto& [k, v] : labels) {
      auto it = s.labels.find(k);
      if (it == s.labels.end() || it->second != v) all = false;
    }
    if (all) {
      found = s.value;
      ++matches;
    }
  }
  EXPECT_LE(matches, 1) << name << ": more than one series matches";
  return found;
}

std::string HttpGet(int port, const std::string& request) {
  return lipsync::testing::LoopbackHttp(port, request);
}

std::string MetricsBody(int port) {
  const std::string answer = HttpGet(port, "GET /metrics HTTP/1.0\r\n\r\n");
  EXPECT_THAT(answer, ::testing::StartsWith("HTTP/1.0 200 OK\r\n"));
  EXPECT_THAT(answer, HasSubstr("Content-Type: text/plain; version=0.0.4"));
  const size_t end = answer.find("\r\n\r\n");
  return end == std::string::npos ? std::string() : answer.substr(end + 4);
}

struct ShellRun {
  int status = -1;
  std::string output;
};

// Runs `command` through the shell, output (stdout + stderr) captured.
ShellRun Shell(const std::string& command) {
  ShellRun run;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return run;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) run.output.append(buffer, n);
  const int status = ::pclose(pipe);
  run.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

grpc::Status Composite(pb::CompositingService::Stub& stub, const std::string& model, int batch) {
  pb::CompositeBatchRequest request;
  request.set_model_id(model);
  request.set_batch_size(batch);
  request.set_audio_features(std::string(8192 * 4, '\0'));
  pb::CompositeBatchResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 30s);
  return stub.InferBatchComposite(&context, request, &response);
}

grpc::Status Infer(ipb::InferenceService::Stub& stub, const std::string& model, int batch) {
  constexpr size_t kPlane = 320 * 320;
  ipb::InferBatchRequest request;
  request.set_model_id(model);
  request.set_batch_size(batch);
  const size_t frames = static_cast<size_t>(std::max(batch, 1));
  request.set_visual_frames(std::string(frames * 6 * kPlane * 4, '\0'));
  request.set_audio_features(std::string(frames * 8192 * 4, '\0'));
  ipb::InferBatchResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 30s);
  return stub.InferBatch(&context, request, &response);
}

class MetricsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::access(kPromtool, X_OK) != 0) {
      GTEST_FAIL() << kPromtool << " is missing: expected Debian's prometheus package "
                   << "(scripts/setup.sh installs it)";
    }
    // Both servers, split over gRPC, each with /metrics on a free port.
    servers_ = new Cluster(Mode::kSplit);
    ASSERT_TRUE(servers_->ok());
    // Known traffic. Compositing: two good batches of 3, one for an unknown tenant.
    for (int i = 0; i < 2; ++i) {
      grpc::Status s = Composite(servers_->stub(), "identity", 3);
      ASSERT_TRUE(s.ok()) << s.error_message();
    }
    EXPECT_EQ(Composite(servers_->stub(), "nosuch", 2).error_code(), grpc::StatusCode::NOT_FOUND);
    // Inference, straight: an unknown model and a malformed batch of a known one.
    EXPECT_EQ(Infer(*servers_->inference_stub(), "nosuch", 1).error_code(),
              grpc::StatusCode::NOT_FOUND);
    EXPECT_EQ(Infer(*servers_->inference_stub(), "identity", 0).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
    // A prefetch hint straight to the inference server, for a tenant it has not seen
    // (queued: the id is looked up in the background).
    {
      ipb::PrefetchModelRequest request;
      request.set_model_id("unseen");
      ipb::PrefetchModelResponse response;
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + 30s);
      grpc::Status s = servers_->inference_stub()->PrefetchModel(&context, request, &response);
      EXPECT_TRUE(s.ok()) << s.error_message();
    }
    inference_text_ = new std::string(MetricsBody(servers_->inference_metrics_port()));
    compositing_text_ = new std::string(MetricsBody(servers_->compositing_metrics_port()));
  }
  static void TearDownTestSuite() {
    delete servers_;
    delete inference_text_;
    delete compositing_text_;
  }

  static Cluster* servers_;
  static std::string* inference_text_;
  static std::string* compositing_text_;
};

Cluster* MetricsTest::servers_ = nullptr;
std::string* MetricsTest::inference_text_ = nullptr;
std::string* MetricsTest::compositing_text_ = nullptr;

TEST_F(MetricsTest, PromtoolAcceptsBothServersOutput) {
  for (const std::string* text : {inference_text_, compositing_text_}) {
    const fs::path file = ModelRoot() / "metrics.txt";
    std::ofstream(file) << *text;
    const ShellRun run = Shell(std::string(kPromtool) + " check metrics < " + file.string());
    EXPECT_EQ(run.status, 0) << run.output << "\n--- exposition ---\n" << *text;
  }
}

TEST_F(MetricsTest, CompositingCountersMatchTheTraffic) {
  const auto s = ParseSamples(*compositing_text_);
  const std::map<std::string, std::string> ok{{"server", "compositing"},
                                              {"method", "InferBatchComposite"},
                                              {"model", "identity"},
                                              {"code", "OK"}};
  const std::map<std::string, std::string> unknown{
      {"method", "InferBatchComposite"}, {"model", "_other"}, {"code", "NOT_FOUND"}};
  EXPECT_EQ(Value(s, "lipsync_requests_total", ok), 2);
  EXPECT_EQ(Value(s, "lipsync_frames_total", ok), 6);
  EXPECT_EQ(Value(s, "lipsync_requests_total", unknown), 1);
  EXPECT_EQ(Value(s, "lipsync_frames_total", unknown), 2);
  EXPECT_EQ(Value(s, "lipsync_request_duration_seconds_count", {{"method", "InferBatchComposite"}}),
            3);
  EXPECT_EQ(Value(s, "lipsync_request_duration_seconds_bucket",
                  {{"method", "InferBatchComposite"}, {"le", "+Inf"}}),
            3);
  // Stages of the two good calls; audio came as features (no audio stage).
  EXPECT_EQ(Value(s, "lipsync_inference_seconds_count"), 2);
  EXPECT_EQ(Value(s, "lipsync_queue_wait_seconds_count"), 2);
  EXPECT_EQ(Value(s, "lipsync_compositing_seconds_count"), 2);
  EXPECT_EQ(Value(s, "lipsync_encode_seconds_count"), 2);
  EXPECT_EQ(Value(s, "lipsync_audio_seconds_count"), 0);
  EXPECT_EQ(Value(s, "lipsync_loaded_models"), 1);
  EXPECT_EQ(Value(s, "lipsync_live_sessions"), 0);
  EXPECT_GT(Value(s, "lipsync_cache_memory_bytes", {{"cache", "avatars"}}), 0);
  EXPECT_GE(Value(s, "lipsync_cache_memory_bytes", {{"cache", "idle_loops"}}), 0);
  // Six output frames, each background asked of the avatar at least once (the visual
  // input and the paste-back; the prepared-file build reads frames too): a hit or a miss.
  EXPECT_GE(Value(s, "lipsync_background_cache_hits_total") +
                Value(s, "lipsync_background_cache_misses_total"),
            6);
  EXPECT_GT(Value(s, "lipsync_background_cache_misses_total"), 0);
  // A prefetch hint per cold tenant (identity's first batch, nosuch), sent over gRPC.
  EXPECT_EQ(Value(s, "lipsync_model_prefetches_total", {{"result", "sent"}}), 2);
  for (const char* result : {"queued", "loading", "already_loaded", "dropped", "failed"}) {
    EXPECT_EQ(Value(s, "lipsync_model_prefetches_total", {{"result", result}}), 0) << result;
  }
}

TEST_F(MetricsTest, InferenceCountersMatchTheTraffic) {
  const auto s = ParseSamples(*inference_text_);
  const std::map<std::string, std::string> ok{
      {"server", "inference"}, {"method", "InferBatch"}, {"model", "identity"}, {"code", "OK"}};
  EXPECT_EQ(Value(s, "lipsync_requests_total", ok), 2);  // the compositing server's two
  EXPECT_EQ(Value(s, "lipsync_frames_total", ok), 6);
  // The unknown model's NOT_FOUND, counted once. The compositing server's prefetch hint for
  // the unknown tenant was accepted (a hint always is), so the id may carry its own label.
  const double other =
      Value(s, "lipsync_requests_total",
            {{"method", "InferBatch"}, {"model", "_other"}, {"code", "NOT_FOUND"}});
  const double named =
      Value(s, "lipsync_requests_total",
            {{"method", "InferBatch"}, {"model", "nosuch"}, {"code", "NOT_FOUND"}});
  EXPECT_EQ(std::max(other, 0.0) + std::max(named, 0.0), 1);
  // A known model keeps its label on a failed call; a batch of 0 asks for no frames.
  EXPECT_EQ(Value(s, "lipsync_requests_total",
                  {{"method", "InferBatch"}, {"model", "identity"}, {"code", "INVALID_ARGUMENT"}}),
            1);
  EXPECT_EQ(Value(s, "lipsync_frames_total", {{"model", "identity"}, {"code", "INVALID_ARGUMENT"}}),
            -1);
  EXPECT_EQ(Value(s, "lipsync_request_duration_seconds_count", {{"method", "InferBatch"}}), 4);
  EXPECT_EQ(Value(s, "lipsync_inference_seconds_count"), 2);
  EXPECT_EQ(Value(s, "lipsync_queue_wait_seconds_count"), 2);
  EXPECT_EQ(Value(s, "lipsync_compositing_seconds_count"), 0);
  // The model registry: one load, nothing evicted or failed.
  EXPECT_EQ(Value(s, "lipsync_loaded_models"), 1);
  EXPECT_EQ(Value(s, "lipsync_model_loads_total"), 1);
  EXPECT_EQ(Value(s, "lipsync_model_load_duration_seconds_count"), 1);
  EXPECT_EQ(Value(s, "lipsync_model_load_failures_total"), 0);
  EXPECT_EQ(Value(s, "lipsync_model_evictions_total"), 0);
  EXPECT_GT(Value(s, "lipsync_model_load_seconds", {{"model", "identity"}}), 0);
  EXPECT_GT(Value(s, "lipsync_model_memory_bytes", {{"device", "cpu"}}), 0);
  // Prefetch hints queued: the direct one for "unseen", and the compositing server's (if
  // they arrived before the scrape and found their model neither loaded nor loading).
  EXPECT_GE(Value(s, "lipsync_model_prefetches_total", {{"result", "queued"}}), 1);
  EXPECT_LE(Value(s, "lipsync_model_prefetches_total", {{"result", "queued"}}), 3);
  EXPECT_EQ(Value(s, "lipsync_model_prefetches_total", {{"result", "dropped"}}), 0);
  EXPECT_EQ(Value(s, "lipsync_queue_depth"), 0);
  EXPECT_GT(Value(s, "lipsync_queue_capacity"), 0);
  if (!inference::NvmlAvailable() || inference::GpuCount() == 0) {
    EXPECT_THAT(*inference_text_, ::testing::Not(HasSubstr("lipsync_gpu_")));
  } else {
    EXPECT_GT(Value(s, "lipsync_gpu_memory_total_bytes", {{"gpu", "0"}}), 0);
  }
}

TEST_F(MetricsTest, EndpointAnswersOnlyMetrics) {
  const int port = servers_->inference_metrics_port();
  EXPECT_THAT(HttpGet(port, "GET / HTTP/1.0\r\n\r\n"), HasSubstr("404 Not Found"));
  EXPECT_THAT(HttpGet(port, "POST /metrics HTTP/1.0\r\n\r\n"), HasSubstr("405"));
  const std::string head = HttpGet(port, "HEAD /metrics HTTP/1.0\r\n\r\n");
  EXPECT_THAT(head, ::testing::StartsWith("HTTP/1.0 200 OK\r\n"));
  EXPECT_THAT(head, ::testing::EndsWith("\r\n\r\n"));  // no body
  // Garbage does not stop the endpoint.
  (void)HttpGet(port, std::string(20000, 'x'));
  EXPECT_THAT(MetricsBody(port), HasSubstr("lipsync_requests_total"));
}

TEST(AlertRulesTest, PromtoolAcceptsTheAlertRules) {
  const fs::path rules = fs::path(LIPSYNC_SOURCE_DIR) / "deploy" / "prometheus" / "alerts.yaml";
  ASSERT_TRUE(fs::exists(rules)) << rules;
  const ShellRun run = Shell(std::string(kPromtool) + " check rules " + rules.string());
  EXPECT_EQ(run.status, 0) << run.output;
  EXPECT_THAT(run.output, HasSubstr("SUCCESS"));
}

TEST_F(MetricsTest, EveryMetricTheDeployFilesNameExists) {
  std::set<std::string> exported;
  for (const std::string* text : {inference_text_, compositing_text_}) {
    for (const Sample& s : ParseSamples(*text)) exported.insert(s.name);
  }
  const bool gpu = inference::NvmlAvailable() && inference::GpuCount() > 0;
  const fs::path deploy = fs::path(LIPSYNC_SOURCE_DIR) / "deploy";
  const std::regex name_re("lipsync_[a-z0-9_]*[a-z0-9]");
  int named = 0;
  for (const char* file : {"prometheus/alerts.yaml", "prometheus/adapter-rules.yaml",
                           "k8s/hpa.yaml", "grafana/lipsync-dashboard.json"}) {
    const std::string text = ReadFile(deploy / file);
    ASSERT_FALSE(text.empty()) << file;
    std::set<std::string> names;
    for (std::sregex_iterator it(text.begin(), text.end(), name_re), end; it != end; ++it) {
      names.insert(it->str());
    }
    EXPECT_FALSE(names.empty()) << file << " names no lipsync_ metric";
    for (const std::string& name : names) {
      ++named;
      // A histogram or summary is named by its base name or one of its series.
      const bool found = exported.count(name) > 0 || exported.count(name + "_count") > 0;
      if (!found && !gpu && name.rfind("lipsync_gpu_", 0) == 0) continue;  // NVML: no GPU here
      EXPECT_TRUE(found) << file << " names " << name
                         << ", which neither server exports (see docs/OPERATIONS.md)";
    }
  }
  EXPECT_GT(named, 20);
}

}  // namespace
}  // namespace lipsync::e2e
