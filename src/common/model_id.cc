#include "common/model_id.h"

#include <string>

namespace lipsync {

Status ValidateModelId(std::string_view id) {
  auto bad = [&](const char* why) {
    std::string shown(id.substr(0, 64));
    return Status::InvalidArgument("invalid model_id '" + shown + "': " + why +
                                   " (expected 1-128 characters of [A-Za-z0-9_.-], not "
                                   "starting with '.', without '..' or '/')");
  };
  if (id.empty()) return bad("empty");
  if (id.size() > kMaxModelIdLength) return bad("longer than 128 characters");
  if (id.front() == '.') return bad("starts with '.'");
  if (id.find("..") != std::string_view::npos) return bad("contains '..'");
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.';
    if (!ok) return bad(c == '/' ? "contains '/'" : "contains a character outside [A-Za-z0-9_.-]");
  }
  return Status::Ok();
}

}  // namespace lipsync
