// Rate limiter (deterministic, with an injected clock), audit line format, metrics text
// and the /metrics HTTP endpoint over a real loopback socket.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "common/loopback_http.h"
#include "rpc/audit_log.h"
#include "rpc/metrics.h"
#include "rpc/rate_limiter.h"
#include "rpc/server_ops.h"

namespace lipsync::rpc {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using namespace std::chrono_literals;

struct FakeTime {
  std::chrono::steady_clock::time_point now{std::chrono::steady_clock::time_point() + 1h};
  RateLimiter::Clock clock() {
    return [this] { return now; };
  }
};

TEST(RateLimiterTest, OffWhenRateIsZero) {
  RateLimiter limiter({0, 0});
  EXPECT_FALSE(limiter.enabled());
  for (int i = 0; i < 1000; ++i) EXPECT_TRUE(limiter.Admit("a", 1000).ok());
  EXPECT_EQ(limiter.bucket_count(), 0u);
}

TEST(RateLimiterTest, BurstThenRefillAtTheRate) {
  FakeTime time;
  RateLimiter limiter({/*frames_per_second=*/25, /*burst_frames=*/50}, time.clock());
  EXPECT_TRUE(limiter.Admit("t", 24).ok());
  EXPECT_TRUE(limiter.Admit("t", 24).ok());  // 2 left
  Status refused = limiter.Admit("t", 24);
  ASSERT_EQ(refused.code(), StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.message(), HasSubstr("model 't'"));
  EXPECT_THAT(refused.message(), HasSubstr("limit is 25 frames/s per model (burst 50 frames)"));
  // 22 frames missing at 25/s: 0.88 s.
  EXPECT_THAT(refused.message(), HasSubstr("retry after 0.88 s"));
  time.now += 870ms;
  EXPECT_FALSE(limiter.Admit("t", 24).ok());  // a refusal takes nothing
  time.now += 10ms;
  EXPECT_TRUE(limiter.Admit("t", 24).ok());
  // Other tenants have their own buckets.
  EXPECT_TRUE(limiter.Admit("u", 50).ok());
  EXPECT_FALSE(limiter.Admit("u", 1).ok());
  // Refill stops at the burst.
  time.now += 1h;
  EXPECT_TRUE(limiter.Admit("u", 50).ok());
  EXPECT_FALSE(limiter.Admit("u", 1).ok());
}

TEST(RateLimiterTest, DefaultBurstIsOneSecondAndOversizedRequestsWaitForAFullBucket) {
  FakeTime time;
  RateLimiter limiter({10, 0}, time.clock());
  EXPECT_DOUBLE_EQ(limiter.burst_frames(), 10);
  EXPECT_TRUE(limiter.Admit("t", 30).ok());  // full bucket: admitted, 20 in debt
  Status refused = limiter.Admit("t", 1);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.message(), HasSubstr("retry after 2.1 s"));
  time.now += 2100ms;
  EXPECT_TRUE(limiter.Admit("t", 1).ok());
}

TEST(RateLimiterTest, IdleTenantsAreForgottenSoMemoryStaysBounded) {
  FakeTime time;
  RateLimiter limiter({25, 50}, time.clock());
  for (int i = 0; i < 11000; ++i) ASSERT_TRUE(limiter.Admit("tenant" + std::to_string(i), 24).ok());
  EXPECT_EQ(limiter.bucket_count(), 11000u);
  // 2 s refill everything; the next call sweeps the full buckets.
  time.now += 2s;
  EXPECT_TRUE(limiter.Admit("active", 1).ok());
  EXPECT_EQ(limiter.bucket_count(), 1u);
  // A forgotten tenant starts with a full bucket, exactly as if it had been kept.
  EXPECT_TRUE(limiter.Admit("tenant7", 50).ok());
  EXPECT_FALSE(limiter.Admit("tenant7", 1).ok());
}

TEST(RateLimiterTest, ThreadsShareOneBucketWithoutLosingTokens) {
  FakeTime time;  // frozen clock: exactly `burst` frames may pass in all
  RateLimiter limiter({1, 1000}, time.clock());
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 500; ++i) {
        if (limiter.Admit("shared", 1).ok()) ++admitted;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(admitted.load(), 1000);
}

