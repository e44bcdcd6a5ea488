// Standard gRPC tooling and shutdown (issue 12):
//  - server reflection on both services of `lipsync serve`, read as grpcurl does (the
//    reflection service's own descriptors, a generic stub, FileDescriptorProto answers);
//  - grpc.health.v1: NOT_SERVING until a server is ready, SERVING, NOT_SERVING while
//    draining (a Watch stream sees it);
//  - retries on the compositing -> inference hop by gRPC's own retry policy: a 5 MB
//    batch is retried after UNAVAILABLE (the retry buffer is above a full batch), the
//    budget is bounded, a killed server is a clear UNAVAILABLE and a restarted one
//    serves again; with a list of servers, UNAVAILABLE fails over to the next-ranked;
//  - SIGTERM: `lipsync serve` exits long before its grace period when idle (open idle
//    channels and a health Watch do not hold it), and under load answers every request
//    it accepted.
#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/dynamic_message.h>
#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "e2e/e2e_cluster.h"
#include "health.grpc.pb.h"

namespace lipsync::e2e {
namespace {

using namespace std::chrono_literals;
namespace health = ::grpc::health::v1;
namespace pb = ::inference;
using google::protobuf::Message;

// ---- helpers ----

struct ServeProcess {
  pid_t pid = -1;
  int inference_port = 0;
  int compositing_port = 0;
  fs::path log;
};

// `lipsync serve` on two free ports with `grace_seconds` for both servers.
ServeProcess StartServe(const std::string& name, int grace_seconds) {
  ServeProcess serve;
  serve.inference_port = FreePort();
  serve.compositing_port = FreePort();
  const fs::path inference_yaml = ModelRoot() / (name + "_inference.yaml");
  std::ofstream(inference_yaml) << "server:\n  port: \"127.0.0.1:" << serve.inference_port
                                << "\"\n  worker_count_per_gpu: 1\n  shutdown_grace_seconds: "
                                << grace_seconds << "\n"
                                << "onnx:\n  use_cuda: false\n"
                                << "model_root: \"" << ModelRoot().string() << "\"\n";
  const fs::path compositing_yaml = ModelRoot() / (name + "_compositing.yaml");
  std::ofstream(compositing_yaml) << "server:\n  port: \"127.0.0.1:" << serve.compositing_port
                                  << "\"\n  compositing_threads: 2\n  shutdown_grace_seconds: "
                                  << grace_seconds << "\n"
                                  << "output:\n  region_jpeg: false\n"
                                  << "model_root: \"" << ModelRoot().string() << "\"\n";
  serve.log = ModelRoot() / (name + "_serve.log");
  serve.pid = Spawn({"serve", "--inference-config", inference_yaml.string(), "--compositing-config",
                     compositing_yaml.string()},
                    serve.log);
  return serve;
}

std::string ReadText(const fs::path& path) {
  std::stringstream text;
  text << std::ifstream(path, std::ios::binary).rdbuf();
  return text.str();
}

// Sends SIGTERM and waits for the exit; the seconds it took, or -1 when it was still
// running after `limit` (then it is killed).
double StopAndTime(pid_t pid, std::chrono::seconds limit, int* exit_status) {
  const auto start = std::chrono::steady_clock::now();
  kill(pid, SIGTERM);
  while (std::chrono::steady_clock::now() - start < limit) {
    if (waitpid(pid, exit_status, WNOHANG) == pid) {
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    std::this_thread::sleep_for(10ms);
  }
  kill(pid, SIGKILL);
  waitpid(pid, exit_status, 0);
  return -1;
}

health::HealthCheckResponse::ServingStatus HealthStatus(int port, const std::string& service) {
  auto stub = health::Health::NewStub(LoopbackChannel(port));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 5s);
  health::HealthCheckRequest request;
  request.set_service(service);
  health::HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return response.status();
}

// One ServerReflectionInfo exchange, as grpcurl makes it: the request is built and the
// answer read through the reflection service's own descriptors (in the generated pool,
// linked with the servers), over a generic stub. `field` is the request's oneof member.
std::unique_ptr<Message> Reflect(int port, const std::string& field, const std::string& value) {
  const auto* pool = google::protobuf::DescriptorPool::generated_pool();
  const auto* request_type =
      pool->FindMessageTypeByName("grpc.reflection.v1alpha.ServerReflectionRequest");
  const auto* response_type =
      pool->FindMessageTypeByName("grpc.reflection.v1alpha.ServerReflectionResponse");
  if (request_type == nullptr || response_type == nullptr) {
    ADD_FAILURE() << "grpc.reflection.v1alpha is not linked";
    return nullptr;
  }
  auto* factory = google::protobuf::MessageFactory::generated_factory();
  std::unique_ptr<Message> request(factory->GetPrototype(request_type)->New());
  request->GetReflection()->SetString(request.get(), request_type->FindFieldByName(field), value);
  const std::string bytes = request->SerializeAsString();

  grpc::GenericStub stub(LoopbackChannel(port));
  grpc::CompletionQueue queue;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 10s);
  auto call = stub.PrepareCall(
      &context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &queue);
  void* tag = nullptr;
  bool ok = false;
  auto step = [&](intptr_t expected) {
    EXPECT_TRUE(queue.Next(&tag, &ok));
    EXPECT_EQ(reinterpret_cast<intptr_t>(tag), expected);
    return ok;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  EXPECT_TRUE(step(1));
  grpc::Slice slice(bytes);
  grpc::ByteBuffer out(&slice, 1);
  call->Write(out, reinterpret_cast<void*>(2));
  EXPECT_TRUE(step(2));
  call->WritesDone(reinterpret_cast<void*>(3));
  step(3);
  grpc::ByteBuffer in;
  call->Read(&in, reinterpret_cast<void*>(4));
  const bool got = step(4);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  step(5);
  EXPECT_TRUE(status.ok()) << status.error_message();
  if (!got) return nullptr;
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(in.Dump(&slices).ok());
  std::string answer;
  for (const auto& s : slices) answer.append(reinterpret_cast<const char*>(s.begin()), s.size());
  std::unique_ptr<Message> response(factory->GetPrototype(response_type)->New());
  EXPECT_TRUE(response->ParseFromString(answer));
  return response;
}

// The services a server lists by reflection.
std::vector<std::string> ReflectedServices(int port) {
  std::vector<std::string> names;
  std::unique_ptr<Message> response = Reflect(port, "list_services", "");
  if (!response) return names;
  const auto* descriptor = response->GetDescriptor();
  const Message& list = response->GetReflection()->GetMessage(
      *response, descriptor->FindFieldByName("list_services_response"));
  const auto* service_field = list.GetDescriptor()->FindFieldByName("service");
  for (int i = 0; i < list.GetReflection()->FieldSize(list, service_field); ++i) {
    const Message& service = list.GetReflection()->GetRepeatedMessage(list, service_field, i);
    names.push_back(service.GetReflection()->GetString(
        service, service.GetDescriptor()->FindFieldByName("name")));
  }
  return names;
}

// The methods of `symbol` (a service) as its reflected FileDescriptorProto says.
std::vector<std::string> ReflectedMethods(int port, const std::string& symbol) {
  std::vector<std::string> methods;
  std::unique_ptr<Message> response = Reflect(port, "file_containing_symbol", symbol);
  if (!response) return methods;
  const Message& files = response->GetReflection()->GetMessage(
      *response, response->GetDescriptor()->FindFieldByName("file_descriptor_response"));
  const auto* proto_field = files.GetDescriptor()->FindFieldByName("file_descriptor_proto");
  for (int i = 0; i < files.GetReflection()->FieldSize(files, proto_field); ++i) {
    google::protobuf::FileDescriptorProto file;
    EXPECT_TRUE(
        file.ParseFromString(files.GetReflection()->GetRepeatedString(files, proto_field, i)));
    for (const auto& service : file.service()) {
      if (file.package() + "." + service.name() != symbol) continue;
      for (const auto& method : service.method()) methods.push_back(method.name());
    }
  }
  return methods;
}

bool Contains(const std::vector<std::string>& list, const std::string& item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

// ---- reflection and health on the real binary ----

TEST(GrpcToolingTest, ServeAnswersReflectionAndHealthOnBothServices) {
  ServeProcess serve = StartServe("tooling", 20);
  for (int port : {serve.inference_port, serve.compositing_port}) {
    const std::vector<std::string> services = ReflectedServices(port);
    EXPECT_TRUE(Contains(services, "grpc.health.v1.Health")) << port;
    EXPECT_TRUE(Contains(services, "grpc.reflection.v1alpha.ServerReflection")) << port;
  }
  EXPECT_TRUE(Contains(ReflectedServices(serve.inference_port), "inference.InferenceService"));
  EXPECT_TRUE(
      Contains(ReflectedServices(serve.compositing_port), "compositing.CompositingService"));
  EXPECT_TRUE(
      Contains(ReflectedMethods(serve.inference_port, "inference.InferenceService"), "InferBatch"));
  EXPECT_TRUE(Contains(ReflectedMethods(serve.compositing_port, "compositing.CompositingService"),
                       "InferBatchComposite"));

  EXPECT_EQ(HealthStatus(serve.inference_port, ""), health::HealthCheckResponse::SERVING);
  EXPECT_EQ(HealthStatus(serve.compositing_port, "compositing.CompositingService"),
            health::HealthCheckResponse::SERVING);

  // Draining: a Watch stream (a load balancer's view) sees NOT_SERVING, and the open
  // stream does not hold the shutdown.
  auto channel = LoopbackChannel(serve.compositing_port);
  auto stub = health::Health::NewStub(channel);
  grpc::ClientContext watch_context;
  watch_context.set_deadline(std::chrono::system_clock::now() + 30s);
  health::HealthCheckRequest request;
  auto watch = stub->Watch(&watch_context, request);
  health::HealthCheckResponse update;
  ASSERT_TRUE(watch->Read(&update));
  EXPECT_EQ(update.status(), health::HealthCheckResponse::SERVING);
  int exit_status = 0;
  std::thread stopper([&] {
    const double seconds = StopAndTime(serve.pid, 15s, &exit_status);
    EXPECT_GE(seconds, 0) << "serve did not exit within 15 s of SIGTERM (grace is 20 s)";
    std::printf("[ figures  ] serve with a health Watch open exited %.2f s after SIGTERM\n",
                seconds);
  });
  bool saw_not_serving = false;
  while (watch->Read(&update)) {
    if (update.status() == health::HealthCheckResponse::NOT_SERVING) saw_not_serving = true;
  }
  stopper.join();
  EXPECT_TRUE(saw_not_serving);
  EXPECT_TRUE(WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0) << ReadText(serve.log);
}

TEST(GrpcToolingTest, HealthIsNotServingUntilTheServerSaysItIsReady) {
  auto server = inference::InferenceServer::Create(InferenceTestConfig());
  ASSERT_TRUE(server.ok());
  rpc::InferenceServiceImpl service(server->get());
  rpc::ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.health_service_names = {"inference.InferenceService"};
  options.serving_at_start = false;
  auto grpc_server = rpc::GrpcServer::Start(options, {&service});
  ASSERT_TRUE(grpc_server.ok());
  const int port = (*grpc_server)->port();
  EXPECT_EQ(HealthStatus(port, ""), health::HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(HealthStatus(port, "inference.InferenceService"),
            health::HealthCheckResponse::NOT_SERVING);
  (*grpc_server)->SetServing(true);
  EXPECT_EQ(HealthStatus(port, "inference.InferenceService"), health::HealthCheckResponse::SERVING);
  (*grpc_server)->Shutdown(0ms);
}

// ---- gRPC's retry policy on the inference hop ----

// An InferenceService that answers UNAVAILABLE to its first `fail_first` calls, then
// success; it records every call's visual bytes.
class FlakyInference final : public pb::InferenceService::Service {
 public:
  explicit FlakyInference(int fail_first) : fail_first_(fail_first) {}
  grpc::Status InferBatch(grpc::ServerContext*, const pb::InferBatchRequest* request,
                          pb::InferBatchResponse* response) override {
    std::lock_guard<std::mutex> lock(mu_);
    sizes_.push_back(request->visual_frames().size());
    if (static_cast<int>(sizes_.size()) <= fail_first_) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "flaky: try again");
    }
    if (request->model_id().rfind("invalid", 0) == 0) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "bad model id");
    }
    response->set_success(true);
    response->set_batch_size(request->batch_size());
    return grpc::Status::OK;
  }
  std::vector<size_t> sizes() {
    std::lock_guard<std::mutex> lock(mu_);
    return sizes_;
  }

