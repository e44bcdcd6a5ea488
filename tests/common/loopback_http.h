// Test helper: one raw HTTP exchange with a server on 127.0.0.1. Sends `request` as is
// and reads until the server closes the connection (send HTTP/1.0 requests, or
// "Connection: close"). Returns the whole answer (status line, headers, body), or an
// empty string when nothing listens on `port`.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <string>

namespace lipsync::testing {

inline std::string LoopbackHttp(int port, const std::string& request) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return {};
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  std::string answer;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0) {
    ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
    char buffer[8192];
    ssize_t n;
    while ((n = ::recv(fd, buffer, sizeof(buffer), 0)) > 0) answer.append(buffer, n);
  }
  ::close(fd);
  return answer;
}

}  // namespace lipsync::testing
