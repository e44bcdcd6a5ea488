// `lipsync make-demo`: fills a model_root with three tenants that share one synthetic
// avatar (frames hard-linked, not re-encoded):
//   demo/      the visible demo lip-sync model (mouth opens with audio energy)
//   bench/     a full-size unet_328 stand-in with fixed random weights (for timing)
//   identity/  output = input face (for exactness tests of the paste-back)
// each with frames/, crop_rects.json, checkpoint/model_best.onnx and
// checkpoint/audio_encoder.onnx. Reruns with the same options skip finished tenants
// (a manifest records what was made); `force` regenerates.
// Not thread-safe against another MakeDemo on the same directory.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "demo/avatar_generator.h"

namespace lipsync::demo {

// The bench model's weights are fixed so timings compare across runs and machines.
inline constexpr uint64_t kBenchModelSeed = 328;
inline const char* const kTenantNames[] = {"demo", "bench", "identity"};

struct MakeDemoOptions {
  std::string out_dir;  // the model_root
  AvatarSpec avatar;    // frames, size, seed
  std::vector<std::string> tenants = {"demo", "bench", "identity"};
  bool force = false;  // regenerate even if up to date
  int threads = 0;     // 0: one per core
  // Stages: "<tenant>: frames", "<tenant>: linked frames", "<tenant>: models",
  // "<tenant>: up to date".
  ProgressFn progress;
};

// INVALID_ARGUMENT for an empty out_dir, an unknown or repeated tenant, or a bad avatar
// spec; FAILED_PRECONDITION when files cannot be written; model generator errors as is.
Status MakeDemo(const MakeDemoOptions& options);

}  // namespace lipsync::demo
