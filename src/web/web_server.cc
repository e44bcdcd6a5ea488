#include "web/web_server.h"

#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <list>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>
#include <type_traits>
#include <vector>

#include "common/log.h"
#include "compositing.pb.h"
#include "http/http_server.h"
#include "rpc/grpc_status.h"
#include "rpc/session_bridge.h"

#ifndef LIPSYNC_WEB_SOURCE_ROOT
#define LIPSYNC_WEB_SOURCE_ROOT ""
#endif

namespace lipsync::web {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace pb = ::compositing;
namespace fs = std::filesystem;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

constexpr size_t kMaxFileBytes = 4 << 20;
constexpr size_t kMaxAvatars = 1000;
constexpr const char* kServerName = "lipsync-web";

// Printable ASCII, at most `max` characters: for logs and close reasons.
std::string Bounded(std::string_view text, size_t max = 100) {
  std::string out;
  for (char c : text.substr(0, max)) out += (c >= 32 && c < 127) ? c : '?';
  if (text.size() > max) out += "...";
  return out;
}

const char* ContentType(const fs::path& path) {
  const std::string ext = path.extension().string();
  if (ext == ".html") return "text/html; charset=utf-8";
  if (ext == ".js" || ext == ".mjs") return "text/javascript; charset=utf-8";
  if (ext == ".css") return "text/css; charset=utf-8";
  if (ext == ".json") return "application/json";
  if (ext == ".png") return "image/png";
  if (ext == ".svg") return "image/svg+xml";
  if (ext == ".ico") return "image/x-icon";
  if (ext == ".wav") return "audio/wav";
  return "application/octet-stream";
}

// "/a/b.js?x" -> "a/b.js"; nullopt for anything but plain names (no "..", no dot files).
std::optional<std::string> SafeRelativePath(std::string_view target) {
  target = target.substr(0, target.find_first_of("?#"));
  if (target.empty() || target[0] != '/' || target.size() > 200) return std::nullopt;
  std::string rel(target.substr(1));
  if (rel.empty() || rel.back() == '/') rel += "index.html";
  for (char c : rel) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_' ||
          c == '/')) {
      return std::nullopt;
    }
  }
  size_t start = 0;
  while (start <= rel.size()) {
    size_t end = rel.find('/', start);
    if (end == std::string::npos) end = rel.size();
    std::string_view segment(rel.data() + start, end - start);
    if (segment.empty() || segment[0] == '.') return std::nullopt;
    start = end + 1;
  }
  return rel;
}

std::string UrlDecode(std::string_view in) {
  std::string out;
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '+') {
      out += ' ';
    } else if (in[i] == '%' && i + 2 < in.size()) {
      const std::string hex(in.substr(i + 1, 2));
      char* end = nullptr;
      const long v = std::strtol(hex.c_str(), &end, 16);
      if (end == hex.c_str() + 2) {
        out += static_cast<char>(v);
        i += 2;
      } else {
        out += in[i];
      }
    } else {
      out += in[i];
    }
  }
  return out;
}

// The value of `name` in the target's query string, decoded; empty when absent.
std::string QueryParam(std::string_view target, std::string_view name) {
  const size_t q = target.find('?');
  if (q == std::string_view::npos) return {};
  std::string_view query = target.substr(q + 1);
  while (!query.empty()) {
    const size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    const size_t eq = pair.find('=');
    if (pair.substr(0, eq) == name && eq != std::string_view::npos) {
      return UrlDecode(pair.substr(eq + 1));
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return {};
}

}  // namespace

// The verified client certificate's subject in RFC 2253 form ("CN=a,O=b"), as gRPC
// reports it to the authenticator; empty without a verified certificate.
static std::string PeerSubject(SSL* ssl) {
  if (ssl == nullptr || SSL_get_verify_result(ssl) != X509_V_OK) return {};
  X509* cert = SSL_get1_peer_certificate(ssl);
  if (cert == nullptr) return {};
  std::string subject;
  if (BIO* bio = BIO_new(BIO_s_mem())) {
    if (X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) >= 0) {
      char* data = nullptr;
      const long size = BIO_get_mem_data(bio, &data);
      if (size > 0 && size <= 4096) subject.assign(data, static_cast<size_t>(size));
    }
    BIO_free(bio);
  }
  X509_free(cert);
  return subject;
}

// ---------------------------------------------------------------------------------------

