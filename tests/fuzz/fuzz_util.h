// Helpers shared by the libFuzzer harnesses in tests/fuzz (header-only, no state):
// a byte reader for harnesses that derive parameters from the input, and checks that
// abort (a finding for libFuzzer, a failed test for the replay build) with a message.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "common/status.h"

namespace lipsync::fuzz {

// Longest error message a harness accepts: messages must quote untrusted input only
// truncated (issue 9), so a message never grows with the input.
inline constexpr size_t kMaxMessageBytes = 4096;

[[noreturn]] inline void Fail(const char* file, int line, const std::string& what) {
  std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", file, line, what.c_str());
  std::abort();
}

#define FUZZ_CHECK(cond, what)                                      \
  do {                                                              \
    if (!(cond)) ::lipsync::fuzz::Fail(__FILE__, __LINE__, (what)); \
  } while (0)

// A non-OK status must carry a message of bounded length (and any status a code from
// the enum, which holds by construction).
inline void CheckStatusMessage(const Status& status, const char* file, int line) {
  if (status.ok()) return;
  if (status.message().empty()) Fail(file, line, "error status with an empty message");
  if (status.message().size() > kMaxMessageBytes) {
    Fail(file, line,
         "error message of " + std::to_string(status.message().size()) + " bytes (limit " +
             std::to_string(kMaxMessageBytes) +
             "): untrusted content echoed unbounded? starts: " + status.message().substr(0, 200));
  }
}
#define FUZZ_CHECK_MESSAGE(status) ::lipsync::fuzz::CheckStatusMessage((status), __FILE__, __LINE__)

// LIPSYNC_FUZZ_VERBOSE set: harnesses say what each input came to (for reproducers).
inline bool Verbose() {
  static const bool verbose = std::getenv("LIPSYNC_FUZZ_VERBOSE") != nullptr;
  return verbose;
}
inline void Note(const std::string& what) {
  if (Verbose()) std::fprintf(stderr, "  -> %s\n", what.substr(0, 300).c_str());
}

// Reads parameters from the front of a fuzz input; past the end it yields zeros.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint8_t U8() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint16_t U16() { return static_cast<uint16_t>(U8() | (U8() << 8)); }
  uint32_t U32() { return uint32_t(U16()) | (uint32_t(U16()) << 16); }
  bool Bool() { return (U8() & 1) != 0; }
  // The bytes not read yet.
  std::string_view Rest() const {
    return pos_ < size_
               ? std::string_view(reinterpret_cast<const char*>(data_) + pos_, size_ - pos_)
               : std::string_view();
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

}  // namespace lipsync::fuzz
