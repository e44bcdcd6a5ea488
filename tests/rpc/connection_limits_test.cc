// Connection limits (rpc/connection_limits.h) on real gRPC servers on loopback: a
// malformed request answered INVALID_ARGUMENT naming its message type (generic stub,
// garbage bytes), a client that opens many streams and never reads capped at
// max_concurrent_streams with bounded server memory, a half-sent request cut after
// request_read_timeout_seconds while a grpc.health.v1 Watch stream on the same
// connection lives on, an idle connection closed, a silent TCP connection closed.
// The misbehaving clients are tests/rpc/h2_probe.py (raw HTTP/2 frames, Debian's
// python3-h2 libraries); those tests are skipped when /usr/bin/python3 lacks them.
#include <gmock/gmock.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "compositing.grpc.pb.h"
#include "inference.grpc.pb.h"
#include "rpc/connection_limits.h"
#include "rpc/server_setup.h"

namespace lipsync::rpc {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using namespace std::chrono_literals;

class FakeInference : public ::inference::InferenceService::Service {
 public:
  std::atomic<int> infer_calls{0};
  size_t response_bytes = 0;

  grpc::Status InferBatch(grpc::ServerContext*, const ::inference::InferBatchRequest* request,
                          ::inference::InferBatchResponse* response) override {
    ++infer_calls;
    if (request->model_id() == "missing") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no model 'missing'");
    }
    response->set_success(true);
    response->set_batch_size(request->batch_size());
    if (response_bytes > 0) response->set_output_frames(std::string(response_bytes, 'x'));
    return grpc::Status::OK;
  }
};

class FakeCompositing : public ::compositing::CompositingService::Service {
 public:
  grpc::Status InferBatchComposite(grpc::ServerContext*,
                                   const ::compositing::CompositeBatchRequest* request,
                                   ::compositing::CompositeBatchResponse* response) override {
    response->set_success(true);
    response->add_composited_frames(request->model_id());
    return grpc::Status::OK;
  }
};

// A server built the way GrpcServer builds one, with only the connection limits.
struct TestServer {
  std::unique_ptr<grpc::Server> server;
  int port = 0;

  TestServer(const config::ConnectionConfig& limits, const std::vector<grpc::Service*>& services) {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    ApplyConnectionLimits(&builder, limits);
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    for (grpc::Service* service : services) {
      Status bound = BoundRequestReads(service, limits);
      EXPECT_TRUE(bound.ok()) << bound.ToString();
      builder.RegisterService(service);
    }
    server = builder.BuildAndStart();
    EXPECT_TRUE(server != nullptr && port != 0);
  }
  ~TestServer() { server->Shutdown(std::chrono::system_clock::now()); }
  std::string target() const { return "127.0.0.1:" + std::to_string(port); }
};

grpc::ByteBuffer Bytes(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

grpc::Status GenericCall(const std::string& target, const std::string& method,
                         const std::string& bytes, std::string* reply = nullptr) {
  grpc::GenericStub stub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 20s);
  const grpc::ByteBuffer request = Bytes(bytes);
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, method, grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status status) { done.set_value(std::move(status)); });
  grpc::Status status = done.get_future().get();
  if (reply != nullptr && status.ok()) {
    std::vector<grpc::Slice> slices;
    EXPECT_TRUE(response.Dump(&slices).ok());
    reply->clear();
    for (const auto& s : slices) reply->append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return status;
}

// Not a protobuf: the first byte 0xff starts a varint that never ends.
const std::string kGarbage = "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff not a message";

