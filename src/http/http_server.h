// The product's one HTTP(S) server (Boost.Beast, Debian libboost1.81-dev, header-only;
// TLS through OpenSSL): the listener, connection limits, request bounds and timeouts,
// keep-alive and the hand-over of upgrade requests (WebSocket). What a request gets is
// the Handler's business: the browser page (web/web_server.h) and the servers' /metrics
// endpoint (rpc/server_ops.h) are two handlers on this one stack.
//
// Bounds: max_connections at once (beyond it a new connection gets 503 and is closed),
// a header + body limit (413 beyond it), the request read timeout (a connection that
// sends nothing for request_timeout is closed).
//
// Thread-safe: Start/Stop from one thread; the server runs io_threads I/O threads and
// calls the handler on them (a handler must not block long).
#pragma once

#include <atomic>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"
#include "config/config.h"

namespace lipsync::http {

using Request = boost::beast::http::request<boost::beast::http::string_body>;
using Response = boost::beast::http::response<boost::beast::http::string_body>;
using PlainStream = boost::beast::tcp_stream;
using TlsStream = boost::beast::ssl_stream<boost::beast::tcp_stream>;

struct HttpServerOptions {
  std::string name = "lipsync";  // the Server header and log lines
  std::string host = "127.0.0.1";
  int port = 0;  // 0: any free port (see HttpServer::port)
  int max_connections = 64;
  config::TlsConfig tls;                // cert_path set: HTTPS only
  size_t max_request_bytes = 16 << 10;  // header + body
  std::chrono::milliseconds request_timeout{15000};
  int io_threads = 1;
};

// A connection the handler took over (a WebSocket). Stop aborts the ones still alive.
class Connection {
 public:
  virtual ~Connection() = default;
  // The server stops (its I/O threads joined): end now.
  virtual void Abort() = 0;
};

// Holds one place among max_connections while any copy lives.
using ConnectionSlot = std::shared_ptr<void>;

// What an upgraded connection takes over besides its stream.
struct Upgraded {
  ConnectionSlot slot;
  std::string peer;  // "ipv4:<address>:<port>"
};

class Handler {
 public:
  virtual ~Handler() = default;
  // The answer to one request (any method; keep-alive is set from the request).
  virtual Response Handle(const Request& request) = 0;
  // Whether an upgrade request (WebSocket) for `path` is taken; otherwise it gets 404.
  virtual bool Upgrades(std::string_view path) {
    (void)path;
    return false;
  }
  // Takes the stream of an upgrade request `Upgrades` accepted; returns the connection
  // (the server keeps a weak reference to abort it on Stop).
  virtual std::shared_ptr<Connection> Upgrade(Request request, PlainStream stream, Upgraded info);
  virtual std::shared_ptr<Connection> Upgrade(Request request, TlsStream stream, Upgraded info);
};

// A plain-text answer to `request` (status, body + newline, no-store, nosniff).
Response TextResponse(const Request& request, boost::beast::http::status status, std::string body,
                      const std::string& server_name);

class HttpServer {
 public:
  // Binds and starts serving. INVALID_ARGUMENT for a bad host or TLS files that cannot
  // be loaded, UNAVAILABLE when the port cannot be bound. `handler` must outlive the
  // server.
  static Expected<std::unique_ptr<HttpServer>> Start(const HttpServerOptions& options,
                                                     Handler* handler);
  ~HttpServer();  // Stop()

  int port() const;
  bool tls() const;
  // Connections open now (HTTP and upgraded).
  int connections() const;
  // True once Stop began: upgraded connections stop scheduling work.
  bool stopping() const;
  // Stops accepting, aborts every connection, joins the threads. Idempotent.
  void Stop();

  class Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lipsync::http