class WebServer::Impl : public ::lipsync::http::Handler {
 public:
  Impl(WebServerOptions o, compositing::CompositingServer* s, rpc::ServerOps* p,
       rpc::SessionService* ss)
      : options(std::move(o)), server(s), ops(p), sessions(ss) {}

  const WebServerOptions options;
  compositing::CompositingServer* const server;
  rpc::ServerOps* const ops;
  rpc::SessionService* const sessions;
  fs::path root;
  std::unique_ptr<::lipsync::http::HttpServer> http_server;  // set once started

  std::atomic<bool> stopping_now{false};

  bool stopping() const { return stopping_now.load(); }
  void Stop() {
    stopping_now = true;
    if (http_server) http_server->Stop();
  }

  ::lipsync::http::Response Handle(const ::lipsync::http::Request& req) override {
    return HandleGet(req);
  }
  bool Upgrades(std::string_view path) override { return path == "/ws"; }
  std::shared_ptr<::lipsync::http::Connection> Upgrade(::lipsync::http::Request req,
                                                       ::lipsync::http::PlainStream stream,
                                                       ::lipsync::http::Upgraded info) override;
  std::shared_ptr<::lipsync::http::Connection> Upgrade(::lipsync::http::Request req,
                                                       ::lipsync::http::TlsStream stream,
                                                       ::lipsync::http::Upgraded info) override;

  http::response<http::string_body> HandleGet(const http::request<http::string_body>& req);
  http::response<http::string_body> Avatars(const http::request<http::string_body>& req);
};

