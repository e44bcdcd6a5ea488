// Operations on real gRPC servers on loopback: TLS (certificates made by the openssl
// CLI), mutual TLS, grpc.health.v1 (generated client), per-tenant rate limiting, the
// audit log read back from its file, /metrics, and compositing -> inference over TLS
// through GrpcInferenceBackend. The inference backend is a real InferenceServer with
// a generated identity model.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "auth/authenticator.h"
#include "health.grpc.pb.h"
#include "inference.grpc.pb.h"
#include "inference/inference_server.h"
#include "modelgen/model_builder.h"
#include "rpc/grpc_inference_backend.h"
#include "rpc/inference_service.h"
#include "rpc/server_setup.h"
#include "sanitizers/deadline_scale.h"

namespace lipsync::rpc {
namespace {

namespace fs = std::filesystem;
namespace pb = ::inference;
namespace health = ::grpc::health::v1;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

constexpr size_t kPlane = 320 * 320;

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate.
struct Pki {
  fs::path dir;
  bool ok = false;
  std::string ca() const { return (dir / "ca.crt").string(); }
  std::string server_cert() const { return (dir / "server.crt").string(); }
  std::string server_key() const { return (dir / "server.key").string(); }
  std::string client_cert() const { return (dir / "client.crt").string(); }
  std::string client_key() const { return (dir / "client.key").string(); }
};

const Pki& TestPki() {
  static const Pki pki = [] {
    Pki p;
    p.dir = fs::temp_directory_path() / ("ops_server_test_" + std::to_string(::getpid()));
    fs::create_directories(p.dir);
    const std::string d = p.dir.string();
    const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    std::ofstream(p.dir / "san.ext") << "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
    const std::string script =
        "cd '" + d + "' && openssl req -x509 " + key +
        " -keyout ca.key -out ca.crt -days 1 -subj /CN=lipsync-test-ca && "
        "openssl req " +
        key +
        " -keyout server.key -out server.csr -subj /CN=localhost && "
        "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
        "-out server.crt -days 1 -extfile san.ext && "
        "openssl req " +
        key +
        " -keyout client.key -out client.csr -subj /CN=client && "
        "openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
        "-out client.crt -days 1) > '" +
        d + "/openssl.log' 2>&1";
    p.ok = std::system(("(" + script).c_str()) == 0;
    return p;
  }();
  return pki;
}

std::string IdentityModel() {
  static const std::string path = [] {
    const fs::path dir = TestPki().dir;
    fs::create_directories(dir);
    const std::string model = (dir / "identity.onnx").string();
    EXPECT_TRUE(modelgen::WriteIdentityModel(model).ok());
    return model;
  }();
  return path;
}

// InferenceServer (CPU, identity model) behind a GrpcServer with the given options.
struct Server {
  std::unique_ptr<inference::InferenceServer> backend;
  std::unique_ptr<InferenceServiceImpl> service;
  std::unique_ptr<GrpcServer> grpc;

  Server(config::InferenceConfig config, ServerOptions options) {
    config.server.worker_count_per_gpu = 1;
    config.onnx.use_cuda = false;
    config.capacity.idle_timeout_minutes = 0;
    config.models["identity"] = {IdentityModel(), false, ""};
    auto created = inference::InferenceServer::Create(config);
    EXPECT_TRUE(created.ok()) << created.status().ToString();
    if (!created.ok()) return;
    backend = std::move(*created);
    service = std::make_unique<InferenceServiceImpl>(backend.get());
    options.ops.auth.legacy_api_key = config.server.api_key;
    auto started = GrpcServer::Start(options, {service.get()});
    EXPECT_TRUE(started.ok()) << started.status().ToString();
    if (started.ok()) grpc = std::move(*started);
  }
  std::string target() const { return "127.0.0.1:" + std::to_string(grpc->port()); }
};

ServerOptions Loopback() {
  ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.health_service_names = {"inference.InferenceService"};
  return options;
}

std::shared_ptr<grpc::Channel> Channel(const std::string& target,
                                       std::shared_ptr<grpc::ChannelCredentials> credentials) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  return grpc::CreateCustomChannel(target, credentials, args);
}

std::shared_ptr<grpc::ChannelCredentials> Tls(const Pki& pki, bool with_client_cert) {
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ReadFile(pki.ca());
  if (with_client_cert) {
    ssl.pem_private_key = ReadFile(pki.client_key());
    ssl.pem_cert_chain = ReadFile(pki.client_cert());
  }
  return grpc::SslCredentials(ssl);
}

grpc::Status CallHealth(const std::shared_ptr<grpc::Channel>& channel,
                        pb::HealthResponse* response = nullptr) {
  auto stub = pb::InferenceService::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + lipsync::testing::Scaled(5s));
  pb::HealthResponse ignored;
  return stub->Health(&context, pb::HealthRequest(), response ? response : &ignored);
}

