#include "http/http_server.h"

#include <algorithm>
#include <boost/asio.hpp>
#include <boost/beast/websocket.hpp>
#include <list>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>
#include <vector>

#include "common/log.h"

namespace lipsync::http {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

// Printable ASCII, at most `max` characters: for messages.
std::string Bounded(std::string_view text, size_t max = 100) {
  std::string out;
  for (char c : text.substr(0, max)) out += (c >= 32 && c < 127) ? c : '?';
  if (text.size() > max) out += "...";
  return out;
}

// One connection's place in max_connections.
class ConnToken {
 public:
  explicit ConnToken(std::atomic<int>* counter) : counter_(counter) {}
  ~ConnToken() { counter_->fetch_sub(1); }
  ConnToken(const ConnToken&) = delete;
  ConnToken& operator=(const ConnToken&) = delete;

 private:
  std::atomic<int>* counter_;
};

}  // namespace

std::shared_ptr<Connection> Handler::Upgrade(Request, PlainStream, Upgraded) { return nullptr; }
std::shared_ptr<Connection> Handler::Upgrade(Request, TlsStream, Upgraded) { return nullptr; }

Response TextResponse(const Request& request, bhttp::status status, std::string body,
                      const std::string& server_name) {
  Response res{status, request.version()};
  res.set(bhttp::field::server, server_name);
  res.set(bhttp::field::content_type, "text/plain; charset=utf-8");
  res.set(bhttp::field::cache_control, "no-store");
  res.set("X-Content-Type-Options", "nosniff");
  res.keep_alive(request.keep_alive());
  res.body() = std::move(body) + "\n";
  res.prepare_payload();
  return res;
}

class HttpServer::Impl {
 public:
  Impl(HttpServerOptions o, Handler* h) : options(std::move(o)), handler(h) {}

  const HttpServerOptions options;
  Handler* const handler;
  std::atomic<bool> stopping{false};
  std::atomic<int> connections{0};
  std::mutex mu;
  std::list<std::weak_ptr<Connection>> live;  // for Stop
  // Declared last: destroyed first (its handlers hold connections).
  std::optional<asio::ssl::context> ssl;
  asio::io_context ioc;
  tcp::acceptor acceptor{ioc};
  std::vector<std::thread> threads;
  int port = 0;
  bool stopped = false;

  void Register(const std::shared_ptr<Connection>& conn) {
    if (!conn) return;
    std::lock_guard<std::mutex> lock(mu);
    live.remove_if([](const std::weak_ptr<Connection>& w) { return w.expired(); });
    live.push_back(conn);
  }
  void Accept();
  void OnAccept(beast::error_code ec, tcp::socket socket);
  void Stop();
};

namespace {

template <bool kTls>
using StreamT = std::conditional_t<kTls, TlsStream, PlainStream>;

// One HTTP connection: requests answered by the handler until the client leaves, the
// answer says close, or the request is handed over as an upgrade.
template <bool kTls>
class HttpConn : public Connection, public std::enable_shared_from_this<HttpConn<kTls>> {
 public:
  template <typename... Args>
  HttpConn(HttpServer::Impl* impl, std::shared_ptr<ConnToken> token, std::string peer,
           Args&&... args)
      : impl_(impl),
        stream_(std::forward<Args>(args)...),
        token_(std::move(token)),
        peer_(std::move(peer)) {}

  void Start() {
    if constexpr (kTls) {
      beast::get_lowest_layer(stream_).expires_after(impl_->options.request_timeout);
      stream_.async_handshake(
          asio::ssl::stream_base::server,
          beast::bind_front_handler(&HttpConn::OnHandshake, this->shared_from_this()));
    } else {
      DoReadRequest();
    }
  }

  void Abort() override { beast::get_lowest_layer(stream_).close(); }

 private:
  void OnHandshake(beast::error_code ec) {
    if (ec) return;
    DoReadRequest();
  }

  void DoReadRequest() {
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(impl_->options.max_request_bytes));
    parser_->body_limit(impl_->options.max_request_bytes);
    beast::get_lowest_layer(stream_).expires_after(impl_->options.request_timeout);
    bhttp::async_read(stream_, buffer_, *parser_,
                      beast::bind_front_handler(&HttpConn::OnRequest, this->shared_from_this()));
  }

  void OnRequest(beast::error_code ec, size_t) {
    if (ec == bhttp::error::end_of_stream) {
      Shutdown();
      return;
    }
    if (ec) {
      if (ec == bhttp::error::header_limit || ec == bhttp::error::body_limit) {
        Request too_large{bhttp::verb::get, "/", 11};
        too_large.keep_alive(false);
        Respond(TextResponse(too_large, bhttp::status::payload_too_large, "request too large",
                             impl_->options.name));
      }
      return;
    }
    Request req = parser_->release();
    const std::string_view target = req.target();
    const std::string_view path = target.substr(0, target.find('?'));
    if (beast::websocket::is_upgrade(req)) {
      if (!impl_->handler->Upgrades(path)) {
        req.keep_alive(false);
        Respond(TextResponse(req, bhttp::status::not_found, "no upgrade at this path",
                             impl_->options.name));
        return;
      }
      beast::get_lowest_layer(stream_).expires_never();
      impl_->Register(impl_->handler->Upgrade(std::move(req), std::move(stream_),
                                              Upgraded{std::move(token_), std::move(peer_)}));
      return;
    }
    Response res = impl_->handler->Handle(req);
    res.keep_alive(req.keep_alive() && res.keep_alive());
    Respond(std::move(res));
  }

  void Respond(Response res) {
    res_ = std::make_shared<Response>(std::move(res));
    beast::get_lowest_layer(stream_).expires_after(impl_->options.request_timeout);
    bhttp::async_write(stream_, *res_,
                       beast::bind_front_handler(&HttpConn::OnWrite, this->shared_from_this()));
  }

