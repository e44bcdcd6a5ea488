// The browser front of live sessions (issue 10; docs/STREAMING.md "Browser"): the page's
// handlers on the product's HTTP server (http/http_server.h, Boost.Beast): the demo
// page's static files and one live session per WebSocket.
//
//  - GET /, /index.html, /app.js, ... : files from `root` (only plain names of letters,
//    digits, '.', '-', '_' and '/'; no "..", no dot files; at most 4 MiB each).
//  - GET /api/avatars: {"auth_required": bool, "avatars": [ids]}. With authentication
//    on, the credential comes as the Authorization header or `?key=<api key or JWT>`;
//    without a valid one the answer is 401 with an empty list (the page then asks for a
//    key). The list holds the tenants the credential may stream (at most 1000).
//  - GET /ws: upgrades to a WebSocket. Binary frames: serialized SessionInput from the
//    browser, serialized SessionOutput to it (compositing.proto), translated by an
//    rpc::SessionBridge exactly as the gRPC StreamSession does. The credential travels
//    in SessionOpen.authorization and is checked by the same auth library (scope
//    stream, the tenant, rate limits and one audit line per session through
//    rpc::StreamCall). The session shares the gRPC service's SessionLimiter.
//
// Bounds: max_connections at once (beyond it a new connection gets 503 and is closed),
// a request header/body limit and a request read timeout (http::HttpServer), one
// WebSocket message at most max_message_bytes, the open message within open_timeout, an idle
// WebSocket pinged and closed after idle_timeout. A slow viewer never blocks its session (the
// bridge's queue drops frames for it). Optional TLS (server.tls: the same certificate as gRPC).
//
// Thread-safe: Start/Stop from one thread; the server runs its own I/O threads.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include "common/status.h"
#include "compositing/compositing_server.h"
#include "config/config.h"
#include "rpc/server_ops.h"
#include "rpc/session_service.h"

namespace lipsync::web {

struct WebServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;   // 0: any free port (see WebServer::port)
  std::string root;  // the page's files; empty: DefaultWebRoot()
  int max_connections = 64;
  config::TlsConfig tls;                // cert_path set: HTTPS / WSS only
  size_t max_message_bytes = 4 << 20;   // one WebSocket message (10 s of 48 kHz stereo fits)
  size_t max_request_bytes = 16 << 10;  // HTTP request header + body
  std::chrono::milliseconds request_timeout{15000};
  std::chrono::milliseconds open_timeout{15000};  // WebSocket: the `open` message
  std::chrono::milliseconds idle_timeout{60000};  // WebSocket: no traffic (pings sent)
  int io_threads = 2;
};

// The `web:` section and server.tls of a compositing config.
WebServerOptions OptionsFromConfig(const config::CompositingConfig& config);

// The page's folder: $LIPSYNC_WEB_ROOT, else <binary dir>/../share/lipsync/web when it
// exists, else the source tree's web/ baked in at build time.
std::string DefaultWebRoot();

class WebServer {
 public:
  // Binds and starts serving. INVALID_ARGUMENT for a bad address or missing page
  // folder, UNAVAILABLE when the port cannot be bound, the TLS files' error.
  // `server`, `ops` and `sessions` must outlive the web server.
  static Expected<std::unique_ptr<WebServer>> Start(const WebServerOptions& options,
                                                    compositing::CompositingServer* server,
                                                    rpc::ServerOps* ops,
                                                    rpc::SessionService* sessions);
  ~WebServer();  // Stop()

  int port() const;
  bool tls() const;
  // Connections open now (HTTP and WebSocket).
  int connections() const;
  // Stops accepting, ends every session (as if its client left), joins the threads.
  void Stop();

  class Impl;

 private:
  explicit WebServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// For `lipsync compositing` and `lipsync serve`: starts the page server of `config`
// (null when web.port is 0) and prints its URL. A page server that cannot start (port
// taken, no page folder) is logged as a warning: the gRPC services go on without it.
std::unique_ptr<WebServer> StartForCommand(const config::CompositingConfig& config,
                                           compositing::CompositingServer* server,
                                           rpc::ServerOps* ops, rpc::SessionService* sessions);

}  // namespace lipsync::web
