#include "webrtc/session_publisher.h"

#include <algorithm>
#include <utility>

#include "common/log.h"

namespace lipsync::webrtc {

Expected<std::shared_ptr<WebRtcHub>> WebRtcHub::Start(WebRtcOptions options) {
  std::shared_ptr<WebRtcHub> hub(new WebRtcHub(std::move(options)));
  std::lock_guard<std::mutex> lock(hub->mu_);
  Status s = hub->ConnectLocked();
  if (s.code() == StatusCode::kUnavailable) {
    LOG_WARN(
        "webrtc: %s; sessions asking for WebRTC go on over their own stream until Janus "
        "answers (retried in the background)",
        s.message().c_str());
    return hub;
  }
  if (!s.ok()) return s;
  return hub;
}

Expected<std::shared_ptr<WebRtcHub>> StartHubFromConfig(const config::CompositingConfig& config) {
  const config::CompositingConfig::WebRtc& w = config.webrtc;
  if (!w.enabled) return std::shared_ptr<WebRtcHub>();
  WebRtcOptions o;
  o.janus.url = w.janus_url;
  o.janus.api_secret = w.api_secret;
  o.janus.admin_key = w.admin_key;
  o.janus.admin_url = w.admin_url;
  o.janus.admin_secret = w.admin_secret;
  o.janus.rtp_host = w.rtp_host;
  o.janus.rtp_interface = w.rtp_interface;
  o.janus.instance = w.instance;
  o.janus.timeout_seconds = w.timeout_seconds;
  o.public_janus_url = w.public_janus_url;
  for (const auto& ice : w.ice_servers)
    o.ice_servers.push_back({ice.urls, ice.username, ice.credential});
  return WebRtcHub::Start(std::move(o));
}

WebRtcHub::WebRtcHub(WebRtcOptions options)
    : options_(std::move(options)),
      public_url_(options_.public_janus_url.empty() ? options_.janus.url
                                                    : options_.public_janus_url) {}

WebRtcHub::~WebRtcHub() = default;

Status WebRtcHub::ConnectLocked() {
  if (client_ == nullptr) {
    LIPSYNC_ASSIGN_OR_RETURN(std::unique_ptr<JanusClient> client,
                             JanusClient::Connect(options_.janus));
    // The admin API must answer too (viewer tokens): a wrong admin_secret, or Janus
    // without token_auth, is a configuration error found now rather than per session.
    LIPSYNC_ASSIGN_OR_RETURN(std::string probe, client->AddToken());
    LIPSYNC_RETURN_IF_ERROR(client->RemoveToken(probe));
    client_ = std::move(client);
  } else {
    LIPSYNC_RETURN_IF_ERROR(client_->Reconnect());
  }
  ++epoch_;
  last_ok_ = std::chrono::steady_clock::now();
  auto removed = client_->RemoveStale();
  if (removed.status().code() == StatusCode::kPermissionDenied) return removed.status();
  if (!removed.ok()) {
    LOG_WARN("webrtc: removing stale mountpoints: %s", removed.status().message().c_str());
  } else if (*removed > 0) {
    LOG_INFO("webrtc: removed %d mountpoint(s) a previous run of instance '%s' left in Janus",
             *removed, options_.janus.instance.c_str());
  }
  LOG_INFO("webrtc: connected to Janus at %s", options_.janus.url.c_str());
  return Status::Ok();
}

Expected<JanusClient*> WebRtcHub::Client(uint64_t* epoch) {
  std::lock_guard<std::mutex> lock(mu_);
  if (client_ == nullptr) LIPSYNC_RETURN_IF_ERROR(ConnectLocked());
  *epoch = epoch_;
  return client_.get();
}

Status WebRtcHub::Check(uint64_t* epoch) {
  std::lock_guard<std::mutex> lock(mu_);
  const auto now = std::chrono::steady_clock::now();
  if (client_ != nullptr && now - last_ok_ < std::chrono::seconds(1)) {
    *epoch = epoch_;
    return Status::Ok();
  }
  Status s = client_ == nullptr ? Status::Unavailable("not connected") : client_->Keepalive();
  if (s.code() == StatusCode::kUnavailable) s = ConnectLocked();
  if (s.ok()) last_ok_ = now;
  *epoch = epoch_;
  return s;
}

SessionPublisher::SessionPublisher(std::shared_ptr<WebRtcHub> hub, SessionMedia media,
                                   std::string label, Notify notify,
                                   std::function<void()> key_frame)
    : hub_(std::move(hub)),
      media_(media),
      label_(std::move(label)),
      notify_(std::move(notify)),
      key_frame_(std::move(key_frame)) {
  worker_ = std::thread([this] { Run(); });
}

SessionPublisher::~SessionPublisher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

void SessionPublisher::SendFrame(int64_t index, std::string_view annexb, std::string_view pcm) {
  std::shared_ptr<RtpPublisher> publisher;
  {
    std::lock_guard<std::mutex> lock(mu_);
    publisher = publisher_;
  }
  if (publisher == nullptr) return;
  // A send error (e.g. ICMP port unreachable after Janus went away) is not fatal: the
  // worker notices Janus is gone and makes a new mountpoint when it is back.
  (void)publisher->SendFrame(index, annexb, pcm);
  std::lock_guard<std::mutex> lock(mu_);
  ++frames_sent_;
}

int64_t SessionPublisher::frames_sent() const {
  std::lock_guard<std::mutex> lock(mu_);
  return frames_sent_;
}

bool SessionPublisher::WaitFor(std::chrono::milliseconds d) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, d, [this] { return stop_; });
  return !stop_;
}

