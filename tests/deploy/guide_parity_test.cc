// The deployment guide's behaviours that are configuration, checked on real servers on
// loopback (the compositing server from its config through ServerOptionsFromConfig,
// calling the in-process InferenceServer on the e2e fixtures' generated tenants):
//  - server.legacy_errors: failures answered status OK with success=false + error, as
//    the guide's clients expect; the audit log keeps the real code;
//  - logging.log_compositing_times: one INFO line per batch at the guide's default level;
//  - go_package options in the protos (descriptors compiled into the binary).
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "common/log.h"
#include "compositing.grpc.pb.h"
#include "e2e/e2e_cluster.h"
#include "inference.pb.h"
#include "model_management.pb.h"
#include "rpc/cache_stats_log.h"
#include "rpc/compositing_service.h"
#include "rpc/inference_service.h"
#include "rpc/server_setup.h"

namespace lipsync::e2e {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;
using namespace std::chrono_literals;
namespace pb = ::compositing;

// A compositing server built from its config the way `lipsync compositing` builds it,
// in front of the in-process inference server; that one is also served over gRPC from
// its own config (as `lipsync serve` does).
class ConfiguredServer {
 public:
  explicit ConfiguredServer(config::CompositingConfig config,
                            config::InferenceConfig inference_config = InferenceTestConfig()) {
    config.server.port = "127.0.0.1:0";
    inference_config.server.port = "127.0.0.1:0";
    auto inference = inference::InferenceServer::Create(inference_config);
    EXPECT_TRUE(inference.ok()) << inference.status().ToString();
    if (!inference.ok()) return;
    inference_ = std::move(*inference);
    inference_service_ = std::make_unique<rpc::InferenceServiceImpl>(inference_.get());
    auto inference_options = rpc::ServerOptionsFromConfig(inference_config);
    EXPECT_TRUE(inference_options.ok()) << inference_options.status().ToString();
    if (!inference_options.ok()) return;
    auto inference_grpc = rpc::GrpcServer::Start(*inference_options, {inference_service_.get()});
    EXPECT_TRUE(inference_grpc.ok()) << inference_grpc.status().ToString();
    if (!inference_grpc.ok()) return;
    inference_grpc_ = std::move(*inference_grpc);
    auto server = compositing::CompositingServer::Create(config, *inference_);
    EXPECT_TRUE(server.ok()) << server.status().ToString();
    if (!server.ok()) return;
    server_ = std::move(*server);
    service_ = std::make_unique<rpc::CompositingServiceImpl>(server_.get());
    auto options = rpc::ServerOptionsFromConfig(config);
    EXPECT_TRUE(options.ok()) << options.status().ToString();
    if (!options.ok()) return;
    auto started = rpc::GrpcServer::Start(*options, {service_.get()});
    EXPECT_TRUE(started.ok()) << started.status().ToString();
    if (!started.ok()) return;
    grpc_ = std::move(*started);
    stub_ = pb::CompositingService::NewStub(LoopbackChannel(grpc_->port()));
  }
  bool ok() const { return stub_ != nullptr; }
  pb::CompositingService::Stub& stub() { return *stub_; }

