// A live session: speech streamed in (PCM chunks of any size, at any pace), video with
// its sound streamed out at a steady fps on one media clock, an idle avatar in silence,
// and an instant stop on interruption. Transport-free: the gRPC StreamSession service
// and the WebSocket front translate their messages to these calls and forward the
// sink's output.
//
// Media clock: counted in input samples. Output frame k owns rate/fps samples and has
// pts k/fps s; every frame carries exactly its samples (s16le mono at the input rate:
// speech, or silence), so audio out == frames * rate/fps and drift cannot accumulate.
// The pacer emits frame k from start + (k - max_ahead_frames)/fps on; a generated frame
// not ready by its due time start + k/fps is replaced by the last frame again (or the
// idle frame) with the frame's own audio (repeated_frames, a rate-limited WARNING).
//
// Speech: PushAudio appends to the open utterance (stereo averaged to mono), bounded by
// max_buffered_seconds of unplayed audio (RESOURCE_EXHAUSTED, nothing taken). The
// generation thread cuts batches of batch_frames with the docs/AUDIO.md context and
// calls CompositingServer::InferBatchComposite (RAW_RGB for H.264, JPEG for MJPEG, at
// the input rate, ping-pong backgrounds) once `lookahead_frames` of audio follow the
// batch; with fewer lookahead frames the batch is sent as if the utterance ended there.
// An utterance's frames are placed on the clock when its first batch is cut: utterance
// frame j is output frame offset + j, offset chosen so the first batch (est. from the
// last batches' time) is ready in time. Batches are sent as frames of a "virtual"
// utterance starting at output frame 0 with silence before the real one, because the
// server picks backgrounds by start_frame_idx: idle and speaking frames follow one
// ping-pong sequence, no jump. The generator stays at most ~2 batches ahead of the pacer.
// When the pacer reaches a frame whose audio has not arrived (a real-time speaker
// behind), the utterance pauses (an idle frame with silence; held_frames) and resumes
// when audio comes. A frame due soon whose lookahead is missing is generated with the
// audio there is. END_OF_SPEECH ends the utterance (the tail with end_of_utterance);
// so does no new audio for utterance_gap_frames while frames wait for it. Audio pushed
// after an end starts a new utterance, queued behind the current one.
//
// Silence gate: a frame whose RMS is under vad_threshold_dbfs gets the avatar's own
// frame; short gaps inside speech are bridged; crossfade_frames blend generated and
// original frames (inside the crop rect) before speech starts and after it ends. A
// batch that is all quiet runs no inference. SPEECH_STARTED/SPEECH_ENDED events carry
// the first speaking / first quiet frame's index (speaking = the generated mouth shows).
// With nothing to say the session loops the avatar's frames (ping-pong) with silence
// and runs no inference at all. Idle MJPEG frames are the avatar's cached JPEG as is
// when its quality is the session's (region_jpeg), else encoded once and cached per
// session (up to 32 MB). Idle H.264 frames replay the avatar's encoded ping-pong loop
// from the shared IdleLoopCache (session/idle_loop_cache.h; built in the background on
// first idle use, per avatar + encoder options), entered only at a loop position whose
// cached frame is a key frame, played in order; until the loop is ready (or if it does
// not fit the cache) they are encoded live from the held pixels (compact backgrounds:
// the cached JPEG decoded with the exact crop region on top). The session leaves the
// loop with a forced live key frame (speech queued, an interrupt, a key frame request),
// never directly after a replayed cached key frame (one more cached frame first: two
// IDRs in a row from different encoders could share idr_pic_id).
//
// Interrupt: drops all queued audio, pending batches and generated frames; a generation
// id makes late results of in-flight batches harmless; the next frame the pacer builds
// is idle, silent and a key frame, announced by INTERRUPTED (frame_index = that frame;
// SPEECH_ENDED first if speaking). Frames already sent ahead (at most max_ahead_frames)
// were speech: interrupt to idle is at most (max_ahead_frames + 1) frames of clock.
// A frame the sink refuses is counted (dropped_frames) and the next one is a key frame.
//
// Close: finishes queued speech, then a CLOSED event, done() and Wait() return.
// Cancel: stops now; no events after it.
//
// Thread-safe: PushAudio/Interrupt/EndOfSpeech/RequestKeyFrame/Close/Cancel/stats may
// be called from any thread. The session owns a pacing thread and one generation
// thread; the sink is called only from the pacing thread (events in order with the
// frames, all from that thread) and must not block. Encoding runs on the pacing thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "common/status.h"
#include "compositing/compositing_server.h"
#include "media/video_encoder.h"

