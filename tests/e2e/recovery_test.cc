// Failure and recovery with the real `lipsync inference` binary: killed with SIGKILL in
// the middle of a run, the compositing server answers UNAVAILABLE (within its timeout:
// a slower answer would be DEADLINE_EXCEEDED), stays up and reports
// inference_server_healthy=false; once the binary is started again on the same port,
// requests succeed again without restarting the compositing server.
// Also: the `lipsync compositing` binary's banner and clean exit on SIGTERM.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "e2e/e2e_cluster.h"

namespace lipsync::e2e {
namespace {

using namespace std::chrono_literals;
namespace pb = ::compositing;

fs::path WriteInferenceYaml(int port) {
  const fs::path yaml = ModelRoot() / ("inference_" + std::to_string(port) + ".yaml");
  std::ofstream(yaml) << "server:\n  port: \"127.0.0.1:" << port << "\"\n"
                      << "  worker_count_per_gpu: 1\n"
                      << "onnx:\n  use_cuda: false\n"
                      << "model_root: \"" << ModelRoot().string() << "\"\n";
  return yaml;
}

grpc::Status Composite(pb::CompositingService::Stub& stub, int batch) {
  pb::CompositeBatchRequest request;
  request.set_model_id("identity");
  request.set_batch_size(batch);
  request.set_audio_features(std::string(8192 * 4, '\0'));
  pb::CompositeBatchResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 30s);
  return stub.InferBatchComposite(&context, request, &response);
}

TEST(RecoveryTest, InferenceKilledMidRunThenRestarted) {
  const int port = FreePort();
  const fs::path yaml = WriteInferenceYaml(port);
  const fs::path log = ModelRoot() / "inference_recovery.log";
  pid_t inference = Spawn({"inference", "--config", yaml.string()}, log);

  // The compositing server in this process, reaching the binary over gRPC.
  config::CompositingConfig config = CompositingTestConfig();
  config.server.port = "127.0.0.1:0";
  config.inference_server.url = "127.0.0.1:" + std::to_string(port);
  config.inference_server.timeout_seconds = 3;
  config.inference_server.max_retries = 2;
  auto backend = rpc::GrpcInferenceBackend::Create(rpc::BackendOptionsFromConfig(config));
  ASSERT_TRUE(backend.ok());
  compositing::CompositingServerOptions options;
  options.health_cache = 0ms;  // every Health probes (production: 1 s)
  auto server = compositing::CompositingServer::Create(config, **backend, options);
  ASSERT_TRUE(server.ok());
  rpc::CompositingServiceImpl service(server->get());
  rpc::ServerOptions so;
  so.listen_address = "127.0.0.1:0";
  auto grpc_server = rpc::GrpcServer::Start(so, {&service});
  ASSERT_TRUE(grpc_server.ok());
  auto stub = pb::CompositingService::NewStub(LoopbackChannel((*grpc_server)->port()));

  grpc::Status first = Composite(*stub, 4);
  ASSERT_TRUE(first.ok()) << first.error_message();
  EXPECT_TRUE((*server)->Health().inference_server_healthy);

  // Kill it while a stream of requests is running.
  std::thread killer([&] {
    std::this_thread::sleep_for(100ms);
    kill(inference, SIGKILL);
  });
  grpc::Status during;
  for (int i = 0; i < 200; ++i) {
    during = Composite(*stub, 2);
    if (!during.ok()) break;
  }
  killer.join();
  int status = 0;
  waitpid(inference, &status, 0);
  if (during.ok()) during = Composite(*stub, 2);
  EXPECT_EQ(during.error_code(), grpc::StatusCode::UNAVAILABLE) << during.error_message();
  grpc::Status after = Composite(*stub, 2);
  EXPECT_EQ(after.error_code(), grpc::StatusCode::UNAVAILABLE) << after.error_message();

  // The compositing server is up and says where the problem is.
  pb::HealthResponse health;
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 10s);
    ASSERT_TRUE(stub->Health(&context, pb::HealthRequest(), &health).ok());
  }
  EXPECT_TRUE(health.healthy());
  EXPECT_FALSE(health.inference_server_healthy());

  // Restart on the same port: recovers without touching the compositing server.
  inference = Spawn({"inference", "--config", yaml.string()}, log);
  grpc::Status recovered;
  for (int i = 0; i < 100; ++i) {
    recovered = Composite(*stub, 2);
    if (recovered.ok()) break;
    std::this_thread::sleep_for(200ms);
  }
  EXPECT_TRUE(recovered.ok()) << recovered.error_message();
  EXPECT_TRUE((*server)->Health().inference_server_healthy);

  kill(inference, SIGTERM);
  waitpid(inference, &status, 0);
  (*grpc_server)->Shutdown(1s);
}

