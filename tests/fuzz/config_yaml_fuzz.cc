// Fuzz target: the YAML configuration of both servers (config::ParseInferenceConfig and
// ParseCompositingConfig) on the same text. Every input must end as a config or an
// INVALID_ARGUMENT with a bounded message: yaml-cpp exceptions must not escape, deep
// nesting must not overflow the stack.
#include <cstddef>
#include <cstdint>
#include <string>

#include "config/config.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Config files are operator-written and small; the API has no size limit.
  if (size > 64 * 1024) return -1;
  const std::string yaml(reinterpret_cast<const char*>(data), size);

  auto inference = lipsync::config::ParseInferenceConfig(yaml, "inference.yaml");
  if (!inference.ok()) {
    FUZZ_CHECK(inference.status().code() == lipsync::StatusCode::kInvalidArgument,
               "ParseInferenceConfig failed with " + inference.status().ToString().substr(0, 200));
    FUZZ_CHECK_MESSAGE(inference.status());
  }
  auto compositing = lipsync::config::ParseCompositingConfig(yaml, "compositing.yaml");
  if (!compositing.ok()) {
    FUZZ_CHECK(
        compositing.status().code() == lipsync::StatusCode::kInvalidArgument,
        "ParseCompositingConfig failed with " + compositing.status().ToString().substr(0, 200));
    FUZZ_CHECK_MESSAGE(compositing.status());
  }
  return 0;
}
