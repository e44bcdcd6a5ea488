#include "session/live_session.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include "audio/batch_audio.h"
#include "audio/resampler.h"
#include "avatar/avatar.h"
#include "common/log.h"
#include "image/image.h"
#include "session/idle_loop_cache.h"
#include "session/vad.h"

namespace lipsync::session {

const char* EventKindName(EventKind kind) {
  switch (kind) {
    case EventKind::kSpeechStarted:
      return "SPEECH_STARTED";
    case EventKind::kSpeechEnded:
      return "SPEECH_ENDED";
    case EventKind::kInterrupted:
      return "INTERRUPTED";
    case EventKind::kWarning:
      return "WARNING";
    case EventKind::kError:
      return "ERROR";
    case EventKind::kClosed:
      return "CLOSED";
  }
  return "UNKNOWN";
}

SessionConfig FromConfig(const config::CompositingConfig& config) {
  const auto& s = config.session;
  SessionConfig out;
  out.max_sessions = s.max_sessions;
  out.max_buffered_seconds = s.max_buffered_seconds;
  out.max_chunk_seconds = s.max_chunk_seconds;
  out.max_ahead_frames = s.max_ahead_frames;
  out.batch_frames = s.batch_frames;
  out.vad_threshold_dbfs = s.vad_threshold_dbfs;
  out.crossfade_frames = s.crossfade_frames;
  out.default_bitrate_kbps = s.default_bitrate_kbps;
  out.vbv_buffer_ms = s.vbv_buffer_ms;
  out.key_interval_frames = s.key_interval_frames;
  out.x264_preset = s.x264_preset;
  out.viewer_queue_frames = s.viewer_queue_frames;
  return out;
}

Expected<std::unique_ptr<SessionLimiter::Slot>> SessionLimiter::Acquire() {
  std::lock_guard<std::mutex> lock(mu_);
  if (active_ >= max_) {
    return Status::ResourceExhausted("this server already runs " + std::to_string(active_) +
                                     " live sessions (session.max_sessions = " +
                                     std::to_string(max_) + "); retry later or use another server");
  }
  ++active_;
  return std::make_unique<Slot>(this);
}

int SessionLimiter::active() const {
  std::lock_guard<std::mutex> lock(mu_);
  return active_;
}

void SessionLimiter::Release() {
  std::lock_guard<std::mutex> lock(mu_);
  --active_;
}

namespace {

constexpr int kFullLookahead = 13;  // docs/AUDIO.md section 4
constexpr int kContextBefore = 11;  // frames of audio before a batch
constexpr int kBridgeFrames = 2;    // quiet gaps bridged inside speech
constexpr auto kWarningInterval = std::chrono::seconds(5);
constexpr size_t kIdleJpegCacheBytes = size_t(32) << 20;
// An utterance's inference batches ramp up: kFirstBatchFrames, then kRampStep more
// each batch, up to batch_frames. A small first batch is ready sooner (the first
// speaking frame is due earlier); the ramp lets the next batches catch up while the
// first frames play (docs/perf/live_sessions.md).
constexpr int kFirstBatchFrames = 2;
constexpr int kRampStep = 2;
constexpr int kMaxTrackedBatch = 64;

// Last inference batch time seen by any session: the first guess of a new session.
std::atomic<double> g_batch_ms_guess{250.0};

std::string RandomId() {
  std::random_device rd;
  std::mt19937_64 gen((uint64_t(rd()) << 32) ^ rd());
  static const char* kHex = "0123456789abcdef";
  std::string id(16, '0');
  uint64_t v = gen();
  for (char& c : id) {
    c = kHex[v & 15];
    v >>= 4;
  }
  return id;
}

double MsBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// A frame made by inference (or decided without it), waiting for its output time.
struct GenFrame {
  std::string data;  // JPEG or packed RGB; empty: the avatar's own frame
  bool raw = false;
  float alpha = 0;  // blend weight of the generated mouth
  int background = 0;
  bool failed = false;
};

// One stretch of speech: audio in, frames out at output index offset + j.
struct Utterance {
  int64_t id = 0;
  std::vector<int16_t> samples;  // utterance samples [base, base + samples.size())
  int64_t base = 0;
  int64_t received = 0;
  bool ended = false;
  std::vector<bool> loud;  // per frame with its audio complete (and the partial last one)
  Clock::time_point last_audio;

  bool anchored = false;
  int64_t offset = 0;        // output frame of utterance frame 0 (+ holds)
  int64_t claimed_end = 0;   // frames [0, claimed_end) are claimed by a batch or consumed
  int inferred_batches = 0;  // batches with speech cut so far (the ramp)
  int64_t played = 0;        // next utterance frame the pacer plays
  std::map<int64_t, GenFrame> ready;

  int64_t Complete(int spf) const { return received / spf; }
  // Frames of the utterance: known once it ended.
  int64_t Frames(int spf) const { return (received + spf - 1) / spf; }
  // Frames whose audio is all here (the partial last one once ended).
  int64_t Available(int spf) const { return ended ? Frames(spf) : Complete(spf); }
  int16_t Sample(int64_t i) const {
    if (i < base || i >= base + int64_t(samples.size())) return 0;
    return samples[size_t(i - base)];
  }
};

// What the pacer sends for one output frame.
enum class FrameKind { kIdle, kGenerated, kRepeat };

struct Decision {
  bool stop = false;
  FrameKind kind = FrameKind::kIdle;
  GenFrame gen;
  bool has_gen = false;
  std::string audio;  // s16le, spf samples
  bool force_key = false;
  bool busy = false;  // speech queued or closing: leave (do not enter) the idle loop
  int64_t generation = 0;
  std::vector<SessionEvent> events;
  bool closed = false;
};

// A batch cut by the generation thread.
struct Batch {
  int64_t utterance = 0;
  int64_t generation = 0;
  int64_t start = 0;  // utterance frame
  int count = 0;
  int64_t output_start = 0;
  int utterance_frames = 0;
  bool end_of_utterance = false;
  std::string audio;
  std::vector<float> alpha;
};

}  // namespace

class LiveSession::Impl {
 public:
  Impl(const SessionParams& params, const SessionConfig& config,
       compositing::CompositingServer& server, SessionSink* sink, const SessionHooks& hooks)
      : params_(params), config_(config), server_(server), sink_(sink), hooks_(hooks) {}

