#include "rpc/server_setup.h"

#include <fstream>
#include <sstream>

#include "common/log.h"

namespace lipsync::rpc {
namespace {

Expected<std::string> ReadPem(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return Status::FailedPrecondition(std::string("cannot read TLS ") + what + " '" + path +
                                      "'; expected a readable PEM file");
  }
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

Expected<std::shared_ptr<grpc::ServerCredentials>> MakeCredentials(const config::TlsConfig& tls) {
  if (tls.cert_path.empty()) return grpc::InsecureServerCredentials();
  if (tls.key_path.empty()) {
    return Status::FailedPrecondition(
        "tls.cert_path is set but tls.key_path is empty; expected "
        "both the certificate chain and its private key");
  }
  grpc::SslServerCredentialsOptions ssl;
  LIPSYNC_ASSIGN_OR_RETURN(std::string cert, ReadPem(tls.cert_path, "certificate"));
  LIPSYNC_ASSIGN_OR_RETURN(std::string key, ReadPem(tls.key_path, "private key"));
  ssl.pem_key_cert_pairs.push_back({key, cert});
  if (!tls.client_ca_path.empty()) {
    LIPSYNC_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPem(tls.client_ca_path, "client CA"));
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

}  // namespace

Expected<std::unique_ptr<GrpcServer>> GrpcServer::Start(
    const ServerOptions& options, const std::vector<grpc::Service*>& services) {
  if (options.max_message_size_mb < 1) {
    return Status::InvalidArgument("max_message_size_mb is " +
                                   std::to_string(options.max_message_size_mb) +
                                   "; expected at least 1");
  }
  LIPSYNC_ASSIGN_OR_RETURN(auto credentials, MakeCredentials(options.tls));
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options.listen_address, credentials, &port);
  const int max_bytes =
      options.max_message_size_mb > 2047 ? INT32_MAX : options.max_message_size_mb * 1024 * 1024;
  builder.SetMaxReceiveMessageSize(max_bytes);
  builder.SetMaxSendMessageSize(max_bytes);
  for (grpc::Service* service : services) builder.RegisterService(service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    return Status::Unavailable("cannot listen on '" + options.listen_address +
                               "'; expected a free host:port (is another server using it?)");
  }
  return std::unique_ptr<GrpcServer>(new GrpcServer(std::move(server), port));
}

GrpcServer::GrpcServer(std::unique_ptr<grpc::Server> server, int port)
    : server_(std::move(server)), port_(port) {}

GrpcServer::~GrpcServer() {
  Shutdown(std::chrono::milliseconds(0));
  server_->Wait();
}

void GrpcServer::Shutdown(std::chrono::milliseconds grace) {
  std::call_once(shutdown_once_,
                 [&] { server_->Shutdown(std::chrono::system_clock::now() + grace); });
}

void GrpcServer::Wait() { server_->Wait(); }

grpc::Status CheckApiKey(const grpc::ServerContext& context, const std::string& api_key) {
  if (api_key.empty()) return grpc::Status::OK;
  const std::string expected = "Bearer " + api_key;
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it != metadata.end() && it->second.size() == expected.size()) {
    unsigned char diff = 0;
    for (size_t i = 0; i < expected.size(); ++i) {
      diff |= static_cast<unsigned char>(it->second.data()[i] ^ expected[i]);
    }
    if (diff == 0) return grpc::Status::OK;
  }
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                      it == metadata.end()
                          ? "missing API key; expected metadata 'authorization: Bearer <key>'"
                          : "wrong API key in 'authorization'; expected 'Bearer <key>' with the "
                            "server's api_key");
}

std::optional<std::chrono::steady_clock::time_point> SteadyDeadline(
    const grpc::ServerContext& context) {
  const auto deadline = context.deadline();
  // gRPC reports "no deadline" as a time far in the future.
  const auto remaining = deadline - std::chrono::system_clock::now();
  if (remaining > std::chrono::hours(24 * 365)) return std::nullopt;
  return std::chrono::steady_clock::now() +
         std::chrono::duration_cast<std::chrono::steady_clock::duration>(remaining);
}

}  // namespace lipsync::rpc
