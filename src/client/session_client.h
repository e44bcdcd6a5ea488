// `lipsync client --stream`: one live session (CompositingService.StreamSession,
// docs/STREAMING.md) from a speech file, measured and optionally saved.
//
// The file is decoded by libsndfile (any rate; mono), sent at its own rate when the
// server accepts it, else resampled to 16 kHz; in 20 ms chunks at real time
// (`realtime`, a microphone) or in 1 s chunks as fast as the server takes them (a TTS;
// the server's flow control holds the sender at its buffer limit). Then END_OF_SPEECH,
// CLOSE and half-close; the session ends after the speech has played out.
//
// Measured (client side): first speaking frame latency from the first chunk sent,
// delivered fps, frames, repeated (server stats) and dropped (server stats and gaps in
// frame indices) frames, A/V offset on the server's timestamps (audio samples
// received vs frames * rate / fps) and drift (frame arrival against timestamps, from
// the first second to the last). With `save_dir`: DIR/session.mp4 (H.264 copied or MJPEG
// re-encoded, with the received audio as AAC; muxed by the `ffmpeg` program),
// DIR/session.h264|mjpeg and DIR/session.wav.
//
// RunStreamSession blocks; no shared state.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace lipsync::client {

struct StreamOptions {
  std::string server = "localhost:50052";
  std::string model = "demo";
  std::string audio_path;
  std::string api_key;  // sent as "authorization: Bearer <key>" when set
  bool realtime = false;
  bool h264 = true;  // else MJPEG
  int bitrate_kbps = 0;
  int lookahead_frames = 0;
  std::string save_dir;
  double timeout_seconds = 600;  // the whole session
  double idle_seconds = 0.5;     // idle video before the speech starts
};

struct StreamReport {
  std::string session_id;
  int width = 0, height = 0, fps = 25, sample_rate = 0;
  double audio_seconds = 0;
  int64_t frames = 0;           // received
  int64_t speaking_frames = 0;  // received with speaking = true
  int64_t repeated_frames = 0;  // server: late inference
  int64_t dropped_frames = 0;   // server: viewer queue full
  int64_t missing_indices = 0;  // gaps in frame_index seen here
  int64_t inference_batches = 0;
  double first_speaking_ms = -1;  // first speaking frame received - first chunk sent
  double delivered_fps = 0;       // frames / (last - first arrival)
  double av_offset_ms = 0;        // audio received - frames * 1/fps (server timestamps)
  double drift_ms = 0;            // min(arrival - pts) over the last 25 frames - over the first 25
  double wall_seconds = 0;
  int64_t video_bytes = 0;
  int errors = 0;  // ERROR events
  std::string last_error;
  std::string video_path;  // saved MP4 (empty: not saved; see save_error)
  std::string save_error;
};

// NOT_FOUND / INVALID_ARGUMENT for the file; the stream's status when it fails.
Expected<StreamReport> RunStreamSession(const StreamOptions& options);
std::string FormatStreamReport(const StreamReport& report);

}  // namespace lipsync::client
