// The browser front (web/web_server.h) over real sockets on loopback with Beast's client
// side: static files, /api/avatars with credentials, the WebSocket session (the same
// SessionInput/SessionOutput messages as gRPC) against a CompositingServer calling an
// in-process InferenceServer (the e2e "talking" tenant), the connection limit. Timing
// bounds are loose; assertions are on status codes, close codes, events and counts.
#include <gtest/gtest.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "auth/authenticator.h"
#include "compositing.pb.h"
#include "compositing/compositing_server.h"
#include "e2e/e2e_cluster.h"
#include "e2e/speech_fixture.h"
#include "inference/inference_server.h"
#include "rpc/server_ops.h"
#include "rpc/session_service.h"
#include "web/web_server.h"

namespace lipsync::web {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace fs = std::filesystem;
namespace pb = ::compositing;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

constexpr const char* kStreamKey = "web-stream-secret";  // every tenant, scope stream
constexpr const char* kOtherKey = "web-other-secret";    // tenants other-*, scope stream

fs::path WriteCredentials() {
  const fs::path path = e2e::ModelRoot() / "web_credentials.yaml";
  std::ofstream out(path);
  out << "api_keys:\n"
      << "  - {id: viewer, sha256: " << auth::HashApiKey(kStreamKey)
      << ", tenants: ['*'], scopes: [stream]}\n"
      << "  - {id: other, sha256: " << auth::HashApiKey(kOtherKey)
      << ", tenants: ['other-*'], scopes: [stream]}\n"
      << "client_certificates:\n"
      << "  - {subject: 'CN=web-viewer,O=Test', tenants: ['*'], scopes: [stream]}\n";
  return path;
}

class TestServer {
 public:
  explicit TestServer(int max_connections) {
    e2e::TalkingTenant();
    auto inference = inference::InferenceServer::Create(e2e::InferenceTestConfig());
    EXPECT_TRUE(inference.ok()) << inference.status().ToString();
    if (!inference.ok()) return;
    inference_ = std::move(*inference);
    config::CompositingConfig config = e2e::CompositingTestConfig();
    config.session.max_sessions = 4;
    compositing::CompositingServerOptions options;
    options.inference_label = "in-process";
    auto server = compositing::CompositingServer::Create(config, *inference_, options);
    EXPECT_TRUE(server.ok()) << server.status().ToString();
    if (!server.ok()) return;
    server_ = std::move(*server);
    sessions_ = std::make_unique<rpc::SessionService>(server_.get());
    rpc::OpsOptions ops;
    ops.server_name = "compositing";
    ops.auth.credentials_file = WriteCredentials().string();
    auto created = rpc::ServerOps::Create(ops);
    EXPECT_TRUE(created.ok()) << created.status().ToString();
    if (!created.ok()) return;
    ops_ = std::move(*created);
    WebServerOptions web;
    web.port = 0;
    web.root = std::string(LIPSYNC_SOURCE_DIR) + "/web";
    web.max_connections = max_connections;
    web.open_timeout = 3s;
    auto started = WebServer::Start(web, server_.get(), ops_.get(), sessions_.get());
    EXPECT_TRUE(started.ok()) << started.status().ToString();
    if (!started.ok()) return;
    web_ = std::move(*started);
  }
  ~TestServer() {
    if (web_) web_->Stop();
    if (server_) server_->Shutdown(1s);
  }
  bool ok() const { return web_ != nullptr; }
  // Another page server over the same compositing server and sessions (e.g. TLS).
  Expected<std::unique_ptr<WebServer>> StartAnother(WebServerOptions options) {
    options.root = std::string(LIPSYNC_SOURCE_DIR) + "/web";
    return WebServer::Start(options, server_.get(), ops_.get(), sessions_.get());
  }
  int port() const { return web_->port(); }
  WebServer& web() { return *web_; }
  int active_sessions() { return sessions_->limiter().active(); }

