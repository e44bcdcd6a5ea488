// The compositing server under overload and slow loads, on real gRPC servers on
// loopback:
// - admission control (server.max_inflight_requests): one request more than the bound
//   is refused RESOURCE_EXHAUSTED at once, Health is still answered, and a slot freed
//   is taken again;
// - the batch deadline covers the avatar load: a request whose deadline passes while
//   its avatar loads (the load it started itself) is DEADLINE_EXCEEDED at its own
//   deadline, and the load goes on and serves the next request;
// - and the model load: the deadline travels on the inference hop (GrpcInferenceBackend
//   -> the inference gRPC server, whose model loader is held), DEADLINE_EXCEEDED.
// - and ListModels merges the avatar registry's view with the inference server's by id,
//   sorted, one entry per id, capped by the limit.
// Slow parts are held on latches; no timing is asserted.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <condition_variable>
#include <future>
#include <mutex>
#include <string>
#include <vector>

#include "avatar/avatar_fixture.h"
#include "compositing.grpc.pb.h"
#include "compositing/compositing_server.h"
#include "inference/inference_server.h"
#include "rpc/compositing_service.h"
#include "rpc/grpc_inference_backend.h"
#include "rpc/inference_service.h"
#include "rpc/server_setup.h"

namespace lipsync::rpc {
namespace {

namespace pb = ::compositing;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

constexpr int kFace = 320;

// Opens once; Enter() blocks until then and counts who is inside.
class Latch {
 public:
  void Enter() {
    std::unique_lock<std::mutex> lock(mu_);
    ++inside_;
    cv_.notify_all();
    cv_.wait(lock, [&] { return open_; });
  }
  void WaitInside(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return inside_ >= n; });
  }
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int inside_ = 0;
  bool open_ = false;
};

// An inference backend that answers every Infer with a grey face, after the latch.
class HeldBackend : public inference::InferenceBackend {
 public:
  Latch latch;
  Expected<inference::InferResult> Infer(const inference::InferRequest& request) override {
    latch.Enter();
    inference::InferResult result;
    result.batch_size = request.batch_size;
    result.height = result.width = kFace;
    result.output_format = inference::OutputFormat::kUint8;
    result.output.assign(size_t(request.batch_size) * 3 * kFace * kFace, char(128));
    return result;
  }
  Expected<inference::HealthInfo> Health(std::optional<inference::Clock::time_point>) override {
    inference::HealthInfo info;
    info.healthy = true;
    return info;
  }
  Expected<std::vector<inference::ModelStats>> ListModels(bool, int) override {
    return std::vector<inference::ModelStats>{};
  }
  Expected<inference::LoadResult> LoadModel(const std::string&, bool) override {
    return inference::LoadResult{};
  }
  Expected<bool> UnloadModel(const std::string&) override { return false; }
  Expected<std::vector<inference::ModelStats>> GetModelStats(const std::string&) override {
    return std::vector<inference::ModelStats>{};
  }
};

config::CompositingConfig CompositingConfig(const std::string& model_root) {
  config::CompositingConfig config;
  config.model_root = model_root;
  config.server.avatar_store_dir = "off";
  config.server.compositing_threads = 1;
  config.output.format = config::OutputFormat::kJpeg;
  return config;
}

pb::CompositeBatchRequest Request(const std::string& model) {
  pb::CompositeBatchRequest request;
  request.set_model_id(model);
  request.set_batch_size(1);
  request.set_audio_features(std::string(8192 * sizeof(float), '\0'));
  return request;
}

// A compositing server (in-process core + gRPC service on a free loopback port).
struct Compositing {
  std::unique_ptr<compositing::CompositingServer> server;
  std::unique_ptr<CompositingServiceImpl> service;
  std::unique_ptr<GrpcServer> grpc;
  std::unique_ptr<pb::CompositingService::Stub> stub;

  bool Start(const config::CompositingConfig& config, inference::InferenceBackend& backend,
             compositing::CompositingServerOptions options = {}) {
    auto created = compositing::CompositingServer::Create(config, backend, std::move(options));
    EXPECT_TRUE(created.ok()) << created.status().ToString();
    if (!created.ok()) return false;
    server = std::move(*created);
    service = std::make_unique<CompositingServiceImpl>(server.get());
    auto server_options = ServerOptionsFromConfig(config);
    EXPECT_TRUE(server_options.ok()) << server_options.status().ToString();
    if (!server_options.ok()) return false;
    server_options->listen_address = "127.0.0.1:0";
    auto started = GrpcServer::Start(*server_options, {service.get()});
    EXPECT_TRUE(started.ok()) << started.status().ToString();
    if (!started.ok()) return false;
    grpc = std::move(*started);
    stub = pb::CompositingService::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(grpc->port()), grpc::InsecureChannelCredentials()));
    return true;
  }
  grpc::Status Call(const pb::CompositeBatchRequest& request,
                    std::chrono::milliseconds deadline = 60s) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + deadline);
    pb::CompositeBatchResponse response;
    return stub->InferBatchComposite(&context, request, &response);
  }
  ~Compositing() {
    if (grpc) grpc->Shutdown(1s);
  }
};

class CompositingAdmissionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::WriteAvatar(tmp_.path(), "a", 2, 400, 400, avatar::CropRect{40, 40, 360, 360});
  }
  testing::TempDir tmp_;
};

TEST_F(CompositingAdmissionTest, RequestsBeyondMaxInflightAreRefusedResourceExhausted) {
  HeldBackend backend;
  config::CompositingConfig config = CompositingConfig(tmp_.str());
  config.server.max_inflight_requests = 2;
  Compositing c;
  ASSERT_TRUE(c.Start(config, backend));
  // Two requests in flight, held in the inference backend.
  auto first = std::async(std::launch::async, [&] { return c.Call(Request("a")); });
  auto second = std::async(std::launch::async, [&] { return c.Call(Request("a")); });
  backend.latch.WaitInside(2);
  const grpc::Status refused = c.Call(Request("a"));
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(), HasSubstr("compositing server has 2 requests in flight"));
  EXPECT_THAT(refused.error_message(), HasSubstr("server.max_inflight_requests"));
  {
    // Observation is never refused.
    grpc::ClientContext context;
    pb::HealthResponse health;
    EXPECT_TRUE(c.stub->Health(&context, pb::HealthRequest(), &health).ok());
  }
  backend.latch.Open();
  EXPECT_TRUE(first.get().ok());
  EXPECT_TRUE(second.get().ok());
  // Slots freed (whatever the outcome) are taken again.
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(c.Call(Request("a")).ok());
}

TEST_F(CompositingAdmissionTest, ZeroMeansNoBound) {
  HeldBackend backend;
  config::CompositingConfig config = CompositingConfig(tmp_.str());
  config.server.max_inflight_requests = 0;
  Compositing c;
  ASSERT_TRUE(c.Start(config, backend));
  std::vector<std::future<grpc::Status>> calls;
  for (int i = 0; i < 6; ++i) {
    calls.push_back(std::async(std::launch::async, [&] { return c.Call(Request("a")); }));
  }
  backend.latch.WaitInside(6);
  backend.latch.Open();
  for (auto& call : calls) EXPECT_TRUE(call.get().ok());
}

