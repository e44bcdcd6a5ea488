#include "rpc/session_bridge.h"

#include <algorithm>
#include <utility>

#include "common/log.h"
#include "rpc/grpc_status.h"

namespace lipsync::rpc {
namespace {

namespace pb = ::compositing;

// Bounded quote of client text in messages.
std::string Truncate(std::string_view text, size_t max = 80) {
  if (text.size() <= max) return std::string(text);
  return std::string(text.substr(0, max)) + "...";
}

pb::SessionEvent::Kind EventKindToProto(session::EventKind kind) {
  switch (kind) {
    case session::EventKind::kSpeechStarted:
      return pb::SessionEvent::SPEECH_STARTED;
    case session::EventKind::kSpeechEnded:
      return pb::SessionEvent::SPEECH_ENDED;
    case session::EventKind::kInterrupted:
      return pb::SessionEvent::INTERRUPTED;
    case session::EventKind::kWarning:
      return pb::SessionEvent::WARNING;
    case session::EventKind::kError:
      return pb::SessionEvent::ERROR;
    case session::EventKind::kClosed:
      return pb::SessionEvent::CLOSED;
  }
  return pb::SessionEvent::KIND_UNSPECIFIED;
}

// SessionEvent.code is a gRPC status code.
int GrpcCode(StatusCode code) { return static_cast<int>(ToGrpc(Status(code, "")).error_code()); }

}  // namespace

session::SessionParams ParamsFromProto(const pb::SessionOpen& open) {
  session::SessionParams p;
  p.model_id = open.model_id();
  p.sample_rate = open.sample_rate() == 0 ? 16000 : open.sample_rate();
  p.channels = open.channels() == 0 ? 1 : open.channels();
  p.codec = open.codec() == pb::MJPEG ? media::Codec::kMjpeg : media::Codec::kH264;
  p.fps = open.fps() == 0 ? 25 : open.fps();
  p.bitrate_kbps = open.bitrate_kbps();
  p.lookahead_frames = open.lookahead_frames();
  p.jpeg_quality = open.jpeg_quality();
  return p;
}

SessionBridge::SessionBridge(compositing::CompositingServer* server,
                             session::SessionLimiter* limiter, SessionBridgeOptions options,
                             AdmitFn admit)
    : server_(server), limiter_(limiter), options_(std::move(options)), admit_(std::move(admit)) {}

SessionBridge::~SessionBridge() {
  Cancel();
  std::unique_ptr<webrtc::SessionPublisher> publisher;
  std::unique_ptr<session::LiveSession> session;
  {
    std::lock_guard<std::mutex> lock(mu_);
    publisher = std::move(webrtc_);
    session = std::move(session_);
  }
  publisher.reset();  // before the session: its worker may ask the session for key frames
  session.reset();
  slot_.reset();
}

void SessionBridge::SetWakeup(std::function<void()> wakeup) {
  std::lock_guard<std::mutex> lock(mu_);
  wakeup_ = std::move(wakeup);
}

void SessionBridge::Wake() {
  std::function<void()> wakeup;
  {
    std::lock_guard<std::mutex> lock(mu_);
    wakeup = wakeup_;
  }
  cv_.notify_all();
  if (wakeup) wakeup();
}

void SessionBridge::Enqueue(pb::SessionOutput out, bool is_frame) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (cancelled_) return;
    if (!is_frame) {
      if (queued_events_ >= options_.max_queued_events) {
        ++events_dropped_;
        return;
      }
      ++queued_events_;
    }
    queue_.push_back(std::move(out));
  }
  Wake();
}

void SessionBridge::Error(StatusCode code, const std::string& message) {
  pb::SessionOutput out;
  pb::SessionEvent* e = out.mutable_event();
  e->set_kind(pb::SessionEvent::ERROR);
  e->set_code(GrpcCode(code));
  e->set_message(message);
  Enqueue(std::move(out), false);
}

void SessionBridge::End(const Status& status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (ending_) return;
    ending_ = true;
    end_status_ = status;
  }
  Wake();
}