namespace {

template <bool kTls>
using StreamT = std::conditional_t<kTls, beast::ssl_stream<beast::tcp_stream>, beast::tcp_stream>;

// One WebSocket: one live session through a SessionBridge.
template <bool kTls>
class WsConn : public ::lipsync::http::Connection,
               public std::enable_shared_from_this<WsConn<kTls>> {
 public:
  WsConn(WebServer::Impl* impl, StreamT<kTls>&& stream, ::lipsync::http::ConnectionSlot token,
         std::string peer)
      : impl_(impl),
        ws_(std::move(stream)),
        token_(std::move(token)),
        peer_(std::move(peer)),
        open_timer_(ws_.get_executor()),
        retry_timer_(ws_.get_executor()),
        call_(impl->ops, "WebSession", peer_) {}

  ~WsConn() override {
    if (bridge_) bridge_->Cancel();
    Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the server stopped"));
  }

  void Start(http::request<http::string_body> req) {
    beast::get_lowest_layer(ws_).expires_never();
    websocket::stream_base::timeout timeout;
    timeout.handshake_timeout = impl_->options.request_timeout;
    timeout.idle_timeout = impl_->options.idle_timeout;
    timeout.keep_alive_pings = true;
    ws_.set_option(timeout);
    ws_.set_option(websocket::stream_base::decorator(
        [](websocket::response_type& res) { res.set(http::field::server, kServerName); }));
    ws_.read_message_max(impl_->options.max_message_bytes);
    ws_.binary(true);
    req_ = std::move(req);
    ws_.async_accept(req_, beast::bind_front_handler(&WsConn::OnAccept, this->shared_from_this()));
  }

  void Abort() override {
    if (bridge_) bridge_->Cancel();
    open_timer_.cancel();
    retry_timer_.cancel();
    beast::get_lowest_layer(ws_).close();
  }

 private:
  void OnAccept(beast::error_code ec) {
    if (ec) return;
    if constexpr (kTls) cert_subject_ = PeerSubject(ws_.next_layer().native_handle());
    WebServer::Impl* impl = impl_;
    bridge_ = std::make_unique<rpc::SessionBridge>(
        impl->server, &impl->sessions->limiter(), impl->sessions->options(),
        [this](const pb::SessionOpen& open) -> Status {
          attempted_ = true;
          grpc::Status status = call_.Authenticate(open.authorization(), cert_subject_);
          if (!status.ok()) return rpc::FromGrpc(status);
          const int fps = open.fps() > 0 ? open.fps() : 25;
          return rpc::FromGrpc(call_.Open(open.model_id(), auth::Scope::kStream, fps));
        });
    std::weak_ptr<WsConn> weak = this->shared_from_this();
    auto executor = ws_.get_executor();
    bridge_->ReportStagesTo(&call_);
    bridge_->SetWakeup([weak, executor, impl] {
      if (impl->stopping()) return;
      asio::post(executor, [weak] {
        if (auto self = weak.lock()) self->DoWrite();
      });
    });
    open_timer_.expires_after(impl->options.open_timeout);
    open_timer_.async_wait([weak](beast::error_code wait_ec) {
      auto self = weak.lock();
      if (wait_ec || !self || self->bridge_->opened() || self->closing_) return;
      self->CloseWith(websocket::close_code::policy_error,
                      "expected the open message (SessionInput.open) first");
    });
    DoRead();
  }

  void DoRead() {
    ws_.async_read(in_, beast::bind_front_handler(&WsConn::OnRead, this->shared_from_this()));
  }

  void OnRead(beast::error_code ec, size_t bytes) {
    if (ec) {
      ClientGone(ec);
      return;
    }
    call_.AddBytes(static_cast<int64_t>(bytes), 0);
    if (input_done_) {  // the stream is ending: read only to notice the client leaving
      in_.consume(in_.size());
      DoRead();
      return;
    }
    if (!ws_.got_binary()) {
      CloseWith(websocket::close_code::bad_payload,
                "expected binary frames holding serialized SessionInput messages");
      return;
    }
    pending_.emplace();
    const auto data = in_.cdata();
    const bool parsed = pending_->ParseFromArray(data.data(), static_cast<int>(data.size()));
    in_.consume(in_.size());
    if (!parsed) {
      pending_.reset();
      CloseWith(websocket::close_code::bad_payload,
                "expected a serialized SessionInput message (compositing.proto)");
      return;
    }
    TryPush();
  }

  void TryPush() {
    if (closing_ || !pending_) return;
    const rpc::SessionBridge::Feed feed = bridge_->Push(*pending_);
    if (feed == rpc::SessionBridge::Feed::kRetry) {  // flow control: stop reading a while
      retry_timer_.expires_after(20ms);
      retry_timer_.async_wait([self = this->shared_from_this()](beast::error_code ec) {
        if (!ec) self->TryPush();
      });
      return;
    }
    pending_.reset();
    if (feed == rpc::SessionBridge::Feed::kEnd) input_done_ = true;
    DoWrite();
    DoRead();
  }

  void DoWrite() {
    if (writing_ || closing_ || !bridge_) return;
    pb::SessionOutput out;
    if (bridge_->Pop(&out, 0ms)) {
      out_ = out.SerializeAsString();
      out_is_frame_ = out.has_frame();
      writing_ = true;
      ws_.async_write(asio::buffer(out_),
                      beast::bind_front_handler(&WsConn::OnWrite, this->shared_from_this()));
      return;
    }
    if (bridge_->ended()) {
      const Status status = bridge_->end_status();
      if (status.ok()) {
        CloseWith(websocket::close_code::normal, "session closed");
      } else {
        // 4000 + the gRPC status code; the reason is the status message (bounded).
        CloseWith(static_cast<uint16_t>(4000 + static_cast<int>(rpc::ToGrpc(status).error_code())),
                  status.message());
      }
    }
  }

  void OnWrite(beast::error_code ec, size_t bytes) {
    writing_ = false;
    if (ec) {
      ClientGone(ec);
      return;
    }
    call_.AddBytes(0, static_cast<int64_t>(bytes));
    if (out_is_frame_) call_.AddFrames(1);
    DoWrite();
  }

  void CloseWith(uint16_t code, std::string_view reason) {
    if (closing_) return;
    closing_ = true;
    open_timer_.cancel();
    retry_timer_.cancel();
    Status status =
        bridge_ ? (bridge_->ending() ? bridge_->end_status() : Status::Ok()) : Status::Ok();
    if (code != websocket::close_code::normal && status.ok() && code < 4000) {
      status = Status(StatusCode::kInvalidArgument, std::string(reason));
    }
    if (bridge_ && !bridge_->ended()) bridge_->Cancel();
    Finish(rpc::ToGrpc(status));
    websocket::close_reason why;
    why.code = code;
    why.reason = Bounded(reason, 110);
    ws_.async_close(why, [self = this->shared_from_this()](beast::error_code) {});
  }

  void ClientGone(beast::error_code ec) {
    open_timer_.cancel();
    retry_timer_.cancel();
    if (bridge_) bridge_->Cancel();
    if (!finished_ && ec != websocket::error::closed) {
      LOG_DEBUG("web: session from %s ended: %s", peer_.c_str(), ec.message().c_str());
    }
    Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the viewer left"));
  }

  void Finish(grpc::Status status) {
    if (finished_) return;
    finished_ = true;
    if (attempted_) call_.Finish(std::move(status));
  }

  WebServer::Impl* impl_;
  websocket::stream<StreamT<kTls>> ws_;
  http::request<http::string_body> req_;
  ::lipsync::http::ConnectionSlot token_;
  std::string peer_;
  std::string cert_subject_;  // the verified client certificate's subject (mTLS), or empty
  asio::steady_timer open_timer_;
  asio::steady_timer retry_timer_;
  rpc::StreamCall call_;
  std::unique_ptr<rpc::SessionBridge> bridge_;
  beast::flat_buffer in_;
  std::optional<pb::SessionInput> pending_;
  std::string out_;
  bool out_is_frame_ = false;
  bool writing_ = false;
  bool closing_ = false;
  bool input_done_ = false;
  bool finished_ = false;
  bool attempted_ = false;  // the open message reached the admission (audit it)
};

}  // namespace