 private:
  const int fail_first_;
  std::mutex mu_;
  std::vector<size_t> sizes_;
};

struct FlakyServer {
  FlakyServer(int fail_first, int port = 0) : service(fail_first) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:" + std::to_string(port), grpc::InsecureServerCredentials(),
                             &bound);
    builder.SetMaxReceiveMessageSize(100 << 20);
    builder.RegisterService(&service);
    server = builder.BuildAndStart();
  }
  ~FlakyServer() {
    if (server) server->Shutdown(std::chrono::system_clock::now());
  }
  std::string target() const { return "127.0.0.1:" + std::to_string(bound); }
  FlakyInference service;
  int bound = 0;
  std::unique_ptr<grpc::Server> server;
};

inference::InferRequest Batch(const std::string& model, const std::string& visual) {
  inference::InferRequest request;
  request.model_id = model;
  request.batch_size = 1;
  request.visual_frames = visual;
  request.deadline = std::chrono::steady_clock::now() + 20s;
  return request;
}

TEST(GrpcRetryPolicyTest, AFiveMegabyteBatchIsRetriedAfterUnavailable) {
  FlakyServer flaky(/*fail_first=*/2);
  ASSERT_TRUE(flaky.server);
  rpc::GrpcBackendOptions options;
  options.target = flaky.target();
  options.max_retries = 3;
  options.initial_backoff = 10ms;
  auto backend = rpc::GrpcInferenceBackend::Create(options);
  ASSERT_TRUE(backend.ok());
  const std::string visual(5 << 20, '\x01');  // above gRPC's default 256 KiB buffer
  auto result = (*backend)->Infer(Batch("identity", visual));
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(flaky.service.sizes(), std::vector<size_t>(3, visual.size()))
      << "two UNAVAILABLE answers, then the third attempt (the whole batch each time)";
  EXPECT_EQ((*backend)->attempts(), 1) << "one call; the retries are gRPC's";
}