 private:
  std::unique_ptr<inference::InferenceServer> inference_;
  std::unique_ptr<compositing::CompositingServer> server_;
  std::unique_ptr<rpc::SessionService> sessions_;
  std::unique_ptr<rpc::ServerOps> ops_;
  std::unique_ptr<WebServer> web_;
};

// One server for the whole binary, destroyed after the last test so that background work
// (a session's model prefetch) is joined before the process exits.
TestServer*& ServerSlot() {
  static TestServer* server = nullptr;
  return server;
}

class ServerEnvironment : public ::testing::Environment {
 public:
  void TearDown() override {
    delete ServerSlot();
    ServerSlot() = nullptr;
  }
};
[[maybe_unused]] const ::testing::Environment* const kServerEnvironment =
    ::testing::AddGlobalTestEnvironment(new ServerEnvironment);

TestServer& Server() {
  TestServer*& server = ServerSlot();
  if (server == nullptr) server = new TestServer(/*max_connections=*/6);
  return *server;
}

struct Reply {
  int status = 0;
  std::string content_type;
  std::string body;
};

Reply Get(int port, const std::string& target, const std::string& authorization = "",
          http::verb verb = http::verb::get) {
  asio::io_context ioc;
  beast::tcp_stream stream(ioc);
  stream.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  stream.expires_after(30s);
  http::request<http::string_body> req{verb, target, 11};
  req.set(http::field::host, "127.0.0.1");
  if (!authorization.empty()) req.set(http::field::authorization, authorization);
  req.prepare_payload();
  beast::error_code ec;
  http::write(stream, req, ec);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.skip(verb == http::verb::head);  // a HEAD response has no body to read
  if (!ec) http::read(stream, buffer, parser, ec);
  const http::response<http::string_body>& res = parser.get();
  Reply reply;
  if (ec) return reply;
  reply.status = res.result_int();
  reply.content_type = std::string(res[http::field::content_type]);
  reply.body = res.body();
  return reply;
}

TEST(WebServerTest, ServesThePageAndRefusesOtherPaths) {
  ASSERT_TRUE(Server().ok());
  const int port = Server().port();
  Reply page = Get(port, "/");
  EXPECT_EQ(page.status, 200);
  EXPECT_EQ(page.content_type, "text/html; charset=utf-8");
  EXPECT_NE(page.body.find("app.js"), std::string::npos);
  Reply js = Get(port, "/app.js?v=1");
  EXPECT_EQ(js.status, 200);
  EXPECT_EQ(js.content_type, "text/javascript; charset=utf-8");
  EXPECT_EQ(Get(port, "/worklets.js").status, 200);
  EXPECT_EQ(Get(port, "/../CMakeLists.txt").status, 404);
  EXPECT_EQ(Get(port, "/%2e%2e/CMakeLists.txt").status, 404);
  EXPECT_EQ(Get(port, "/.git/config").status, 404);
  EXPECT_EQ(Get(port, "/missing.js").status, 404);
  EXPECT_EQ(Get(port, "/", "", http::verb::post).status, 405);
  EXPECT_EQ(Get(port, "/", "", http::verb::head).status, 200);
}

TEST(WebServerTest, AvatarsNeedACredentialWhenAuthIsOn) {
  ASSERT_TRUE(Server().ok());
  const int port = Server().port();
  const std::string tenant = e2e::TalkingTenant();
  Reply none = Get(port, "/api/avatars");
  EXPECT_EQ(none.status, 401);
  EXPECT_NE(none.body.find("\"auth_required\":true"), std::string::npos);
  EXPECT_NE(none.body.find("\"avatars\":[]"), std::string::npos);
  EXPECT_EQ(Get(port, "/api/avatars", "Bearer wrong").status, 401);
  Reply header = Get(port, "/api/avatars", std::string("Bearer ") + kStreamKey);
  EXPECT_EQ(header.status, 200);
  EXPECT_NE(header.body.find("\"" + tenant + "\""), std::string::npos);
  Reply query = Get(port, std::string("/api/avatars?x=1&key=") + kStreamKey);
  EXPECT_EQ(query.status, 200);
  EXPECT_NE(query.body.find("\"" + tenant + "\""), std::string::npos);
  Reply other = Get(port, "/api/avatars", std::string("Bearer ") + kOtherKey);
  EXPECT_EQ(other.status, 200);
  EXPECT_EQ(other.body.find("\"" + tenant + "\""), std::string::npos);
}

// A WebSocket client of the session: binary SessionInput out, SessionOutput in.
class WsClient {
 public:
  explicit WsClient(int port) : ws_(ioc_) {
    beast::get_lowest_layer(ws_).connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    beast::get_lowest_layer(ws_).expires_never();
    ws_.set_option(websocket::stream_base::timeout::suggested(beast::role_type::client));
    ws_.handshake("127.0.0.1", "/ws");
    ws_.binary(true);
  }
  void Send(const pb::SessionInput& in) { ws_.write(asio::buffer(in.SerializeAsString())); }
  void SendBytes(const std::string& bytes) { ws_.write(asio::buffer(bytes)); }
  void SendText(const std::string& text) {
    ws_.text(true);
    ws_.write(asio::buffer(text));
    ws_.binary(true);
  }
  // The next message; false when the socket closed (close_code() then says how).
  bool Read(pb::SessionOutput* out) {
    beast::flat_buffer buffer;
    beast::error_code ec;
    ws_.read(buffer, ec);
    if (ec) return false;
    const auto data = buffer.cdata();
    return out->ParseFromArray(data.data(), static_cast<int>(data.size()));
  }
  int close_code() { return ws_.reason().code; }
  std::string close_reason() { return std::string(ws_.reason().reason.c_str()); }