Status SessionPublisher::Create(uint64_t* epoch) {
  LIPSYNC_RETURN_IF_ERROR(hub_->Check(epoch));  // (re)connects when needed
  LIPSYNC_ASSIGN_OR_RETURN(JanusClient * client, hub_->Client(epoch));
  if (token_.empty()) {
    LIPSYNC_ASSIGN_OR_RETURN(token_, client->AddToken());
  }
  LIPSYNC_ASSIGN_OR_RETURN(mountpoint_, client->CreateMountpoint(label_));
  RtpTarget target;
  target.host = mountpoint_.rtp_host;
  target.video_port = mountpoint_.video_port;
  target.audio_port = mountpoint_.audio_port;
  target.width = media_.width;
  target.height = media_.height;
  target.fps = media_.fps;
  target.input_sample_rate = media_.sample_rate;
  target.audio_bitrate_bps = media_.audio_bitrate_bps;
  auto publisher = RtpPublisher::Create(target);
  if (!publisher.ok()) return publisher.status();
  {
    std::lock_guard<std::mutex> lock(mu_);
    publisher_ = std::shared_ptr<RtpPublisher>(std::move(*publisher));
  }
  if (key_frame_) key_frame_();  // the mountpoint's first video must be decodable
  return Status::Ok();
}

void SessionPublisher::Drop() {
  std::shared_ptr<RtpPublisher> old;
  {
    std::lock_guard<std::mutex> lock(mu_);
    old = std::move(publisher_);
  }
  old.reset();
  uint64_t epoch = 0;
  auto client = hub_->Client(&epoch);
  if (!client.ok()) return;
  if (mountpoint_.id != 0) {
    Status s = (*client)->DestroyMountpoint(mountpoint_);
    // NOT_FOUND: already gone; UNAVAILABLE: Janus is down (a restart drops it anyway).
    if (!s.ok() && s.code() != StatusCode::kNotFound && s.code() != StatusCode::kUnavailable) {
      LOG_WARN("webrtc: session %s: %s", label_.c_str(), s.message().c_str());
    }
    mountpoint_ = Mountpoint{};
  }
  if (!token_.empty()) {
    (void)(*client)->RemoveToken(token_);
    token_.clear();
  }
}

void SessionPublisher::Run() {
  bool up = false, ever_up = false, reported_down = false;
  uint64_t epoch = 0;
  while (true) {
    if (!up) {
      if (mountpoint_.id != 0) Drop();  // what a lost Janus may still hold
      Status s = Create(&epoch);
      if (s.ok()) {
        up = ever_up = true;
        reported_down = false;
        WebRtcState st;
        st.kind = WebRtcState::Kind::kReady;
        st.mountpoint_id = mountpoint_.id;
        st.pin = mountpoint_.pin;
        st.token = token_;
        notify_(st);
        LOG_INFO("webrtc: session %s publishes to mountpoint %llu", label_.c_str(),
                 static_cast<unsigned long long>(mountpoint_.id));
      } else {
        // A half-made attempt (a token without mountpoint) is redone from scratch.
        Drop();
        if (!reported_down) {
          reported_down = true;
          WebRtcState st;
          st.kind = ever_up ? WebRtcState::Kind::kLost : WebRtcState::Kind::kUnavailable;
          st.message = s.message();
          notify_(st);
        }
        if (!WaitFor(hub_->options().retry_interval)) break;
        continue;
      }
    }
    if (!WaitFor(hub_->options().check_interval)) break;
    uint64_t now_epoch = epoch;
    Status s = hub_->Check(&now_epoch);
    bool lost = !s.ok();
    if (s.ok() && now_epoch != epoch) {
      // Reconnected: Janus restarted (its mountpoints and tokens gone) or only our Janus
      // session timed out. Ask for the list.
      epoch = now_epoch;
      uint64_t e = 0;
      auto client = hub_->Client(&e);
      auto own = client.ok() ? (*client)->OwnMountpoints()
                             : Expected<std::vector<uint64_t>>(client.status());
      lost = !own.ok() || std::find(own->begin(), own->end(), mountpoint_.id) == own->end();
      if (lost) token_.clear();  // a restarted Janus forgot the token too
    }
    if (lost) {
      up = false;
      {
        std::lock_guard<std::mutex> lock(mu_);
        publisher_.reset();
      }
      WebRtcState st;
      st.kind = WebRtcState::Kind::kLost;
      st.message = s.ok() ? "Janus lost the session's mountpoint (restarted?)" : s.message();
      notify_(st);
      reported_down = true;
      LOG_WARN("webrtc: session %s: %s; re-creating the mountpoint when Janus is back",
               label_.c_str(), st.message.c_str());
    }
  }
  Drop();
}

}  // namespace lipsync::webrtc
