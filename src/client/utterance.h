// A speech file prepared for streaming through the compositing server: decoded (any
// format libsndfile reads), mono, at a rate the servers accept (resampled to 16 kHz
// otherwise), as s16le, and cut batch by batch exactly as docs/AUDIO.md requires
// (audio::SliceBatchAudio).
//
// Utterance is an immutable value; the slicer it returns holds a shared reference and
// may be called from any thread.
#pragma once

#include <memory>
#include <string>

#include "client/client_runner.h"
#include "common/status.h"

namespace lipsync::client {

struct Utterance {
  std::string pcm_s16le;
  int sample_rate = 16000;
  int frames = 0;  // 25 fps video frames it covers (the last one partly)
  double seconds = 0;
};

// NOT_FOUND / INVALID_ARGUMENT naming the file.
Expected<std::shared_ptr<const Utterance>> LoadUtterance(const std::string& path);

// The raw audio of frames [start, start + frames) (start is the utterance position).
AudioSlicer MakeUtteranceSlicer(std::shared_ptr<const Utterance> utterance);

}  // namespace lipsync::client
