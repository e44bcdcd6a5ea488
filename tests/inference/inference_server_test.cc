// InferenceServer in-process (no gRPC): force-reload under load, graceful shutdown with
// requests in flight, exact queue/deadline messages, validation order. Small 16x16
// models from test_models.h keep it fast; runs use real ONNX Runtime sessions.
#include "inference/inference_server.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <future>
#include <limits>
#include <mutex>
#include <new>
#include <thread>

#include "inference/test_models.h"
#include "modelgen/model_builder.h"

namespace lipsync::inference {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr int kSize = 16;
constexpr size_t kPlane = kSize * kSize;

class InferenceServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("inference_server_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  // Writes atomically (rename) so a concurrent load never sees half a file.
  std::string WriteModel(const std::string& name, float scale) {
    const fs::path path = dir_ / (name + ".onnx");
    const fs::path tmp = dir_ / (name + ".onnx.tmp");
    EXPECT_TRUE(testing::WriteScaledModel(tmp.string(), kSize, scale).ok());
    fs::rename(tmp, path);
    return path.string();
  }
  config::InferenceConfig Config() {
    config::InferenceConfig config;
    config.onnx.use_cuda = false;
    config.server.worker_count_per_gpu = 2;
    config.server.max_batch_size = 8;
    config.capacity.idle_timeout_minutes = 0;
    return config;
  }
  std::string WriteEncoder() {
    const fs::path path = dir_ / "audio_encoder.onnx";
    EXPECT_TRUE(modelgen::WriteAudioEncoderModel(path.string()).ok());
    return path.string();
  }
  std::unique_ptr<InferenceServer> Make(const config::InferenceConfig& config) {
    auto server = InferenceServer::Create(config);
    EXPECT_TRUE(server.ok()) << server.status().ToString();
    return server.ok() ? std::move(*server) : nullptr;
  }

  fs::path dir_;
};

struct Inputs {
  std::vector<float> visual, audio;
  InferRequest Request(const std::string& model, int batch) const {
    InferRequest request;
    request.model_id = model;
    request.batch_size = batch;
    request.visual_frames = {reinterpret_cast<const char*>(visual.data()),
                             static_cast<size_t>(batch) * 6 * kPlane * sizeof(float)};
    request.audio_features = {reinterpret_cast<const char*>(audio.data()),
                              static_cast<size_t>(batch) * kAudioFeatureFloats * sizeof(float)};
    return request;
  }
};

Inputs MakeInputs(int batch, float value) {
  return {std::vector<float>(static_cast<size_t>(batch) * 6 * kPlane, value),
          std::vector<float>(static_cast<size_t>(batch) * kAudioFeatureFloats, 0.f)};
}

// Until a worker has taken the one request sent (running, no longer queued): a later
// request then finds the queue empty.
void WaitUntilTaken(const InferenceServer& server) {
  while (server.scheduler().device_load(-1) < 1 || server.scheduler().queue_depth() > 0) {
    std::this_thread::sleep_for(1ms);
  }
}

float FirstValue(const InferResult& result) {
  float v;
  std::memcpy(&v, result.output.data(), sizeof v);
  return v;
}

TEST_F(InferenceServerTest, ForceReloadUnderLoadLosesNoRequest) {
  config::InferenceConfig config = Config();
  config.models["m"] = {WriteModel("m", 1.f), true, ""};
  auto server = Make(config);
  ASSERT_TRUE(server);
  const Inputs inputs = MakeInputs(2, 0.25f);
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0}, old_version{0}, new_version{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&] {
      while (!stop.load()) {
        auto result = server->Infer(inputs.Request("m", 2));
        if (!result.ok()) {
          ++failed;
          ADD_FAILURE() << result.status().ToString();
          continue;
        }
        ++ok;
        const float v = FirstValue(*result);
        if (v == 0.25f) ++old_version;
        if (v == 0.5f) ++new_version;
      }
    });
  }
  while (ok.load() < 20) std::this_thread::sleep_for(1ms);
  WriteModel("m", 2.f);
  for (int i = 0; i < 3; ++i) {
    auto reloaded = server->LoadModel("m", /*force_reload=*/true);
    ASSERT_TRUE(reloaded.ok()) << reloaded.status().ToString();
  }
  const int after_reload = ok.load();
  while (ok.load() < after_reload + 20) std::this_thread::sleep_for(1ms);
  stop = true;
  for (auto& client : clients) client.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_GT(old_version.load(), 0);
  EXPECT_GT(new_version.load(), 0);
  EXPECT_EQ(old_version.load() + new_version.load(), ok.load()) << "an output was neither version";
  auto after = server->Infer(inputs.Request("m", 1));
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(FirstValue(*after), 0.5f);
}