bool SessionBridge::OnFrame(session::OutputFrame frame) {
  webrtc::SessionPublisher* publisher = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    publisher = webrtc_.get();
  }
  // RTP for Janus, whatever this viewer's queue does (UDP, never blocks).
  if (publisher != nullptr) publisher->SendFrame(frame.index, frame.video, frame.audio);
  pb::SessionOutput out;
  pb::MediaFrame* f = out.mutable_frame();
  f->set_frame_index(frame.index);
  f->set_pts_us(frame.pts_us);
  f->set_video(std::move(frame.video));
  f->set_key_frame(frame.key_frame);
  f->set_audio(std::move(frame.audio));
  f->set_audio_sample_rate(frame.audio_sample_rate);
  f->set_speaking(frame.speaking);
  f->set_background_index(frame.background_index);
  f->set_generation(frame.generation);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (cancelled_) return false;
    if (queued_frames_ >= options_.config.viewer_queue_frames) {
      ++frames_dropped_;
      return false;
    }
    ++queued_frames_;
    ++frames_queued_;
    queue_.push_back(std::move(out));
  }
  Wake();
  return true;
}

void SessionBridge::OnEvent(const session::SessionEvent& event) {
  pb::SessionOutput out;
  pb::SessionEvent* e = out.mutable_event();
  e->set_kind(EventKindToProto(event.kind));
  e->set_message(event.message);
  e->set_frame_index(event.frame_index);
  e->set_code(GrpcCode(event.code));
  Enqueue(std::move(out), false);
  if (event.kind == session::EventKind::kClosed) End(Status::Ok());
}

SessionBridge::Feed SessionBridge::Open(const pb::SessionOpen& open) {
  auto fail = [this](const Status& status) {
    Error(status.code(), status.message());
    End(status);
    return Feed::kEnd;
  };
  if (admit_) {
    if (Status s = admit_(open); !s.ok()) return fail(s);
  }
  std::unique_ptr<session::SessionLimiter::Slot> slot;
  if (limiter_ != nullptr) {
    auto acquired = limiter_->Acquire();
    if (!acquired.ok()) return fail(acquired.status());
    slot = std::move(*acquired);
  }
  auto started = session::LiveSession::Start(ParamsFromProto(open), options_.config, *server_, this,
                                             options_.hooks);
  if (!started.ok()) return fail(started.status());
  channels_ = open.channels() == 0 ? 1 : open.channels();
  const session::SessionInfo& info = (*started)->info();
  pb::SessionOutput opened;
  pb::SessionOpened* o = opened.mutable_opened();
  o->set_width(info.width);
  o->set_height(info.height);
  o->set_fps(info.fps);
  o->set_codec(info.codec == media::Codec::kMjpeg ? pb::MJPEG : pb::H264);
  o->set_audio_sample_rate(info.audio_sample_rate);
  o->set_lookahead_frames(info.lookahead_frames);
  o->set_session_id(info.session_id);
  pb::SessionOutput event;
  pb::SessionEvent* e = event.mutable_event();
  e->set_kind(pb::SessionEvent::OPENED);
  e->set_message(std::string(media::CodecName(info.codec)) + " " + std::to_string(info.width) +
                 "x" + std::to_string(info.height) + " at " + std::to_string(info.fps) +
                 " fps, audio s16le mono " + std::to_string(info.audio_sample_rate) + " Hz");
  std::unique_ptr<session::LiveSession> cancel_now;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (cancelled_) {
      cancel_now = std::move(*started);
    } else {
      session_ = std::move(*started);
      slot_ = std::move(slot);
      queue_.push_front(std::move(event));
      queue_.push_front(std::move(opened));
      queued_events_ += 2;
      opened_ = true;
    }
  }
  if (cancel_now) {
    cancel_now.reset();
    return Feed::kEnd;
  }
  if (open.webrtc()) StartWebRtc(open, info);
  LOG_INFO("session %s opened: model '%s', %s, %d Hz x%d", info.session_id.c_str(),
           Truncate(open.model_id(), 64).c_str(), media::CodecName(info.codec),
           info.audio_sample_rate, open.channels() == 0 ? 1 : open.channels());
  Wake();
  return Feed::kTaken;
}