  ~Impl() { Cancel(); }

  Status Init();
  void StartThreads() {
    start_ = Clock::now();
    info_.clock_start = start_;
    pacer_ = std::thread([this] { PacerLoop(); });
    generator_ = std::thread([this] { GeneratorLoop(); });
  }

  Status PushAudio(std::string_view pcm);
  double buffered_seconds() const {
    std::lock_guard<std::mutex> lock(mu_);
    return double(BufferedSamplesLocked()) / params_.sample_rate;
  }
  void Interrupt();
  void EndOfSpeech();
  void RequestKeyFrame() {
    std::lock_guard<std::mutex> lock(mu_);
    force_key_ = true;
  }
  void Close();
  void Cancel();
  bool done() const {
    std::lock_guard<std::mutex> lock(mu_);
    return done_;
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [&] { return done_; });
  }
  SessionStats stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    SessionStats s = stats_;
    s.buffered_audio_ms = BufferedSamplesLocked() * 1000 / params_.sample_rate;
    s.generation = generation_;
    return s;
  }

  SessionInfo info_;

 private:
  // --- shared state helpers (mu_ held) ---
  int64_t BufferedSamplesLocked() const {
    int64_t total = 0;
    for (const auto& u : utterances_) total += std::max<int64_t>(0, u.received - u.played * spf_);
    return total;
  }
  Utterance* FindLocked(int64_t id) {
    for (auto& u : utterances_) {
      if (u.id == id) return &u;
    }
    return nullptr;
  }
  void UpdateLoudLocked(Utterance& u) {
    const int64_t frames = u.Available(spf_);
    while (int64_t(u.loud.size()) < frames) {
      const int64_t f = int64_t(u.loud.size());
      const int64_t begin = f * spf_;
      const int64_t end = std::min<int64_t>(begin + spf_, u.received);
      std::vector<int16_t> tmp;
      tmp.reserve(size_t(std::max<int64_t>(0, end - begin)));
      for (int64_t i = begin; i < end; ++i) tmp.push_back(u.Sample(i));
      u.loud.push_back(FrameDbfs(tmp.data(), tmp.size()) >= config_.vad_threshold_dbfs);
    }
  }
  // Drops samples no batch or frame will read again.
  void TrimLocked(Utterance& u) {
    const int64_t keep_frame =
        std::max<int64_t>(0, std::min(u.played, u.claimed_end - kContextBefore));
    const int64_t keep = keep_frame * spf_;
    if (keep - u.base >= params_.sample_rate) {
      const int64_t drop = std::min<int64_t>(keep - u.base, int64_t(u.samples.size()));
      u.samples.erase(u.samples.begin(), u.samples.begin() + drop);
      u.base += drop;
    }
  }
  void EndUtteranceLocked(Utterance& u) {
    if (u.ended) return;
    u.ended = true;
    UpdateLoudLocked(u);
  }
  std::string FrameAudioLocked(const Utterance& u, int64_t j) const {
    std::string out(size_t(spf_) * 2, '\0');
    for (int i = 0; i < spf_; ++i) {
      const auto s = static_cast<uint16_t>(u.Sample(j * spf_ + i));
      out[2 * size_t(i)] = char(s & 0xFF);
      out[2 * size_t(i) + 1] = char(s >> 8);
    }
    return out;
  }
  Clock::time_point FrameTime(int64_t k) const {
    return start_ + std::chrono::nanoseconds(k * 1'000'000'000 / params_.fps);
  }
  int64_t FramesUntil(Clock::time_point t) const {
    const double s = std::chrono::duration<double>(t - start_).count();
    return int64_t(std::ceil(s * params_.fps));
  }
  void WarnLocked(std::vector<SessionEvent>* events, int64_t frame, const std::string& what);
  // Expected wall time of an inference batch of n frames: measured for that size, else
  // scaled from the full batch's (a fixed part and a part per frame).
  double EstimateMsLocked(int n) const {
    if (n >= 1 && n <= kMaxTrackedBatch && size_ms_[n] > 0) return size_ms_[n];
    const int B = std::max(1, config_.batch_frames);
    return batch_ms_ * (0.35 + 0.65 * double(std::min(n, B)) / B);
  }
  // Frames of the utterance's next batch with speech (the ramp).
  int RampFrames(const Utterance& u) const {
    const int B = config_.batch_frames;
    return std::min(B, kFirstBatchFrames + kRampStep * u.inferred_batches);
  }

  // --- threads ---
  void PacerLoop();
  Decision Decide(int64_t k);
  void Emit(int64_t k, Decision& d);
  void GeneratorLoop();
  bool ClaimLocked(Batch* batch);
  void RunBatch(Batch& batch);

  // --- pictures (pacer thread only) ---
  Expected<avatar::FrameHandle> Background(int index) { return avatar_->Frame(index); }
  Expected<std::shared_ptr<const image::Image>> OriginalRgb(int index);
  Expected<std::string> IdleJpeg(int index);
  Status BlendOriginal(image::Image& frame, int index, float alpha);
  Expected<media::EncodedFrame> EncodeRgb(const image::Image& rgb, bool force_key);

  const SessionParams params_;
  const SessionConfig config_;
  compositing::CompositingServer& server_;
  SessionSink* const sink_;
  const SessionHooks hooks_;
  int spf_ = 640;
  int lookahead_ = kFullLookahead;
  int jpeg_quality_ = 75;
  avatar::AvatarHandle avatar_;
  std::unique_ptr<media::VideoEncoder> encoder_;
  Clock::time_point start_;

  mutable std::mutex mu_;
  std::condition_variable pacer_cv_;
  std::condition_variable generator_cv_;
  std::condition_variable done_cv_;
  std::deque<Utterance> utterances_;
  int64_t next_utterance_id_ = 1;
  int64_t generation_ = 0;
  int64_t next_k_ = 0;  // the next output frame the pacer builds
  bool interrupt_pending_ = false;
  bool force_key_ = false;
  bool closing_ = false;
  bool cancelled_ = false;
  bool done_ = false;
  double batch_ms_ = 250;  // inference batch wall time (EMA, full batch_frames batches)
  // EMA of the wall time per batch size (0: not measured yet).
  double size_ms_[kMaxTrackedBatch + 1] = {};
  std::vector<SessionEvent> pending_events_;
  SessionStats stats_;
  Clock::time_point last_warning_{};
  int64_t unwarned_repeats_ = 0;
  Clock::time_point last_error_event_{};

  // pacer thread only
  bool speaking_ = false;
  std::shared_ptr<const image::Image> last_rgb_;
  std::string last_jpeg_;
  float last_alpha_ = 0;
  int last_background_ = 0;
  std::map<int, std::shared_ptr<const std::string>> idle_jpegs_;
  size_t idle_jpeg_bytes_ = 0;
  // H264 idle loop (pacer thread only).
  media::EncoderOptions encoder_options_;
  IdleLoopCache* idle_cache_ = nullptr;  // null: idle frames encoded live
  std::shared_ptr<const IdleLoop> idle_loop_;
  bool in_loop_ = false;          // the last frame sent was a cached one
  bool last_cached_key_ = false;  // ... and a cached key frame
  bool key_pending_ = false;      // a key frame asked for while it could not be sent

  std::thread pacer_;
  std::thread generator_;
  std::mutex join_mu_;
};

