// Audit log: one JSON object per line for every RPC a server answers (the guide's
// "audit logging (track all requests)"), appended to a file an operator names in
// logging.audit_log_path. Each line goes to the kernel with one write(2) of the whole
// line on an O_APPEND descriptor: lines of concurrent writers never interleave,
// logrotate's copytruncate and readers are safe, and Reopen() supports
// rename-and-reopen (SIGHUP). There is no user-space buffer: a line that Write
// reported written is in the file even if the process dies right after.
//
// Write errors are not silent: a failed or short write (disk full, I/O error, file
// size limit) is returned, counted (write_failures), logged (at most one line per
// 10 s) and makes healthy() false until a write or Reopen succeeds; with
// logging.audit_fail_closed the server then refuses calls. A short write's partial
// line is truncated back off the file when the file has not grown since (no other
// writer), else ended with a newline so the next line starts clean: the file never
// holds a line glued to a fragment.
//
// Thread-safe (one mutex around each write; healthy/write_failures lock-free).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "common/status.h"

namespace lipsync::rpc {

struct AuditRecord {
  std::chrono::system_clock::time_point time;  // when the call started
  std::string server;                          // "inference" or "compositing"
  std::string peer;                            // gRPC peer, e.g. "ipv4:10.0.0.5:53422"
  std::string credential;  // who: "key:<id>", "jwt:<kid>:<sub>", "cert:<subject>" (never a secret)
  std::string method;      // e.g. "InferBatch"
  std::string model_id;    // empty for calls without one
  int64_t frames = 0;      // frames requested (0: not a frame call)
  std::string code;        // gRPC status code name, e.g. "OK"
  std::string error;       // status message when not OK
  double duration_ms = 0;
  int64_t bytes_in = 0;   // serialized request size
  int64_t bytes_out = 0;  // serialized response size
};

// The line written for `record` (no trailing newline): a JSON object with the fields
// above; "time" is UTC ISO-8601 with milliseconds.
std::string FormatAuditLine(const AuditRecord& record);

class AuditLog {
 public:
  // Opens (creating with mode 0640, appending) `path`. FAILED_PRECONDITION naming the
  // path and the OS error when it cannot be opened for writing.
  static Expected<std::unique_ptr<AuditLog>> Open(const std::string& path);
  ~AuditLog();
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  // Appends the record's line. UNAVAILABLE naming the path and the OS error when the
  // whole line could not be written (nothing of it stays in the file when possible).
  Status Write(const AuditRecord& record);
  // False after a failed write until a write or Reopen succeeds.
  bool healthy() const { return healthy_.load(); }
  // Lines that could not be written, since Open.
  int64_t write_failures() const { return write_failures_.load(); }
  // Reopens the path (after logrotate renamed the file); on success the log is
  // healthy again. On failure the old file stays in use and the error is returned.
  Status Reopen();
  const std::string& path() const { return path_; }

 private:
  AuditLog(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  Status WriteLocked(const std::string& line);
  void ReportFailure(const std::string& error);

  const std::string path_;
  std::mutex mu_;
  int fd_;                           // guarded by mu_
  int64_t last_failure_log_ms_ = 0;  // guarded by mu_
  int64_t failures_since_log_ = 0;   // guarded by mu_
  std::atomic<bool> healthy_{true};
  std::atomic<int64_t> write_failures_{0};
};

}  // namespace lipsync::rpc
