// Hostile tenant models against the real `lipsync inference` binary: a model_root with a
// good tenant next to one whose model_best.onnx is garbage, one whose model is cut in
// half, one whose file is over limits.max_model_file_mb, and one whose directory is a
// symlink out of model_root. Each hostile tenant gets
// a clear gRPC status naming its file, twice (the second from the remembered failure),
// the good tenant keeps serving between them, and SIGTERM still stops the process with
// exit 0 within server.shutdown_grace_seconds.
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
#include "modelgen/model_builder.h"

namespace lipsync::e2e {
namespace {

using namespace std::chrono_literals;
namespace pb = ::inference;

constexpr int kGraceSeconds = 5;

std::string ReadAll(const fs::path& path) {
  std::stringstream text;
  text << std::ifstream(path, std::ios::binary).rdbuf();
  return text.str();
}

class HostileModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lipsync_hostile_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    root_ = dir_ / "models";
    for (const char* id : {"good", "garbage", "truncated", "oversized"}) {
      fs::create_directories(root_ / id / "checkpoint");
    }
    ASSERT_TRUE(modelgen::WriteIdentityModel(ModelPath("good")).ok());
    std::ofstream(ModelPath("garbage"), std::ios::binary)
        << "\x08\x07\x12\x04junk" << std::string(4096, '\xff') << "not an ONNX model";
    // A real model cut in half: a truncated upload.
    const std::string whole = ReadAll(ModelPath("good"));
    std::ofstream(ModelPath("truncated"), std::ios::binary) << whole.substr(0, whole.size() / 2);
    // Over limits.max_model_file_mb (1): refused by its size, never read.
    std::ofstream(ModelPath("oversized"), std::ios::binary) << std::string(3 << 20, '\x01');
    // A tenant directory symlinked to a good model outside model_root.
    fs::create_directories(dir_ / "elsewhere" / "checkpoint");
    ASSERT_TRUE(modelgen::WriteIdentityModel(
                    (dir_ / "elsewhere" / "checkpoint" / "model_best.onnx").string())
                    .ok());
    fs::create_directory_symlink(dir_ / "elsewhere", root_ / "escape");

    port_ = FreePort();
    yaml_ = dir_ / "inference.yaml";
    std::ofstream(yaml_) << "server:\n  port: \"127.0.0.1:" << port_ << "\"\n"
                         << "  worker_count_per_gpu: 1\n"
                         << "  shutdown_grace_seconds: " << kGraceSeconds << "\n"
                         << "onnx:\n  use_cuda: false\n"
                         << "capacity:\n  failed_load_retry_seconds: 600\n"
                         << "limits:\n  max_model_file_mb: 1\n"
                         << "model_root: \"" << root_.string() << "\"\n";
  }
  void TearDown() override {
    if (std::getenv("KEEP_E2E_DIR") == nullptr) {
      std::error_code ec;
      fs::remove_all(dir_, ec);
    }
  }
  std::string ModelPath(const std::string& id) const {
    return (root_ / id / "checkpoint" / "model_best.onnx").string();
  }

  fs::path dir_, root_, yaml_;
  int port_ = 0;
};

grpc::Status Infer(pb::InferenceService::Stub& stub, const std::string& model,
                   pb::InferBatchResponse* response) {
  pb::InferBatchRequest request;
  request.set_model_id(model);
  request.set_batch_size(1);
  request.set_visual_format(pb::VISUAL_UINT8);
  request.set_visual_frames(std::string(6 * 320 * 320, '\x80'));
  request.set_audio_features(std::string(8192 * 4, '\0'));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 30s);
  return stub.InferBatch(&context, request, response);
}

TEST_F(HostileModelTest, HostileModelsGetClearStatusGoodOneServesSigtermExitsZero) {
  const fs::path log = dir_ / "inference.log";
  const pid_t pid = Spawn({"inference", "--config", yaml_.string()}, log);
  auto stub = pb::InferenceService::NewStub(LoopbackChannel(port_));

  pb::InferBatchResponse good;
  grpc::Status served = Infer(*stub, "good", &good);
  ASSERT_TRUE(served.ok()) << served.error_message();
  EXPECT_EQ(good.output_frames().size(), 3u * 320 * 320 * 4);

  struct Hostile {
    const char* id;
    grpc::StatusCode code;
    std::string says;
  };
  const Hostile hostile[] = {
      {"garbage", grpc::StatusCode::FAILED_PRECONDITION, ModelPath("garbage")},
      {"truncated", grpc::StatusCode::FAILED_PRECONDITION, ModelPath("truncated")},
      {"escape", grpc::StatusCode::PERMISSION_DENIED, "outside model_root"},
      {"oversized", grpc::StatusCode::FAILED_PRECONDITION, "limits.max_model_file_mb"},
  };
  for (const Hostile& h : hostile) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      pb::InferBatchResponse response;
      grpc::Status status = Infer(*stub, h.id, &response);
      EXPECT_EQ(status.error_code(), h.code) << h.id << ": " << status.error_message();
      EXPECT_NE(status.error_message().find(h.says), std::string::npos)
          << h.id << ": " << status.error_message();
      EXPECT_LT(status.error_message().size(), 2000u) << h.id;
      if (attempt == 1) {
        EXPECT_NE(status.error_message().find("remembered"), std::string::npos)
            << h.id << ": " << status.error_message();
      }
      // The good tenant is unaffected in between.
      served = Infer(*stub, "good", &good);
      EXPECT_TRUE(served.ok()) << served.error_message();
    }
  }

  // Its stats say FAILED, with the same message.
  {
    lipsync::admin::GetModelStatsRequest request;
    request.set_model_id("garbage");
    lipsync::admin::GetModelStatsResponse response;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 10s);
    grpc::Status status = stub->GetModelStats(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(response.models_size(), 1);
    EXPECT_EQ(response.models(0).inference().state(), lipsync::admin::FAILED);
    EXPECT_NE(response.models(0).inference().error().find(ModelPath("garbage")), std::string::npos)
        << response.models(0).inference().error();
  }

  // One load attempt for the garbage file, not one per request: the registry logs each
  // failed attempt once, with its count ("failure N in a row").
  const std::string text = ReadAll(log);
  std::istringstream lines(text);
  int attempts = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.find("loading model 'garbage'") != std::string::npos &&
        line.find(" in a row; next retry in ") != std::string::npos) {
      ++attempts;
    }
  }
  EXPECT_EQ(attempts, 1) << text;

  // SIGTERM: exit 0 within the grace period (generous margin for a loaded machine).
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(kGraceSeconds + 10);
  int status = 0;
  pid_t done = 0;
  while ((done = waitpid(pid, &status, WNOHANG)) == 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  if (done == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    FAIL() << "lipsync inference did not exit within " << kGraceSeconds + 10 << " s of SIGTERM:\n"
           << ReadAll(log);
  }
  EXPECT_TRUE(WIFEXITED(status)) << ReadAll(log);
  EXPECT_EQ(WEXITSTATUS(status), 0) << ReadAll(log);
}

}  // namespace
}  // namespace lipsync::e2e