// ---------------------------------------------------------------------------
// Start and control calls

Status LiveSession::Impl::Init() {
  const SessionParams& p = params_;
  if (p.model_id.empty())
    return Status::InvalidArgument("model_id is empty (expected an avatar id)");
  LIPSYNC_RETURN_IF_ERROR(audio::CheckSupportedSampleRate(p.sample_rate));
  if (p.channels != 1 && p.channels != 2) {
    return Status::InvalidArgument("channels is " + std::to_string(p.channels) +
                                   " (expected 1 or 2, interleaved s16le)");
  }
  if (p.fps != 25) {
    return Status::InvalidArgument("fps is " + std::to_string(p.fps) +
                                   " (expected 25, the rate the models are trained for)");
  }
  if (p.lookahead_frames < 0 || p.lookahead_frames > kFullLookahead) {
    return Status::InvalidArgument("lookahead_frames is " + std::to_string(p.lookahead_frames) +
                                   " (expected 0 for the full 13, or 1..13)");
  }
  if (p.bitrate_kbps < 0 || p.bitrate_kbps > 50000) {
    return Status::InvalidArgument("bitrate_kbps is " + std::to_string(p.bitrate_kbps) +
                                   " (expected 0 for the server's default, or 1..50000)");
  }
  if (p.jpeg_quality < 0 || p.jpeg_quality > 100) {
    return Status::InvalidArgument("jpeg_quality is " + std::to_string(p.jpeg_quality) +
                                   " (expected 0 for the server's, or 1..100)");
  }
  if (p.codec != media::Codec::kH264 && p.codec != media::Codec::kMjpeg) {
    return Status::InvalidArgument("codec is not H264 or MJPEG");
  }
  if (config_.batch_frames < 1 || config_.batch_frames > server_.config().server.max_batch_size) {
    return Status::InvalidArgument("session.batch_frames " + std::to_string(config_.batch_frames) +
                                   " is outside 1..server.max_batch_size");
  }
  spf_ = p.sample_rate / p.fps;
  lookahead_ = p.lookahead_frames == 0 ? kFullLookahead : p.lookahead_frames;
  jpeg_quality_ = p.jpeg_quality == 0 ? server_.config().output.jpeg_quality : p.jpeg_quality;
  batch_ms_ = g_batch_ms_guess.load();

  // Pins the avatar for the session's life (loading it: NOT_FOUND for an unknown
  // model) while the network loads in the background: the first idle frame does not
  // wait for the model, the first speech waits for it on the normal inference path.
  server_.PrefetchModel(p.model_id);
  auto handle = server_.avatars().Acquire(p.model_id);
  if (!handle.ok()) return handle.status();
  avatar_ = std::move(*handle);
  if (avatar_->num_frames() < 1) return Status::FailedPrecondition("avatar has no frames");

  media::EncoderOptions eo;
  eo.codec = p.codec;
  eo.width = avatar_->width();
  eo.height = avatar_->height();
  eo.fps = p.fps;
  eo.bitrate_kbps = p.bitrate_kbps == 0 ? config_.default_bitrate_kbps : p.bitrate_kbps;
  eo.key_interval_frames = config_.key_interval_frames;
  eo.vbv_buffer_ms = config_.vbv_buffer_ms;
  eo.preset = config_.x264_preset;
  eo.threads = 1;
  eo.jpeg_quality = jpeg_quality_;
  encoder_options_ = eo;
  if (p.codec == media::Codec::kH264 && !hooks_.make_encoder && !hooks_.live_idle_frames) {
    idle_cache_ = hooks_.idle_loop_cache ? hooks_.idle_loop_cache : &IdleLoopCache::Global();
  }
  auto encoder = hooks_.make_encoder ? hooks_.make_encoder(eo) : media::CreateVideoEncoder(eo);
  if (!encoder.ok()) return encoder.status().WithContext("video encoder");
  encoder_ = std::move(*encoder);

  info_.session_id = RandomId();
  info_.width = avatar_->width();
  info_.height = avatar_->height();
  info_.fps = p.fps;
  info_.codec = p.codec;
  info_.audio_sample_rate = p.sample_rate;
  info_.lookahead_frames = lookahead_;
  return Status::Ok();
}

