// Guarded(what, f): runs `f` (returning Status or Expected<T>) and turns anything it
// throws into a Status naming `what`, so no exception escapes a library boundary:
// bad_alloc -> RESOURCE_EXHAUSTED, any other exception -> INTERNAL (its text cut to
// 200 characters: it may quote untrusted input). Stateless; safe from any thread.
#pragma once

#include <exception>
#include <new>
#include <string>

#include "common/status.h"

namespace lipsync {

template <typename F>
auto Guarded(const std::string& what, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return Status::ResourceExhausted(what + ": out of memory");
  } catch (const std::exception& e) {
    return Status::Internal(what + ": " + std::string(e.what()).substr(0, 200));
  } catch (...) {
    return Status::Internal(what + ": unknown exception");
  }
}

}  // namespace lipsync