namespace lipsync::session {

class IdleLoopCache;

using Clock = std::chrono::steady_clock;

// Server-wide settings (config `session:` section).
struct SessionConfig {
  int max_sessions = 16;             // per server; beyond it RESOURCE_EXHAUSTED
  double max_buffered_seconds = 60;  // queued speech per session
  double max_chunk_seconds = 10;     // one AudioChunk
  int max_ahead_frames = 3;          // frames sent before their time
  int batch_frames = 8;              // frames per inference batch
  double vad_threshold_dbfs = -45;   // a frame quieter than this (RMS) is silent
  int crossfade_frames = 3;          // at speech start and end
  int default_bitrate_kbps = 1500;   // H264 when the client asks for 0
  int vbv_buffer_ms = 250;           // H264 VBV (x264; openh264 keeps its own bound)
  int key_interval_frames = 50;      // H264
  std::string x264_preset = "ultrafast";
  int viewer_queue_frames = 50;  // transport queue per viewer before frames drop
  // Not in the YAML: an open utterance with no new audio for this many frames' time,
  // whose next frames wait for audio, ends (its tail is generated as if it ended there)
  // and the session goes back to idle. END_OF_SPEECH ends it at once.
  int utterance_gap_frames = 10;
};

// The `session:` section of the compositing config.
SessionConfig FromConfig(const config::CompositingConfig& config);

struct SessionParams {  // from the client's open message
  std::string model_id;
  int sample_rate = 16000;  // docs/AUDIO.md list
  int channels = 1;         // 1 or 2
  media::Codec codec = media::Codec::kH264;
  int fps = 25;
  int bitrate_kbps = 0;      // 0: config default
  int lookahead_frames = 0;  // 0: full (13); 1..13
  int jpeg_quality = 0;      // 0: the compositing server's
};

struct SessionInfo {
  std::string session_id;
  int width = 0, height = 0, fps = 25;
  media::Codec codec = media::Codec::kH264;
  int audio_sample_rate = 16000;  // output PCM s16le mono, same rate as the input
  int lookahead_frames = 13;
  // The media clock's origin: frame k is due at clock_start + k/fps (steady clock).
  Clock::time_point clock_start{};
};

struct OutputFrame {
  int64_t index = 0;
  int64_t pts_us = 0;
  std::string video;  // H264 access unit or JPEG
  bool key_frame = false;
  std::string audio;  // s16le mono, rate/fps samples: the samples this frame owns
  int audio_sample_rate = 16000;
  bool speaking = false;
  int background_index = 0;
  int64_t generation = 0;
};

enum class EventKind { kSpeechStarted, kSpeechEnded, kInterrupted, kWarning, kError, kClosed };
const char* EventKindName(EventKind kind);

struct SessionEvent {
  EventKind kind = EventKind::kWarning;
  std::string message;
  int64_t frame_index = -1;
  StatusCode code = StatusCode::kOk;  // kError: what went wrong
};

struct SessionStats {
  int64_t frames_sent = 0;
  int64_t speaking_frames = 0;
  int64_t repeated_frames = 0;  // late inference: idle/last frame sent instead
  int64_t dropped_frames = 0;   // the sink refused (viewer too slow)
  int64_t inference_batches = 0;
  int64_t buffered_audio_ms = 0;
  int64_t last_pts_us = 0;
  int64_t audio_samples_out = 0;   // drift check: == frames_sent * rate / fps
  int64_t held_frames = 0;         // speech paused waiting for input audio (idle frame, silence)
  int64_t generation = 0;          // interrupts so far
  int64_t cached_idle_frames = 0;  // H264 idle frames replayed from the idle loop cache
  int64_t encoded_frames = 0;      // frames encoded live (H264, or MJPEG re-encodes)
  double encode_ms = 0;            // wall time spent in the encoder
};

// Stage times of one inference batch (queue wait, inference, audio, compositing, the
// server's encode) or of one frame the session encoded itself (encode only), in ms;
// negative: not measured.
struct StageTimes {
  double queue_wait_ms = -1;
  double inference_ms = -1;
  double audio_ms = -1;
  double composite_ms = -1;
  double encode_ms = -1;
};

class SessionSink {
 public:
  virtual ~SessionSink() = default;
  // A frame is due. false: the viewer's queue is full; the frame is dropped (counted).
  virtual bool OnFrame(OutputFrame frame) = 0;
  virtual void OnEvent(const SessionEvent& event) = 0;
  // After each successful inference call and each frame encoded live, on the session's
  // threads, outside every session lock (for metrics: must not block). Default: nothing.
  virtual void OnStages(const StageTimes& times) { (void)times; }
};

// Test and tuning hooks; all optional.
struct SessionHooks {
  // Makes the session's encoder (default: media::CreateVideoEncoder).
  std::function<Expected<std::unique_ptr<media::VideoEncoder>>(const media::EncoderOptions&)>
      make_encoder;
  // Called on the generation thread right before each inference call, outside every
  // lock (a test may block here to make a batch late or to interrupt mid-batch).
  std::function<void(int64_t generation, int64_t start_frame_idx, int batch)> before_infer;
  // The idle loop cache (null: IdleLoopCache::Global()). Not used with make_encoder.
  IdleLoopCache* idle_loop_cache = nullptr;
  // Encode every idle H264 frame live (no idle loop cache): the pre-cache behaviour.
  bool live_idle_frames = false;
};

class LiveSession {
 public:
  // Acquires the avatar (and warms the model) and starts pacing idle frames at once.
  // INVALID_ARGUMENT for bad params (each named), NOT_FOUND for an unknown model,
  // the avatar's load error. The sink must outlive the session.
  static Expected<std::unique_ptr<LiveSession>> Start(const SessionParams& params,
                                                      const SessionConfig& config,
                                                      compositing::CompositingServer& server,
                                                      SessionSink* sink,
                                                      const SessionHooks& hooks = {});
  ~LiveSession();  // Cancel() and join

