// The live session's wire protocol (compositing.proto: SessionInput in, SessionOutput
// out; docs/STREAMING.md) over a session::LiveSession, independent of the transport:
// the gRPC StreamSession service (rpc/session_service.h) and the WebSocket front feed
// it the same messages and forward what it produces.
//
// Input: Push() takes SessionInput messages one by one, in order. The first must be
// `open` (else INVALID_ARGUMENT ends the stream); it is admitted by the caller's
// AdmitFn (credential, scope, tenant, rate limits), takes a session slot
// (SessionLimiter: RESOURCE_EXHAUSTED beyond session.max_sessions) and starts the
// session (NOT_FOUND for an unknown model, INVALID_ARGUMENT for bad parameters). Then
// audio, controls and speak (espeak-ng, session/espeak_tts.h). Bad input after open
// (odd byte count, oversized chunk, audio after close, a second open, bad text) becomes
// an ERROR event with its code and the session goes on. When the session's audio buffer
// is full, Push answers kRetry: the transport stops reading and offers the same message
// again later (flow control; memory stays bounded).
//
// Output: a bounded per-viewer queue. The session's frames go in while fewer than
// `viewer_queue_frames` frames wait; beyond that a frame is dropped and counted (the
// session keeps its clock; a stalled viewer never blocks it or anyone else). Events
// are kept up to `max_queued_events` (then dropped and counted). The first message out
// is SessionOpened; a SessionStats follows every `stats_every_frames` frames taken and
// closes the stream. Pop() blocks (with a timeout) for the next message; SetWakeup
// lets an asynchronous front be told when one is ready.
//
// End: after CLOSE the session finishes its queued speech and sends CLOSED; the stream
// then ends with OK once the queue is drained (ended() true, Pop returns false). A fatal
// error (at open) ends it with that status (an ERROR event first). Cancel() (client
// gone) ends the session at once and frees everything.
//
// WebRTC (SessionOpen.webrtc, with SessionBridgeOptions.webrtc set): every frame also
// goes to the session's SessionPublisher (RTP to Janus; Janus calls on its own worker);
// SessionOutput.webrtc messages say READY (mountpoint id, pin, token, ICE servers),
// UNAVAILABLE or LOST (with a WARNING event: the session goes on over this stream).
// Destroying the bridge removes the mountpoint (waits for Janus, bounded by its timeout).
//
// Thread-safe: one thread may Push while another Pops; Cancel from any thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "common/status.h"
#include "compositing.pb.h"
#include "compositing/compositing_server.h"
#include "rpc/server_ops.h"
#include "session/espeak_tts.h"
#include "session/live_session.h"
#include "webrtc/session_publisher.h"

namespace lipsync::rpc {

struct SessionBridgeOptions {
  session::SessionConfig config;  // viewer_queue_frames sizes the queue
  session::TtsOptions tts;
  session::SessionHooks hooks;  // tests
  size_t max_queued_events = 256;
  int stats_every_frames = 25;
  // The server's Janus connection (webrtc: section): a session whose open asks for
  // WebRTC is also published to its own Janus mountpoint (webrtc/session_publisher.h)
  // and told where to watch it (SessionOutput.webrtc). Null: WebRTC is off.
  std::shared_ptr<webrtc::WebRtcHub> webrtc;
};

// Admits the open message before anything is allocated: OK, or the status that ends
// the stream (UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED...). gRPC passes
// StreamCall::Open; the WebSocket front first authenticates open.authorization().
using AdmitFn = std::function<Status(const ::compositing::SessionOpen& open)>;

class SessionBridge final : private session::SessionSink {
 public:
  // `server` and `limiter` must outlive the bridge.
  SessionBridge(compositing::CompositingServer* server, session::SessionLimiter* limiter,
                SessionBridgeOptions options, AdmitFn admit);
  ~SessionBridge() override;  // Cancel()