TEST(AuditLogTest, LineIsOneJsonObjectWithEveryField) {
  AuditRecord record;
  record.time = std::chrono::system_clock::time_point(std::chrono::milliseconds(1700000000123));
  record.server = "compositing";
  record.peer = "ipv4:127.0.0.1:5000";
  record.method = "InferBatchComposite";
  record.model_id = "bad\"id\n\xff";
  record.frames = 24;
  record.code = "RESOURCE_EXHAUSTED";
  record.error = "rate limit";
  record.duration_ms = 12.34567;
  record.bytes_in = 100;
  record.bytes_out = 0;
  const std::string line = FormatAuditLine(record);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  auto json = nlohmann::json::parse(line);
  EXPECT_EQ(json["time"], "2023-11-14T22:13:20.123Z");
  EXPECT_EQ(json["server"], "compositing");
  EXPECT_EQ(json["peer"], "ipv4:127.0.0.1:5000");
  EXPECT_EQ(json["method"], "InferBatchComposite");
  EXPECT_EQ(json["frames"], 24);
  EXPECT_EQ(json["code"], "RESOURCE_EXHAUSTED");
  EXPECT_EQ(json["error"], "rate limit");
  EXPECT_NEAR(json["duration_ms"].get<double>(), 12.345, 1e-9);
  EXPECT_EQ(json["bytes_in"], 100);
  EXPECT_THAT(json["model_id"].get<std::string>(), HasSubstr("bad\"id\n"));
}

TEST(AuditLogTest, UnwritablePathIsAnError) {
  auto log = AuditLog::Open("/nonexistent-dir/audit.jsonl");
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(log.status().message(), HasSubstr("/nonexistent-dir/audit.jsonl"));
}

std::string HttpGet(int port, const std::string& request) {
  return lipsync::testing::LoopbackHttp(port, request);
}

