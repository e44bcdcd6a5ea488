// Model prefetch end to end, on real gRPC servers on loopback:
// - a compositing request for a cold tenant (avatar not loaded) sends PrefetchModel to
//   the inference server, whose model load starts while the avatar still loads (the
//   avatar's decode waits for the model loader to be entered), and the inference call
//   then joins that load (one load in all); a hot tenant sends no hint;
// - PrefetchModel is scope "infer" on the tenant through the call wrapper: another
//   tenant's model or a credential without "infer" is PERMISSION_DENIED (and LoadModel,
//   admin, stays refused to the same credential);
// - a prefetch that fails never fails the request; GrpcInferenceBackend drops hints
//   beyond max_prefetches_in_flight.
// No timing is asserted: the order is proven by waiting on events.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <string>

#include "auth/authenticator.h"
#include "avatar/avatar_fixture.h"
#include "compositing.grpc.pb.h"
#include "compositing/compositing_server.h"
#include "inference.grpc.pb.h"
#include "inference/inference_server.h"
#include "inference/onnx_model.h"
#include "modelgen/model_builder.h"
#include "rpc/compositing_service.h"
#include "rpc/grpc_inference_backend.h"
#include "rpc/inference_service.h"
#include "rpc/server_setup.h"

namespace lipsync::rpc {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr int kFace = 320;

// Set once; Wait() returns whether it was set within `limit` (a missed event fails the
// test instead of hanging it).
class Event {
 public:
  void Set() {
    std::lock_guard<std::mutex> lock(mu_);
    set_ = true;
    cv_.notify_all();
  }
  bool Wait(std::chrono::seconds limit) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, limit, [&] { return set_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool set_ = false;
};

config::CompositingConfig CompositingConfig(const std::string& model_root) {
  config::CompositingConfig config;
  config.model_root = model_root;
  config.server.avatar_store_dir = "off";
  config.server.compositing_threads = 1;
  config.output.format = config::OutputFormat::kJpeg;
  return config;
}

compositing::CompositeRequest Request(const std::string& model, const std::string& audio) {
  compositing::CompositeRequest request;
  request.model_id = model;
  request.batch_size = 1;
  request.audio_features = audio;
  return request;
}

// A real inference server (demo models "a" and "b") behind its gRPC service.
struct Inference {
  std::unique_ptr<inference::InferenceServer> server;
  std::unique_ptr<InferenceServiceImpl> service;
  std::unique_ptr<GrpcServer> grpc;

  bool Start(const fs::path& dir, const std::function<void(inference::RegistryOptions&)>& adjust,
             const std::string& credentials_file = "") {
    const std::string model = (dir / "demo.onnx").string();
    EXPECT_TRUE(modelgen::WriteDemoLipSyncModel(model).ok());
    config::InferenceConfig config;
    config.onnx.use_cuda = false;
    config.models["a"] = {model, false, ""};
    config.models["b"] = {model, false, ""};
    auto created = inference::InferenceServer::Create(config, adjust);
    EXPECT_TRUE(created.ok()) << created.status().ToString();
    if (!created.ok()) return false;
    server = std::move(*created);
    service = std::make_unique<InferenceServiceImpl>(server.get());
    auto options = ServerOptionsFromConfig(config);
    EXPECT_TRUE(options.ok()) << options.status().ToString();
    if (!options.ok()) return false;
    options->listen_address = "127.0.0.1:0";
    options->ops.auth.credentials_file = credentials_file;
    auto started = GrpcServer::Start(*options, {service.get()});
    EXPECT_TRUE(started.ok()) << started.status().ToString();
    if (!started.ok()) return false;
    grpc = std::move(*started);
    return true;
  }
  std::string target() const { return "127.0.0.1:" + std::to_string(grpc->port()); }
  ~Inference() {
    if (grpc) grpc->Shutdown(1s);
  }
};

class PrefetchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::WriteAvatar(tmp_.path(), "a", 2, 400, 400, avatar::CropRect{40, 40, 360, 360});
  }
  testing::TempDir tmp_;
  const std::string audio_ = std::string(8192 * sizeof(float), '\0');
};

TEST_F(PrefetchTest, ColdTenantsModelLoadStartsWhileItsAvatarLoads) {
  Event model_load_started;
  Inference inference;
  ASSERT_TRUE(inference.Start(tmp_.path(), [&](inference::RegistryOptions& o) {
    o.loader = [&](const inference::ModelFiles& files,
                   int device) -> Expected<std::shared_ptr<inference::OnnxModel>> {
      model_load_started.Set();
      return inference::OnnxModel::Load(files, device, nullptr);
    };
  }));
  GrpcBackendOptions backend_options;
  backend_options.target = inference.target();
  auto backend = GrpcInferenceBackend::Create(backend_options);
  ASSERT_TRUE(backend.ok()) << backend.status().ToString();

  std::atomic<bool> model_loading_during_avatar_load{false};
  compositing::CompositingServerOptions options;
  options.adjust_avatars = [&](avatar::AvatarRegistryOptions& o) {
    o.before_decode = [&](const std::string&) {
      model_loading_during_avatar_load = model_load_started.Wait(30s);
    };
  };
  auto server =
      compositing::CompositingServer::Create(CompositingConfig(tmp_.str()), **backend, options);
  ASSERT_TRUE(server.ok()) << server.status().ToString();

  auto first = (*server)->InferBatchComposite(Request("a", audio_));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_TRUE(model_loading_during_avatar_load);
  inference::ModelRegistry& registry = inference.server->registry();
  EXPECT_EQ(registry.prefetches_queued(), 1);
  EXPECT_EQ(registry.load_attempts(), 1);  // the inference call joined the prefetch's load

  // Hot: the avatar is loaded, no hint is sent.
  ASSERT_TRUE((*server)->InferBatchComposite(Request("a", audio_)).ok());
  EXPECT_EQ(registry.prefetches_queued(), 1);
  EXPECT_EQ(registry.load_attempts(), 1);
}