std::shared_ptr<::lipsync::http::Connection> WebServer::Impl::Upgrade(
    ::lipsync::http::Request req, ::lipsync::http::PlainStream stream,
    ::lipsync::http::Upgraded info) {
  auto ws = std::make_shared<WsConn<false>>(this, std::move(stream), std::move(info.slot),
                                            std::move(info.peer));
  ws->Start(std::move(req));
  return ws;
}

std::shared_ptr<::lipsync::http::Connection> WebServer::Impl::Upgrade(
    ::lipsync::http::Request req, ::lipsync::http::TlsStream stream,
    ::lipsync::http::Upgraded info) {
  auto ws = std::make_shared<WsConn<true>>(this, std::move(stream), std::move(info.slot),
                                           std::move(info.peer));
  ws->Start(std::move(req));
  return ws;
}

http::response<http::string_body> WebServer::Impl::HandleGet(
    const http::request<http::string_body>& req) {
  http::response<http::string_body> res{http::status::ok, req.version()};
  res.set(http::field::server, kServerName);
  res.set(http::field::cache_control, "no-store");
  res.set("X-Content-Type-Options", "nosniff");
  res.keep_alive(req.keep_alive());
  auto fail = [&](http::status status, std::string body) {
    res.result(status);
    res.set(http::field::content_type, "text/plain; charset=utf-8");
    res.body() = std::move(body) + "\n";
    res.prepare_payload();
    return res;
  };
  if (req.method() != http::verb::get && req.method() != http::verb::head) {
    res.set(http::field::allow, "GET, HEAD");
    return fail(http::status::method_not_allowed, "expected GET or HEAD");
  }
  const std::string_view target = req.target();
  if (target.substr(0, target.find('?')) == "/api/avatars") {
    auto out = Avatars(req);
    out.keep_alive(req.keep_alive());
    return out;
  }
  const auto rel = SafeRelativePath(target);
  if (!rel) return fail(http::status::not_found, "not found");
  const fs::path path = root / *rel;
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec || !fs::is_regular_file(path, ec)) return fail(http::status::not_found, "not found");
  if (size > kMaxFileBytes) return fail(http::status::internal_server_error, "file too large");
  std::ifstream in(path, std::ios::binary);
  std::string body(size, '\0');
  if (!in.read(body.data(), static_cast<std::streamsize>(size))) {
    return fail(http::status::internal_server_error, "cannot read the file");
  }
  res.set(http::field::content_type, ContentType(path));
  if (req.method() == http::verb::head) {
    res.content_length(size);
  } else {
    res.body() = std::move(body);
    res.prepare_payload();
  }
  return res;
}

http::response<http::string_body> WebServer::Impl::Avatars(
    const http::request<http::string_body>& req) {
  http::response<http::string_body> res{http::status::ok, req.version()};
  res.set(http::field::server, kServerName);
  res.set(http::field::cache_control, "no-store");
  res.set(http::field::content_type, "application/json");
  nlohmann::json body;
  auth::Authenticator& authenticator = ops->authenticator();
  body["auth_required"] = authenticator.enabled();
  body["tls"] = !options.tls.cert_path.empty();
  std::vector<std::string> ids = server->avatars().KnownIds();
  std::sort(ids.begin(), ids.end());
  nlohmann::json list = nlohmann::json::array();
  std::optional<auth::Principal> principal;
  if (authenticator.enabled()) {
    const auto header = req[http::field::authorization];
    std::string credential(header.data(), header.size());
    if (credential.empty()) {
      const std::string key = QueryParam(req.target(), "key");
      if (!key.empty()) credential = "Bearer " + key;
    }
    if (credential.empty()) {
      res.result(http::status::unauthorized);
      body["error"] = "expected a credential (Authorization header or ?key=)";
    } else if (auto who = authenticator.Authenticate(credential, ""); !who.ok()) {
      res.result(http::status::unauthorized);
      body["error"] = who.status().message();
    } else {
      principal = *who;
    }
  }
  if (res.result() == http::status::ok) {
    for (const std::string& id : ids) {
      if (list.size() >= kMaxAvatars) break;
      if (principal && (!principal->Has(auth::Scope::kStream) || !principal->MayUse(id))) continue;
      list.push_back(id);
    }
  }
  body["avatars"] = std::move(list);
  res.body() = body.dump();
  res.prepare_payload();
  return res;
}

