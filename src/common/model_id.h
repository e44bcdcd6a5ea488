// Model ids become directory names under `model_root`, so they are validated before
// any path is built from them.
#pragma once

#include <string_view>

#include "common/status.h"

namespace lipsync {

inline constexpr size_t kMaxModelIdLength = 128;

// OK when `id` is 1..128 characters of [A-Za-z0-9_.-], does not start with '.', and
// contains no "..". Otherwise INVALID_ARGUMENT naming the id and the rule.
Status ValidateModelId(std::string_view id);

}  // namespace lipsync