TEST_F(CompositingAdmissionTest, DeadlinePassingWhileTheAvatarLoadsIsDeadlineExceeded) {
  HeldBackend backend;
  backend.latch.Open();
  Latch decode;
  compositing::CompositingServerOptions options;
  options.adjust_avatars = [&](avatar::AvatarRegistryOptions& o) {
    o.before_decode = [&](const std::string&) { decode.Enter(); };
  };
  Compositing c;
  ASSERT_TRUE(c.Start(CompositingConfig(tmp_.str()), backend, std::move(options)));
  // In-process: this request starts the avatar's load itself; it ends at its deadline.
  compositing::CompositeRequest request;
  request.model_id = "a";
  request.batch_size = 1;
  const std::string audio(8192 * sizeof(float), '\0');
  request.audio_features = audio;
  request.deadline = compositing::Clock::now() + 100ms;
  auto late = c.server->InferBatchComposite(request);
  ASSERT_EQ(late.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_THAT(late.status().message(), HasSubstr("avatar 'a' is still loading"));
  decode.WaitInside(1);  // the load is really held, not finished
  // Over gRPC, with the client's deadline, while the load is still held.
  EXPECT_EQ(c.Call(Request("a"), 100ms).error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  decode.Open();
  // The load went on: the next request is served without loading it again.
  EXPECT_TRUE(c.Call(Request("a")).ok());
  EXPECT_EQ(c.server->avatars().Stats("a")->load_attempts, 1);
}

TEST_F(CompositingAdmissionTest, DeadlinePassingWhileTheModelLoadsIsDeadlineExceeded) {
  // A real inference gRPC server whose model loader is held.
  const std::string model = (tmp_.path() / "a.onnx").string();
  ASSERT_TRUE(image::WriteFileBytes(model, "not loaded: the loader is held").ok());
  config::InferenceConfig inference_config;
  inference_config.onnx.use_cuda = false;
  inference_config.models["a"] = {model, false, ""};
  Latch load;
  auto inference =
      inference::InferenceServer::Create(inference_config, [&](inference::RegistryOptions& o) {
        o.loader = [&](const inference::ModelFiles&,
                       int) -> Expected<std::shared_ptr<inference::OnnxModel>> {
          load.Enter();
          return Status::Unavailable("test loader: released");
        };
      });
  ASSERT_TRUE(inference.ok()) << inference.status().ToString();
  InferenceServiceImpl inference_service(inference->get());
  auto inference_options = ServerOptionsFromConfig(inference_config);
  ASSERT_TRUE(inference_options.ok());
  inference_options->listen_address = "127.0.0.1:0";
  auto inference_grpc = GrpcServer::Start(*inference_options, {&inference_service});
  ASSERT_TRUE(inference_grpc.ok()) << inference_grpc.status().ToString();
  GrpcBackendOptions backend_options;
  backend_options.target = "127.0.0.1:" + std::to_string((*inference_grpc)->port());
  backend_options.max_retries = 0;
  auto backend = GrpcInferenceBackend::Create(backend_options);
  ASSERT_TRUE(backend.ok()) << backend.status().ToString();

  Compositing c;
  ASSERT_TRUE(c.Start(CompositingConfig(tmp_.str()), **backend));
  compositing::CompositeRequest request;
  request.model_id = "a";
  request.batch_size = 1;
  const std::string audio(8192 * sizeof(float), '\0');
  request.audio_features = audio;
  request.deadline = compositing::Clock::now() + 300ms;
  auto late = c.server->InferBatchComposite(request);
  ASSERT_EQ(late.status().code(), StatusCode::kDeadlineExceeded) << late.status().ToString();
  load.WaitInside(1);  // the model load was reached and is still held
  load.Open();
  (*inference_grpc)->Shutdown(1s);
}

// An inference backend whose ListModels answers a fixed list: unsorted, one id twice
// (as a fleet of servers may answer it; the last one counts).
class ListingBackend : public HeldBackend {
 public:
  Expected<std::vector<inference::ModelStats>> ListModels(bool, int) override {
    std::vector<inference::ModelStats> models;
    for (const char* id : {"z", "a", "m", "z"}) {
      inference::ModelStats s;
      s.model_id = id;
      s.state = inference::ModelState::kAvailable;
      models.push_back(s);
    }
    models.back().state = inference::ModelState::kReady;
    return models;
  }
};

TEST_F(CompositingAdmissionTest, ListModelsMergesBothViewsById) {
  testing::WriteAvatar(tmp_.path(), "b", 2, 400, 400, avatar::CropRect{40, 40, 360, 360});
  ListingBackend backend;
  Compositing c;
  ASSERT_TRUE(c.Start(CompositingConfig(tmp_.str()), backend));
  ASSERT_TRUE(c.server->avatars().Load("b").ok());
  auto list = c.server->ListModels(/*include_available=*/true, 0);
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  std::vector<std::string> ids;
  for (const auto& m : list->models) ids.push_back(m.model_id);
  EXPECT_EQ(ids, (std::vector<std::string>{"a", "b", "m", "z"}));
  const auto& models = list->models;
  ASSERT_EQ(models.size(), 4u);
  // "a": an available avatar (from the directory scan) and an inference model.
  ASSERT_TRUE(models[0].avatar && models[0].inference);
  EXPECT_EQ(models[0].avatar->state, avatar::AvatarState::kUnloaded);
  // "b": a loaded avatar the inference server does not list.
  ASSERT_TRUE(models[1].avatar);
  EXPECT_EQ(models[1].avatar->state, avatar::AvatarState::kLoaded);
  EXPECT_FALSE(models[1].inference);
  // "m", "z": inference only; "z" once, its last entry.
  EXPECT_FALSE(models[2].avatar);
  EXPECT_FALSE(models[3].avatar);
  ASSERT_TRUE(models[3].inference);
  EXPECT_EQ(models[3].inference->state, inference::ModelState::kReady);
  EXPECT_EQ(list->loaded_models, 1);

  // The same over gRPC, capped by the limit (the first ids).
  lipsync::admin::ListModelsRequest request;
  request.set_include_available(true);
  request.set_limit(3);
  lipsync::admin::ListModelsResponse response;
  grpc::ClientContext context;
  ASSERT_TRUE(c.stub->ListModels(&context, request, &response).ok());
  ASSERT_EQ(response.models_size(), 3);
  EXPECT_EQ(response.models(0).model_id(), "a");
  EXPECT_EQ(response.models(1).model_id(), "b");
  EXPECT_EQ(response.models(2).model_id(), "m");
  EXPECT_EQ(response.loaded_models(), 1);
}

}  // namespace
}  // namespace lipsync::rpc