Status LiveSession::Impl::PushAudio(std::string_view pcm) {
  const size_t frame_bytes = size_t(2) * size_t(params_.channels);
  if (pcm.size() % frame_bytes != 0) {
    return Status::InvalidArgument("audio chunk has " + std::to_string(pcm.size()) +
                                   " bytes; expected whole samples of s16le " +
                                   (params_.channels == 2 ? "stereo (a multiple of 4 bytes)"
                                                          : "mono (a multiple of 2 bytes)"));
  }
  const size_t count = pcm.size() / frame_bytes;
  const double max_samples = config_.max_chunk_seconds * params_.sample_rate;
  if (double(count) > max_samples) {
    return Status::InvalidArgument(
        "audio chunk holds " + std::to_string(double(count) / params_.sample_rate) +
        " s; expected at most " + std::to_string(config_.max_chunk_seconds) +
        " s (session.max_chunk_seconds): send smaller chunks");
  }
  std::vector<int16_t> mono(count);
  const auto* b = reinterpret_cast<const unsigned char*>(pcm.data());
  for (size_t i = 0; i < count; ++i) {
    if (params_.channels == 1) {
      mono[i] = int16_t(uint16_t(b[2 * i] | b[2 * i + 1] << 8));
    } else {
      const int l = int16_t(uint16_t(b[4 * i] | b[4 * i + 1] << 8));
      const int r = int16_t(uint16_t(b[4 * i + 2] | b[4 * i + 3] << 8));
      mono[i] = int16_t((l + r) >> 1);
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (cancelled_ || done_) return Status::FailedPrecondition("the session has ended");
  if (closing_) return Status::InvalidArgument("audio after close (the session is finishing)");
  if (count == 0) return Status::Ok();
  const int64_t limit = int64_t(config_.max_buffered_seconds * params_.sample_rate);
  const int64_t buffered = BufferedSamplesLocked();
  if (buffered + int64_t(count) > limit) {
    return Status::ResourceExhausted(
        "the session already holds " + std::to_string(buffered * 1000 / params_.sample_rate) +
        " ms of queued speech; this chunk would pass session.max_buffered_seconds (" +
        std::to_string(config_.max_buffered_seconds) + " s): retry when it drains");
  }
  if (utterances_.empty() || utterances_.back().ended) {
    Utterance u;
    u.id = next_utterance_id_++;
    utterances_.push_back(std::move(u));
  }
  Utterance& u = utterances_.back();
  u.samples.insert(u.samples.end(), mono.begin(), mono.end());
  u.received += int64_t(count);
  u.last_audio = Clock::now();
  UpdateLoudLocked(u);
  generator_cv_.notify_all();
  pacer_cv_.notify_all();
  return Status::Ok();
}

void LiveSession::Impl::Interrupt() {
  std::lock_guard<std::mutex> lock(mu_);
  if (done_) return;
  ++generation_;
  utterances_.clear();
  interrupt_pending_ = true;
  force_key_ = true;
  generator_cv_.notify_all();
  pacer_cv_.notify_all();
}

void LiveSession::Impl::EndOfSpeech() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!utterances_.empty()) EndUtteranceLocked(utterances_.back());
  generator_cv_.notify_all();
  pacer_cv_.notify_all();
}

void LiveSession::Impl::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  closing_ = true;
  if (!utterances_.empty()) EndUtteranceLocked(utterances_.back());
  generator_cv_.notify_all();
  pacer_cv_.notify_all();
}

void LiveSession::Impl::Cancel() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    utterances_.clear();
    pending_events_.clear();
    generator_cv_.notify_all();
    pacer_cv_.notify_all();
  }
  {
    std::lock_guard<std::mutex> join(join_mu_);
    const auto self = std::this_thread::get_id();
    if (pacer_.joinable() && pacer_.get_id() != self) pacer_.join();
    if (generator_.joinable() && generator_.get_id() != self) generator_.join();
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    done_cv_.notify_all();
  }
  if (!pacer_.joinable() && !generator_.joinable()) {
    // Both threads are gone: free the frames, the avatar pin and the encoder now.
    last_rgb_.reset();
    idle_loop_.reset();
    last_jpeg_.clear();
    idle_jpegs_.clear();
    encoder_.reset();
    avatar_.reset();
  }
}

void LiveSession::Impl::WarnLocked(std::vector<SessionEvent>* events, int64_t frame,
                                   const std::string& what) {
  const auto now = Clock::now();
  if (now - last_warning_ < kWarningInterval) return;
  last_warning_ = now;
  SessionEvent e;
  e.kind = EventKind::kWarning;
  e.message = what;
  e.frame_index = frame;
  events->push_back(std::move(e));
  LOG_WARN("session %s: %s", info_.session_id.c_str(), what.c_str());
}

// ---------------------------------------------------------------------------
// Pacing thread: frame k at start + k/fps (at most max_ahead_frames early)

void LiveSession::Impl::PacerLoop() {
  for (int64_t k = 0;; ++k) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      const auto earliest = FrameTime(k - config_.max_ahead_frames);
      pacer_cv_.wait_until(lock, earliest, [&] { return cancelled_; });
      if (cancelled_) return;
      next_k_ = k;
    }
    Decision d = Decide(k);
    if (d.stop) return;
    for (const auto& e : d.events) sink_->OnEvent(e);
    if (d.closed) {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
      done_cv_.notify_all();
      generator_cv_.notify_all();
      return;
    }
    Emit(k, d);
  }
}