pb::InferBatchRequest Frames(const std::string& model, int batch) {
  pb::InferBatchRequest request;
  request.set_model_id(model);
  request.set_batch_size(batch);
  request.set_visual_frames(std::string(static_cast<size_t>(batch) * 6 * kPlane * 4, '\0'));
  request.set_audio_features(std::string(static_cast<size_t>(batch) * 8192 * 4, '\0'));
  return request;
}

health::HealthCheckResponse::ServingStatus Check(const std::shared_ptr<grpc::Channel>& channel,
                                                 const std::string& service,
                                                 grpc::Status* status = nullptr) {
  auto stub = health::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + lipsync::testing::Scaled(5s));
  health::HealthCheckRequest request;
  request.set_service(service);
  health::HealthCheckResponse response;
  grpc::Status result = stub->Check(&context, request, &response);
  if (status) *status = result;
  return response.status();
}

TEST(OpsServerTest, TlsServesTlsClientsAndRefusesPlaintext) {
  const Pki& pki = TestPki();
  ASSERT_TRUE(pki.ok) << ReadFile(pki.dir / "openssl.log");
  ServerOptions options = Loopback();
  options.tls = {pki.server_cert(), pki.server_key(), ""};
  Server server({}, options);
  ASSERT_TRUE(server.grpc);
  pb::HealthResponse response;
  grpc::Status tls = CallHealth(Channel(server.target(), Tls(pki, false)), &response);
  EXPECT_TRUE(tls.ok()) << tls.error_message();
  EXPECT_TRUE(response.healthy());
  grpc::Status plain = CallHealth(Channel(server.target(), grpc::InsecureChannelCredentials()));
  EXPECT_EQ(plain.error_code(), grpc::StatusCode::UNAVAILABLE) << plain.error_message();
  // A client trusting another CA refuses the server.
  grpc::SslCredentialsOptions wrong;
  wrong.pem_root_certs = ReadFile(pki.client_cert());
  EXPECT_FALSE(CallHealth(Channel(server.target(), grpc::SslCredentials(wrong))).ok());
}

TEST(OpsServerTest, MutualTlsRefusesClientsWithoutACertificate) {
  const Pki& pki = TestPki();
  ASSERT_TRUE(pki.ok);
  ServerOptions options = Loopback();
  options.tls = {pki.server_cert(), pki.server_key(), pki.ca()};
  Server server({}, options);
  ASSERT_TRUE(server.grpc);
  grpc::Status with_cert = CallHealth(Channel(server.target(), Tls(pki, true)));
  EXPECT_TRUE(with_cert.ok()) << with_cert.error_message();
  grpc::Status without = CallHealth(Channel(server.target(), Tls(pki, false)));
  EXPECT_EQ(without.error_code(), grpc::StatusCode::UNAVAILABLE) << without.error_message();
}

