// A client of the Janus API (HTTP transport, JSON) for the streaming plugin: one Janus
// session with one handle attached to janus.plugin.streaming, used to create and destroy
// the live sessions' RTP mountpoints (docs/STREAMING.md "WebRTC through Janus").
//
// Every request carries the Janus `api_secret`; mountpoint creation, listing and removal
// carry the streaming plugin's `admin_key`. Each mountpoint gets a random id and viewer
// pin, a secret derived from the admin_key, the instance and the id (so that a restarted
// server can remove what its previous run left: RemoveStale), and a description
// "lipsync:<instance>:<label>" by which it finds them.
//
// Replies are bounded (1 MiB), each request has a deadline, and every failure is a
// status naming what failed: UNAVAILABLE (Janus unreachable, or its session is gone
// after a restart: call Reconnect), PERMISSION_DENIED (wrong api_secret or admin_key),
// INVALID_ARGUMENT (bad options), INTERNAL (an answer Janus should not give).
//
// Thread-safe (one request at a time, under an internal mutex); requests block for at
// most `timeout_seconds`: never call it from a thread that paces media.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/status.h"

namespace lipsync::webrtc {

struct JanusOptions {
  std::string url = "http://127.0.0.1:8088/janus";  // the Janus API, as this server reaches it
  std::string api_secret;
  std::string admin_key;  // the streaming plugin's
  // Where Janus receives RTP, as this server reaches it (default: the host of `url`),
  // and the interface the mountpoint binds on Janus's side (empty: Janus's default).
  std::string rtp_host;
  std::string rtp_interface;
  std::string instance = "lipsync";  // names this server's mountpoints (RemoveStale)
  // The Janus admin API (loopback) and its admin_secret, for the viewers' per-session
  // tokens (janus.jcfg token_auth); empty admin_secret: AddToken is FAILED_PRECONDITION.
  std::string admin_url = "http://127.0.0.1:7088/admin";
  std::string admin_secret;
  double timeout_seconds = 5;
};

struct Mountpoint {
  uint64_t id = 0;
  std::string secret;  // to destroy it
  std::string pin;     // viewers need it to watch
  int video_port = 0;  // where Janus receives the RTP
  int audio_port = 0;
  std::string rtp_host;
};

class JanusClient {
 public:
  // Parses the options and opens a Janus session with a streaming handle.
  static Expected<std::unique_ptr<JanusClient>> Connect(const JanusOptions& options);
  ~JanusClient();  // destroys the Janus session (best effort)

  // A new private RTP mountpoint (H.264 pt 96 + Opus pt 111); `id` 0: a random one.
  Expected<Mountpoint> CreateMountpoint(const std::string& label, uint64_t id = 0);
  // NOT_FOUND when it is already gone.
  Status DestroyMountpoint(const Mountpoint& mountpoint);
  // Ids of the mountpoints whose description says this instance made them.
  Expected<std::vector<uint64_t>> OwnMountpoints();
  // Removes them (a previous run's leftovers). Returns how many went.
  Expected<int> RemoveStale();
  // Keeps the Janus session alive (Janus drops it after session_timeout of silence).
  // UNAVAILABLE when Janus is gone or no longer knows the session (restarted).
  Status Keepalive();
  // A new Janus session and handle (after Janus restarted).
  Status Reconnect();
  // A Janus API token for viewers, valid for the streaming plugin only (admin API
  // add_token), and its removal (NOT_FOUND when Janus no longer knows it).
  Expected<std::string> AddToken();
  Status RemoveToken(const std::string& token);

  const JanusOptions& options() const { return options_; }

 private:
  struct Url {
    std::string host, port, path;
  };
  JanusClient(JanusOptions options, Url url, Url admin_url);
  static Expected<Url> ParseUrl(const std::string& text, const char* key, const char* default_path);
  Status Attach();
  // POSTs `body` (JSON text) to `path`; returns the reply's JSON text.
  Expected<std::string> Post(const std::string& path, const std::string& body);
  Expected<std::string> PostTo(const Url& url, const std::string& path, const std::string& body);
  // POSTs an admin API request (JSON text, admin_secret added); its error as a status.
  Status AdminRequest(const std::string& what, const std::string& body_json);
  Expected<std::string> PluginRequest(const std::string& body_json);

  const JanusOptions options_;
  const Url url_;
  const Url admin_url_;
  std::mutex mu_;
  uint64_t session_ = 0;
  uint64_t handle_ = 0;
  uint64_t transaction_ = 0;
};

}  // namespace lipsync::webrtc