  void OnWrite(beast::error_code ec, size_t) {
    if (ec) return;
    const bool keep = res_->keep_alive();
    res_.reset();
    if (keep) {
      DoReadRequest();
    } else {
      Shutdown();
    }
  }

  void Shutdown() {
    if constexpr (kTls) {
      beast::get_lowest_layer(stream_).expires_after(2s);
      stream_.async_shutdown([self = this->shared_from_this()](beast::error_code) {});
    } else {
      beast::error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    }
  }

  HttpServer::Impl* impl_;
  StreamT<kTls> stream_;
  std::shared_ptr<ConnToken> token_;
  std::string peer_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  std::shared_ptr<Response> res_;
};

}  // namespace

void HttpServer::Impl::Accept() {
  acceptor.async_accept(asio::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    OnAccept(ec, std::move(socket));
  });
}

void HttpServer::Impl::OnAccept(beast::error_code ec, tcp::socket socket) {
  if (ec == asio::error::operation_aborted || stopping.load()) return;
  if (!ec) {
    beast::error_code peer_ec;
    const auto remote = socket.remote_endpoint(peer_ec);
    std::string peer =
        peer_ec ? "unknown"
                : "ipv4:" + remote.address().to_string() + ":" + std::to_string(remote.port());
    if (connections.fetch_add(1) >= options.max_connections) {
      connections.fetch_sub(1);
      if (!ssl) {
        static const std::string kBusy =
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: "
            "21\r\nConnection: close\r\n\r\ntoo many connections\n";
        beast::error_code ignored;
        asio::write(socket, asio::buffer(kBusy), ignored);
      }
      beast::error_code ignored;
      socket.close(ignored);
      LOG_WARN("%s: refused a connection from %s: %d connections open (max_connections)",
               options.name.c_str(), peer.c_str(), options.max_connections);
    } else {
      auto token = std::make_shared<ConnToken>(&connections);
      if (ssl) {
        auto conn = std::make_shared<HttpConn<true>>(this, token, peer, std::move(socket), *ssl);
        Register(conn);
        conn->Start();
      } else {
        auto conn = std::make_shared<HttpConn<false>>(this, token, peer, std::move(socket));
        Register(conn);
        conn->Start();
      }
    }
  }
  Accept();
}

void HttpServer::Impl::Stop() {
  if (stopped) return;
  stopped = true;
  stopping = true;
  asio::post(ioc, [this] {
    beast::error_code ignored;
    acceptor.close(ignored);
  });
  ioc.stop();
  for (auto& t : threads) t.join();
  threads.clear();
  std::list<std::weak_ptr<Connection>> conns;
  {
    std::lock_guard<std::mutex> lock(mu);
    conns.swap(live);
  }
  {
    beast::error_code ignored;
    acceptor.close(ignored);
  }
  for (auto& weak : conns) {
    if (auto conn = weak.lock()) conn->Abort();
  }
  // Let the aborted connections' handlers finish (they fail at once) and free them.
  ioc.restart();
  ioc.run_for(std::chrono::seconds(2));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpServer::~HttpServer() { Stop(); }

Expected<std::unique_ptr<HttpServer>> HttpServer::Start(const HttpServerOptions& options,
                                                        Handler* handler) {
  auto impl = std::make_unique<Impl>(options, handler);
  if (!options.tls.cert_path.empty()) {
    try {
      impl->ssl.emplace(asio::ssl::context::tls_server);
      impl->ssl->set_options(asio::ssl::context::default_workarounds |
                             asio::ssl::context::no_sslv2 | asio::ssl::context::no_sslv3 |
                             asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1);
      impl->ssl->use_certificate_chain_file(options.tls.cert_path);
      impl->ssl->use_private_key_file(options.tls.key_path, asio::ssl::context::pem);
      if (!options.tls.client_ca_path.empty()) {
        impl->ssl->load_verify_file(options.tls.client_ca_path);
        impl->ssl->set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
      }
    } catch (const std::exception& e) {
      return Status::InvalidArgument(options.name + " TLS: cannot load cert_path/key_path ('" +
                                     Bounded(options.tls.cert_path, 200) +
                                     "'): " + Bounded(e.what(), 200));
    }
  }
  beast::error_code ec;
  auto address =
      asio::ip::make_address(options.host == "localhost" ? "127.0.0.1" : options.host, ec);
  if (ec) {
    return Status::InvalidArgument(options.name + ": host '" + Bounded(options.host) +
                                   "' is not an IP address (expected e.g. 127.0.0.1 or 0.0.0.0)");
  }
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(options.port));
  impl->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(endpoint, ec);
  if (!ec) impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return Status(StatusCode::kUnavailable, options.name + ": cannot listen on " +
                                                Bounded(options.host) + ":" +
                                                std::to_string(options.port) + ": " + ec.message());
  }
  impl->port = impl->acceptor.local_endpoint().port();
  impl->Accept();
  for (int i = 0; i < std::max(1, options.io_threads); ++i) {
    impl->threads.emplace_back([ioc = &impl->ioc, name = options.name] {
      try {
        ioc->run();
      } catch (const std::exception& e) {
        LOG_ERROR("%s: I/O thread stopped: %s", name.c_str(), e.what());
      }
    });
  }
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

int HttpServer::port() const { return impl_->port; }
bool HttpServer::tls() const { return impl_->ssl.has_value(); }
int HttpServer::connections() const { return impl_->connections.load(); }
bool HttpServer::stopping() const { return impl_->stopping.load(); }
void HttpServer::Stop() { impl_->Stop(); }

}  // namespace lipsync::http
