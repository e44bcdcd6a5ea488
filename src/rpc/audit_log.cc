#include "rpc/audit_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>

#include "common/log.h"

namespace lipsync::rpc {
namespace {

std::string IsoTime(std::chrono::system_clock::time_point time) {
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(time.time_since_epoch()).count();
  const std::time_t seconds = static_cast<std::time_t>(ms / 1000);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char text[96];  // generous: the compiler cannot bound tm fields
  std::snprintf(text, sizeof(text), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900,
                utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                static_cast<int>(ms % 1000));
  return text;
}

Expected<int> OpenForAppend(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) {
    return Status::FailedPrecondition("cannot open audit log '" + path +
                                      "' for appending: " + std::strerror(errno) +
                                      " (expected a writable file path in logging.audit_log_path)");
  }
  return fd;
}

int64_t SteadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

std::string FormatAuditLine(const AuditRecord& record) {
  nlohmann::ordered_json line;
  line["time"] = IsoTime(record.time);
  line["server"] = record.server;
  line["peer"] = record.peer;
  line["credential"] = record.credential;
  line["method"] = record.method;
  line["model_id"] = record.model_id;
  line["frames"] = record.frames;
  line["code"] = record.code;
  if (!record.error.empty()) line["error"] = record.error;
  line["duration_ms"] = static_cast<double>(static_cast<int64_t>(record.duration_ms * 1000)) / 1000;
  line["bytes_in"] = record.bytes_in;
  line["bytes_out"] = record.bytes_out;
  // Client-controlled strings (model ids, peers) may hold invalid UTF-8: replace, not throw.
  return line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

Expected<std::unique_ptr<AuditLog>> AuditLog::Open(const std::string& path) {
  LIPSYNC_ASSIGN_OR_RETURN(int fd, OpenForAppend(path));
  return std::unique_ptr<AuditLog>(new AuditLog(path, fd));
}

AuditLog::~AuditLog() { ::close(fd_); }

Status AuditLog::Write(const AuditRecord& record) {
  std::string line = FormatAuditLine(record);
  line += '\n';
  std::lock_guard<std::mutex> lock(mu_);
  Status status = WriteLocked(line);
  if (status.ok()) {
    if (!healthy_.exchange(true)) {
      LOG_INFO("audit log '%s' is writable again (%lld lines were lost)", path_.c_str(),
               static_cast<long long>(write_failures_.load()));
      last_failure_log_ms_ = 0;
      failures_since_log_ = 0;
    }
    return status;
  }
  ReportFailure(status.message());
  return status;
}

Status AuditLog::WriteLocked(const std::string& line) {
  ssize_t written;
  do {
    written = ::write(fd_, line.data(), line.size());
  } while (written < 0 && errno == EINTR);
  if (written == static_cast<ssize_t>(line.size())) return Status::Ok();
  std::string what;
  if (written < 0) {
    what = std::strerror(errno);
  } else {
    what = "short write of " + std::to_string(written) + " of " + std::to_string(line.size()) +
           " bytes (disk full or file size limit)";
  }
  if (written > 0) {
    // The start of the line is now at the end of the file. Take it back when nothing
    // was appended after it; else end it so the next line starts clean.
    const off_t end = ::lseek(fd_, 0, SEEK_CUR);
    struct stat st {};
    if (end >= written && ::fstat(fd_, &st) == 0 && st.st_size == end &&
        ::ftruncate(fd_, end - written) == 0) {
      what += ", taken back off the file";
    } else {
      const ssize_t ignored = ::write(fd_, "\n", 1);
      (void)ignored;
      what += "; the fragment stays on a line of its own";
    }
  }
  return Status::Unavailable("cannot write to audit log '" + path_ + "': " + what +
                             " (expected a writable file with free space)");
}

void AuditLog::ReportFailure(const std::string& error) {
  const int64_t failures = write_failures_.fetch_add(1) + 1;
  healthy_ = false;
  ++failures_since_log_;
  const int64_t now = SteadyMs();
  if (last_failure_log_ms_ != 0 && now - last_failure_log_ms_ < 10'000) return;
  LOG_ERROR("%s; %lld audit lines lost so far (%lld since the last report)", error.c_str(),
            static_cast<long long>(failures), static_cast<long long>(failures_since_log_));
  last_failure_log_ms_ = now;
  failures_since_log_ = 0;
}

Status AuditLog::Reopen() {
  LIPSYNC_ASSIGN_OR_RETURN(int fd, OpenForAppend(path_));
  std::lock_guard<std::mutex> lock(mu_);
  ::close(fd_);
  fd_ = fd;
  healthy_ = true;
  last_failure_log_ms_ = 0;
  failures_since_log_ = 0;
  return Status::Ok();
}

}  // namespace lipsync::rpc