TEST(MetricsTest, CountersHistogramsAndScrapeTimeValues) {
  MetricsRegistry registry("inference");
  StageTimings timed;
  timed.queue_wait_ms = 10;
  timed.inference_ms = 400;
  registry.Record({"InferBatch", "m1", "OK", 24, 500, false, timed});
  timed.queue_wait_ms = 30;
  timed.inference_ms = 60;
  registry.Record({"InferBatch", "m1", "OK", 8, 100, false, timed});
  registry.Record({"InferBatch", "m1", "RESOURCE_EXHAUSTED", 24, 1, false, {}});
  registry.Record({"StreamSession", "m1", "OK", 250, 10000, true, {}});
  registry.SetGaugeSource([] {
    return std::vector<Gauge>{
        {"lipsync_loaded_models", "Models.", {}, 3},
        {"lipsync_gpu_memory_used_bytes", "GPU.", {{"gpu", "0"}}, 1024},
        {"lipsync_model_loads_total", "Loads.", {}, 5, Gauge::Kind::kCounter},
        {"lipsync_model_load_duration_seconds", "Load time.", {}, 2.5, Gauge::Kind::kSummary, 5}};
  });
  const std::string text = registry.Render();
  EXPECT_THAT(text, HasSubstr("lipsync_requests_total{server=\"inference\",code=\"OK\","
                              "method=\"InferBatch\",model=\"m1\"} 2\n"));
  EXPECT_THAT(
      text,
      HasSubstr("lipsync_requests_total{server=\"inference\",code=\"RESOURCE_EXHAUSTED\",method="
                "\"InferBatch\",model=\"m1\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("lipsync_frames_total{server=\"inference\",code=\"OK\","
                              "method=\"InferBatch\",model=\"m1\"} 32\n"));
  EXPECT_THAT(text, HasSubstr("lipsync_frames_total{server=\"inference\",code=\"OK\","
                              "method=\"StreamSession\",model=\"m1\"} 250\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE lipsync_queue_wait_seconds histogram\n"));
  EXPECT_THAT(text, HasSubstr("lipsync_queue_wait_seconds_sum{server=\"inference\"} 0.04\n"));
  EXPECT_THAT(text, HasSubstr("lipsync_queue_wait_seconds_count{server=\"inference\"} 2\n"));
  EXPECT_THAT(text,
              HasSubstr("lipsync_queue_wait_seconds_bucket{server=\"inference\",le=\"0.01\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("lipsync_inference_seconds_sum{server=\"inference\"} 0.46\n"));
  EXPECT_THAT(text, HasSubstr("lipsync_compositing_seconds_count{server=\"inference\"} 0\n"));
  // Unary calls and live sessions have their own duration histograms.
  EXPECT_THAT(text, HasSubstr("lipsync_request_duration_seconds_count{server=\"inference\","
                              "method=\"InferBatch\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("lipsync_session_duration_seconds_count{server=\"inference\","
                              "method=\"StreamSession\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE lipsync_loaded_models gauge\n"));
  EXPECT_THAT(text,
              HasSubstr("lipsync_gpu_memory_used_bytes{server=\"inference\",gpu=\"0\"} 1024\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE lipsync_model_loads_total counter\n"));
  EXPECT_THAT(text, HasSubstr("lipsync_model_loads_total{server=\"inference\"} 5\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE lipsync_model_load_duration_seconds summary\n"));
  EXPECT_THAT(text,
              HasSubstr("lipsync_model_load_duration_seconds_count{server=\"inference\"} 5\n"));
}

TEST(MetricsTest, ModelLabelsAreBounded) {
  MetricsRegistry registry("inference", /*max_model_labels=*/2);
  // A failed call for a model never seen succeeding: "_other" (may not exist at all).
  registry.Record({"InferBatch", "ghost", "NOT_FOUND", 1, 1, false, {}});
  registry.Record({"InferBatch", "a", "OK", 1, 1, false, {}});
  registry.Record({"InferBatch", "a", "INTERNAL", 1, 1, false, {}});  // keeps its label
  registry.Record({"InferBatch", "b", "OK", 1, 1, false, {}});
  registry.Record({"InferBatch", "c", "OK", 1, 1, false, {}});  // over the bound
  registry.Record({"Health", "", "OK", 0, 1, false, {}});
  const std::string text = registry.Render();
  EXPECT_THAT(text, HasSubstr("code=\"NOT_FOUND\",method=\"InferBatch\",model=\"_other\""));
  EXPECT_THAT(text, HasSubstr("code=\"INTERNAL\",method=\"InferBatch\",model=\"a\""));
  EXPECT_THAT(text, HasSubstr("code=\"OK\",method=\"InferBatch\",model=\"b\""));
  EXPECT_THAT(text, HasSubstr("code=\"OK\",method=\"InferBatch\",model=\"_other\""));
  EXPECT_THAT(text, HasSubstr("code=\"OK\",method=\"Health\",model=\"\""));
  EXPECT_THAT(text, Not(HasSubstr("model=\"c\"")));
  EXPECT_THAT(text, Not(HasSubstr("model=\"ghost\"")));
}

TEST(MetricsTest, ServerOpsServesMetricsOverHttp) {
  OpsOptions options;
  options.server_name = "inference";
  options.metrics_port = 0;  // any free port
  auto ops = ServerOps::Create(options);
  ASSERT_TRUE(ops.ok()) << ops.status().ToString();
  const int port = (*ops)->metrics_port();
  ASSERT_GT(port, 0);
  (*ops)->metrics().Record({"InferBatch", "m", "OK", 32, 5, false, {}});
  const std::string ok = HttpGet(port, "GET /metrics HTTP/1.0\r\n\r\n");
  EXPECT_THAT(ok, ::testing::StartsWith("HTTP/1.0 200 OK\r\n"));
  EXPECT_THAT(ok, HasSubstr("text/plain; version=0.0.4"));
  EXPECT_THAT(
      ok, HasSubstr("lipsync_frames_total{server=\"inference\",code=\"OK\",method=\"InferBatch\","
                    "model=\"m\"} 32\n"));
  EXPECT_THAT(ok, HasSubstr("lipsync_request_read_timeouts_total{server=\"inference\"} "));
  EXPECT_THAT(HttpGet(port, "GET / HTTP/1.0\r\n\r\n"), HasSubstr("404 Not Found"));
  EXPECT_THAT(HttpGet(port, "POST /metrics HTTP/1.0\r\n\r\n"), HasSubstr("405"));
  (void)HttpGet(port, std::string(20000, 'x'));  // garbage: no crash, still serving
  EXPECT_THAT(HttpGet(port, "GET /metrics HTTP/1.0\r\n\r\n"), HasSubstr("200 OK"));
  // The port is taken now: a second endpoint on it fails with a message.
  options.metrics_port = port;
  auto second = ServerOps::Create(options);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable);
  options.metrics_port = 0;
  options.metrics_host = "not-an-ip";
  EXPECT_FALSE(ServerOps::Create(options).ok());
}

}  // namespace
}  // namespace lipsync::rpc
