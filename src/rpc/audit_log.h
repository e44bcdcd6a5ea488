// Audit log: one JSON object per line for every RPC a server answers (the guide's
// "audit logging (track all requests)"), appended to a file an operator names in
// logging.audit_log_path. Lines are written whole with O_APPEND, so logrotate's
// copytruncate and several readers are safe; Reopen() supports rename-and-reopen.
//
// Thread-safe (one mutex around each write). The file is flushed after every line:
// an audit trail that is lost in a crash is not one.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>

#include "common/status.h"

namespace lipsync::rpc {

struct AuditRecord {
  std::chrono::system_clock::time_point time;  // when the call started
  std::string server;                          // "inference" or "compositing"
  std::string peer;                            // gRPC peer, e.g. "ipv4:10.0.0.5:53422"
  std::string method;                          // e.g. "InferBatch"
  std::string model_id;                        // empty for calls without one
  int64_t frames = 0;                          // frames requested (0: not a frame call)
  std::string code;                            // gRPC status code name, e.g. "OK"
  std::string error;                           // status message when not OK
  double duration_ms = 0;
  int64_t bytes_in = 0;   // serialized request size
  int64_t bytes_out = 0;  // serialized response size
};

// The line written for `record` (no trailing newline): a JSON object with the fields
// above; "time" is UTC ISO-8601 with milliseconds.
std::string FormatAuditLine(const AuditRecord& record);

class AuditLog {
 public:
  // Opens (creating, appending) `path`. FAILED_PRECONDITION naming the path and the OS
  // error when it cannot be opened for writing.
  static Expected<std::unique_ptr<AuditLog>> Open(const std::string& path);
  ~AuditLog();

  void Write(const AuditRecord& record);
  // Reopens the path (after logrotate renamed the file).
  Status Reopen();

 private:
  AuditLog(std::string path, std::FILE* file) : path_(std::move(path)), file_(file) {}
  const std::string path_;
  std::mutex mu_;
  std::FILE* file_;
};

}  // namespace lipsync::rpc