Decision LiveSession::Impl::Decide(int64_t k) {
  Decision d;
  std::unique_lock<std::mutex> lock(mu_);
  const auto deadline = FrameTime(k);
  while (true) {
    if (cancelled_) {
      d.stop = true;
      return d;
    }
    for (auto& e : pending_events_) d.events.push_back(std::move(e));
    pending_events_.clear();
    if (interrupt_pending_) {
      interrupt_pending_ = false;
      if (speaking_) {
        d.events.push_back({EventKind::kSpeechEnded, "interrupted", k, StatusCode::kOk});
        speaking_ = false;
      }
      d.events.push_back(
          {EventKind::kInterrupted, "speech dropped; idle from this frame", k, StatusCode::kOk});
    }
    d.generation = generation_;
    // Drop utterances that have been played out.
    while (!utterances_.empty()) {
      const Utterance& f = utterances_.front();
      if (f.ended && f.anchored && f.played >= f.Frames(spf_)) {
        utterances_.pop_front();
        generator_cv_.notify_all();
      } else {
        break;
      }
    }
    if (utterances_.empty() && closing_) {
      d.closed = true;
      d.events.push_back({EventKind::kClosed, "session closed", k, StatusCode::kOk});
      return d;
    }
    d.kind = FrameKind::kIdle;
    d.audio.assign(size_t(spf_) * 2, '\0');
    if (utterances_.empty() || !utterances_.front().anchored || utterances_.front().offset > k) {
      break;  // idle
    }
    Utterance& u = utterances_.front();
    const int64_t j = k - u.offset;
    if (j < u.claimed_end) {
      auto it = u.ready.find(j);
      if (it != u.ready.end()) {
        d.gen = std::move(it->second);
        d.has_gen = true;
        u.ready.erase(it);
        d.kind = d.gen.alpha > 0 && !d.gen.data.empty() ? FrameKind::kGenerated : FrameKind::kIdle;
      } else if (Clock::now() < deadline) {
        pacer_cv_.wait_until(lock, deadline);
        continue;
      } else {
        d.kind = FrameKind::kRepeat;
      }
    } else if (j < u.Available(spf_)) {
      // The audio is here but no batch has claimed the frame: a quiet frame needs none.
      const float alpha = GateWeights(
          u.loud, j, 1, {config_.vad_threshold_dbfs, config_.crossfade_frames, kBridgeFrames})[0];
      if (alpha > 0) {
        if (Clock::now() < deadline) {
          pacer_cv_.wait_until(lock, deadline);
          continue;
        }
        d.kind = FrameKind::kRepeat;
      }
      u.claimed_end = j + 1;
    } else if (Clock::now() < deadline) {
      // The speaker's audio may still come in time (chunk jitter): wait until it is due.
      pacer_cv_.wait_until(lock, deadline);
      continue;
    } else {
      // Waiting for the speaker: pause the utterance (idle frame, silence).
      ++u.offset;
      ++stats_.held_frames;
      generator_cv_.notify_all();
      break;
    }
    if (d.kind == FrameKind::kRepeat) {
      ++stats_.repeated_frames;
      ++unwarned_repeats_;
      const auto before = d.events.size();
      WarnLocked(&d.events, k,
                 std::to_string(unwarned_repeats_) +
                     " frame(s) sent again: inference was late (a batch takes ~" +
                     std::to_string(int(batch_ms_)) + " ms)");
      if (d.events.size() > before) unwarned_repeats_ = 0;
    }
    d.audio = FrameAudioLocked(u, j);
    u.played = j + 1;
    TrimLocked(u);
    break;
  }
  d.force_key = force_key_;
  force_key_ = false;
  d.busy = !utterances_.empty() || closing_;
  generator_cv_.notify_all();
  return d;
}

Expected<std::shared_ptr<const image::Image>> LiveSession::Impl::OriginalRgb(int index) {
  return AvatarFrameRgb(*avatar_, index);
}

Expected<std::string> LiveSession::Impl::IdleJpeg(int index) {
  auto cached = idle_jpegs_.find(index);
  if (cached != idle_jpegs_.end()) return *cached->second;
  LIPSYNC_ASSIGN_OR_RETURN(avatar::FrameHandle bg, Background(index));
  std::string jpeg;
  if (bg->jpeg && bg->jpeg->settings().quality == jpeg_quality_) {
    return bg->jpeg->background_jpeg();  // the avatar's own cached JPEG, as is
  }
  LIPSYNC_ASSIGN_OR_RETURN(auto rgb, OriginalRgb(index));
  LIPSYNC_ASSIGN_OR_RETURN(media::EncodedFrame encoded, EncodeRgb(*rgb, false));
  if (idle_jpeg_bytes_ + encoded.data.size() <= kIdleJpegCacheBytes) {
    idle_jpeg_bytes_ += encoded.data.size();
    idle_jpegs_[index] = std::make_shared<const std::string>(encoded.data);
  }
  return std::move(encoded.data);
}

Status LiveSession::Impl::BlendOriginal(image::Image& frame, int index, float alpha) {
  LIPSYNC_ASSIGN_OR_RETURN(avatar::FrameHandle bg, Background(index));
  const avatar::CropRect& rect = avatar_->rect(index);
  const image::PixelRect& held = bg->pixels_rect;
  const int x1 = std::max(rect.x1, held.x), x2 = std::min(rect.x2, held.x + held.width);
  const int y1 = std::max(rect.y1, held.y), y2 = std::min(rect.y2, held.y + held.height);
  const int a = int(std::lround(alpha * 256));
  for (int y = y1; y < y2; ++y) {
    uint8_t* out = frame.row(y) + size_t(x1) * 3;
    const uint8_t* orig = bg->pixels.row(y - held.y) + size_t(x1 - held.x) * 3;
    for (int i = 0; i < (x2 - x1) * 3; ++i) {
      out[i] = uint8_t((out[i] * a + orig[i] * (256 - a) + 128) >> 8);
    }
  }
  return Status::Ok();
}

Expected<media::EncodedFrame> LiveSession::Impl::EncodeRgb(const image::Image& rgb,
                                                           bool force_key) {
  if (rgb.width != info_.width || rgb.height != info_.height || rgb.channels != 3) {
    return Status::Internal("frame of " + std::to_string(rgb.width) + "x" +
                            std::to_string(rgb.height) + " for a " + std::to_string(info_.width) +
                            "x" + std::to_string(info_.height) + " session");
  }
  const auto t0 = Clock::now();
  auto encoded = encoder_->Encode(rgb.pixels.data(), rgb.stride(), force_key);
  const double ms = MsBetween(t0, Clock::now());
  StageTimes times;
  times.encode_ms = ms;
  sink_->OnStages(times);
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.encoded_frames;
  stats_.encode_ms += ms;
  return encoded;
}

