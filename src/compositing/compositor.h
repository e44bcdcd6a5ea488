// Composes a batch of model outputs onto an avatar's background frames: for each
// frame (in parallel on a fixed ThreadPool), take the background, convert the model
// output, paste it back, encode (JPEG at quality, or raw RGB). Also builds the
// model's visual inputs from the backgrounds (when the client sends none).
//
// Thread-safe: concurrent Compose calls share the pool; per-thread scratch buffers
// are reused, so a frame costs no full-frame allocation beyond its output.
// Results are owned by the caller.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "avatar/avatar.h"
#include "common/status.h"
#include "common/thread_pool.h"
#include "compositing/paste_back.h"
#include "compositing/visual_input.h"
#include "config/config.h"

namespace lipsync::compositing {

struct CompositeOptions {
  config::OutputFormat format = config::OutputFormat::kJpeg;
  int jpeg_quality = 75;  // 1..100
  config::PasteMode paste_mode = config::PasteMode::kSynctalk328;
  int feather_px = 0;
};

// `batch` frames of model output, each BGR planar 3x320x320, contiguous.
struct ModelOutputView {
  const void* data = nullptr;
  OutputType type = OutputType::kFloat32;
  int batch = 0;
};

// Milliseconds. Stage times are summed over frames (CPU time across threads);
// total_ms is the wall time of the call.
struct CompositeTimings {
  double background_ms = 0;  // fetch/copy the background
  double convert_ms = 0;     // model output -> RGB
  double paste_ms = 0;       // resize + paste (+ feather)
  double encode_ms = 0;      // JPEG encode (0 for raw)
  double total_ms = 0;
};

struct CompositeResult {
  std::vector<std::string> frames;  // JPEG or packed RGB, request order
  std::vector<int> background_indices;
  int frame_width = 0;
  int frame_height = 0;
  CompositeTimings timings;
};

class Compositor {
 public:
  // threads == 0: one per core.
  explicit Compositor(size_t threads = 0);
  size_t threads() const { return pool_.size() + 1; }  // workers + the caller

  // Frame i uses background BackgroundIndex(start_frame, i, n, loop).
  // INVALID_ARGUMENT for a bad batch/quality/start; errors of the avatar's frames.
  Expected<CompositeResult> Compose(avatar::Avatar& avatar, const ModelOutputView& output,
                                    int64_t start_frame, avatar::LoopMode loop,
                                    const CompositeOptions& options);

  // Writes batch * kVisualInputFloats floats into `out` (caller-owned) and, if
  // given, the background index of each frame.
  Status BuildVisualInputs(avatar::Avatar& avatar, int64_t start_frame, int batch,
                           avatar::LoopMode loop, float* out,
                           std::vector<int>* background_indices = nullptr);
  // Same as uint8 (batch * kVisualInputFloats bytes, the inference link's VISUAL_UINT8
  // form: 4x fewer bytes; byte / 255.0f equals the float form exactly).
  Status BuildVisualInputsU8(avatar::Avatar& avatar, int64_t start_frame, int batch,
                             avatar::LoopMode loop, uint8_t* out,
                             std::vector<int>* background_indices = nullptr);

 private:
  template <typename T>
  Status BuildVisualInputsAs(avatar::Avatar& avatar, int64_t start_frame, int batch,
                             avatar::LoopMode loop, T* out, std::vector<int>* background_indices);

  ThreadPool pool_;
};

}  // namespace lipsync::compositing