TEST_F(InferenceServerTest, ShutdownWaitsForRequestsInFlightAndRefusesNewOnes) {
  config::InferenceConfig config = Config();
  config.models["m"] = {WriteModel("m", 1.f), true, ""};
  config.models["other"] = {WriteModel("other", 1.f), true, ""};
  config.server.worker_count_per_gpu = 1;
  // The worker holds the first request for its batching window: it is in flight
  // when Shutdown starts.
  config.server.max_queue_delay_us = 300000;
  auto server = Make(config);
  ASSERT_TRUE(server);
  const Inputs inputs = MakeInputs(1, 0.5f);
  auto in_flight =
      std::async(std::launch::async, [&] { return server->Infer(inputs.Request("m", 1)); });
  WaitUntilTaken(*server);
  EXPECT_TRUE(server->Shutdown(10s));
  auto result = in_flight.get();
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(FirstValue(*result), 0.5f);
  auto refused = server->Infer(inputs.Request("other", 1));
  EXPECT_EQ(refused.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(refused.status().message().rfind("server is shutting down", 0), 0u);
  EXPECT_FALSE(server->Health(std::nullopt)->healthy);
}

TEST_F(InferenceServerTest, DeadlineWhileQueuedSaysItWasNotRun) {
  config::InferenceConfig config = Config();
  config.models["m"] = {WriteModel("m", 1.f), true, ""};
  config.models["other"] = {WriteModel("other", 1.f), true, ""};
  config.server.worker_count_per_gpu = 1;
  config.server.max_queue_delay_us = 400000;
  auto server = Make(config);
  ASSERT_TRUE(server);
  const Inputs inputs = MakeInputs(1, 0.5f);
  auto held = std::async(std::launch::async, [&] { return server->Infer(inputs.Request("m", 1)); });
  WaitUntilTaken(*server);
  InferRequest late = inputs.Request("other", 1);
  late.deadline = Clock::now() + 50ms;
  auto result = server->Infer(late);
  EXPECT_EQ(result.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(result.status().message().find("it was not run"), std::string::npos)
      << result.status().message();
  ASSERT_TRUE(held.get().ok());
  auto stats = server->GetModelStats("other");
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->at(0).frames_processed, 0);
}

TEST_F(InferenceServerTest, ReportsTimingsAndDevice) {
  config::InferenceConfig config = Config();
  config.models["m"] = {WriteModel("m", 1.f), false, ""};
  auto server = Make(config);
  ASSERT_TRUE(server);
  const Inputs inputs = MakeInputs(3, 0.5f);
  auto first = server->Infer(inputs.Request("m", 3));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_TRUE(first->loaded_on_demand);
  EXPECT_GT(first->model_load_ms, 0.0);
  EXPECT_EQ(first->device_id, -1);
  EXPECT_GE(first->worker_id, 0);
  EXPECT_EQ(first->dynamic_batch_frames, 3);
  EXPECT_GE(first->total_ms, first->inference_ms + first->queue_wait_ms - 1e-6);
  EXPECT_EQ(first->output.size(), 3 * 3 * kPlane * sizeof(float));
  auto second = server->Infer(inputs.Request("m", 3));
  ASSERT_TRUE(second.ok());
  EXPECT_FALSE(second->loaded_on_demand);
}

// VISUAL_UINT8 frames go to the model as uint8 (the wrapped graph converts them):
// the same output as the float form of those pixels, within one level for UINT8
// output and exactly for FLOAT32; concurrent requests of both visual forms (grouped
// by the scheduler per form) each get their own answer.
TEST_F(InferenceServerTest, Uint8VisualRequestsMatchTheFloatPath) {
  config::InferenceConfig config = Config();
  config.models["m"] = {WriteModel("m", 1.6f), true, ""};
  auto server = Make(config);
  ASSERT_TRUE(server);
  constexpr int kBatch = 2;
  constexpr int kRequests = 6;
  std::vector<std::vector<uint8_t>> pixels(kRequests);
  std::vector<std::vector<float>> floats(kRequests);
  const std::vector<float> audio(kBatch * kAudioFeatureFloats, 0.f);
  for (int r = 0; r < kRequests; ++r) {
    for (size_t i = 0; i < kBatch * 6 * kPlane; ++i) {
      pixels[r].push_back(static_cast<uint8_t>((i * 7 + r * 31) % 256));
      floats[r].push_back(pixels[r].back() / 255.0f);
    }
  }
  auto request = [&](int r, bool u8_in, OutputFormat out) {
    InferRequest req;
    req.model_id = "m";
    req.batch_size = kBatch;
    req.visual_format = u8_in ? VisualFormat::kUint8 : VisualFormat::kFloat32;
    req.visual_frames =
        u8_in ? std::string_view(reinterpret_cast<const char*>(pixels[r].data()), pixels[r].size())
              : std::string_view(reinterpret_cast<const char*>(floats[r].data()),
                                 floats[r].size() * sizeof(float));
    req.audio_features = {reinterpret_cast<const char*>(audio.data()),
                          audio.size() * sizeof(float)};
    req.output_format = out;
    return server->Infer(req);
  };
  for (OutputFormat out : {OutputFormat::kUint8, OutputFormat::kFloat32}) {
    std::vector<std::future<Expected<InferResult>>> from_u8, from_float;
    for (int r = 0; r < kRequests; ++r) {
      from_u8.push_back(std::async(std::launch::async, request, r, true, out));
      from_float.push_back(std::async(std::launch::async, request, r, false, out));
    }
    for (int r = 0; r < kRequests; ++r) {
      auto a = from_u8[r].get();
      auto b = from_float[r].get();
      ASSERT_TRUE(a.ok()) << a.status().ToString();
      ASSERT_TRUE(b.ok()) << b.status().ToString();
      ASSERT_EQ(a->output.size(), b->output.size());
      if (out == OutputFormat::kFloat32) {
        EXPECT_EQ(a->output, b->output) << "request " << r;
        continue;
      }
      ASSERT_EQ(a->output.size(), kBatch * 3 * kPlane);
      int clipped = 0;
      for (size_t i = 0; i < a->output.size(); ++i) {
        const int x = static_cast<uint8_t>(a->output[i]);
        const int y = static_cast<uint8_t>(b->output[i]);
        ASSERT_LE(std::abs(x - y), 1) << "request " << r << " value " << i;
        const size_t frame = i / (3 * kPlane), k = i % (3 * kPlane);
        const float want = std::min(1.f, floats[r][frame * 6 * kPlane + k] * 1.6f) * 255.f;
        ASSERT_LE(std::abs(x - want), 1.f) << "request " << r << " value " << i;
        clipped += x == 255;
      }
      EXPECT_GT(clipped, 0);
    }
  }
}

// NaN/Inf in float32 client tensors never reach a model: INVALID_ARGUMENT naming the
// tensor and the frame; the same model and other models keep serving.
TEST_F(InferenceServerTest, NanAndInfInClientTensorsAreRejectedNamingTheFrame) {
  config::InferenceConfig config = Config();
  config.models["a"] = {WriteModel("a", 1.f), true, ""};
  config.models["b"] = {WriteModel("b", 1.f), true, ""};
  auto server = Make(config);
  ASSERT_TRUE(server);
  const float kNan = std::numeric_limits<float>::quiet_NaN();
  const float kInf = std::numeric_limits<float>::infinity();
  struct Case {
    bool visual;
    size_t frame;
    float value;
    std::string expected;
  };
  const Case cases[] = {
      {true, 2, kNan, "visual_frames frame 2 holds a NaN"},
      {true, 0, kInf, "visual_frames frame 0 holds an infinity"},
      {true, 3, -kInf, "visual_frames frame 3 holds an infinity"},
      {false, 1, kNan, "audio_features frame 1 holds a NaN"},
      {false, 3, -kInf, "audio_features frame 3 holds an infinity"},
  };
  for (const Case& c : cases) {
    Inputs inputs = MakeInputs(4, 0.5f);
    if (c.visual) {
      inputs.visual[c.frame * 6 * kPlane + 77] = c.value;
    } else {
      inputs.audio[c.frame * kAudioFeatureFloats + 5] = c.value;
    }
    auto result = server->Infer(inputs.Request("a", 4));
    EXPECT_EQ(result.status().code(), StatusCode::kInvalidArgument) << c.expected;
    EXPECT_NE(result.status().message().find(c.expected), std::string::npos)
        << result.status().message();
  }
  // One audio tensor used for every frame.
  Inputs shared = MakeInputs(4, 0.5f);
  shared.audio[100] = kNan;
  InferRequest one_tensor = shared.Request("a", 4);
  one_tensor.audio_features = one_tensor.audio_features.substr(0, kAudioFeatureFloats * 4);
  auto result = server->Infer(one_tensor);
  EXPECT_EQ(result.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(result.status().message().find("audio_features (the one tensor used for every frame"),
            std::string::npos)
      << result.status().message();

  // Nothing ran for the refused requests; both models still serve.
  const Inputs good = MakeInputs(2, 0.5f);
  for (const char* model : {"a", "b"}) {
    auto ok = server->Infer(good.Request(model, 2));
    ASSERT_TRUE(ok.ok()) << ok.status().ToString();
    EXPECT_FLOAT_EQ(FirstValue(*ok), 0.5f);
  }
  EXPECT_EQ(server->GetModelStats("a")->at(0).frames_processed, 2);
}

// The server gives each model server.max_queue_share_per_model of the queue: with the
// only worker held, a noisy model is refused at its share (RESOURCE_EXHAUSTED naming
// it) while another model's request is still queued and served.
TEST_F(InferenceServerTest, NoisyModelGetsResourceExhaustedAtItsQueueShareOthersServed) {
  config::InferenceConfig config = Config();
  config.models["hold"] = {WriteModel("hold", 1.f), true, ""};
  config.models["noisy"] = {WriteModel("noisy", 1.f), true, ""};
  config.models["quiet"] = {WriteModel("quiet", 1.f), true, ""};
  config.server.worker_count_per_gpu = 1;
  config.server.queue_size = 4;
  config.server.max_queue_share_per_model = 0.5;
  config.server.max_queue_delay_us = 1000000;  // the worker holds "hold" this long
  auto server = Make(config);
  ASSERT_TRUE(server);
  EXPECT_EQ(server->scheduler().tenant_queue_limit(), 2);
  const Inputs inputs = MakeInputs(1, 0.5f);
  auto held =
      std::async(std::launch::async, [&] { return server->Infer(inputs.Request("hold", 1)); });
  WaitUntilTaken(*server);
  std::vector<std::future<Expected<InferResult>>> noisy;
  for (int i = 0; i < 2; ++i) {
    noisy.push_back(
        std::async(std::launch::async, [&] { return server->Infer(inputs.Request("noisy", 1)); }));
  }
  while (server->scheduler().tenant_queue_depth("noisy") < 2) std::this_thread::sleep_for(1ms);
  auto refused = server->Infer(inputs.Request("noisy", 1));
  EXPECT_EQ(refused.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(refused.status().message().find(
                "model 'noisy' holds its share of the inference queue: 2 requests waiting"),
            std::string::npos)
      << refused.status().message();
  auto quiet = server->Infer(inputs.Request("quiet", 1));  // queued behind, then served
  EXPECT_TRUE(quiet.ok()) << quiet.status().ToString();
  EXPECT_TRUE(held.get().ok());
  for (auto& n : noisy) EXPECT_TRUE(n.get().ok());
}

// The server passes each request's deadline to the registry: a request waiting for
// another request's load of its model gives up at its own deadline (DEADLINE_EXCEEDED),
// while the loading request and other models are served.
TEST_F(InferenceServerTest, RequestWaitingForAnotherLoadGivesUpAtItsDeadline) {
  config::InferenceConfig config = Config();
  config.models["slow"] = {WriteModel("slow", 1.f), false, ""};
  config.models["other"] = {WriteModel("other", 1.f), false, ""};
  std::mutex mu;
  std::condition_variable cv;
  bool inside = false, open = false;
  auto server = InferenceServer::Create(config, [&](RegistryOptions& options) {
    options.loader = [&](const ModelFiles& files, int device) {
      if (files.model_path.find("slow") != std::string::npos) {
        std::unique_lock<std::mutex> lock(mu);
        inside = true;
        cv.notify_all();
        cv.wait(lock, [&] { return open; });
      }
      return OnnxModel::Load(files, device);
    };
  });
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  const Inputs inputs = MakeInputs(1, 0.5f);
  auto loading =
      std::async(std::launch::async, [&] { return (*server)->Infer(inputs.Request("slow", 1)); });
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return inside; });
  }
  InferRequest waiter = inputs.Request("slow", 1);
  waiter.deadline = Clock::now() + 30ms;
  auto gave_up = (*server)->Infer(waiter);
  EXPECT_EQ(gave_up.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(gave_up.status().message().find("still being loaded by another request"),
            std::string::npos)
      << gave_up.status().message();
  EXPECT_TRUE((*server)->Infer(inputs.Request("other", 1)).ok());
  {
    std::lock_guard<std::mutex> lock(mu);
    open = true;
    cv.notify_all();
  }
  auto loaded = loading.get();
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_TRUE(loaded->loaded_on_demand);
}

// A loader that throws (ORT, allocation, anything) is a clear status through Infer;
// the model is FAILED, not LOADING, and other models serve.
TEST_F(InferenceServerTest, ThrowingLoaderIsAClearStatusAndTheServerKeepsServing) {
  config::InferenceConfig config = Config();
  config.models["bad"] = {WriteModel("bad", 1.f), false, ""};
  config.models["good"] = {WriteModel("good", 1.f), false, ""};
  auto server = InferenceServer::Create(config, [&](RegistryOptions& options) {
    options.loader = [](const ModelFiles& files,
                        int device) -> Expected<std::shared_ptr<OnnxModel>> {
      if (files.model_path.find("bad") != std::string::npos) throw std::bad_alloc();
      return OnnxModel::Load(files, device);
    };
  });
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  const Inputs inputs = MakeInputs(1, 0.5f);
  for (int i = 0; i < 2; ++i) {
    auto bad = (*server)->Infer(inputs.Request("bad", 1));
    EXPECT_EQ(bad.status().code(), StatusCode::kResourceExhausted);
    EXPECT_NE(bad.status().message().find("out of memory while loading"), std::string::npos)
        << bad.status().message();
  }
  EXPECT_EQ((*server)->GetModelStats("bad")->at(0).state, ModelState::kFailed);
  EXPECT_TRUE((*server)->Infer(inputs.Request("good", 1)).ok());
}

TEST_F(InferenceServerTest, InvalidConfigIsRefusedAtCreate) {
  config::InferenceConfig config = Config();
  config.server.queue_size = 0;
  auto server = InferenceServer::Create(config);
  EXPECT_EQ(server.status().code(), StatusCode::kInvalidArgument);
}

// Raw audio for frames [0, batch) of a `batch`-frame utterance at 16 kHz: exactly the
// samples docs/AUDIO.md asks for (the whole utterance), a 440 Hz tone.
std::string ToneUtterance(int frames) {
  std::string pcm(static_cast<size_t>(frames) * 640 * 2, '\0');
  for (size_t i = 0; i < pcm.size() / 2; ++i) {
    const auto sample = static_cast<int16_t>(8000 * std::sin(2 * M_PI * 440 * i / 16000.0));
    std::memcpy(pcm.data() + 2 * i, &sample, 2);
  }
  return pcm;
}

InferRequest RawAudioRequest(const Inputs& inputs, const std::string& model, int batch,
                             const std::string& pcm) {
  InferRequest request = inputs.Request(model, batch);
  request.audio_features = {};
  request.raw_audio = pcm;
  request.utterance_frames = batch;
  return request;
}

TEST_F(InferenceServerTest, NegativeStartFrameIsInvalidArgumentForEitherAudioForm) {
  config::InferenceConfig config = Config();
  config.models["t"] = {WriteModel("t", 1.f), false, WriteEncoder()};
  auto server = Make(config);
  ASSERT_TRUE(server);
  const Inputs inputs = MakeInputs(2, 0.5f);
  const std::string pcm = ToneUtterance(2);
  InferRequest with_features = inputs.Request("t", 2);
  InferRequest with_raw = RawAudioRequest(inputs, "t", 2, pcm);
  for (InferRequest* request : {&with_features, &with_raw}) {
    request->start_frame_idx = -3;
    auto result = server->Infer(*request);
    EXPECT_EQ(result.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(result.status().message().find("start_frame_idx is -3; expected >= 0"),
              std::string::npos)
        << result.status().message();
    request->start_frame_idx = 0;
    auto ok = server->Infer(*request);
    EXPECT_TRUE(ok.ok()) << ok.status().ToString();
  }
  // The refused requests ran nothing.
  auto stats = server->GetModelStats("t");
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->at(0).frames_processed, 4);
}

// The audio encoder runs on the scheduler's worker, so raw audio is bounded by the queue
// like the main Run: with the only worker busy and the queue full, a well-formed raw
// audio request is refused at once (RESOURCE_EXHAUSTED) and a malformed one is answered
// with its own error without waiting for a slot; once the queue drains both forms run,
// with the encoder's time reported.
TEST_F(InferenceServerTest, RawAudioIsQueuedLikeTheMainRunAndCheckedBeforeIt) {
  config::InferenceConfig config = Config();
  config.models["m"] = {WriteModel("m", 1.f), true, ""};
  config.models["t"] = {WriteModel("t", 1.f), true, WriteEncoder()};
  config.server.worker_count_per_gpu = 1;
  config.server.queue_size = 1;
  config.server.max_queue_delay_us = 1000000;  // the worker holds "m" this long
  auto server = Make(config);
  ASSERT_TRUE(server);
  const Inputs inputs = MakeInputs(2, 0.5f);
  const std::string pcm = ToneUtterance(2);
  auto held = std::async(std::launch::async, [&] { return server->Infer(inputs.Request("m", 1)); });
  WaitUntilTaken(*server);
  auto queued = std::async(std::launch::async,
                           [&] { return server->Infer(RawAudioRequest(inputs, "t", 2, pcm)); });
  while (server->scheduler().queue_depth() < 1) std::this_thread::sleep_for(1ms);

  auto refused = server->Infer(RawAudioRequest(inputs, "t", 2, pcm));
  EXPECT_EQ(refused.status().code(), StatusCode::kResourceExhausted) << refused.status().ToString();
  auto short_audio = server->Infer(RawAudioRequest(inputs, "t", 2, pcm.substr(2)));
  EXPECT_EQ(short_audio.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(short_audio.status().message().find("expected exactly 1280 samples"), std::string::npos)
      << short_audio.status().message();

  ASSERT_TRUE(held.get().ok());
  auto from_raw = queued.get();
  ASSERT_TRUE(from_raw.ok()) << from_raw.status().ToString();
  EXPECT_GT(from_raw->audio_processing_ms, 0.0);
  EXPECT_GE(from_raw->total_ms, from_raw->audio_processing_ms + from_raw->inference_ms +
                                    from_raw->queue_wait_ms - 1e-6);
  EXPECT_EQ(from_raw->output.size(), 2 * 3 * kPlane * sizeof(float));
}

}  // namespace
}  // namespace lipsync::inference