 private:
  std::unique_ptr<inference::InferenceServer> inference_;
  std::unique_ptr<rpc::InferenceServiceImpl> inference_service_;
  std::unique_ptr<rpc::GrpcServer> inference_grpc_;
  std::unique_ptr<compositing::CompositingServer> server_;
  std::unique_ptr<rpc::CompositingServiceImpl> service_;
  std::unique_ptr<rpc::GrpcServer> grpc_;
  std::unique_ptr<pb::CompositingService::Stub> stub_;
};

pb::CompositeBatchRequest Request(const std::string& model, int batch) {
  pb::CompositeBatchRequest r;
  r.set_model_id(model);
  r.set_batch_size(batch);
  r.set_audio_features(std::string(8192 * sizeof(float), '\0'));
  return r;
}

grpc::Status Composite(pb::CompositingService::Stub& stub, const pb::CompositeBatchRequest& request,
                       pb::CompositeBatchResponse* response) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 60s);
  return stub.InferBatchComposite(&context, request, response);
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(GuideParityTest, LegacyErrorsAnswerSuccessFalseWithStatusOk) {
  config::CompositingConfig config = CompositingTestConfig();
  config.server.legacy_errors = true;
  const fs::path audit =
      fs::temp_directory_path() / ("guide_parity_audit_" + std::to_string(::getpid()) + ".log");
  fs::remove(audit);
  config.logging.audit_log_path = audit.string();
  ConfiguredServer server(config);
  ASSERT_TRUE(server.ok());

  pb::CompositeBatchResponse response;
  grpc::Status status = Composite(server.stub(), Request("no-such-tenant", 2), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_FALSE(response.success());
  EXPECT_THAT(response.error(), StartsWith("NOT_FOUND: "));
  EXPECT_THAT(response.error(), HasSubstr("no-such-tenant"));
  EXPECT_EQ(response.composited_frames_size(), 0);

  response.Clear();
  status = Composite(server.stub(), Request("identity", 0), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_FALSE(response.success());
  EXPECT_THAT(response.error(), StartsWith("INVALID_ARGUMENT: "));

  // Model management responses carry success/error too.
  lipsync::admin::LoadModelRequest load;
  load.set_model_id("no-such-tenant");
  lipsync::admin::LoadModelResponse loaded;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 60s);
  status = server.stub().LoadModel(&context, load, &loaded);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_FALSE(loaded.success());
  EXPECT_THAT(loaded.error(), StartsWith("NOT_FOUND: "));

  // Success is unchanged.
  response.Clear();
  status = Composite(server.stub(), Request("identity", 2), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(response.success());
  EXPECT_EQ(response.composited_frames_size(), 2);

  // The audit log records what really happened.
  const std::string lines = ReadFile(audit);
  EXPECT_THAT(lines, HasSubstr("\"code\":\"NOT_FOUND\""));
  EXPECT_THAT(lines, HasSubstr("\"code\":\"INVALID_ARGUMENT\""));
  fs::remove(audit);
}

TEST(GuideParityTest, WithoutLegacyErrorsFailuresAreGrpcStatuses) {
  ConfiguredServer server(CompositingTestConfig());
  ASSERT_TRUE(server.ok());
  pb::CompositeBatchResponse response;
  grpc::Status status = Composite(server.stub(), Request("no-such-tenant", 2), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST(GuideParityTest, CompositingTimesAreLoggedAtInfo) {
  ASSERT_EQ(GetLogLevel(), LogLevel::kInfo);  // the guide's default `logging.level`
  for (bool enabled : {true, false}) {
    config::CompositingConfig config = CompositingTestConfig();
    config.logging.log_compositing_times = enabled;
    ConfiguredServer server(config);
    ASSERT_TRUE(server.ok());
    pb::CompositeBatchResponse response;
    ::testing::internal::CaptureStderr();
    grpc::Status status = Composite(server.stub(), Request("identity", 2), &response);
    const std::string log = ::testing::internal::GetCapturedStderr();
    ASSERT_TRUE(status.ok()) << status.error_message();
    if (enabled) {
      EXPECT_THAT(log, HasSubstr("INFO  'identity' batch 2 from 0: visual "));
      EXPECT_THAT(log, HasSubstr(" ms (call "));
      EXPECT_THAT(log, HasSubstr("), composite "));
    } else {
      EXPECT_THAT(log, Not(HasSubstr("'identity' batch 2")));
    }
  }
}

TEST(GuideParityTest, CacheStatsLineHasEveryCacheGaugeAndNothingElse) {
  std::vector<rpc::Gauge> gauges = {
      {"lipsync_background_cache_hits_total", "", {}, 120, rpc::Gauge::Kind::kCounter},
      {"lipsync_queue_depth", "", {}, 3},
      {"lipsync_cache_memory_bytes", "", {{"cache", "avatars"}}, 1048576},
      {"lipsync_model_evictions_total", "", {}, 2, rpc::Gauge::Kind::kCounter},
      {"lipsync_loaded_models", "", {}, 7}};
  EXPECT_EQ(rpc::FormatCacheStats("compositing", gauges),
            "cache stats (compositing): background_cache_hits_total=120 "
            "cache_memory_bytes{cache=avatars}=1048576 model_evictions_total=2 loaded_models=7");
  EXPECT_EQ(rpc::FormatCacheStats("inference", {{"lipsync_queue_depth", "", {}, 3}}), "");
}

TEST(GuideParityTest, CacheStatsAreLoggedPeriodically) {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> lines;
  int sampled = 0;
  rpc::CacheStatsLogger logger(
      "inference",
      [&] {
        std::lock_guard<std::mutex> lock(mu);
        return std::vector<rpc::Gauge>{{"lipsync_model_loads_total", "", {}, 1.0 * ++sampled}};
      },
      std::chrono::milliseconds(10),
      [&](const std::string& line) {
        std::lock_guard<std::mutex> lock(mu);
        lines.push_back(line);
        cv.notify_all();
      });
  logger.Start();
  std::unique_lock<std::mutex> lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, 30s, [&] { return lines.size() >= 2; }));
  // Each line reads the source anew.
  EXPECT_EQ(lines[0], "cache stats (inference): model_loads_total=1");
  EXPECT_EQ(lines[1], "cache stats (inference): model_loads_total=2");
  lock.unlock();
  logger.Stop();  // joins; no line after it
}

// Both servers, from their configs, log their caches at INFO with log_cache_stats.
TEST(GuideParityTest, ServersLogTheirCacheStats) {
  ASSERT_EQ(GetLogLevel(), LogLevel::kInfo);
  config::CompositingConfig compositing = CompositingTestConfig();
  compositing.logging.log_cache_stats = true;
  compositing.logging.cache_stats_interval_seconds = 0.05;
  config::InferenceConfig inference = InferenceTestConfig();
  inference.logging.log_cache_stats = true;
  inference.logging.cache_stats_interval_seconds = 0.05;
  ConfiguredServer server(compositing, inference);
  ASSERT_TRUE(server.ok());
  pb::CompositeBatchResponse response;
  ASSERT_TRUE(Composite(server.stub(), Request("identity", 2), &response).ok());
  // Lines come every 50 ms; collect until both servers wrote one after the request.
  std::string log;
  for (int i = 0; i < 100; ++i) {
    ::testing::internal::CaptureStderr();
    std::this_thread::sleep_for(100ms);
    log += ::testing::internal::GetCapturedStderr();
    if (log.find("cache stats (compositing):") != std::string::npos &&
        log.find("cache stats (inference):") != std::string::npos) {
      break;
    }
  }
  EXPECT_THAT(log, HasSubstr("INFO  cache stats (compositing):"));
  EXPECT_THAT(log, HasSubstr("INFO  cache stats (inference):"));
  EXPECT_THAT(log, HasSubstr(" loaded_models=1"));
  EXPECT_THAT(log, HasSubstr(" background_cache_hits_total="));
  EXPECT_THAT(log, HasSubstr(" background_cache_misses_total="));
  EXPECT_THAT(log, HasSubstr(" model_loads_total=1"));
  EXPECT_THAT(log, HasSubstr(" model_evictions_total=0"));
}

TEST(GuideParityTest, ProtosNameTheirGoPackages) {
  EXPECT_EQ(pb::CompositeBatchRequest::descriptor()->file()->options().go_package(),
            "go-compositing-server/proto;proto");
  EXPECT_EQ(::inference::InferBatchRequest::descriptor()->file()->options().go_package(),
            "go-inference-server/proto;proto");
  EXPECT_EQ(lipsync::admin::LoadModelRequest::descriptor()->file()->options().go_package(),
            "go-compositing-server/proto/admin;admin");
}

}  // namespace
}  // namespace lipsync::e2e
