// Fuzz target: the YAML configuration of both servers (config::ParseInferenceConfig and
// ParseCompositingConfig) on the same text. Every input must end as a config or an
// INVALID_ARGUMENT with a bounded message: yaml-cpp exceptions must not escape, deep
// nesting must not overflow the stack.
#include <cstddef>
#include <cstdint>
#include <string>

#include "config/config.h"
#include "fuzz/fuzz_util.h"

namespace {

// A config error lists every problem of the file, joined by "; " (an operator fixes
// them in one go), so the whole message grows with the file; each problem's text must
// not: keys and values are quoted truncated.
void CheckConfigMessage(const lipsync::Status& status) {
  FUZZ_CHECK(status.code() == lipsync::StatusCode::kInvalidArgument,
             "config parse failed with " + status.ToString().substr(0, 200));
  FUZZ_CHECK(!status.message().empty(), "config error with an empty message");
  const std::string& m = status.message();
  size_t begin = 0;
  while (begin <= m.size()) {
    size_t end = m.find("; ", begin);
    if (end == std::string::npos) end = m.size();
    FUZZ_CHECK(end - begin <= 1024,
               "one config problem described in " + std::to_string(end - begin) +
                   " bytes (file content echoed unbounded?): " + m.substr(begin, 200));
    begin = end + 2;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Config files are operator-written and small; the API has no size limit.
  if (size > 64 * 1024) return -1;
  const std::string yaml(reinterpret_cast<const char*>(data), size);

  auto inference = lipsync::config::ParseInferenceConfig(yaml, "inference.yaml");
  if (!inference.ok()) CheckConfigMessage(inference.status());
  auto compositing = lipsync::config::ParseCompositingConfig(yaml, "compositing.yaml");
  if (!compositing.ok()) CheckConfigMessage(compositing.status());
  return 0;
}