TEST(ConnectionLimitsTest, MalformedInferBatchIsInvalidArgumentNamingTheMessage) {
  FakeInference inference;
  FakeCompositing compositing;
  TestServer server(config::ConnectionConfig{}, {&inference, &compositing});

  grpc::Status status =
      GenericCall(server.target(), "/inference.InferenceService/InferBatch", kGarbage);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(),
              StartsWith("request is not a valid inference.InferBatchRequest (" +
                         std::to_string(kGarbage.size()) + " bytes): invalid field tag at byte 0"));
  EXPECT_THAT(status.error_message(),
              HasSubstr("expected a serialized inference.InferBatchRequest"));
  // Untrusted bytes are described, never quoted.
  EXPECT_THAT(status.error_message(), ::testing::Not(HasSubstr("not a message")));

  status =
      GenericCall(server.target(), "/compositing.CompositingService/InferBatchComposite", kGarbage);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(),
              HasSubstr("request is not a valid compositing.CompositeBatchRequest ("));
  EXPECT_THAT(status.error_message(),
              HasSubstr("expected a serialized compositing.CompositeBatchRequest"));

  // Field 1 (model_id, length-delimited) claims 100 bytes and has 2.
  status = GenericCall(server.target(), "/inference.InferenceService/InferBatch",
                       std::string("\x0a\x64"
                                   "ab",
                                   4));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("(4 bytes): field 1 at byte 0 is truncated"));

  // The admin methods of both services answer the same way.
  status = GenericCall(server.target(), "/compositing.CompositingService/LoadModel", kGarbage);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("lipsync.admin.LoadModelRequest"));
  EXPECT_EQ(inference.infer_calls.load(), 0);
}