void SessionBridge::StartWebRtc(const pb::SessionOpen& open, const session::SessionInfo& info) {
  webrtc::WebRtcState off;
  if (options_.webrtc == nullptr) {
    off.message = "this server has no WebRTC (its webrtc section is off)";
  } else if (info.codec != media::Codec::kH264) {
    off.message = "WebRTC needs codec H264; this session is " +
                  std::string(media::CodecName(info.codec));
  } else {
    webrtc::SessionMedia media;
    media.width = info.width;
    media.height = info.height;
    media.fps = info.fps;
    media.sample_rate = info.audio_sample_rate;
    session::LiveSession* live = session_.get();  // outlives the publisher (destructor)
    auto publisher = std::make_unique<webrtc::SessionPublisher>(
        options_.webrtc, media, info.session_id,
        [this](const webrtc::WebRtcState& state) { OnWebRtc(state); },
        [live] { live->RequestKeyFrame(); });
    std::lock_guard<std::mutex> lock(mu_);
    webrtc_ = std::move(publisher);
    return;
  }
  (void)open;
  OnWebRtc(off);
}

void SessionBridge::OnWebRtc(const webrtc::WebRtcState& state) {
  pb::SessionOutput out;
  pb::WebRtcInfo* w = out.mutable_webrtc();
  switch (state.kind) {
    case webrtc::WebRtcState::Kind::kReady:
      w->set_state(pb::WebRtcInfo::READY);
      break;
    case webrtc::WebRtcState::Kind::kUnavailable:
      w->set_state(pb::WebRtcInfo::UNAVAILABLE);
      break;
    case webrtc::WebRtcState::Kind::kLost:
      w->set_state(pb::WebRtcInfo::LOST);
      break;
  }
  w->set_message(state.message);
  if (options_.webrtc != nullptr) {
    w->set_janus_url(options_.webrtc->public_url());
    for (const webrtc::IceServer& ice : options_.webrtc->options().ice_servers) {
      pb::IceServer* i = w->add_ice_servers();
      for (const std::string& url : ice.urls) i->add_urls(url);
      i->set_username(ice.username);
      i->set_credential(ice.credential);
    }
  }
  if (state.kind == webrtc::WebRtcState::Kind::kReady) {
    w->set_mountpoint_id(state.mountpoint_id);
    w->set_pin(state.pin);
    w->set_token(state.token);
  }
  Enqueue(std::move(out), false);
  if (state.kind != webrtc::WebRtcState::Kind::kReady) {
    pb::SessionOutput warning;
    pb::SessionEvent* e = warning.mutable_event();
    e->set_kind(pb::SessionEvent::WARNING);
    e->set_message(std::string(state.kind == webrtc::WebRtcState::Kind::kLost
                                   ? "WebRTC lost (re-created when Janus is back)"
                                   : "WebRTC unavailable") +
                   ": " + Truncate(state.message, 200) + "; continuing over this stream");
    Enqueue(std::move(warning), false);
  }
}

void SessionBridge::OnStages(const session::StageTimes& times) {
  if (stages_call_ == nullptr) return;
  StageTimings timings;
  timings.queue_wait_ms = times.queue_wait_ms;
  timings.inference_ms = times.inference_ms;
  timings.audio_ms = times.audio_ms;
  timings.composite_ms = times.composite_ms;
  timings.encode_ms = times.encode_ms;
  stages_call_->AddStages(timings);
}

SessionBridge::Feed SessionBridge::FlushPending() {
  session::LiveSession* session = session_.get();  // set before any flush; reader thread
  const session::SessionInfo& info = session->info();
  const int channels = channels_;
  const size_t frame_bytes = size_t(2) * channels;
  const size_t piece = std::max<size_t>(frame_bytes, size_t(info.audio_sample_rate) * frame_bytes);
  while (pending_offset_ < pending_pcm_.size()) {
    const size_t n = std::min(piece, pending_pcm_.size() - pending_offset_);
    Status s = session->PushAudio(std::string_view(pending_pcm_).substr(pending_offset_, n));
    if (s.code() == StatusCode::kResourceExhausted) {
      retrying_ = true;
      return Feed::kRetry;
    }
    if (!s.ok()) {
      if (s.code() != StatusCode::kFailedPrecondition) Error(s.code(), s.message());
      break;
    }
    pending_offset_ += n;
  }
  const bool complete = pending_offset_ >= pending_pcm_.size();
  pending_pcm_.clear();
  pending_offset_ = 0;
  retrying_ = false;
  if (complete) session->EndOfSpeech();  // a spoken text is a whole utterance
  return Feed::kTaken;
}