// ---------------------------------------------------------------------------------------

WebServerOptions OptionsFromConfig(const config::CompositingConfig& config) {
  WebServerOptions o;
  o.host = config.web.host;
  o.port = config.web.port;
  o.root = config.web.root;
  o.max_connections = config.web.max_connections;
  o.tls = config.server.tls;
  // One chunk of the longest allowed duration at 48 kHz stereo s16le, plus framing.
  o.max_message_bytes =
      static_cast<size_t>(config.session.max_chunk_seconds * 48000 * 2 * 2) + (64 << 10);
  return o;
}

std::string DefaultWebRoot() {
  if (const char* env = std::getenv("LIPSYNC_WEB_ROOT"); env && *env) return env;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const fs::path installed = exe.parent_path() / ".." / "share" / "lipsync" / "web";
    if (fs::exists(installed / "index.html", ec)) return installed.lexically_normal().string();
  }
  return LIPSYNC_WEB_SOURCE_ROOT;
}

WebServer::WebServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
WebServer::~WebServer() { Stop(); }

Expected<std::unique_ptr<WebServer>> WebServer::Start(const WebServerOptions& options,
                                                      compositing::CompositingServer* server,
                                                      rpc::ServerOps* ops,
                                                      rpc::SessionService* sessions) {
  auto impl = std::make_unique<Impl>(options, server, ops, sessions);
  impl->root = options.root.empty() ? DefaultWebRoot() : options.root;
  std::error_code fs_ec;
  if (impl->root.empty() || !fs::exists(impl->root / "index.html", fs_ec)) {
    return Status::InvalidArgument("web.root '" + Bounded(impl->root.string(), 200) +
                                   "' holds no index.html (expected the page's folder, web/)");
  }
  ::lipsync::http::HttpServerOptions http_options;
  http_options.name = kServerName;
  http_options.host = options.host;
  http_options.port = options.port;
  http_options.max_connections = options.max_connections;
  http_options.tls = options.tls;
  http_options.max_request_bytes = options.max_request_bytes;
  http_options.request_timeout = options.request_timeout;
  http_options.io_threads = options.io_threads;
  LIPSYNC_ASSIGN_OR_RETURN(impl->http_server,
                           ::lipsync::http::HttpServer::Start(http_options, impl.get()));
  return std::unique_ptr<WebServer>(new WebServer(std::move(impl)));
}

std::unique_ptr<WebServer> StartForCommand(const config::CompositingConfig& config,
                                           compositing::CompositingServer* server,
                                           rpc::ServerOps* ops, rpc::SessionService* sessions) {
  if (config.web.port == 0) return nullptr;
  auto web = WebServer::Start(OptionsFromConfig(config), server, ops, sessions);
  if (!web.ok()) {
    LOG_WARN("web: the browser page is not served: %s", web.status().message().c_str());
    std::printf("⚠️  Browser page not served: %s\n", web.status().message().c_str());
    return nullptr;
  }
  const std::string host = config.web.host == "0.0.0.0" ? "127.0.0.1" : config.web.host;
  std::printf("🌐 Browser page: %s://%s:%d/ (live sessions over WebSocket /ws)\n",
              (*web)->tls() ? "https" : "http", host.c_str(), (*web)->port());
  std::fflush(stdout);
  return std::move(*web);
}

int WebServer::port() const { return impl_->http_server->port(); }
bool WebServer::tls() const { return impl_->http_server->tls(); }
int WebServer::connections() const { return impl_->http_server->connections(); }
void WebServer::Stop() { impl_->Stop(); }

}  // namespace lipsync::web