// PrefetchModel as `key` over gRPC.
grpc::Status PrefetchAs(const std::string& target, const std::string& key,
                        const std::string& model) {
  auto stub = ::inference::InferenceService::NewStub(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 30s);
  context.AddMetadata("authorization", "Bearer " + key);
  ::inference::PrefetchModelRequest request;
  request.set_model_id(model);
  ::inference::PrefetchModelResponse response;
  return stub->PrefetchModel(&context, request, &response);
}

TEST_F(PrefetchTest, PrefetchNeedsScopeInferOnTheTenant) {
  const fs::path credentials = tmp_.path() / "credentials.yaml";
  {
    std::ofstream out(credentials);
    out << "api_keys:\n"
        << "  - {id: comp, sha256: " << auth::HashApiKey("comp-secret")
        << ", tenants: ['a'], scopes: [infer]}\n"
        << "  - {id: viewer, sha256: " << auth::HashApiKey("viewer-secret")
        << ", tenants: ['*'], scopes: [stream]}\n";
  }
  Inference inference;
  ASSERT_TRUE(inference.Start(tmp_.path(), {}, credentials.string()));
  inference::ModelRegistry& registry = inference.server->registry();

  EXPECT_EQ(PrefetchAs(inference.target(), "comp-secret", "b").error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(PrefetchAs(inference.target(), "viewer-secret", "a").error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(PrefetchAs(inference.target(), "wrong-secret", "a").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(registry.prefetches_queued(), 0);
  {
    // The compositing credential may not load models (admin).
    auto stub = ::inference::InferenceService::NewStub(
        grpc::CreateChannel(inference.target(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer comp-secret");
    lipsync::admin::LoadModelRequest request;
    request.set_model_id("a");
    lipsync::admin::LoadModelResponse response;
    EXPECT_EQ(stub->LoadModel(&context, request, &response).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  const grpc::Status own = PrefetchAs(inference.target(), "comp-secret", "a");
  EXPECT_TRUE(own.ok()) << own.error_message();
  EXPECT_EQ(registry.prefetches_queued(), 1);
}

// Answers Infer with a grey face; every prefetch fails.
class FailingPrefetchBackend : public inference::InferenceBackend {
 public:
  std::atomic<int> prefetches{0};
  Expected<inference::InferResult> Infer(const inference::InferRequest& request) override {
    inference::InferResult result;
    result.batch_size = request.batch_size;
    result.height = result.width = kFace;
    result.output_format = inference::OutputFormat::kUint8;
    result.output.assign(size_t(request.batch_size) * 3 * kFace * kFace, char(128));
    return result;
  }
  Expected<inference::HealthInfo> Health(std::optional<inference::Clock::time_point>) override {
    return inference::HealthInfo{};
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
  Expected<inference::PrefetchResult> PrefetchModel(const std::string&) override {
    ++prefetches;
    return Status::Internal("test: prefetch refused");
  }
};

TEST_F(PrefetchTest, FailedPrefetchNeverFailsTheRequest) {
  FailingPrefetchBackend backend;
  auto server = compositing::CompositingServer::Create(CompositingConfig(tmp_.str()), backend);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  auto cold = (*server)->InferBatchComposite(Request("a", audio_));
  EXPECT_TRUE(cold.ok()) << cold.status().ToString();
  EXPECT_EQ(backend.prefetches, 1);
  EXPECT_TRUE((*server)->InferBatchComposite(Request("a", audio_)).ok());
  EXPECT_EQ(backend.prefetches, 1);  // hot: no hint
}

TEST_F(PrefetchTest, GrpcBackendSendsHintsWithoutWaitingAndBoundsThem) {
  // Nothing listens there: a hint is still only sent (never an error), and hints
  // beyond max_prefetches_in_flight are dropped.
  GrpcBackendOptions options;
  options.target = "127.0.0.1:1";
  options.max_prefetches_in_flight = 0;
  auto none = GrpcInferenceBackend::Create(options);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*(*none)->PrefetchModel("a"), inference::PrefetchResult::kDropped);

  options.max_prefetches_in_flight = 1;
  options.prefetch_timeout = 5s;
  auto one = GrpcInferenceBackend::Create(options);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(*(*one)->PrefetchModel("a"), inference::PrefetchResult::kSent);
  // The destructor waits for the hint in flight (it fails fast: connection refused).
}

}  // namespace
}  // namespace lipsync::rpc
