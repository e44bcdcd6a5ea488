#include "rpc/audit_log.h"

#include <cerrno>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>

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

Expected<std::FILE*> OpenForAppend(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "ae");
  if (file == nullptr) {
    return Status::FailedPrecondition("cannot open audit log '" + path +
                                      "' for appending: " + std::strerror(errno) +
                                      " (expected a writable file path in logging.audit_log_path)");
  }
  return file;
}

}  // namespace

std::string FormatAuditLine(const AuditRecord& record) {
  nlohmann::ordered_json line;
  line["time"] = IsoTime(record.time);
  line["server"] = record.server;
  line["peer"] = record.peer;
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
  LIPSYNC_ASSIGN_OR_RETURN(std::FILE * file, OpenForAppend(path));
  return std::unique_ptr<AuditLog>(new AuditLog(path, file));
}

AuditLog::~AuditLog() {
  if (file_ != nullptr) std::fclose(file_);
}

void AuditLog::Write(const AuditRecord& record) {
  std::string line = FormatAuditLine(record);
  line += '\n';
  std::lock_guard<std::mutex> lock(mu_);
  if (file_ == nullptr) return;
  std::fwrite(line.data(), 1, line.size(), file_);
  std::fflush(file_);
}

Status AuditLog::Reopen() {
  LIPSYNC_ASSIGN_OR_RETURN(std::FILE * file, OpenForAppend(path_));
  std::lock_guard<std::mutex> lock(mu_);
  if (file_ != nullptr) std::fclose(file_);
  file_ = file;
  return Status::Ok();
}

}  // namespace lipsync::rpc
