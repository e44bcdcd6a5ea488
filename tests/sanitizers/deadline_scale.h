// Room for sanitizer builds in test deadlines. A test that gives a real server a
// deadline (gRPC context, backend timeout, wait for a port) wraps it in Scaled(): the
// value is multiplied by LIPSYNC_TEST_DEADLINE_SCALE (a number >= 1; unset or invalid
// = 1). scripts/sanitize.sh sets it (ASan ~3x, TSan ~10x slower than Release); the
// README's test command leaves it unset, so normal runs keep their deadlines. Scaling
// only lengthens a deadline: what a test asserts stays the same.
//
// Thread-safe: reads the environment once (a function-local static).
#pragma once

#include <chrono>
#include <cstdlib>

namespace lipsync::testing {

inline double DeadlineScale() {
  static const double scale = [] {
    const char* env = std::getenv("LIPSYNC_TEST_DEADLINE_SCALE");
    if (env == nullptr) return 1.0;
    char* end = nullptr;
    const double v = std::strtod(env, &end);
    return (end != env && *end == '\0' && v >= 1.0 && v <= 100.0) ? v : 1.0;
  }();
  return scale;
}

template <class Rep, class Period>
std::chrono::duration<Rep, Period> Scaled(std::chrono::duration<Rep, Period> d) {
  return std::chrono::duration<Rep, Period>(static_cast<Rep>(d.count() * DeadlineScale()));
}

}  // namespace lipsync::testing