  const SessionInfo& info() const;

  // Appends speech. INVALID_ARGUMENT: odd byte count / not whole sample frames, a chunk
  // over max_chunk_seconds, audio after Close. RESOURCE_EXHAUSTED: more than
  // max_buffered_seconds queued (nothing taken; retry when it drains).
  Status PushAudio(std::string_view pcm);
  // Seconds of queued speech not yet played out.
  double buffered_seconds() const;
  void Interrupt();
  void EndOfSpeech();
  void RequestKeyFrame();
  // Finishes queued speech, then ends (a kClosed event; Wait returns).
  void Close();
  // Ends now (client gone); frees everything: queued audio and frames at once, the
  // threads are joined (an inference call in flight is waited for, at most one batch),
  // the avatar and the encoder released. No events after it. Not from the sink.
  void Cancel();
  bool done() const;
  void Wait();
  SessionStats stats() const;

 private:
  class Impl;
  explicit LiveSession(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Counts sessions per server: Acquire fails with RESOURCE_EXHAUSTED beyond max_sessions.
// Thread-safe.
class SessionLimiter {
 public:
  explicit SessionLimiter(int max_sessions) : max_(max_sessions) {}
  class Slot;
  Expected<std::unique_ptr<Slot>> Acquire();
  int active() const;

 private:
  friend class Slot;
  void Release();
  const int max_;
  mutable std::mutex mu_;
  int active_ = 0;
};

// One session's place; gives it back when destroyed. The limiter must outlive it.
class SessionLimiter::Slot {
 public:
  explicit Slot(SessionLimiter* limiter) : limiter_(limiter) {}
  ~Slot() { limiter_->Release(); }
  Slot(const Slot&) = delete;
  Slot& operator=(const Slot&) = delete;

 private:
  SessionLimiter* limiter_;
};

}  // namespace lipsync::session