TEST(GrpcRetryPolicyTest, TheRetryBudgetIsBoundedAndOtherCodesAreNotRetried) {
  FlakyServer flaky(/*fail_first=*/100);
  ASSERT_TRUE(flaky.server);
  rpc::GrpcBackendOptions options;
  options.target = flaky.target();
  options.max_retries = 2;
  options.initial_backoff = 10ms;
  auto backend = rpc::GrpcInferenceBackend::Create(options);
  ASSERT_TRUE(backend.ok());
  const Status status = (*backend)->Infer(Batch("identity", "")).status();
  EXPECT_EQ(status.code(), StatusCode::kUnavailable);
  EXPECT_NE(status.message().find(flaky.target()), std::string::npos) << status.message();
  EXPECT_EQ(flaky.service.sizes().size(), 3u) << "1 attempt + max_retries 2";

  FlakyServer strict(/*fail_first=*/0);
  options.target = strict.target();
  auto second = rpc::GrpcInferenceBackend::Create(options);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ((*second)->Infer(Batch("invalid", "")).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(strict.service.sizes().size(), 1u) << "INVALID_ARGUMENT is not retried";
}

TEST(GrpcRetryPolicyTest, AKilledServerIsAClearUnavailableAndARestartedOneServesAgain) {
  auto server = std::make_unique<FlakyServer>(0);
  const int port = server->bound;
  rpc::GrpcBackendOptions options;
  options.target = server->target();
  options.max_retries = 2;
  options.initial_backoff = 10ms;
  options.max_reconnect_backoff = 200ms;
  auto backend = rpc::GrpcInferenceBackend::Create(options);
  ASSERT_TRUE(backend.ok());
  ASSERT_TRUE((*backend)->Infer(Batch("identity", "x")).ok());
  server.reset();  // gone: its connections close, its port refuses
  const Status down = (*backend)->Infer(Batch("identity", "x")).status();
  EXPECT_EQ(down.code(), StatusCode::kUnavailable) << down.ToString();
  EXPECT_NE(down.message().find("inference server 127.0.0.1:" + std::to_string(port)),
            std::string::npos)
      << down.message();
  server = std::make_unique<FlakyServer>(0, port);
  ASSERT_EQ(server->bound, port);
  // The channel reconnects within max_reconnect_backoff; bounded wait for it.
  Status back = Status::Unavailable("not tried");
  for (int i = 0; i < 50 && !back.ok(); ++i) {
    back = (*backend)->Infer(Batch("identity", "x")).status();
    if (!back.ok()) std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(back.ok()) << back.ToString();
}

TEST(GrpcRetryPolicyTest, AListFailsOverToTheNextRankedServerOnUnavailable) {
  FlakyServer a(/*fail_first=*/1000), b(0);
  const std::vector<std::string> targets = {a.target(), b.target()};
  // A model whose first choice is the failing server.
  std::string model;
  for (int i = 0; model.empty(); ++i) {
    const std::string id = "tenant" + std::to_string(i);
    if (rpc::RendezvousOrder(targets, id)[0] == 0) model = id;
  }
  rpc::GrpcBackendOptions options;
  options.targets = targets;
  options.max_retries = 1;
  options.initial_backoff = 10ms;
  auto backend = rpc::GrpcInferenceBackend::Create(options);
  ASSERT_TRUE(backend.ok());
  auto result = (*backend)->Infer(Batch(model, "x"));
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(a.service.sizes().size(), 2u) << "first choice: 1 attempt + 1 retry";
  EXPECT_EQ(b.service.sizes().size(), 1u) << "then the next-ranked server";
  // Not UNAVAILABLE: the answer stands, no failover.
  std::string invalid;
  for (int i = 0; invalid.empty(); ++i) {
    const std::string id = "invalid" + std::to_string(i);
    if (rpc::RendezvousOrder(targets, id)[0] == 1) invalid = id;
  }
  const size_t a_calls = a.service.sizes().size();
  EXPECT_EQ((*backend)->Infer(Batch(invalid, "x")).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(a.service.sizes().size(), a_calls) << "INVALID_ARGUMENT must not fail over";

  rpc::GrpcBackendOptions both = options;
  both.target = a.target();
  EXPECT_EQ(rpc::GrpcInferenceBackend::Create(both).status().code(), StatusCode::kInvalidArgument);
  rpc::GrpcBackendOptions twice;
  twice.targets = {a.target(), a.target()};
  EXPECT_EQ(rpc::GrpcInferenceBackend::Create(twice).status().code(), StatusCode::kInvalidArgument);
}

// ---- SIGTERM ----

grpc::Status Composite(::compositing::CompositingService::Stub& stub, const std::string& model,
                       int batch) {
  ::compositing::CompositeBatchRequest request;
  request.set_model_id(model);
  request.set_batch_size(batch);
  request.set_audio_features(std::string(8192 * 4, '\0'));
  ::compositing::CompositeBatchResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 30s);
  return stub.InferBatchComposite(&context, request, &response);
}

TEST(ServeShutdownTest, IdleServeExitsLongBeforeTheGracePeriodWithChannelsOpen) {
  ServeProcess serve = StartServe("idle", 20);
  // Connected, idle clients of both services (channels kept open).
  auto compositing_channel = LoopbackChannel(serve.compositing_port);
  auto stub = ::compositing::CompositingService::NewStub(compositing_channel);
  ASSERT_TRUE(Composite(*stub, "identity", 2).ok());
  auto inference_channel = LoopbackChannel(serve.inference_port);
  EXPECT_EQ(HealthStatus(serve.inference_port, ""), health::HealthCheckResponse::SERVING);
  int exit_status = 0;
  const double seconds = StopAndTime(serve.pid, 15s, &exit_status);
  std::printf("[ figures  ] idle serve exited %.2f s after SIGTERM (grace 20 s)\n", seconds);
  EXPECT_GE(seconds, 0) << "still running 15 s after SIGTERM";
  // The bound: 2 s when idle; checked loosely here (a loaded test machine).
  EXPECT_LT(seconds, 5) << ReadText(serve.log);
  EXPECT_TRUE(WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0);
}

TEST(ServeShutdownTest, UnderLoadEveryAcceptedRequestIsAnsweredBeforeTheGracePeriod) {
  ServeProcess serve = StartServe("load", 20);
  auto stub = ::compositing::CompositingService::NewStub(LoopbackChannel(serve.compositing_port));
  ASSERT_TRUE(Composite(*stub, "demo", 16).ok());  // loaded and warm
  constexpr int kClients = 4;
  std::atomic<int> started{0};
  std::atomic<bool> stopping{false};
  std::mutex mu;
  // Each call that ended after the signal, and whether it began after it.
  std::vector<std::pair<grpc::Status, bool>> after_signal;
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&] {
      ++started;
      while (true) {
        const bool was_stopping = stopping.load();
        const grpc::Status status = Composite(*stub, "demo", 16);
        if (was_stopping || stopping.load()) {
          std::lock_guard<std::mutex> lock(mu);
          after_signal.emplace_back(status, was_stopping);
        }
        if (!status.ok() || was_stopping) return;
      }
    });
  }
  while (started.load() < kClients) std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(300ms);  // requests in flight
  stopping = true;
  int exit_status = 0;
  const double seconds = StopAndTime(serve.pid, 19s, &exit_status);
  for (auto& client : clients) client.join();
  std::printf("[ figures  ] serve under load exited %.2f s after SIGTERM (grace 20 s)\n", seconds);
  EXPECT_GE(seconds, 0) << "not drained within the grace period";
  EXPECT_TRUE(WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0) << ReadText(serve.log);
  int answered = 0;
  for (const auto& [status, began_after_signal] : after_signal) {
    // OK: in flight and answered; UNAVAILABLE: arrived after the drain began and was
    // refused. A call begun after the signal may also be CANCELLED by gRPC's shutdown
    // before any handler took it (the transport had it, the server never matched it: seen
    // once, in a clean-clone CI run on a loaded box); nothing was started for it. Anything else, or
    // CANCELLED for a call in flight at the signal, would be a request cut off.
    const bool refused_unmatched =
        began_after_signal && status.error_code() == grpc::StatusCode::CANCELLED;
    EXPECT_TRUE(status.ok() || status.error_code() == grpc::StatusCode::UNAVAILABLE ||
                refused_unmatched)
        << status.error_code() << ": " << status.error_message()
        << (began_after_signal ? " (begun after the signal)" : " (in flight at the signal)");
    if (status.ok()) ++answered;
  }
  EXPECT_GE(answered, 1) << "the requests in flight at SIGTERM should have been answered";
}

}  // namespace
}  // namespace lipsync::e2e