void LiveSession::Impl::Emit(int64_t k, Decision& d) {
  const int n = avatar_->num_frames();
  const int background = avatar::BackgroundIndex(0, k, n, avatar::LoopMode::kPingPong);
  const bool h264 = params_.codec == media::Codec::kH264;
  OutputFrame out;
  out.index = k;
  out.pts_us = k * 1'000'000 / params_.fps;
  out.audio_sample_rate = params_.sample_rate;
  out.generation = d.generation;
  out.background_index = background;
  bool key = d.force_key || key_pending_;
  key_pending_ = false;
  Status status;
  bool cached = false;

  // The idle loop, once the cache has it (asked on idle frames until it is ready).
  if (h264 && idle_cache_ != nullptr && !idle_loop_ && d.kind == FrameKind::kIdle) {
    IdleLoopCache::State state;
    idle_loop_ = idle_cache_->Get(avatar_, encoder_options_, &state);
    if (state == IdleLoopCache::State::kFailed) idle_cache_ = nullptr;
  }
  // A live frame right after a replayed cached key frame would be a second IDR in a
  // row from another encoder: send one more cached (idle) frame first.
  if (h264 && in_loop_ && last_cached_key_ && d.kind != FrameKind::kIdle) {
    d.kind = FrameKind::kIdle;
  }

  auto send_idle = [&]() -> Status {
    last_alpha_ = 0;
    last_background_ = background;
    if (h264 && idle_loop_) {
      const auto& frames = idle_loop_->frames;
      const size_t pos = size_t(k % int64_t(frames.size()));
      const bool is_key = frames[pos].key_frame;
      if (in_loop_) {
        const bool must_leave = d.busy || (key && !is_key);
        if (!must_leave || last_cached_key_) {
          if (key && !is_key) key_pending_ = true;  // next frame, live
          cached = true;
        }
      } else if (!d.busy && is_key) {
        cached = true;  // enter at a key frame
      }
      if (cached) {
        out.video = frames[pos].data;
        out.key_frame = is_key;
        in_loop_ = true;
        last_cached_key_ = is_key;
        return Status::Ok();
      }
    }
    if (in_loop_) {
      key = true;  // leaving the loop: the live encoder's references are not the viewer's
      in_loop_ = false;
      last_cached_key_ = false;
    }
    if (h264) {
      LIPSYNC_ASSIGN_OR_RETURN(auto rgb, OriginalRgb(background));
      LIPSYNC_ASSIGN_OR_RETURN(media::EncodedFrame e, EncodeRgb(*rgb, key));
      out.video = std::move(e.data);
      out.key_frame = e.key_frame;
      last_rgb_ = std::move(rgb);
    } else {
      LIPSYNC_ASSIGN_OR_RETURN(out.video, IdleJpeg(background));
      out.key_frame = true;
      last_jpeg_ = out.video;
    }
    return Status::Ok();
  };

  if (in_loop_ && d.kind != FrameKind::kIdle) {
    key = true;  // leaving the idle loop (not right after a cached key frame: above)
    in_loop_ = false;
    last_cached_key_ = false;
  }
  if (d.kind == FrameKind::kGenerated) {
    GenFrame& g = d.gen;
    out.background_index = g.background;
    out.speaking = true;
    if (g.alpha >= 1 && !h264 && !g.raw) {
      out.video = std::move(g.data);
      out.key_frame = true;
      last_jpeg_ = out.video;
    } else {
      image::Image rgb;
      if (g.raw) {
        rgb = image::Image(info_.width, info_.height, 3);
        if (g.data.size() == rgb.pixels.size()) {
          std::memcpy(rgb.pixels.data(), g.data.data(), g.data.size());
        } else {
          status = Status::Internal("generated frame has " + std::to_string(g.data.size()) +
                                    " bytes, expected " + std::to_string(rgb.pixels.size()));
        }
      } else {
        auto decoded = image::DecodeJpeg(g.data);
        if (decoded.ok()) {
          rgb = std::move(*decoded);
        } else {
          status = decoded.status();
        }
      }
      if (status.ok() && g.alpha < 1) status = BlendOriginal(rgb, g.background, g.alpha);
      if (status.ok()) {
        auto e = EncodeRgb(rgb, key);
        if (e.ok()) {
          out.video = std::move(e->data);
          out.key_frame = e->key_frame;
          if (!h264) last_jpeg_ = out.video;
          last_rgb_ = std::make_shared<const image::Image>(std::move(rgb));
        } else {
          status = e.status();
        }
      }
    }
    last_alpha_ = g.alpha;
    last_background_ = g.background;
    if (!status.ok()) status = send_idle();
  } else if (d.kind == FrameKind::kRepeat && last_alpha_ > 0 &&
             (h264 ? last_rgb_ != nullptr : !last_jpeg_.empty())) {
    out.speaking = true;
    out.background_index = last_background_;
    if (h264) {
      auto e = EncodeRgb(*last_rgb_, key);
      if (e.ok()) {
        out.video = std::move(e->data);
        out.key_frame = e->key_frame;
      } else {
        status = e.status();
      }
    } else {
      out.video = last_jpeg_;
      out.key_frame = true;
    }
  } else {
    status = send_idle();
  }
  out.audio = std::move(d.audio);

  std::vector<SessionEvent> events;
  if (out.speaking != speaking_) {
    events.push_back({out.speaking ? EventKind::kSpeechStarted : EventKind::kSpeechEnded,
                      out.speaking ? "speaking" : "quiet", k, StatusCode::kOk});
    speaking_ = out.speaking;
  }
  if (!status.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto now = Clock::now();
    if (now - last_error_event_ >= kWarningInterval) {
      last_error_event_ = now;
      events.push_back({EventKind::kError,
                        "frame " + std::to_string(k) + ": " + status.message().substr(0, 300), k,
                        status.code()});
    }
  }
  for (const auto& e : events) sink_->OnEvent(e);
  const bool speaking = out.speaking;
  const bool accepted = sink_->OnFrame(std::move(out));
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.frames_sent;
  stats_.audio_samples_out += spf_;
  stats_.last_pts_us = k * 1'000'000 / params_.fps;
  if (speaking) ++stats_.speaking_frames;
  if (cached) ++stats_.cached_idle_frames;
  if (!accepted) {
    ++stats_.dropped_frames;
    force_key_ = true;  // the viewer lost a reference: restart it with a key frame
  }
}