TEST(OpsServerTest, CompositingReachesInferenceOverTlsThroughTheBackend) {
  const Pki& pki = TestPki();
  ASSERT_TRUE(pki.ok);
  ServerOptions options = Loopback();
  options.tls = {pki.server_cert(), pki.server_key(), ""};
  config::InferenceConfig config;
  config.server.api_key = "k";
  Server server(config, options);
  ASSERT_TRUE(server.grpc);
  GrpcBackendOptions backend_options;
  backend_options.target = server.target();
  backend_options.tls_ca_path = pki.ca();
  backend_options.api_key = "k";
  backend_options.max_retries = 0;
  backend_options.timeout = lipsync::testing::Scaled(backend_options.timeout);
  auto backend = GrpcInferenceBackend::Create(backend_options);
  ASSERT_TRUE(backend.ok()) << backend.status().ToString();
  inference::InferRequest request;
  pb::InferBatchRequest frames = Frames("identity", 1);
  request.model_id = "identity";
  request.batch_size = 1;
  request.visual_frames = frames.visual_frames();
  request.audio_features = frames.audio_features();
  auto result = (*backend)->Infer(request);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->batch_size, 1);
  // Without the CA option the same backend speaks plaintext and is refused.
  backend_options.tls_ca_path.clear();
  auto plain = GrpcInferenceBackend::Create(backend_options);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ((*plain)->Health(std::nullopt).status().code(), StatusCode::kUnavailable);
  backend_options.tls_ca_path = (pki.dir / "missing.crt").string();
  EXPECT_EQ(GrpcInferenceBackend::Create(backend_options).status().code(),
            StatusCode::kFailedPrecondition);
}

TEST(OpsServerTest, StandardHealthCheckIsServingUntilShutdown) {
  Server server({}, Loopback());
  ASSERT_TRUE(server.grpc);
  auto channel = Channel(server.target(), grpc::InsecureChannelCredentials());
  EXPECT_EQ(Check(channel, ""), health::HealthCheckResponse::SERVING);
  EXPECT_EQ(Check(channel, "inference.InferenceService"), health::HealthCheckResponse::SERVING);
  grpc::Status unknown;
  Check(channel, "no.such.Service", &unknown);
  EXPECT_EQ(unknown.error_code(), grpc::StatusCode::NOT_FOUND);
  server.grpc->SetServing(false);
  EXPECT_EQ(Check(channel, ""), health::HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(Check(channel, "inference.InferenceService"), health::HealthCheckResponse::NOT_SERVING);
  server.grpc->SetServing(true);
  EXPECT_EQ(Check(channel, ""), health::HealthCheckResponse::SERVING);
  // Watch sees NOT_SERVING as soon as shutdown starts.
  auto stub = health::Health::NewStub(channel);
  grpc::ClientContext watch_context;
  watch_context.set_deadline(std::chrono::system_clock::now() + lipsync::testing::Scaled(10s));
  health::HealthCheckRequest request;
  auto reader = stub->Watch(&watch_context, request);
  health::HealthCheckResponse update;
  ASSERT_TRUE(reader->Read(&update));
  EXPECT_EQ(update.status(), health::HealthCheckResponse::SERVING);
  std::thread stopper([&] { server.grpc->Shutdown(2s); });
  ASSERT_TRUE(reader->Read(&update));
  EXPECT_EQ(update.status(), health::HealthCheckResponse::NOT_SERVING);
  watch_context.TryCancel();
  stopper.join();
}

std::string HttpGetMetrics(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  std::string answer;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0) {
    const std::string request = "GET /metrics HTTP/1.0\r\n\r\n";
    ::send(fd, request.data(), request.size(), 0);
    char buffer[4096];
    ssize_t n;
    while ((n = ::recv(fd, buffer, sizeof(buffer), 0)) > 0) answer.append(buffer, n);
  }
  ::close(fd);
  return answer;
}

