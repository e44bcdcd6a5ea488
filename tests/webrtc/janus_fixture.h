// Runs Debian's real `janus` on loopback with the shipped configuration
// (deploy/janus/*.jcfg), only its ports and folders changed, for the tests.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include <netinet/in.h>
#include <sys/socket.h>

namespace lipsync::testing {

// A TCP port free on loopback now.
inline int FreeTcpPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

class JanusProcess {
 public:
  static bool Available() { return ::access("/usr/bin/janus", X_OK) == 0; }

  // Writes the config into `dir` and starts janus; true once its HTTP API answers.
  bool Start(const std::filesystem::path& dir, int http_port = 0, int admin_port = 0) {
    namespace fs = std::filesystem;
    dir_ = dir;
    fs::create_directories(dir);
    if (http_port == 0) http_port = FreeTcpPort();
    if (admin_port == 0) admin_port = FreeTcpPort();
    http_port_ = http_port;
    admin_port_ = admin_port;
    const fs::path shipped = fs::path(LIPSYNC_SOURCE_DIR) / "deploy" / "janus";
    for (const char* name :
         {"janus.jcfg", "janus.transport.http.jcfg", "janus.plugin.streaming.jcfg"}) {
      std::ifstream in(shipped / name);
      std::stringstream text;
      text << in.rdbuf();
      std::string s = text.str();
      Replace(s, "configs_folder = \"/etc/janus\"", "configs_folder = \"" + dir.string() + "\"");
      Replace(s, "port = 8088", "port = " + std::to_string(http_port));
      Replace(s, "admin_port = 7088", "admin_port = " + std::to_string(admin_port));
      std::ofstream(dir / name) << s;
    }
    log_ = (dir / "janus.log").string();
    pid_ = ::fork();
    if (pid_ == 0) {
      ::setpgid(0, 0);
      FILE* f = std::freopen(log_.c_str(), "w", stdout);
      (void)f;
      ::dup2(STDOUT_FILENO, STDERR_FILENO);
      const std::string config = (dir / "janus.jcfg").string();
      const std::string folder = dir.string();
      ::execl("/usr/bin/janus", "janus", "-F", folder.c_str(), "-C", config.c_str(), "-d", "4",
              "-r", "30000-31000", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    for (int i = 0; i < 200; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (Log().find("HTTP webserver started") != std::string::npos) return true;
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
    }
    return false;
  }

  void Stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 100; ++i) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  ~JanusProcess() { Stop(); }

  std::string Log() const {
    std::ifstream in(log_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  int http_port() const { return http_port_; }
  int admin_port() const { return admin_port_; }
  std::string admin_url() const {
    return "http://127.0.0.1:" + std::to_string(admin_port_) + "/admin";
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(http_port_) + "/janus"; }

  // The shipped placeholders (tests use the shipped files unchanged).
  static constexpr const char* kApiSecret = "change-me-api-secret";
  static constexpr const char* kAdminKey = "change-me-admin-key";
  static constexpr const char* kAdminSecret = "change-me-admin-secret";

 private:
  static void Replace(std::string& s, const std::string& from, const std::string& to) {
    const size_t at = s.find(from);
    if (at != std::string::npos) s.replace(at, from.size(), to);
  }
  std::filesystem::path dir_;
  std::string log_;
  pid_t pid_ = -1;
  int http_port_ = 0;
  int admin_port_ = 0;
};

}  // namespace lipsync::testing