// ---------------------------------------------------------------------------
// Generation thread: batches of batch_frames frames with the docs/AUDIO.md context

bool LiveSession::Impl::ClaimLocked(Batch* batch) {
  const auto now = Clock::now();
  const int B = config_.batch_frames;
  const int64_t ahead_limit =
      next_k_ + 2 * B + config_.max_ahead_frames + int64_t(batch_ms_ * params_.fps / 1000) + 1;
  int64_t prev_end = -1;  // output frame after the previous utterance
  for (auto& u : utterances_) {
    if (u.ended && u.claimed_end >= u.Frames(spf_)) {
      prev_end = u.offset + u.Frames(spf_);
      continue;
    }
    const int64_t s = u.claimed_end;
    const int64_t available = u.Available(spf_);
    const int R = RampFrames(u);
    int count = 0;
    int utterance_frames = 0;
    bool eou = false;
    if (u.ended) {
      const int64_t F = u.Frames(spf_);
      count = int(std::min<int64_t>(R, F - s));
      utterance_frames = int(F);
      eou = s + count == F;
    } else if (available >= s + R + lookahead_) {
      count = R;
      utterance_frames = lookahead_ < kFullLookahead ? int(s + R + lookahead_) : 0;
    } else {
      const bool quiet_for_long =
          now - u.last_audio >=
          std::chrono::milliseconds(int64_t(config_.utterance_gap_frames) * 1000 / params_.fps);
      const bool needed_soon = u.anchored && FrameTime(u.offset + s) - now <
                                                 std::chrono::milliseconds(
                                                     int64_t(batch_ms_ * 1.2) + 1000 / params_.fps);
      if (available > s && (needed_soon || quiet_for_long)) {
        // Starved: generate what is here as if the utterance ended at the available audio.
        count = int(std::min<int64_t>(R, available - s));
        utterance_frames = int(available);
        eou = s + count == available;
      } else if (quiet_for_long && available <= s) {
        // Nothing more came: the utterance ends here (its partial last frame flushed).
        EndUtteranceLocked(u);
        if (u.claimed_end >= u.Frames(spf_)) {
          prev_end = u.offset + u.Frames(spf_);
          if (!u.anchored) {
            u.anchored = true;
            u.offset = std::max(next_k_, prev_end);
          }
          continue;
        }
        const int64_t F = u.Frames(spf_);
        count = int(std::min<int64_t>(R, F - s));
        utterance_frames = int(F);
        eou = s + count == F;
      } else {
        return false;  // wait for audio
      }
    }
    if (count <= 0) return false;
    std::vector<float> alpha = GateWeights(
        u.loud, s, count, {config_.vad_threshold_dbfs, config_.crossfade_frames, kBridgeFrames});
    const bool silent = std::all_of(alpha.begin(), alpha.end(), [](float a) { return a <= 0; });
    if (!u.anchored) {
      int64_t k0 = std::max(next_k_ + 1, prev_end);
      if (!silent) {
        // Its first frame is due once a batch can be made, with one frame to spare
        // beyond the "needed soon" margin above.
        k0 = std::max(
            k0, FramesUntil(now + std::chrono::milliseconds(int64_t(EstimateMsLocked(count) * 1.2) +
                                                            2 * 1000 / params_.fps)));
      }
      u.anchored = true;
      u.offset = k0;
    }
    if (u.offset + s > ahead_limit) return false;  // far enough ahead
    // The compositing server picks backgrounds by start_frame_idx, which is also the
    // frame's index in the utterance's audio: the batch is sent as frames of a
    // "virtual" utterance that starts at output frame 0 with silence until the real one
    // (offset frames). Only features that would reach before the real start differ
    // (silence there instead of the reflection at an utterance start).
    const int64_t v = u.offset + s;
    batch->utterance = u.id;
    batch->generation = generation_;
    batch->start = s;
    batch->count = count;
    batch->output_start = v;
    batch->utterance_frames = utterance_frames > 0 ? int(u.offset + utterance_frames) : 0;
    batch->end_of_utterance = eou;
    batch->alpha = std::move(alpha);
    u.claimed_end = s + count;
    if (!silent) ++u.inferred_batches;
    if (silent) {
      for (int i = 0; i < count; ++i) {
        GenFrame g;
        g.background = avatar::BackgroundIndex(0, u.offset + s + i, avatar_->num_frames(),
                                               avatar::LoopMode::kPingPong);
        u.ready[s + i] = std::move(g);
      }
      batch->count = 0;  // nothing to infer
      pacer_cv_.notify_all();
      return true;
    }
    // The samples of utterance frames [lo, hi) (docs/AUDIO.md section 4).
    const int64_t lo = std::max<int64_t>(0, v - kContextBefore);
    const int64_t hi = batch->utterance_frames > 0
                           ? std::min<int64_t>(batch->utterance_frames, v + count + kFullLookahead)
                           : v + count + kFullLookahead;
    batch->audio.assign(size_t((hi - lo) * spf_) * 2, '\0');
    const int64_t first = (lo - u.offset) * spf_;  // utterance sample (negative: silence)
    for (int64_t i = first, o = 0; i < (hi - u.offset) * spf_; ++i, ++o) {
      const auto x = static_cast<uint16_t>(i < 0 ? 0 : u.Sample(i));
      batch->audio[2 * size_t(o)] = char(x & 0xFF);
      batch->audio[2 * size_t(o) + 1] = char(x >> 8);
    }
    return true;
  }
  return false;
}

