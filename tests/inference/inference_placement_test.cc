// gpus.assignment_strategy on the production path: InferenceServer::Create from an
// InferenceConfig, two devices (fake GPUs: the registry places models on devices 0 and
// 1, the loader opens CPU sessions), requests through Infer. The reply's device is the
// worker's that ran it, so these tests see where requests really ran.
//
// round-robin places each new model on the next device in turn; least-loaded on the
// device holding the fewest model bytes. After A -> 0, B -> 1 and B unloaded, device 1
// is empty: least-loaded puts C there, round-robin on device 0 (its turn), beside A.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "inference/inference_server.h"
#include "inference/test_models.h"

namespace lipsync::inference {
namespace {

namespace fs = std::filesystem;

constexpr int kSize = 16;
constexpr size_t kPlane = kSize * kSize;

class PlacementTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("inference_placement_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
    visual_.assign(6 * kPlane, 0.5f);
    audio_.assign(kAudioFeatureFloats, 0.f);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::unique_ptr<InferenceServer> Make(config::AssignmentStrategy strategy) {
    config::InferenceConfig config;
    config.onnx.use_cuda = false;
    config.server.worker_count_per_gpu = 1;
    config.capacity.idle_timeout_minutes = 0;
    config.gpus.assignment_strategy = strategy;
    for (const char* id : {"a", "b", "c"}) {
      const std::string path = (dir_ / (std::string(id) + ".onnx")).string();
      EXPECT_TRUE(testing::WriteScaledModel(path, kSize, 1.f).ok());
      config.models[id] = {path, false, ""};
    }
    auto server = InferenceServer::Create(config, [](RegistryOptions& options) {
      options.devices = {0, 1};
      options.loader = [](const ModelFiles& files, int) { return OnnxModel::Load(files, -1); };
    });
    EXPECT_TRUE(server.ok()) << server.status().ToString();
    return server.ok() ? std::move(*server) : nullptr;
  }
  // The device the request for `model` ran on (-99 if it failed).
  int RunOn(InferenceServer& server, const std::string& model) {
    InferRequest request;
    request.model_id = model;
    request.batch_size = 1;
    request.visual_frames = {reinterpret_cast<const char*>(visual_.data()),
                             visual_.size() * sizeof(float)};
    request.audio_features = {reinterpret_cast<const char*>(audio_.data()),
                              audio_.size() * sizeof(float)};
    auto result = server.Infer(request);
    EXPECT_TRUE(result.ok()) << result.status().ToString();
    return result.ok() ? result->device_id : -99;
  }
  int StatsDevice(InferenceServer& server, const std::string& model) {
    auto stats = server.GetModelStats(model);
    return stats.ok() && stats->size() == 1 ? (*stats)[0].device_id : -99;
  }

  fs::path dir_;
  std::vector<float> visual_, audio_;
};

TEST_F(PlacementTest, RoundRobinPlacesEachNewModelOnTheNextDevice) {
  auto server = Make(config::AssignmentStrategy::kRoundRobin);
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(server->worker_count(), 2);  // one pool per device
  EXPECT_EQ(RunOn(*server, "a"), 0);
  EXPECT_EQ(RunOn(*server, "b"), 1);
  ASSERT_TRUE(server->UnloadModel("b").ok());
  EXPECT_EQ(RunOn(*server, "c"), 0);  // its turn, though device 1 is empty
  EXPECT_EQ(StatsDevice(*server, "c"), 0);
  EXPECT_EQ(RunOn(*server, "a"), 0);  // a model's requests stay on its device
}

TEST_F(PlacementTest, LeastLoadedPlacesANewModelOnTheEmptierDevice) {
  auto server = Make(config::AssignmentStrategy::kLeastLoaded);
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(RunOn(*server, "a"), 0);
  EXPECT_EQ(RunOn(*server, "b"), 1);
  ASSERT_TRUE(server->UnloadModel("b").ok());
  EXPECT_EQ(RunOn(*server, "c"), 1);  // device 0 holds a's bytes, device 1 none
  EXPECT_EQ(StatsDevice(*server, "c"), 1);
  EXPECT_EQ(RunOn(*server, "a"), 0);
}

}  // namespace
}  // namespace lipsync::inference
