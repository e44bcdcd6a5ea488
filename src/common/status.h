// Errors as values. Status carries a code (mapped 1:1 to a gRPC status code by the
// rpc layer) and a message that says what was wrong and what was expected.
// Expected<T> holds either a T or a non-OK Status. Neither throws.
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace lipsync {

enum class StatusCode {
  kOk = 0,
  kCancelled,
  kInvalidArgument,
  kDeadlineExceeded,
  kNotFound,
  kAlreadyExists,
  kResourceExhausted,
  kFailedPrecondition,
  kUnavailable,
  kInternal,
  kUnauthenticated,   // no valid credential (auth library)
  kPermissionDenied,  // a valid credential lacking a scope or tenant
};

const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return {}; }
  static Status InvalidArgument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
  static Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
  static Status ResourceExhausted(std::string m) {
    return {StatusCode::kResourceExhausted, std::move(m)};
  }
  static Status FailedPrecondition(std::string m) {
    return {StatusCode::kFailedPrecondition, std::move(m)};
  }
  static Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
  static Status DeadlineExceeded(std::string m) {
    return {StatusCode::kDeadlineExceeded, std::move(m)};
  }
  static Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
  static Status Cancelled(std::string m) { return {StatusCode::kCancelled, std::move(m)}; }
  static Status AlreadyExists(std::string m) { return {StatusCode::kAlreadyExists, std::move(m)}; }
  static Status Unauthenticated(std::string m) {
    return {StatusCode::kUnauthenticated, std::move(m)};
  }
  static Status PermissionDenied(std::string m) {
    return {StatusCode::kPermissionDenied, std::move(m)};
  }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "NOT_FOUND: model 'x' ..." for logs.
  std::string ToString() const;
  // Same code, message prefixed with context ("loading 'x': " + message).
  Status WithContext(const std::string& context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

template <typename T>
class [[nodiscard]] Expected {
 public:
  Expected(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Expected(Status status) : v_(std::move(status)) { assert(!std::get<Status>(v_).ok()); }  // NOLINT

  bool ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return ok(); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace lipsync

// Returns early from a function returning Status or Expected<T> when `expr` fails.
#define LIPSYNC_RETURN_IF_ERROR(expr)              \
  do {                                             \
    ::lipsync::Status _lipsync_st = (expr);        \
    if (!_lipsync_st.ok()) return _lipsync_st;     \
  } while (0)

#define LIPSYNC_CONCAT_INNER(a, b) a##b
#define LIPSYNC_CONCAT(a, b) LIPSYNC_CONCAT_INNER(a, b)
// LIPSYNC_ASSIGN_OR_RETURN(auto x, MakeX()); declares x from an Expected or returns its Status.
#define LIPSYNC_ASSIGN_OR_RETURN(decl, expr)                           \
  auto LIPSYNC_CONCAT(_lipsync_ex_, __LINE__) = (expr);                \
  if (!LIPSYNC_CONCAT(_lipsync_ex_, __LINE__).ok())                    \
    return LIPSYNC_CONCAT(_lipsync_ex_, __LINE__).status();            \
  decl = std::move(LIPSYNC_CONCAT(_lipsync_ex_, __LINE__)).value()
