// Minimal leveled logging to stderr, thread-safe (one line per call is atomic).
// LOG_INFO("loaded %s in %.1f ms", id.c_str(), ms);
#pragma once

#include <string_view>

#include "common/status.h"

namespace lipsync {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// Parses "debug", "info", "warn", "error".
Expected<LogLevel> ParseLogLevel(std::string_view name);
void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
void LogLine(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace lipsync

#define LOG_DEBUG(...) ::lipsync::LogLine(::lipsync::LogLevel::kDebug, __VA_ARGS__)
#define LOG_INFO(...) ::lipsync::LogLine(::lipsync::LogLevel::kInfo, __VA_ARGS__)
#define LOG_WARN(...) ::lipsync::LogLine(::lipsync::LogLevel::kWarn, __VA_ARGS__)
#define LOG_ERROR(...) ::lipsync::LogLine(::lipsync::LogLevel::kError, __VA_ARGS__)