 private:
  asio::io_context ioc_;
  websocket::stream<beast::tcp_stream> ws_;
};

pb::SessionInput Open(const std::string& key, const std::string& model) {
  pb::SessionInput in;
  auto* open = in.mutable_open();
  open->set_model_id(model);
  open->set_sample_rate(16000);
  open->set_codec(pb::MJPEG);
  if (!key.empty()) open->set_authorization("Bearer " + key);
  return in;
}

pb::SessionInput Control(pb::SessionControl::Kind kind) {
  pb::SessionInput in;
  in.mutable_control()->set_kind(kind);
  return in;
}

TEST(WebServerTest, SessionOverWebSocketStreamsFramesAndCloses) {
  ASSERT_TRUE(Server().ok());
  WsClient client(Server().port());
  client.Send(Open(kStreamKey, e2e::TalkingTenant()));
  pb::SessionOutput out;
  ASSERT_TRUE(client.Read(&out));
  ASSERT_TRUE(out.has_opened()) << out.DebugString();
  EXPECT_GT(out.opened().width(), 0);
  EXPECT_EQ(out.opened().codec(), pb::MJPEG);
  // Idle frames flow: 10 in a row with consecutive indices and 640 samples each.
  int frames = 0;
  int64_t last = -1;
  while (frames < 10 && client.Read(&out)) {
    if (!out.has_frame()) continue;
    if (last >= 0) {
      EXPECT_EQ(out.frame().frame_index(), last + 1);
    }
    last = out.frame().frame_index();
    EXPECT_FALSE(out.frame().video().empty());
    EXPECT_EQ(out.frame().audio().size(), 640u * 2);
    EXPECT_FALSE(out.frame().speaking());
    ++frames;
  }
  EXPECT_EQ(frames, 10);
  // Speech: 1 s of a tone in 100 ms chunks, then CLOSE: CLOSED and a normal close.
  std::string pcm(3200, '\0');
  for (size_t i = 0; i < pcm.size() / 2; ++i) {
    const int16_t v = static_cast<int16_t>(8000 * std::sin(i * 2 * 3.14159 * 220 / 16000));
    pcm[2 * i] = static_cast<char>(v & 0xff);
    pcm[2 * i + 1] = static_cast<char>((v >> 8) & 0xff);
  }
  for (int i = 0; i < 10; ++i) {
    pb::SessionInput audio;
    audio.mutable_audio()->set_pcm(pcm);
    client.Send(audio);
  }
  client.Send(Control(pb::SessionControl::CLOSE));
  bool closed_event = false, stats = false;
  int speaking = 0;
  while (client.Read(&out)) {
    if (out.has_frame() && out.frame().speaking()) ++speaking;
    if (out.has_event() && out.event().kind() == pb::SessionEvent::CLOSED) closed_event = true;
    if (out.has_stats()) stats = true;
  }
  EXPECT_TRUE(closed_event);
  EXPECT_TRUE(stats);
  EXPECT_GT(speaking, 0);
  EXPECT_EQ(client.close_code(), 1000);
  const auto end = std::chrono::steady_clock::now() + 10s;
  while (Server().active_sessions() != 0 && std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(Server().active_sessions(), 0);
}

TEST(WebServerTest, BadCredentialEndsWithUnauthenticated) {
  ASSERT_TRUE(Server().ok());
  WsClient client(Server().port());
  client.Send(Open("not-a-key", e2e::TalkingTenant()));
  pb::SessionOutput out;
  bool error = false;
  while (client.Read(&out)) {
    if (out.has_event() && out.event().kind() == pb::SessionEvent::ERROR) {
      error = true;
      EXPECT_EQ(out.event().code(), 16);  // UNAUTHENTICATED
      EXPECT_EQ(out.event().message().find("not-a-key"), std::string::npos);
    }
    EXPECT_FALSE(out.has_frame());
  }
  EXPECT_TRUE(error);
  EXPECT_EQ(client.close_code(), 4016);
}

TEST(WebServerTest, OtherTenantIsPermissionDenied) {
  ASSERT_TRUE(Server().ok());
  WsClient client(Server().port());
  client.Send(Open(kOtherKey, e2e::TalkingTenant()));
  pb::SessionOutput out;
  while (client.Read(&out)) EXPECT_FALSE(out.has_frame());
  EXPECT_EQ(client.close_code(), 4007);  // PERMISSION_DENIED
}

TEST(WebServerTest, GarbageAndTextFramesCloseTheSocket) {
  ASSERT_TRUE(Server().ok());
  pb::SessionOutput out;
  {
    WsClient client(Server().port());
    client.SendText("hello");
    while (client.Read(&out)) {
    }
    EXPECT_EQ(client.close_code(), 1007);  // bad payload
  }
  {
    WsClient client(Server().port());
    client.SendBytes("\xff\xff\xff\xff\xff");  // a truncated varint
    while (client.Read(&out)) {
    }
    EXPECT_EQ(client.close_code(), 1007);
  }
  {
    WsClient client(Server().port());
    client.Send(pb::SessionInput());  // not `open` first: INVALID_ARGUMENT
    while (client.Read(&out)) EXPECT_FALSE(out.has_frame());
    EXPECT_EQ(client.close_code(), 4003);
  }
}

TEST(WebServerTest, NoOpenMessageTimesOut) {
  ASSERT_TRUE(Server().ok());
  WsClient client(Server().port());
  pb::SessionOutput out;
  while (client.Read(&out)) {
  }
  EXPECT_EQ(client.close_code(), 1008);  // policy: expected the open message
}

TEST(WebServerTest, ConnectionLimitRefusesBeyondIt) {
  ASSERT_TRUE(Server().ok());
  asio::io_context ioc;
  std::vector<std::unique_ptr<tcp::socket>> held;
  const auto endpoint = tcp::endpoint(asio::ip::make_address("127.0.0.1"), Server().port());
  for (int i = 0; i < 6; ++i) {
    held.push_back(std::make_unique<tcp::socket>(ioc));
    held.back()->connect(endpoint);
  }
  const auto end = std::chrono::steady_clock::now() + 10s;
  while (Server().web().connections() < 6 && std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(Server().web().connections(), 6);
  Reply refused = Get(Server().port(), "/");
  EXPECT_EQ(refused.status, 503);
  held.clear();
  const auto end2 = std::chrono::steady_clock::now() + 10s;
  while (Server().web().connections() > 0 && std::chrono::steady_clock::now() < end2) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(Get(Server().port(), "/").status, 200);
}

// server.tls on the web port: HTTPS and WSS with the same certificate files as gRPC.
TEST(WebServerTest, TlsServesHttpsAndSecureWebSockets) {
  ASSERT_TRUE(Server().ok());
  const fs::path dir = e2e::ModelRoot() / "web_tls";
  fs::create_directories(dir);
  const std::string command = "cd '" + dir.string() +
                              "' && openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem "
                              "-out cert.pem -days 1 -subj /CN=127.0.0.1 > openssl.log 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0);
  WebServerOptions options;
  options.port = 0;
  options.tls.cert_path = (dir / "cert.pem").string();
  options.tls.key_path = (dir / "key.pem").string();
  auto web = Server().StartAnother(options);
  ASSERT_TRUE(web.ok()) << web.status().ToString();
  EXPECT_TRUE((*web)->tls());
  const int port = (*web)->port();
  const auto endpoint = tcp::endpoint(asio::ip::make_address("127.0.0.1"), port);

  asio::io_context ioc;
  asio::ssl::context ctx(asio::ssl::context::tls_client);
  ctx.load_verify_file((dir / "cert.pem").string());
  ctx.set_verify_mode(asio::ssl::verify_peer);
  {  // HTTPS GET /
    beast::ssl_stream<beast::tcp_stream> stream(ioc, ctx);
    beast::get_lowest_layer(stream).connect(endpoint);
    beast::get_lowest_layer(stream).expires_after(30s);
    stream.handshake(asio::ssl::stream_base::client);
    http::request<http::string_body> req{http::verb::get, "/", 11};
    req.set(http::field::host, "127.0.0.1");
    http::write(stream, req);
    beast::flat_buffer buffer;
    http::response<http::string_body> res;
    http::read(stream, buffer, res);
    EXPECT_EQ(res.result_int(), 200);
    EXPECT_NE(res.body().find("app.js"), std::string::npos);
  }
  {  // WSS session: opened, then frames
    websocket::stream<beast::ssl_stream<beast::tcp_stream>> ws(ioc, ctx);
    beast::get_lowest_layer(ws).connect(endpoint);
    beast::get_lowest_layer(ws).expires_after(30s);
    ws.next_layer().handshake(asio::ssl::stream_base::client);
    beast::get_lowest_layer(ws).expires_never();
    ws.set_option(websocket::stream_base::timeout::suggested(beast::role_type::client));
    ws.handshake("127.0.0.1", "/ws");
    ws.binary(true);
    ws.write(asio::buffer(Open(kStreamKey, e2e::TalkingTenant()).SerializeAsString()));
    bool opened = false;
    int frames = 0;
    while (frames < 3) {
      beast::flat_buffer buffer;
      beast::error_code ec;
      ws.read(buffer, ec);
      ASSERT_FALSE(ec) << ec.message();
      pb::SessionOutput out;
      const auto data = buffer.cdata();
      ASSERT_TRUE(out.ParseFromArray(data.data(), static_cast<int>(data.size())));
      if (out.has_opened()) opened = true;
      if (out.has_frame()) ++frames;
    }
    EXPECT_TRUE(opened);
    beast::error_code ec;
    ws.close(websocket::close_code::normal, ec);
  }
  // Plain HTTP to the TLS port gets no page.
  EXPECT_EQ(Get(port, "/").status, 0);
  (*web)->Stop();
}

// mTLS on the web port: a browser's client certificate is the credential when the open
// message carries none (its RFC 2253 subject, as gRPC reports it); no certificate, no
// connection.
TEST(WebServerTest, ClientCertificateIsTheCredentialWithMutualTls) {
  ASSERT_TRUE(Server().ok());
  const fs::path dir = e2e::ModelRoot() / "web_mtls";
  fs::create_directories(dir);
  const std::string command =
      "cd '" + dir.string() +
      "' && (openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 1 "
      "-subj /CN=web-test-ca && "
      "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr "
      "-subj /CN=127.0.0.1 && "
      "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
      "-out server.crt -days 1 && "
      "openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr "
      "-subj /O=Test/CN=web-viewer && "
      "openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
      "-out client.crt -days 1) > openssl.log 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0);
  WebServerOptions options;
  options.port = 0;
  options.tls.cert_path = (dir / "server.crt").string();
  options.tls.key_path = (dir / "server.key").string();
  options.tls.client_ca_path = (dir / "ca.crt").string();
  auto web = Server().StartAnother(options);
  ASSERT_TRUE(web.ok()) << web.status().ToString();
  const auto endpoint = tcp::endpoint(asio::ip::make_address("127.0.0.1"), (*web)->port());
  asio::io_context ioc;
  {  // with the client certificate and no authorization: the session opens
    asio::ssl::context ctx(asio::ssl::context::tls_client);
    ctx.load_verify_file((dir / "ca.crt").string());
    ctx.use_certificate_chain_file((dir / "client.crt").string());
    ctx.use_private_key_file((dir / "client.key").string(), asio::ssl::context::pem);
    websocket::stream<beast::ssl_stream<beast::tcp_stream>> ws(ioc, ctx);
    beast::get_lowest_layer(ws).connect(endpoint);
    beast::get_lowest_layer(ws).expires_after(30s);
    ws.next_layer().handshake(asio::ssl::stream_base::client);
    beast::get_lowest_layer(ws).expires_never();
    ws.handshake("127.0.0.1", "/ws");
    ws.binary(true);
    ws.write(asio::buffer(Open("", e2e::TalkingTenant()).SerializeAsString()));
    beast::flat_buffer buffer;
    beast::error_code ec;
    ws.read(buffer, ec);
    ASSERT_FALSE(ec) << ec.message();
    pb::SessionOutput out;
    const auto data = buffer.cdata();
    ASSERT_TRUE(out.ParseFromArray(data.data(), static_cast<int>(data.size())));
    EXPECT_TRUE(out.has_opened()) << out.DebugString();
    ws.close(websocket::close_code::normal, ec);
  }
  {  // without a certificate: the TLS handshake fails
    asio::ssl::context ctx(asio::ssl::context::tls_client);
    ctx.load_verify_file((dir / "ca.crt").string());
    beast::ssl_stream<beast::tcp_stream> stream(ioc, ctx);
    beast::get_lowest_layer(stream).connect(endpoint);
    beast::get_lowest_layer(stream).expires_after(30s);
    beast::error_code ec;
    stream.handshake(asio::ssl::stream_base::client, ec);
    if (!ec) {  // TLS 1.3: the refusal arrives with the first read
      http::request<http::string_body> req{http::verb::get, "/", 11};
      req.set(http::field::host, "127.0.0.1");
      http::write(stream, req, ec);
      beast::flat_buffer buffer;
      http::response<http::string_body> res;
      if (!ec) http::read(stream, buffer, res, ec);
    }
    EXPECT_TRUE(ec);
  }
  (*web)->Stop();
}

}  // namespace
}  // namespace lipsync::web
