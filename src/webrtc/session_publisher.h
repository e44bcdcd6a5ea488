// Live sessions over WebRTC through Janus (docs/STREAMING.md "WebRTC through Janus"):
//  - WebRtcHub: the server's one Janus connection (JanusClient), shared by all sessions.
//    Start() connects, checks the admin_secret (a token added and removed) and removes
//    this instance's mountpoints a previous run left behind. Wrong api_secret, admin_key
//    or admin_secret: PERMISSION_DENIED (a startup error); Janus not running: the hub
//    starts anyway and connects when a session needs it.
//  - SessionPublisher: one session's publication. Its own worker thread makes every Janus
//    call (viewer token, mountpoint, keepalive, re-creation after a Janus restart, removal
//    at the end); the session's pacing thread only hands frames to SendFrame, which sends
//    them as RTP (UDP, non-blocking) through the current RtpPublisher, taken under a
//    mutex held only to copy a pointer. State changes (ready with the mountpoint id, pin
//    and token; unavailable; lost) go to the `notify` callback, from the worker thread.
//
// Thread-safety: WebRtcHub is thread-safe (its Janus calls block: worker threads only).
// SessionPublisher: SendFrame from one thread (the pacing thread), the destructor from
// any other; the callbacks run on its worker thread and must not block for long.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/status.h"
#include "config/config.h"
#include "webrtc/janus_client.h"
#include "webrtc/rtp_publisher.h"

namespace lipsync::webrtc {

struct IceServer {
  std::vector<std::string> urls;
  std::string username, credential;
};

struct WebRtcOptions {
  JanusOptions janus;
  std::string public_janus_url;  // as viewers reach the Janus API; empty: janus.url
  std::vector<IceServer> ice_servers;
  // How often a session's worker checks Janus (keepalive, restart), and retries when
  // Janus is unreachable.
  std::chrono::milliseconds check_interval{1000};
  std::chrono::milliseconds retry_interval{2000};
};

class WebRtcHub {
 public:
  // INVALID_ARGUMENT (bad options) or PERMISSION_DENIED (wrong secrets) end the startup;
  // Janus unreachable is not an error (logged; connected later).
  static Expected<std::shared_ptr<WebRtcHub>> Start(WebRtcOptions options);
  ~WebRtcHub();

  const WebRtcOptions& options() const { return options_; }
  const std::string& public_url() const { return public_url_; }

  // The connected client, connecting first if needed (and removing stale mountpoints
  // on the first connection). `epoch` is set to the number of (re)connections so far:
  // a higher number than a caller saw means Janus may have lost its mountpoints.
  Expected<JanusClient*> Client(uint64_t* epoch);
  // Keeps the Janus session alive (at most once a second for all callers) and
  // reconnects when Janus no longer knows it (restarted); UNAVAILABLE while down.
  Status Check(uint64_t* epoch);

 private:
  explicit WebRtcHub(WebRtcOptions options);
  Status ConnectLocked();

  const WebRtcOptions options_;
  const std::string public_url_;
  std::mutex mu_;  // taken by worker threads only: Janus calls are made under it
  std::unique_ptr<JanusClient> client_;
  uint64_t epoch_ = 0;
  std::chrono::steady_clock::time_point last_ok_{};
};

// The compositing config's `webrtc:` section -> a started hub; null when it is off.
// Errors as WebRtcHub::Start (a startup error).
Expected<std::shared_ptr<WebRtcHub>> StartHubFromConfig(const config::CompositingConfig& config);

// What a viewer learns about the session's WebRTC publication.
struct WebRtcState {
  enum class Kind { kReady, kUnavailable, kLost };
  Kind kind = Kind::kUnavailable;
  uint64_t mountpoint_id = 0;
  std::string pin, token;
  std::string message;  // why (unavailable, lost)
};

struct SessionMedia {
  int width = 0, height = 0, fps = 25, sample_rate = 16000;
  int audio_bitrate_bps = 32000;
};

class SessionPublisher {
 public:
  using Notify = std::function<void(const WebRtcState&)>;
  // Starts the worker (the first mountpoint is made there, not here). `label` names the
  // mountpoint (the session id); `key_frame` asks the session for a key frame (a new
  // mountpoint needs one).
  SessionPublisher(std::shared_ptr<WebRtcHub> hub, SessionMedia media, std::string label,
                   Notify notify, std::function<void()> key_frame);
  // Stops the worker, then removes the mountpoint and the token (bounded by the Janus
  // request timeout).
  ~SessionPublisher();
  SessionPublisher(const SessionPublisher&) = delete;
  SessionPublisher& operator=(const SessionPublisher&) = delete;

  // The pacing thread: frame `index`'s access unit and PCM as RTP, when a mountpoint is
  // up (else nothing). Never blocks on Janus.
  void SendFrame(int64_t index, std::string_view annexb, std::string_view pcm);

  int64_t frames_sent() const;

 private:
  void Run();
  // Token + mountpoint + RTP publisher; on success the publisher is swapped in.
  Status Create(uint64_t* epoch);
  void Drop();  // the publisher out, the mountpoint and token removed (best effort)
  bool WaitFor(std::chrono::milliseconds d);  // false: stopping

  const std::shared_ptr<WebRtcHub> hub_;
  const SessionMedia media_;
  const std::string label_;
  const Notify notify_;
  const std::function<void()> key_frame_;

  // Worker thread only.
  Mountpoint mountpoint_;  // id 0: none
  std::string token_;

  mutable std::mutex mu_;  // publisher_, frames_sent_, stop_
  std::condition_variable cv_;
  std::shared_ptr<RtpPublisher> publisher_;
  int64_t frames_sent_ = 0;
  bool stop_ = false;
  std::thread worker_;
};

}  // namespace lipsync::webrtc
