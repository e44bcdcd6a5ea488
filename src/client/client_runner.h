// The test client of the deployment guide: streams batches of one model through a
// compositing server (CompositingService.InferBatchComposite) and measures them.
//
// Each of `concurrency` streams sends `batches` requests one after another, batch k
// starting at background frame k*batch_size (so a stream walks the avatar video in
// order). Audio is per-frame synthetic features (loud: mouth open, silence: closed,
// random: a different loudness per frame) or, with an utterance, raw speech cut per
// batch by `audio_slicer` (the whole utterance is streamed; `batches` is ignored).
// Visual input is built by the server unless `send_visual` (random frames, as the
// guide's example does).
//
// RunClient blocks until every stream finished; `on_batch` is called from the stream
// threads (serialize inside it if needed). Returned values are owned by the caller.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "client/latency_summary.h"
#include "client/stream_saver.h"
#include "common/status.h"

namespace lipsync::client {

enum class SyntheticAudio { kLoud, kSilence, kRandom };
enum class FrameFormat { kServerDefault, kJpeg, kRawRgb };

// Raw speech for frames [start_frame, start_frame + frames) of an utterance.
struct BatchAudio {
  std::string pcm_s16le;  // mono
  int sample_rate = 16000;
  int utterance_frames = 0;
  bool end_of_utterance = false;
};
using AudioSlicer = std::function<Expected<BatchAudio>(int start_frame, int frames)>;

struct ClientOptions {
  std::string server = "localhost:50052";
  std::string model = "demo";
  int batches = 10;
  int batch_size = 24;
  int concurrency = 1;
  int start_frame = 0;
  bool send_visual = false;
  SyntheticAudio synthetic_audio = SyntheticAudio::kRandom;
  // Set with utterance_frames > 0: stream that utterance instead of synthetic audio.
  AudioSlicer audio_slicer;
  int utterance_frames = 0;
  bool realtime = false;  // pace each stream at 25 frames per second
  FrameFormat format = FrameFormat::kServerDefault;
  int jpeg_quality = 0;  // 0: the server's
  bool ping_pong = false;
  double timeout_seconds = 60;  // per call
  int max_message_mb = 100;
  uint64_t seed = 1;
  // Set: stream 0's frames are written there (see StreamSaver); `wav_path` is muxed.
  std::string save_dir;
  std::string wav_path;
  // Ask the server to load the model and avatar (LoadModel) before streaming, so the
  // summary measures streaming, not the one-off load (reported on its own).
  bool warm_up = true;
};

struct ClientRun {
  std::vector<BatchRecord> records;  // in completion order
  ClientSummary summary;
  bool saved = false;
  SavedOutputs outputs;
  double warm_up_ms = -1;     // LoadModel round trip; -1: not done
  std::string warm_up_error;  // LoadModel failed (the streams then report their errors)
};

using BatchCallback = std::function<void(const BatchRecord&)>;

// INVALID_ARGUMENT for bad options; otherwise the run (failed batches are records,
// not an error), or the saver's error.
Expected<ClientRun> RunClient(const ClientOptions& options, const BatchCallback& on_batch);

// Synthetic per-frame audio features: `frames` x 8192 floats as bytes.
std::string SyntheticAudioFeatures(SyntheticAudio kind, int frames, uint64_t seed);
// `frames` x 6x320x320 floats in [0,1) as bytes (the guide sends random frames).
std::string RandomVisualFrames(int frames, uint64_t seed);

}  // namespace lipsync::client