TEST(ConnectionLimitsTest, WellFormedCallsAreServedAsBefore) {
  FakeInference inference;
  FakeCompositing compositing;
  TestServer server(config::ConnectionConfig{}, {&inference, &compositing});
  auto channel = grpc::CreateChannel(server.target(), grpc::InsecureChannelCredentials());

  auto stub = ::inference::InferenceService::NewStub(channel);
  ::inference::InferBatchRequest request;
  request.set_model_id("identity");
  request.set_batch_size(3);
  ::inference::InferBatchResponse response;
  grpc::ClientContext context;
  ASSERT_TRUE(stub->InferBatch(&context, request, &response).ok());
  EXPECT_TRUE(response.success());
  EXPECT_EQ(response.batch_size(), 3);

  // A service's own error status and message pass through unchanged.
  request.set_model_id("missing");
  grpc::ClientContext context2;
  grpc::Status status = stub->InferBatch(&context2, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(status.error_message(), "no model 'missing'");

  // The same through the generic stub, and an empty message is a valid request.
  ::compositing::CompositeBatchRequest composite;
  composite.set_model_id("avatar");
  std::string reply;
  ASSERT_TRUE(GenericCall(server.target(), "/compositing.CompositingService/InferBatchComposite",
                          composite.SerializeAsString(), &reply)
                  .ok());
  ::compositing::CompositeBatchResponse composite_response;
  ASSERT_TRUE(composite_response.ParseFromString(reply));
  ASSERT_EQ(composite_response.composited_frames_size(), 1);
  EXPECT_EQ(composite_response.composited_frames(0), "avatar");
  EXPECT_TRUE(GenericCall(server.target(), "/inference.InferenceService/InferBatch", "").ok());
  // Streaming methods are not touched: the session stream is the service's own
  // (UNIMPLEMENTED in this fake), with no read bound.
  auto composite_stub = ::compositing::CompositingService::NewStub(channel);
  grpc::ClientContext session_context;
  auto session = composite_stub->StreamSession(&session_context);
  session->WritesDone();
  EXPECT_EQ(session->Finish().error_code(), grpc::StatusCode::UNIMPLEMENTED);
  // Methods a service does not implement stay UNIMPLEMENTED.
  EXPECT_EQ(GenericCall(server.target(), "/inference.InferenceService/ListModels", "").error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
}

TEST(ConnectionLimitsTest, MalformedMessageDescribesWhereTheWireDataBreaks) {
  EXPECT_EQ(MalformedRequestMessage("x.Req", std::string("\x08\x01\x00", 3)),
            "request is not a valid x.Req (3 bytes): invalid field tag at byte 2; expected a "
            "serialized x.Req");
  EXPECT_THAT(MalformedRequestMessage("x.Req", "\x08"),
              HasSubstr("field 1 at byte 0 is truncated or malformed (wire type 0)"));
  EXPECT_THAT(MalformedRequestMessage("x.Req", "\x0f\x01"),
              HasSubstr("invalid field tag at byte 0 (field 1, wire type 7)"));
}

// Blocks every InferBatch until released.
class BlockingInference : public ::inference::InferenceService::Service {
 public:
  grpc::Status InferBatch(grpc::ServerContext*, const ::inference::InferBatchRequest*,
                          ::inference::InferBatchResponse* response) override {
    std::unique_lock<std::mutex> lock(mu_);
    ++running_;
    changed_.notify_all();
    changed_.wait(lock, [&] { return released_; });
    response->set_success(true);
    return grpc::Status::OK;
  }
  int running() {
    std::lock_guard<std::mutex> lock(mu_);
    return running_;
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    released_ = true;
    changed_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  int running_ = 0;
  bool released_ = false;
};

TEST(ConnectionLimitsTest, ThreadQuotaRefusesCallsBeyondItInsteadOfQueueingThem) {
  BlockingInference inference;
  config::ConnectionConfig limits;
  limits.max_threads = 4;
  TestServer server(limits, {&inference});
  auto stub = ::inference::InferenceService::NewStub(
      grpc::CreateChannel(server.target(), grpc::InsecureChannelCredentials()));
  constexpr int kCalls = 12;
  std::vector<std::future<grpc::Status>> calls;
  for (int i = 0; i < kCalls; ++i) {
    calls.push_back(std::async(std::launch::async, [&stub] {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + 60s);
      ::inference::InferBatchRequest request;
      ::inference::InferBatchResponse response;
      return stub->InferBatch(&context, request, &response);
    }));
  }
  // Every call either runs (holding a thread) or came back: none waits for a thread.
  const auto end = std::chrono::steady_clock::now() + 30s;
  int ready = 0;
  while (std::chrono::steady_clock::now() < end) {
    ready = 0;
    for (auto& call : calls) ready += call.wait_for(0s) == std::future_status::ready;
    if (ready + inference.running() >= kCalls) break;
    std::this_thread::sleep_for(20ms);
  }
  const int running = inference.running();
  EXPECT_EQ(ready + running, kCalls);
  EXPECT_GT(running, 0);
  EXPECT_GT(ready, 0);
  std::vector<bool> done(kCalls, false);
  for (int i = 0; i < kCalls; ++i) {
    if (calls[i].wait_for(0s) != std::future_status::ready) continue;
    done[i] = true;
    const grpc::Status status = calls[i].get();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  }
  std::printf("max_threads 4: %d calls running, %d refused RESOURCE_EXHAUSTED\n", running, ready);
  inference.Release();
  for (int i = 0; i < kCalls; ++i) {
    if (!done[i]) {
      EXPECT_TRUE(calls[i].get().ok());
    }
  }
}

// ---- misbehaving HTTP/2 clients (tests/rpc/h2_probe.py) ----

bool ProbeAvailable() {
  return std::system("/usr/bin/python3 -c 'import hpack, hyperframe' >/dev/null 2>&1") == 0;
}

#define REQUIRE_PROBE()                                                                   \
  if (!ProbeAvailable()) {                                                                \
    GTEST_SKIP() << "/usr/bin/python3 with python3-h2 (hpack, hyperframe) not installed"; \
  }

// Runs the probe; calls `while_running` after its JSON line arrived (the probe may
// still hold its connection) and returns that line.
nlohmann::json RunProbe(const std::string& args, const std::function<void()>& while_running = {}) {
  const std::string command =
      "/usr/bin/python3 " LIPSYNC_SOURCE_DIR "/tests/rpc/h2_probe.py " + args;
  std::FILE* pipe = ::popen(command.c_str(), "r");
  EXPECT_NE(pipe, nullptr);
  if (pipe == nullptr) return {};
  char line[4096] = {0};
  const bool got = std::fgets(line, sizeof(line), pipe) != nullptr;
  if (got && while_running) while_running();
  const int rc = ::pclose(pipe);
  EXPECT_TRUE(got) << command;
  EXPECT_EQ(rc, 0) << command;
  auto parsed = nlohmann::json::parse(std::string(line), nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(parsed.is_discarded()) << "probe printed: " << line;
  std::printf("h2_probe %s -> %s", args.c_str(), line);
  return parsed;
}

int64_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * ::sysconf(_SC_PAGESIZE);
}

struct FloodResult {
  nlohmann::json probe;
  int calls = 0;
  double growth_mb = 0;
};

// `streams` InferBatch calls on one connection whose receive window is 0 (the client
// never reads), each answered with 1 MB.
FloodResult Flood(int max_concurrent_streams, int streams) {
  FakeInference inference;
  inference.response_bytes = 1 << 20;
  config::ConnectionConfig limits;
  limits.max_concurrent_streams = max_concurrent_streams;
  TestServer server(limits, {&inference});
  FloodResult result;
  const int64_t before = ResidentBytes();
  result.probe =
      RunProbe("flood " + std::to_string(server.port) + " " + std::to_string(streams) + " 2",
               [&] { result.growth_mb = (ResidentBytes() - before) / 1048576.0; });
  result.calls = inference.infer_calls.load();
  return result;
}

TEST(ConnectionLimitsTest, ClientThatNeverReadsIsCappedAtMaxConcurrentStreams) {
  REQUIRE_PROBE();
  // Within the limit: each stream's 1 MB response waits in the server for a window the
  // client never opens; the connection stays up.
  const FloodResult capped = Flood(4, 4);
  EXPECT_EQ(capped.probe["max_concurrent_streams"], 4);
  EXPECT_EQ(capped.probe["admitted"], 4);
  EXPECT_EQ(capped.probe["closed"], false);
  EXPECT_EQ(capped.calls, 4);
  EXPECT_LT(capped.growth_mb, 16.0);
  // Beyond it: gRPC 1.51 treats a stream over the advertised limit as a connection
  // error ("Max stream count exceeded"): the connection is closed and everything it
  // pinned is freed; at most the first 4 calls ever ran.
  const FloodResult abusive = Flood(4, 40);
  EXPECT_EQ(abusive.probe["closed"], true);
  EXPECT_EQ(abusive.probe["admitted"], 0);
  EXPECT_LE(abusive.calls, 4);
  // For comparison, the same client without the cap pins every response.
  const FloodResult uncapped = Flood(1000, 40);
  EXPECT_EQ(uncapped.probe["admitted"], 40);
  EXPECT_EQ(uncapped.calls, 40);
  std::printf(
      "server memory pinned by a client that never reads (1 MB responses): "
      "%.1f MB for 4 streams with max_concurrent_streams 4, %.1f MB for 40 streams "
      "with 1000, %.1f MB for 40 streams with 4 (connection closed)\n",
      capped.growth_mb, uncapped.growth_mb, abusive.growth_mb);
}

TEST(ConnectionLimitsTest, HalfSentRequestIsCutWhileLongStreamLivesOn) {
  REQUIRE_PROBE();
  FakeInference inference;
  config::ConnectionConfig limits;
  limits.request_read_timeout_seconds = 1;
  // The open Watch stream is a call in flight: the connection is never idle.
  limits.max_connection_idle_seconds = 1;
  TestServer server(limits, {&inference});
  const int64_t timeouts_before = RequestReadTimeouts();
  // The probe keeps the Watch stream 3 s past the cut (3x the read timeout).
  const nlohmann::json result = RunProbe("half-sent " + std::to_string(server.port) + " 3");
  EXPECT_EQ(result["half_ended"], true);
  // The server cancels the call: trailers with CANCELLED (and RST_STREAM).
  EXPECT_THAT(result["half_end"].get<std::string>(),
              ::testing::AnyOf("trailers grpc-status 1", "RST_STREAM 8"));
  EXPECT_EQ(inference.infer_calls.load(), 0);
  EXPECT_EQ(RequestReadTimeouts(), timeouts_before + 1);
  EXPECT_GE(result["watch_messages"], 1);  // SERVING
  EXPECT_EQ(result["watch_ended"], false);
  EXPECT_EQ(result["goaway"], false);
  EXPECT_EQ(result["closed"], false);
  EXPECT_GE(result["watch_alive_s"].get<double>(), 3.0);
}

TEST(ConnectionLimitsTest, ClientKeepalivePingsEveryTenSecondsAreWelcomeFasterAreNot) {
  REQUIRE_PROBE();
  FakeInference inference;
  TestServer server(config::ConnectionConfig{}, {&inference});
  // A client keepalive just over 10 s on a connection without calls: acknowledged, no
  // GOAWAY. (11.5 s leaves room for scheduling jitter on a loaded box: a ping that the
  // server sees under 10 s after the previous one is a strike.)
  const nlohmann::json polite = RunProbe("pings " + std::to_string(server.port) + " 11.5 2");
  EXPECT_EQ(polite["acks"], 2);
  EXPECT_TRUE(polite["goaway"].is_null());
  EXPECT_EQ(polite["closed"], false);
  // Pings in a tight loop are strikes: GOAWAY ENHANCE_YOUR_CALM "too_many_pings".
  const nlohmann::json flood = RunProbe("pings " + std::to_string(server.port) + " 0 6");
  EXPECT_EQ(flood["goaway"], 11);
  EXPECT_EQ(flood["goaway_data"], "too_many_pings");
}

TEST(ConnectionLimitsTest, IdleConnectionIsClosedWithGoaway) {
  REQUIRE_PROBE();
  FakeInference inference;
  config::ConnectionConfig limits;
  limits.max_connection_idle_seconds = 1;
  TestServer server(limits, {&inference});
  const nlohmann::json result = RunProbe("idle " + std::to_string(server.port));
  EXPECT_EQ(result["goaway"], true);
}

TEST(ConnectionLimitsTest, SilentConnectionIsClosedAfterTheHandshakeTimeout) {
  REQUIRE_PROBE();
  FakeInference inference;
  config::ConnectionConfig limits;
  limits.request_read_timeout_seconds = 1;
  TestServer server(limits, {&inference});
  const nlohmann::json result = RunProbe("silent " + std::to_string(server.port));
  EXPECT_EQ(result["closed"], true);
}

// ---- wiring: GrpcServer applies all of the above from ServerOptions::connection ----

class WiredInference final : public FakeInference, public OpsService {
 public:
  grpc::Service* grpc_service() override { return this; }
};

TEST(ConnectionLimitsTest, GrpcServerAppliesTheLimits) {
  WiredInference service;
  ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.connection.max_concurrent_streams = 3;
  auto started = GrpcServer::Start(options, {&service});
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  const std::string target = "127.0.0.1:" + std::to_string((*started)->port());
  grpc::Status status = GenericCall(target, "/inference.InferenceService/InferBatch", kGarbage);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("inference.InferBatchRequest"));
  if (ProbeAvailable()) {
    service.response_bytes = 1 << 20;
    const nlohmann::json result = RunProbe("flood " + std::to_string((*started)->port()) + " 3 0");
    EXPECT_EQ(result["max_concurrent_streams"], 3);
    EXPECT_EQ(result["admitted"], 3);
  }
  (*started)->Shutdown(0ms);
}

}  // namespace
}  // namespace lipsync::rpc