SessionBridge::Feed SessionBridge::Push(const pb::SessionInput& input) {
  bool started = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (ending_ || cancelled_) return Feed::kEnd;
    started = session_ != nullptr;
  }
  if (!started) {
    if (!input.has_open()) {
      Status s = Status::InvalidArgument(
          "the first message of a session must be `open` (SessionOpen with the model id and "
          "the audio format); got another kind");
      Error(s.code(), s.message());
      End(s);
      return Feed::kEnd;
    }
    return Open(input.open());
  }
  session::LiveSession& session = *session_;
  if (retrying_ && !pending_pcm_.empty()) return FlushPending();
  retrying_ = false;
  switch (input.kind_case()) {
    case pb::SessionInput::kOpen:
      Error(StatusCode::kInvalidArgument,
            "the session is already open; expected audio, control or speak messages");
      return Feed::kTaken;
    case pb::SessionInput::kAudio: {
      const double seconds =
          double(input.audio().pcm().size()) / (2.0 * channels_ * session.info().audio_sample_rate);
      if (seconds > options_.config.max_buffered_seconds) {  // could never fit: no retry
        Error(StatusCode::kInvalidArgument,
              "audio chunk holds " + std::to_string(seconds) + " s; expected at most " +
                  std::to_string(options_.config.max_buffered_seconds) +
                  " s (session.max_buffered_seconds)");
        return Feed::kTaken;
      }
      Status s = session.PushAudio(input.audio().pcm());
      if (s.code() == StatusCode::kResourceExhausted) {
        retrying_ = true;
        return Feed::kRetry;
      }
      if (!s.ok() && s.code() != StatusCode::kFailedPrecondition) Error(s.code(), s.message());
      return Feed::kTaken;
    }
    case pb::SessionInput::kControl:
      switch (input.control().kind()) {
        case pb::SessionControl::INTERRUPT:
          session.Interrupt();
          break;
        case pb::SessionControl::END_OF_SPEECH:
          session.EndOfSpeech();
          break;
        case pb::SessionControl::CLOSE:
          closed_input_ = true;
          session.Close();
          break;
        case pb::SessionControl::KEY_FRAME:
          session.RequestKeyFrame();
          break;
        default:
          Error(StatusCode::kInvalidArgument,
                "control kind " + std::to_string(int(input.control().kind())) +
                    " is not INTERRUPT, END_OF_SPEECH, CLOSE or KEY_FRAME");
      }
      return Feed::kTaken;
    case pb::SessionInput::kSpeak: {
      if (closed_input_) {
        Error(StatusCode::kInvalidArgument, "speak after close (the session is finishing)");
        return Feed::kTaken;
      }
      const int rate = session.info().audio_sample_rate;
      auto spoken =
          session::SpeakText(input.speak().text(), input.speak().voice(), rate, options_.tts);
      if (!spoken.ok()) {
        Error(spoken.status().code(), "speak: " + spoken.status().message());
        return Feed::kTaken;
      }
      if (channels_ == 2) {  // the session takes interleaved stereo: L = R
        const std::string& mono = spoken->pcm_s16le;
        pending_pcm_.resize(mono.size() * 2);
        for (size_t i = 0; i + 1 < mono.size(); i += 2) {
          std::copy_n(mono.data() + i, 2, pending_pcm_.data() + 2 * i);
          std::copy_n(mono.data() + i, 2, pending_pcm_.data() + 2 * i + 2);
        }
      } else {
        pending_pcm_ = std::move(spoken->pcm_s16le);
      }
      pending_offset_ = 0;
      if (pending_pcm_.empty()) return Feed::kTaken;
      return FlushPending();
    }
    case pb::SessionInput::KIND_NOT_SET:
      break;
  }
  Error(StatusCode::kInvalidArgument, "empty SessionInput; expected open, audio, control or speak");
  return Feed::kTaken;
}