TEST(CompositingBinaryTest, BannerServesAndExitsZeroOnSigterm) {
  const int inference_port = FreePort();
  const fs::path yaml = WriteInferenceYaml(inference_port);
  pid_t inference =
      Spawn({"inference", "--config", yaml.string()}, ModelRoot() / "inference_binary.log");
  const int port = FreePort();
  const fs::path comp_yaml = ModelRoot() / "compositing_binary.yaml";
  std::ofstream(comp_yaml) << "server:\n  port: \"127.0.0.1:" << port << "\"\n"
                           << "inference_server:\n  url: \"127.0.0.1:" << inference_port
                           << "\"\n  timeout_seconds: 10\n"
                           << "output:\n  jpeg_quality: 80\n"
                           << "model_root: \"" << ModelRoot().string() << "\"\n";
  const fs::path log = ModelRoot() / "compositing_binary.log";
  pid_t compositing = Spawn({"compositing", "--config", comp_yaml.string()}, log);
  std::stringstream banner;
  banner << std::ifstream(log).rdbuf();
  EXPECT_NE(banner.str().find("Connected to inference server"), std::string::npos) << banner.str();
  EXPECT_NE(banner.str().find("JPEG encoding (quality: 80)"), std::string::npos) << banner.str();

  auto stub = pb::CompositingService::NewStub(LoopbackChannel(port));
  grpc::Status served = Composite(*stub, 3);
  EXPECT_TRUE(served.ok()) << served.error_message();

  int status = 0;
  ASSERT_EQ(kill(compositing, SIGTERM), 0);
  ASSERT_EQ(waitpid(compositing, &status, 0), compositing);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  kill(inference, SIGTERM);
  waitpid(inference, &status, 0);
}

TEST(ServeBinaryTest, BothServicesInOneProcessServeAndExitZeroOnSigterm) {
  const int inference_port = FreePort();
  const fs::path inference_yaml = WriteInferenceYaml(inference_port);
  const int port = FreePort();
  const fs::path comp_yaml = ModelRoot() / "serve_compositing.yaml";
  // inference_server.url points nowhere: `serve` calls inference in-process.
  std::ofstream(comp_yaml) << "server:\n  port: \"127.0.0.1:" << port << "\"\n"
                           << "inference_server:\n  url: \"127.0.0.1:1\"\n"
                           << "model_root: \"" << ModelRoot().string() << "\"\n";
  const fs::path log = ModelRoot() / "serve_binary.log";
  pid_t serve = Spawn({"serve", "--inference-config", inference_yaml.string(),
                       "--compositing-config", comp_yaml.string()},
                      log);
  auto stub = pb::CompositingService::NewStub(LoopbackChannel(port));
  grpc::Status served = Composite(*stub, 3);
  EXPECT_TRUE(served.ok()) << served.error_message();
  // The inference service is served by the same process on its own port.
  auto inference_stub = ::inference::InferenceService::NewStub(LoopbackChannel(inference_port));
  grpc::ClientContext context;
  ::inference::HealthResponse health;
  ASSERT_TRUE(inference_stub->Health(&context, ::inference::HealthRequest(), &health).ok());
  EXPECT_TRUE(health.healthy());

  int status = 0;
  ASSERT_EQ(kill(serve, SIGTERM), 0);
  ASSERT_EQ(waitpid(serve, &status, 0), serve);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace lipsync::e2e