TEST(OpsServerTest, RateLimitAuditLogAndMetricsFromConfig) {
  const fs::path dir = TestPki().dir;
  fs::create_directories(dir);
  const fs::path audit = dir / "audit.jsonl";
  fs::remove(audit);
  auto config = config::ParseInferenceConfig(
      "server: {port: '127.0.0.1:0', api_key: k,\n"
      "         rate_limit: {frames_per_second_per_model: 0.001, burst_frames: 3}}\n"
      "logging: {audit_log_path: '" +
          audit.string() +
          "'}\n"
          "metrics: {port: 0}\n",
      "inference.yaml");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  auto options = ServerOptionsFromConfig(*config);
  ASSERT_TRUE(options.ok()) << options.status().ToString();
  options->ops.metrics_port = 0;  // config 0 means off; the test wants any free port
  Server server(*config, *options);
  ASSERT_TRUE(server.grpc);
  auto channel = Channel(server.target(), grpc::InsecureChannelCredentials());
  auto call = [&](const std::string& model, int batch, const char* key) {
    auto stub = pb::InferenceService::NewStub(channel);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + lipsync::testing::Scaled(30s));
    if (key) context.AddMetadata("authorization", std::string("Bearer ") + key);
    pb::InferBatchResponse response;
    return stub->InferBatch(&context, Frames(model, batch), &response);
  };
  EXPECT_TRUE(call("identity", 2, "k").ok());
  // Unauthenticated calls do not spend the tenant's tokens.
  EXPECT_EQ(call("identity", 1, "wrong").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(call("identity", 1, "k").ok());
  grpc::Status limited = call("identity", 1, "k");
  EXPECT_EQ(limited.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(limited.error_message(), HasSubstr("rate limit exceeded for model 'identity'"));
  EXPECT_THAT(limited.error_message(), HasSubstr("burst 3 frames"));
  EXPECT_THAT(limited.error_message(), HasSubstr("retry after"));
  // Another tenant is not affected (it fails later, for its own reason).
  EXPECT_EQ(call("other", 1, "k").error_code(), grpc::StatusCode::NOT_FOUND);

  const std::string metrics = HttpGetMetrics(server.grpc->ops().metrics_port());
  // prometheus-cpp writes the constant label (server) first, then the others by name.
  EXPECT_THAT(metrics, HasSubstr("lipsync_requests_total{server=\"inference\",code=\"OK\","
                                 "method=\"InferBatch\",model=\"identity\"} 2\n"));
  EXPECT_THAT(
      metrics,
      HasSubstr("lipsync_requests_total{server=\"inference\",code=\"RESOURCE_EXHAUSTED\",method="
                "\"InferBatch\",model=\"identity\"} 1\n"));
  EXPECT_THAT(
      metrics,
      HasSubstr("lipsync_requests_total{server=\"inference\",code=\"UNAUTHENTICATED\",method="
                "\"InferBatch\",model=\"identity\"} 1\n"));
  // An unknown tenant is counted under model="_other" (bounded labels).
  EXPECT_THAT(metrics,
              HasSubstr("lipsync_requests_total{server=\"inference\",code=\"NOT_FOUND\",method="
                        "\"InferBatch\",model=\"_other\"} 1\n"));
  EXPECT_THAT(metrics, HasSubstr("lipsync_frames_total{server=\"inference\",code=\"OK\","
                                 "method=\"InferBatch\",model=\"identity\"} 3\n"));
  EXPECT_THAT(metrics, HasSubstr("lipsync_inference_seconds_count{server=\"inference\"} 2\n"));
  EXPECT_THAT(metrics, HasSubstr("lipsync_loaded_models{server=\"inference\"} 1\n"));

  server.grpc.reset();  // flushes nothing: every line is written when its call ends
  std::ifstream in(audit);
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(lines.size(), 5u);
  const char* codes[] = {"OK", "UNAUTHENTICATED", "OK", "RESOURCE_EXHAUSTED", "NOT_FOUND"};
  for (size_t i = 0; i < lines.size(); ++i) {
    EXPECT_EQ(lines[i]["code"], codes[i]) << lines[i].dump();
    EXPECT_EQ(lines[i]["server"], "inference");
    EXPECT_EQ(lines[i]["method"], "InferBatch");
    EXPECT_THAT(lines[i]["peer"].get<std::string>(), HasSubstr("127.0.0.1"));
    EXPECT_GT(lines[i]["bytes_in"].get<int64_t>(), 6 * 320 * 320 * 4);
    EXPECT_GE(lines[i]["duration_ms"].get<double>(), 0);
  }
  EXPECT_EQ(lines[0]["model_id"], "identity");
  EXPECT_EQ(lines[0]["frames"], 2);
  EXPECT_GT(lines[0]["bytes_out"].get<int64_t>(), 2 * 3 * 320 * 320);
  EXPECT_EQ(lines[3]["bytes_out"], 0);
  EXPECT_THAT(lines[3]["error"].get<std::string>(), HasSubstr("rate limit"));
  EXPECT_EQ(lines[4]["model_id"], "other");
}

TEST(OpsServerTest, UnwritableAuditLogFailsStartup) {
  ServerOptions options = Loopback();
  options.ops.audit_log_path = "/nonexistent-dir/audit.jsonl";
  auto started = GrpcServer::Start(options, {});
  ASSERT_FALSE(started.ok());
  EXPECT_EQ(started.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(started.status().message(), HasSubstr("logging.audit_log_path"));
}

// ---- credentials with tenant scopes (auth library behind the call wrapper) ----

// A credentials file with API keys of different tenants and scopes, and the mTLS
// client certificate of TestPki ("CN=client").
fs::path WriteCredentials(const std::string& name, const std::string& extra = "") {
  const fs::path path = TestPki().dir / name;
  std::ofstream out(path);
  out << "api_keys:\n"
      << "  - {id: ops, sha256: " << auth::HashApiKey("ops-secret")
      << ", tenants: ['*'], scopes: [infer, stream, admin]}\n"
      << "  - {id: acme, sha256: " << auth::HashApiKey("acme-secret")
      << ", tenants: ['ident*'], scopes: [infer]}\n"
      << "  - {id: other, sha256: " << auth::HashApiKey("other-secret")
      << ", tenants: ['other-*'], scopes: [infer]}\n"
      << "  - {id: viewer, sha256: " << auth::HashApiKey("viewer-secret")
      << ", tenants: ['*'], scopes: [stream]}\n"
      << extra;
  return path;
}

grpc::Status InferAs(const std::shared_ptr<grpc::Channel>& channel, const std::string& model,
                     int batch, const std::string& key) {
  auto stub = pb::InferenceService::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + lipsync::testing::Scaled(30s));
  if (!key.empty()) context.AddMetadata("authorization", "Bearer " + key);
  pb::InferBatchResponse response;
  return stub->InferBatch(&context, Frames(model, batch), &response);
}

std::vector<std::string> ListAs(const std::shared_ptr<grpc::Channel>& channel,
                                const std::string& key, grpc::Status* status) {
  auto stub = pb::InferenceService::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + lipsync::testing::Scaled(30s));
  context.AddMetadata("authorization", "Bearer " + key);
  lipsync::admin::ListModelsRequest request;
  request.set_include_available(true);
  lipsync::admin::ListModelsResponse response;
  *status = stub->ListModels(&context, request, &response);
  std::vector<std::string> ids;
  for (const auto& model : response.models()) ids.push_back(model.model_id());
  return ids;
}