void LiveSession::Impl::RunBatch(Batch& batch) {
  if (hooks_.before_infer) hooks_.before_infer(batch.generation, batch.output_start, batch.count);
  compositing::CompositeRequest request;
  request.model_id = params_.model_id;
  request.batch_size = batch.count;
  request.start_frame_idx = batch.output_start;
  request.raw_audio = batch.audio;
  request.sample_rate = params_.sample_rate;
  request.utterance_frames = batch.utterance_frames;
  request.end_of_utterance = batch.end_of_utterance;
  request.output_format = params_.codec == media::Codec::kH264 ? compositing::FormatChoice::kRawRgb
                                                               : compositing::FormatChoice::kJpeg;
  request.jpeg_quality = jpeg_quality_;
  request.loop_mode = compositing::LoopChoice::kPingPong;
  request.deadline = Clock::now() + std::chrono::seconds(10);
  const auto t0 = Clock::now();
  auto response = server_.InferBatchComposite(request);
  const double ms = MsBetween(t0, Clock::now());
  if (response.ok()) {
    StageTimes times;
    times.queue_wait_ms = response->queue_wait_ms;
    times.inference_ms = response->inference_ms;
    times.audio_ms = response->audio_processing_ms;
    times.composite_ms = response->composite_ms;
    // Raw RGB out (H264 sessions): the session encodes; OnStages per frame above.
    if (!response->raw_rgb) times.encode_ms = response->encode_ms;
    sink_->OnStages(times);
  }

  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.inference_batches;
  if (response.ok()) {
    if (batch.count >= 1 && batch.count <= kMaxTrackedBatch) {
      double& m = size_ms_[batch.count];
      m = m > 0 ? 0.7 * m + 0.3 * ms : ms;
    }
    if (batch.count >= config_.batch_frames) {
      batch_ms_ = 0.7 * batch_ms_ + 0.3 * ms;
      g_batch_ms_guess.store(batch_ms_);
    }
  }
  Utterance* u = FindLocked(batch.utterance);
  if (batch.generation != generation_ || u == nullptr || cancelled_) return;  // harmless
  if (!response.ok()) {
    const auto now = Clock::now();
    if (now - last_error_event_ >= kWarningInterval) {
      last_error_event_ = now;
      pending_events_.push_back({EventKind::kError,
                                 "inference for frames " + std::to_string(batch.output_start) +
                                     "..: " + response.status().message().substr(0, 300),
                                 batch.output_start, response.status().code()});
    }
    LOG_WARN("session %s: batch at frame %lld failed: %s", info_.session_id.c_str(),
             static_cast<long long>(batch.output_start), response.status().ToString().c_str());
  }
  for (int i = 0; i < batch.count; ++i) {
    GenFrame g;
    g.background = avatar::BackgroundIndex(0, batch.output_start + i, avatar_->num_frames(),
                                           avatar::LoopMode::kPingPong);
    if (response.ok() && size_t(i) < response->frames.size()) {
      g.data = std::move(response->frames[size_t(i)]);
      g.raw = response->raw_rgb;
      g.alpha = batch.alpha[size_t(i)];
      if (size_t(i) < response->background_indices.size()) {
        g.background = response->background_indices[size_t(i)];
      }
    } else {
      g.failed = true;
    }
    if (g.alpha <= 0) g.data.clear();
    // A frame the pacer already sent late (repeated) is simply not found again.
    if (batch.start + i >= u->played) u->ready[batch.start + i] = std::move(g);
  }
  pacer_cv_.notify_all();
}

void LiveSession::Impl::GeneratorLoop() {
  while (true) {
    Batch batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      while (true) {
        if (cancelled_ || done_) return;
        if (ClaimLocked(&batch)) break;
        generator_cv_.wait_for(lock, std::chrono::milliseconds(1000 / params_.fps));
      }
    }
    if (batch.count > 0) RunBatch(batch);
  }
}

// ---------------------------------------------------------------------------

LiveSession::LiveSession(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LiveSession::~LiveSession() { impl_->Cancel(); }

Expected<std::unique_ptr<LiveSession>> LiveSession::Start(const SessionParams& params,
                                                          const SessionConfig& config,
                                                          compositing::CompositingServer& server,
                                                          SessionSink* sink,
                                                          const SessionHooks& hooks) {
  if (sink == nullptr) return Status::InvalidArgument("session sink is null");
  SessionParams p = params;
  if (p.sample_rate == 0) p.sample_rate = 16000;
  if (p.channels == 0) p.channels = 1;
  if (p.fps == 0) p.fps = 25;
  auto impl = std::make_unique<Impl>(p, config, server, sink, hooks);
  LIPSYNC_RETURN_IF_ERROR(impl->Init());
  impl->StartThreads();
  return std::unique_ptr<LiveSession>(new LiveSession(std::move(impl)));
}

const SessionInfo& LiveSession::info() const { return impl_->info_; }
Status LiveSession::PushAudio(std::string_view pcm) { return impl_->PushAudio(pcm); }
double LiveSession::buffered_seconds() const { return impl_->buffered_seconds(); }
void LiveSession::Interrupt() { impl_->Interrupt(); }
void LiveSession::EndOfSpeech() { impl_->EndOfSpeech(); }
void LiveSession::RequestKeyFrame() { impl_->RequestKeyFrame(); }
void LiveSession::Close() { impl_->Close(); }
void LiveSession::Cancel() { impl_->Cancel(); }
bool LiveSession::done() const { return impl_->done(); }
void LiveSession::Wait() { impl_->Wait(); }
SessionStats LiveSession::stats() const { return impl_->stats(); }

}  // namespace lipsync::session