  enum class Feed {
    kTaken,  // done (bad input became an ERROR event)
    kRetry,  // the audio buffer is full: stop reading, offer the same message again later
    kEnd,    // the stream ends: end_status() says how; Pop drains what is left
  };
  Feed Push(const ::compositing::SessionInput& input);
  // The client half-closed (no more input): like CLOSE. Before open: INVALID_ARGUMENT.
  void InputDone();

  // The next message for the viewer: true with `out` set; false when `timeout` passed
  // or (ended()) nothing more will come.
  bool Pop(::compositing::SessionOutput* out, std::chrono::milliseconds timeout);
  // Called (no lock held; from the session's threads or the caller's) whenever a
  // message is queued or the stream ends. Set before the first Push.
  void SetWakeup(std::function<void()> wakeup);
  // The stream's call wrapper: each inference batch's stage times and each frame the
  // session encodes go to its server's stage histograms (StreamCall::AddStages). Set
  // before the first Push; `call` must outlive the bridge. Null: not reported.
  void ReportStagesTo(StreamCall* call) { stages_call_ = call; }

  // True once the stream has ended and every queued message was taken.
  bool ended() const;
  // The stream's final status (OK after CLOSED); valid once ending() is true.
  Status end_status() const;
  bool ending() const;
  // The client is gone: ends the session now, drops the queue. Idempotent.
  void Cancel();

  bool opened() const;
  int64_t frames_queued() const;   // handed to the queue
  int64_t frames_dropped() const;  // queue full (viewer too slow)
  int64_t events_dropped() const;
  int64_t frames_taken() const;  // taken by Pop
  // The session's figures (zeros before open).
  session::SessionStats session_stats() const;

 private:
  bool OnFrame(session::OutputFrame frame) override;
  void OnEvent(const session::SessionEvent& event) override;
  void OnStages(const session::StageTimes& times) override;
  Feed Open(const ::compositing::SessionOpen& open);
  Feed FlushPending();
  void Error(StatusCode code, const std::string& message);
  void End(const Status& status);
  void Enqueue(::compositing::SessionOutput out, bool is_frame);
  ::compositing::SessionOutput StatsMessage() const;
  void Wake();
  void StartWebRtc(const ::compositing::SessionOpen& open, const session::SessionInfo& info);
  void OnWebRtc(const webrtc::WebRtcState& state);

  compositing::CompositingServer* const server_;
  session::SessionLimiter* const limiter_;
  const SessionBridgeOptions options_;
  const AdmitFn admit_;
  StreamCall* stages_call_ = nullptr;  // set before the session starts; then read only

  // Reader side (one thread).
  std::string pending_pcm_;  // speech of a SpeakText not yet accepted by the session
  size_t pending_offset_ = 0;
  bool retrying_ = false;
  bool closed_input_ = false;
  int channels_ = 1;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::function<void()> wakeup_;
  std::unique_ptr<session::SessionLimiter::Slot> slot_;
  std::unique_ptr<session::LiveSession> session_;  // set once, under mu_
  // Set once under mu_ after the session started; destroyed (its worker joined, the
  // mountpoint removed) before the session. The pacing thread uses it outside mu_.
  std::unique_ptr<webrtc::SessionPublisher> webrtc_;
  bool opened_ = false;      // SessionOpened queued (Pop waits for it)
  bool ending_ = false;      // no more input taken; end_status_ set
  bool stats_sent_ = false;  // the final SessionStats was taken
  bool stats_due_ = false;   // a SessionStats goes out before the next frame
  bool cancelled_ = false;
  Status end_status_;
  std::deque<::compositing::SessionOutput> queue_;
  int queued_frames_ = 0;
  size_t queued_events_ = 0;
  int64_t frames_queued_ = 0, frames_dropped_ = 0, events_dropped_ = 0, frames_taken_ = 0;
  int64_t since_stats_ = 0;
};

// compositing.proto's SessionOpen -> session parameters (codec, defaults).
session::SessionParams ParamsFromProto(const ::compositing::SessionOpen& open);

}  // namespace lipsync::rpc
