// Quoting untrusted text (a library's error message, names read from a tenant's file)
// inside a message: bounded in length, control characters replaced.
//
// Stateless; thread-safe.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace lipsync {

// At most `max` bytes of `text`, each control character (< 0x20, 0x7f) as '?', and
// "... (N more bytes cut)" appended when it was cut.
std::string Bounded(std::string_view text, size_t max = 300);

}  // namespace lipsync
