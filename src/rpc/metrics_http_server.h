// A deliberately tiny HTTP/1.0 server for Prometheus scrapes: GET /metrics answers the
// registry's text; anything else gets 404 (or 405 for other methods). One thread,
// one connection at a time with a short read timeout: a scraper asks every few
// seconds, and a slow or hostile client can delay a scrape but not the servers.
//
// Thread-safe to Stop from any thread; the registry must outlive the server.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "common/status.h"
#include "rpc/metrics.h"

namespace lipsync::rpc {

class MetricsHttpServer {
 public:
  // Binds host:port (port 0 picks a free one) and starts serving. UNAVAILABLE naming the
  // address when it cannot be bound; INVALID_ARGUMENT when host is not an IPv4 address.
  static Expected<std::unique_ptr<MetricsHttpServer>> Start(const std::string& host, int port,
                                                            const MetricsRegistry* registry);
  ~MetricsHttpServer();  // Stop()

  int port() const { return port_; }
  void Stop();

 private:
  MetricsHttpServer(int listen_fd, int port, const MetricsRegistry* registry);
  void Serve();
  void Answer(int fd);

  const int listen_fd_;
  const int port_;
  const MetricsRegistry* registry_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace lipsync::rpc