grpc::Status AdminAs(const std::shared_ptr<grpc::Channel>& channel, const std::string& key,
                     const std::string& model, bool load) {
  auto stub = pb::InferenceService::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + lipsync::testing::Scaled(30s));
  context.AddMetadata("authorization", "Bearer " + key);
  if (load) {
    lipsync::admin::LoadModelRequest request;
    request.set_model_id(model);
    request.set_force_reload(true);
    lipsync::admin::LoadModelResponse response;
    return stub->LoadModel(&context, request, &response);
  }
  lipsync::admin::UnloadModelRequest request;
  request.set_model_id(model);
  lipsync::admin::UnloadModelResponse response;
  return stub->UnloadModel(&context, request, &response);
}

config::InferenceConfig TwoTenants() {
  config::InferenceConfig config;
  config.models["other-tenant"] = {IdentityModel(), false, ""};
  return config;
}

TEST(CredentialsServerTest, TenantsAndScopesDecideEveryCall) {
  ServerOptions options = Loopback();
  options.ops.auth.credentials_file = WriteCredentials("scopes.yaml").string();
  Server server(TwoTenants(), options);
  ASSERT_TRUE(server.grpc);
  auto channel = Channel(server.target(), grpc::InsecureChannelCredentials());

  // Who: nothing, a wrong key, a right one.
  grpc::Status missing = InferAs(channel, "identity", 1, "");
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(InferAs(channel, "identity", 1, "acme-wrong").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(InferAs(channel, "identity", 1, "acme-secret").ok());
  // Another tenant's model, a missing scope.
  grpc::Status foreign = InferAs(channel, "identity", 1, "other-secret");
  EXPECT_EQ(foreign.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(foreign.error_message(), HasSubstr("identity"));
  EXPECT_TRUE(InferAs(channel, "other-tenant", 1, "other-secret").ok());
  grpc::Status no_scope = InferAs(channel, "identity", 1, "viewer-secret");
  EXPECT_EQ(no_scope.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(no_scope.error_message(), HasSubstr("infer"));

  // Load/Unload/reload need admin, and the tenant.
  EXPECT_EQ(AdminAs(channel, "acme-secret", "identity", true).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(AdminAs(channel, "acme-secret", "identity", false).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(AdminAs(channel, "ops-secret", "identity", true).ok());
  EXPECT_TRUE(AdminAs(channel, "ops-secret", "identity", false).ok());

  // ListModels shows only the caller's tenants.
  grpc::Status listed;
  EXPECT_THAT(ListAs(channel, "acme-secret", &listed), ::testing::ElementsAre("identity"));
  EXPECT_TRUE(listed.ok()) << listed.error_message();
  EXPECT_THAT(ListAs(channel, "other-secret", &listed), ::testing::ElementsAre("other-tenant"));
  EXPECT_THAT(ListAs(channel, "ops-secret", &listed),
              ::testing::UnorderedElementsAre("identity", "other-tenant"));
  ListAs(channel, "nobody", &listed);
  EXPECT_EQ(listed.error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST(CredentialsServerTest, RateLimitPerCredentialAndAuditNamesTheCaller) {
  const fs::path audit = TestPki().dir / "credentials_audit.jsonl";
  fs::remove(audit);
  ServerOptions options = Loopback();
  options.ops.auth.credentials_file = WriteCredentials("rate.yaml").string();
  options.ops.credential_rate_limit = {0.001, 2};  // 2 frames, then (almost) never again
  options.ops.audit_log_path = audit.string();
  Server server(TwoTenants(), options);
  ASSERT_TRUE(server.grpc);
  auto channel = Channel(server.target(), grpc::InsecureChannelCredentials());

  EXPECT_TRUE(InferAs(channel, "identity", 2, "acme-secret").ok());
  grpc::Status limited = InferAs(channel, "identity", 1, "acme-secret");
  EXPECT_EQ(limited.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(limited.error_message(), HasSubstr("credential 'key:acme'"));
  // The noisy caller does not eat the tenant's budget: another caller still gets through.
  EXPECT_TRUE(InferAs(channel, "identity", 2, "ops-secret").ok());
  // Refused before the rate limit: a stranger spends nobody's tokens.
  EXPECT_EQ(InferAs(channel, "identity", 1, "ops-wrong").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);

  server.grpc.reset();
  const std::string text = ReadFile(audit);
  EXPECT_EQ(text.find("acme-secret"), std::string::npos) << "the audit log holds a secret";
  EXPECT_EQ(text.find("ops-secret"), std::string::npos);
  std::istringstream in(text);
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0]["credential"], "key:acme");
  EXPECT_EQ(lines[1]["credential"], "key:acme");
  EXPECT_EQ(lines[1]["code"], "RESOURCE_EXHAUSTED");
  EXPECT_EQ(lines[2]["credential"], "key:ops");
  EXPECT_EQ(lines[3]["credential"], "");
  EXPECT_EQ(lines[3]["code"], "UNAUTHENTICATED");
}

TEST(CredentialsServerTest, ClientCertificateSubjectIsACredential) {
  const Pki& pki = TestPki();
  ASSERT_TRUE(pki.ok);
  ServerOptions options = Loopback();
  options.tls = {pki.server_cert(), pki.server_key(), pki.ca()};
  options.ops.auth.credentials_file =
      WriteCredentials("certs.yaml",
                       "client_certificates:\n"
                       "  - {subject: 'CN=client', tenants: [identity], scopes: [infer]}\n")
          .string();
  Server server(TwoTenants(), options);
  ASSERT_TRUE(server.grpc);
  auto channel = Channel("localhost:" + std::to_string(server.grpc->port()), Tls(pki, true));
  EXPECT_TRUE(InferAs(channel, "identity", 1, "").ok());
  EXPECT_EQ(InferAs(channel, "other-tenant", 1, "").error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
}

TEST(CredentialsServerTest, CompositingHopUsesItsOwnServiceCredential) {
  ServerOptions options = Loopback();
  options.ops.auth.credentials_file = WriteCredentials("service.yaml").string();
  Server server(TwoTenants(), options);
  ASSERT_TRUE(server.grpc);
  for (const char* key : {"ops-secret", "viewer-secret"}) {
    GrpcBackendOptions backend_options;
    backend_options.target = server.target();
    backend_options.api_key = key;
    backend_options.max_retries = 0;
    backend_options.timeout = lipsync::testing::Scaled(backend_options.timeout);
    auto backend = GrpcInferenceBackend::Create(backend_options);
    ASSERT_TRUE(backend.ok()) << backend.status().ToString();
    inference::InferRequest request;
    pb::InferBatchRequest frames = Frames("identity", 1);
    request.model_id = "identity";
    request.batch_size = 1;
    request.visual_frames = frames.visual_frames();
    request.audio_features = frames.audio_features();
    auto result = (*backend)->Infer(request);
    auto loaded = (*backend)->LoadModel("other-tenant", false);
    if (std::string(key) == "ops-secret") {
      EXPECT_TRUE(result.ok()) << result.status().ToString();
      EXPECT_TRUE(loaded.ok()) << loaded.status().ToString();
    } else {
      EXPECT_EQ(result.status().code(), StatusCode::kPermissionDenied);
      EXPECT_EQ(loaded.status().code(), StatusCode::kPermissionDenied);
    }
  }
}

TEST(CredentialsServerTest, AuditFailClosedRefusesCallsThatCannotBeRecorded) {
  for (bool fail_closed : {false, true}) {
    ServerOptions options = Loopback();
    options.ops.audit_log_path = "/dev/full";  // every write fails with ENOSPC
    options.ops.audit_fail_closed = fail_closed;
    Server server(TwoTenants(), options);
    ASSERT_TRUE(server.grpc);
    auto channel = Channel(server.target(), grpc::InsecureChannelCredentials());
    EXPECT_TRUE(InferAs(channel, "identity", 1, "").ok());  // ran; its line was lost
    grpc::Status second = InferAs(channel, "identity", 1, "");
    if (fail_closed) {
      EXPECT_EQ(second.error_code(), grpc::StatusCode::UNAVAILABLE);
      EXPECT_THAT(second.error_message(), HasSubstr("audit"));
    } else {
      EXPECT_TRUE(second.ok());
    }
    EXPECT_GE(server.grpc->ops().audit_log()->write_failures(), 2);
    EXPECT_FALSE(server.grpc->ops().audit_log()->healthy());
  }
}

}  // namespace
}  // namespace lipsync::rpc