void SessionBridge::InputDone() {
  session::LiveSession* session = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (ending_ || cancelled_) return;
    session = session_.get();
  }
  if (session == nullptr) {
    Status s = Status::InvalidArgument(
        "the input ended before the `open` message; expected SessionOpen first");
    Error(s.code(), s.message());
    End(s);
    return;
  }
  if (!closed_input_) {
    closed_input_ = true;
    session->Close();
  }
}

pb::SessionOutput SessionBridge::StatsMessage() const {
  session::SessionStats s = session_stats();
  pb::SessionOutput out;
  pb::SessionStats* st = out.mutable_stats();
  st->set_frames_sent(s.frames_sent);
  st->set_speaking_frames(s.speaking_frames);
  st->set_repeated_frames(s.repeated_frames);
  st->set_dropped_frames(frames_dropped());
  st->set_inference_batches(s.inference_batches);
  st->set_buffered_audio_ms(s.buffered_audio_ms);
  return out;
}

bool SessionBridge::Pop(pb::SessionOutput* out, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    if (cancelled_) return false;
    if ((opened_ || ending_) && !queue_.empty()) {
      if (stats_due_ && session_) {
        stats_due_ = false;
        lock.unlock();
        *out = StatsMessage();
        return true;
      }
      *out = std::move(queue_.front());
      queue_.pop_front();
      if (out->has_frame()) {
        --queued_frames_;
        ++frames_taken_;
        if (++since_stats_ >= options_.stats_every_frames) {
          since_stats_ = 0;
          stats_due_ = true;
        }
      } else {
        --queued_events_;
      }
      return true;
    }
    if (ending_ && queue_.empty()) {
      if (session_ && !stats_sent_) {
        stats_sent_ = true;
        lock.unlock();
        *out = StatsMessage();
        cv_.notify_all();
        return true;
      }
      return false;
    }
    if (cv_.wait_until(lock, deadline) == std::cv_status::timeout) {
      if (!(cancelled_ || ((opened_ || ending_) && !queue_.empty()) || ending_)) return false;
    }
  }
}

bool SessionBridge::ended() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cancelled_ || (ending_ && queue_.empty() && (stats_sent_ || !session_));
}

bool SessionBridge::ending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ending_ || cancelled_;
}

Status SessionBridge::end_status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return end_status_;
}

void SessionBridge::Cancel() {
  session::LiveSession* session = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (cancelled_) return;
    cancelled_ = true;
    if (!ending_) {
      ending_ = true;
      end_status_ = Status::Cancelled("the client cancelled the session");
    }
    queue_.clear();
    queued_frames_ = 0;
    queued_events_ = 0;
    session = session_.get();
  }
  if (session != nullptr) session->Cancel();  // joins the session's threads
  std::unique_ptr<session::SessionLimiter::Slot> slot;
  {
    std::lock_guard<std::mutex> lock(mu_);
    slot = std::move(slot_);
  }
  slot.reset();  // the session's place is free at once
  cv_.notify_all();
  std::function<void()> wakeup;
  {
    std::lock_guard<std::mutex> lock(mu_);
    wakeup = wakeup_;
  }
  if (wakeup) wakeup();
}

bool SessionBridge::opened() const {
  std::lock_guard<std::mutex> lock(mu_);
  return opened_;
}
int64_t SessionBridge::frames_queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return frames_queued_;
}
int64_t SessionBridge::frames_dropped() const {
  std::lock_guard<std::mutex> lock(mu_);
  return frames_dropped_;
}
int64_t SessionBridge::events_dropped() const {
  std::lock_guard<std::mutex> lock(mu_);
  return events_dropped_;
}
int64_t SessionBridge::frames_taken() const {
  std::lock_guard<std::mutex> lock(mu_);
  return frames_taken_;
}

session::SessionStats SessionBridge::session_stats() const {
  session::LiveSession* session = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    session = session_.get();
  }
  return session != nullptr ? session->stats() : session::SessionStats{};
}

}  // namespace lipsync::rpc
