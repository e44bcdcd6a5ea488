#include "common/bounded_text.h"

namespace lipsync {

std::string Bounded(std::string_view text, size_t max) {
  std::string out;
  out.reserve(text.size() < max ? text.size() : max);
  for (size_t i = 0; i < text.size() && i < max; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    out += (c < 0x20 || c == 0x7f) ? '?' : static_cast<char>(c);
  }
  if (text.size() > max) out += "... (" + std::to_string(text.size() - max) + " more bytes cut)";
  return out;
}

}  // namespace lipsync
