// Server configuration: the deployment guide's two config.yaml files (accepted
// verbatim), plus our additions. Loading rejects unknown keys and wrong types with a
// message naming the file and the key path (e.g. "inference.yaml: server.queue_size:
// expected an integer, got 'many'"). Defaults are the guide's.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"

namespace lipsync::config {

enum class EvictionPolicy { kLru, kLfu };
enum class AssignmentStrategy { kRoundRobin, kLeastLoaded };
enum class OutputFormat { kJpeg, kRaw };
enum class PasteMode { kSynctalk328, kResize };

struct LoggingConfig {
  std::string level = "info";  // debug, info, warn, error
  bool log_compositing_times = true;
  bool log_cache_stats = false;
  double cache_stats_interval_seconds = 60;  // how often log_cache_stats logs
  std::string audit_log_path;  // one JSON line per RPC appended here; empty = off
  // What a call does when its audit line cannot be written (disk full, I/O error):
  // false (fail-open): the call goes on, the failure is logged and counted;
  // true (fail-closed): the call is answered UNAVAILABLE (nothing unaudited happens).
  bool audit_fail_closed = false;
};

// Token buckets counted in frames: one per model id (tenant) and one per credential
// (caller). 0 frames/s = no limit.
struct RateLimitConfig {
  double frames_per_second_per_model = 0;
  double burst_frames = 0;  // bucket size; 0 = one second's worth (min one batch of 1)
  double frames_per_second_per_credential = 0;
  double credential_burst_frames = 0;  // 0 = one second's worth
};

// Who may call (docs/OPERATIONS.md "Credentials"). With neither key set every caller
// may use every tenant (the local demo). server.api_key alone is one full-access key.
struct AuthConfig {
  std::string credentials_file;  // YAML: API keys (hashed), JWT keys by kid, cert subjects
  double reload_interval_seconds = 5;  // the file is re-read when it changes
};

// gRPC transport limits per server (docs/OPERATIONS.md "Connection limits").
struct ConnectionConfig {
  int max_concurrent_streams = 64;          // per HTTP/2 connection
  double keepalive_time_seconds = 60;       // server pings an idle connection this often
  double keepalive_timeout_seconds = 20;    // no ping ack by then: connection closed
  double max_connection_idle_seconds = 600; // no call for this long: GOAWAY
  int64_t resource_quota_mb = 2048;         // memory gRPC may use for this server
  int max_threads = 256;                    // threads gRPC may use for this server
  double request_read_timeout_seconds = 30; // a request not fully received by then is cut
};

// Prometheus text exposition over plain HTTP (GET /metrics).
struct MetricsConfig {
  int port = 0;                    // 0 = off
  std::string host = "127.0.0.1";  // "0.0.0.0" lets a remote Prometheus scrape
};

struct TlsConfig {
  std::string cert_path;       // PEM server certificate chain; empty: plaintext
  std::string key_path;        // PEM private key
  std::string client_ca_path;  // set: clients must present a certificate it signed
};

// ---- inference server (guide: go-inference-server/config.yaml) ----
struct InferenceModelEntry {
  std::string model_path;          // the lip-sync network (.onnx)
  bool preload = false;            // load at startup instead of on first request
  std::string audio_encoder_path;  // optional; default: audio_encoder.onnx beside model_path
};

struct InferenceConfig {
  std::string source_path;  // file it was loaded from ("" for defaults)
  struct Server {
    std::string port = ":50051";  // ":PORT" (all interfaces) or "HOST:PORT"
    int max_message_size_mb = 100;
    int worker_count_per_gpu = 8;
    int queue_size = 50;
    int max_batch_size = 64;     // frames per request (and per dynamic batch)
    int max_queue_delay_us = 0;  // dynamic batching window; 0 = off
    int shutdown_grace_seconds = 30;
    std::string api_key;  // non-empty: requests need "authorization: Bearer <key>"
    std::string api_key_file;  // instead of api_key: read at load (a mounted Secret)
    TlsConfig tls;
    RateLimitConfig rate_limit;
    ConnectionConfig connection;
    // Fraction of queue_size one model may hold; beyond it RESOURCE_EXHAUSTED for that
    // model only (a noisy tenant cannot fill the whole queue). 1 = no share limit.
    double max_queue_share_per_model = 0.5;
    // Failures answered as the guide's clients expect: status OK, success=false, error.
    bool legacy_errors = false;
  } server;
  AuthConfig auth;
  struct Gpus {
    bool enabled = true;
    int count = 0;  // 0 = auto-detect (NVML)
    double memory_gb_per_gpu = 24;
    AssignmentStrategy assignment_strategy = AssignmentStrategy::kRoundRobin;
  } gpus;
  struct Onnx {
    std::string library_path;  // empty: the bundled libonnxruntime.so.1
    bool use_cuda = true;
    int cuda_device_id = 0;
    bool require_cuda = false;  // true: no usable CUDA is a startup error
    // Searched before the system library path for CUDA 13 / cuDNN 9 (e.g. NVIDIA's pip
    // wheels: <site-packages>/nvidia/cu13/lib, <site-packages>/nvidia/cudnn/lib).
    std::vector<std::string> cuda_library_dirs;
    int intra_op_threads = 0;   // global ORT thread pool; 0 = ORT default
    int inter_op_threads = 1;
  } onnx;
  struct Capacity {
    int max_models_per_gpu = 1000;
    EvictionPolicy eviction_policy = EvictionPolicy::kLfu;
    double idle_timeout_minutes = 60;       // 0 = never unload idle models
    double failed_load_retry_seconds = 30;  // a failed load is remembered this long,
    double failed_load_retry_max_seconds = 600;  // doubling per failure up to this
  } capacity;
  struct Limits {
    int64_t max_model_file_mb = 2048;  // a larger .onnx is a load error, never read
  } limits;
  std::map<std::string, InferenceModelEntry> models;
  std::string model_root;  // every <id>/checkpoint/model_best.onnx is a model
  // Optimized-graph cache (inference/model_cache.h), owned by the server; "" = off.
  std::string model_cache_dir;
  // Disk cap on model_cache_dir in MiB: least recently used entries are removed after
  // a new entry is written, until the folder fits (0 = no cap).
  int64_t model_cache_max_mb = 10240;
  LoggingConfig logging;
  MetricsConfig metrics;
};

// ---- compositing server (guide: go-compositing-server/config.yaml) ----
struct CompositingModelEntry {
  std::string background_dir;   // frames/frame_NNNN.png (or .jpg)
  std::string crop_rects_path;  // crop_rects.json
  int num_frames = 0;           // 0: count the frames found
  bool preload_backgrounds = true;
};

struct CompositingConfig {
  std::string source_path;
  struct Server {
    std::string port = ":50052";
    int max_message_size_mb = 100;
    int max_batch_size = 64;
    int compositing_threads = 0;  // 0 = one per core
    int shutdown_grace_seconds = 30;
    int max_inflight_requests = 64;  // admission control; 0 = no bound
    // Prepared avatar files (avatar/prepared_store.h), one per avatar, owned by this
    // server. "": $XDG_CACHE_HOME/lipsync/avatars (else ~/.cache/...); "off": none.
    std::string avatar_store_dir;
    std::string api_key;
    std::string api_key_file;  // instead of api_key: read at load (a mounted Secret)
    TlsConfig tls;
    RateLimitConfig rate_limit;
    ConnectionConfig connection;
    bool legacy_errors = false;  // as on the inference server
  } server;
  AuthConfig auth;
  struct InferenceServer {
    // One inference server, or a load balancer in front of several (deploy/nginx).
    std::string url = "localhost:50051";
    // Several inference servers, each model routed to one by rendezvous hashing
    // (rpc/grpc_inference_backend.h). Set: used instead of url.
    std::vector<std::string> urls;
    double timeout_seconds = 10;
    int max_retries = 3;
    std::string api_key;      // sent to the inference server
    std::string api_key_file;  // instead of api_key: read at load (a mounted Secret)
    std::string tls_ca_path;  // set: connect with TLS, verifying with this CA
  } inference_server;
  struct Capacity {
    int max_models = 11000;
    int background_cache_frames = 600;
    EvictionPolicy eviction_policy = EvictionPolicy::kLfu;
    double idle_timeout_minutes = 60;
    int64_t memory_limit_mb = 0;  // all avatars together; 0 = no limit
    double failed_load_retry_seconds = 30;       // a failed load is remembered this long,
    double failed_load_retry_max_seconds = 600;  // doubling per failure up to this
  } capacity;
  // Bounds on a tenant's files, checked before anything is allocated.
  struct Limits {
    int max_image_width = 7680;
    int max_image_height = 4320;
    int64_t max_image_file_mb = 64;       // one background frame file
    int64_t max_crop_rects_file_mb = 16;  // crop_rects.json
    int max_json_depth = 16;
    int max_frames = 100000;  // frames per avatar
  } limits;
  struct Output {
    OutputFormat format = OutputFormat::kJpeg;
    int jpeg_quality = 75;
    PasteMode paste_mode = PasteMode::kSynctalk328;
    int feather_px = 0;
    bool ping_pong = false;           // default loop mode
    bool region_jpeg = true;          // re-encode only the crop region (issue 6)
    bool compact_backgrounds = true;  // keep JPEG + crop region, not full frames
  } output;
  // Live sessions (issue 10; session::SessionConfig mirrors this).
  struct Session {
    int max_sessions = 16;             // per server; beyond it RESOURCE_EXHAUSTED
    double max_buffered_seconds = 60;  // queued speech per session
    double max_chunk_seconds = 10;     // one audio chunk
    int max_ahead_frames = 3;          // frames sent before their time
    int batch_frames = 8;              // frames per inference batch
    double vad_threshold_dbfs = -45;   // a frame quieter than this (RMS) is silent
    int crossfade_frames = 3;          // at speech start and end
    int default_bitrate_kbps = 1500;   // H264 when the client asks for 0
    int vbv_buffer_ms = 250;           // H264 rate-control buffer, as time at the bitrate
    int key_interval_frames = 50;      // H264
    std::string x264_preset = "ultrafast";
    int viewer_queue_frames = 50;  // transport queue per viewer before frames drop
  } session;
  std::map<std::string, CompositingModelEntry> models;
  std::string model_root;
  LoggingConfig logging;
  MetricsConfig metrics;
  // The browser page and its WebSocket session (web/web_server.h); TLS from server.tls.
  struct Web {
    std::string host = "127.0.0.1";  // "0.0.0.0" serves other machines
    int port = 8080;                 // 0 = off
    std::string root;                // the page's files; empty: the built-in path
    int max_connections = 64;        // HTTP + WebSocket connections at once
  } web;
  // Live sessions over WebRTC through Janus (issue 13; docs/STREAMING.md, OPERATIONS.md).
  struct WebRtc {
    bool enabled = false;
    std::string janus_url = "http://127.0.0.1:8088/janus";  // as this server reaches it
    std::string public_janus_url;  // as the page reaches it; empty: janus_url
    std::string api_secret;        // Janus's (never sent to a browser)
    std::string admin_key;         // the streaming plugin's
    std::string admin_url = "http://127.0.0.1:7088/admin";  // per-session viewer tokens
    std::string admin_secret;
    std::string rtp_host;       // where Janus receives RTP; empty: janus_url's host
    std::string rtp_interface;  // the interface Janus binds mountpoints on
    std::string instance = "lipsync";  // names this server's mountpoints
    double timeout_seconds = 5;        // each Janus API request
    struct IceServer {
      std::vector<std::string> urls;
      std::string username, credential;
    };
    std::vector<IceServer> ice_servers;  // for the page's RTCPeerConnection, by name
  } webrtc;
};

// Parse a YAML file. NOT_FOUND if missing, INVALID_ARGUMENT with file and key path
// for syntax errors, unknown keys, wrong types and out-of-range values.
Expected<InferenceConfig> LoadInferenceConfig(const std::string& path);
Expected<CompositingConfig> LoadCompositingConfig(const std::string& path);
// The Load functions also read every *.api_key_file into its api_key (see
// ReadKeyFile); the Parse functions only check that a key and its file are not both set.
// Same, from YAML text; `name` stands for the file in messages.
Expected<InferenceConfig> ParseInferenceConfig(const std::string& yaml, const std::string& name);
Expected<CompositingConfig> ParseCompositingConfig(const std::string& yaml,
                                                   const std::string& name);

// A credential from a file (a Kubernetes Secret's mount): at most kMaxKeyFileBytes,
// trailing newlines (\n, \r\n) stripped. NOT_FOUND when missing, INVALID_ARGUMENT
// when empty, too big or not a regular file; every message names `key` and the file.
inline constexpr size_t kMaxKeyFileBytes = 4096;
Expected<std::string> ReadKeyFile(const std::string& key, const std::string& path);

// ":50051" -> "0.0.0.0:50051"; "host:port" unchanged. INVALID_ARGUMENT if malformed.
Expected<std::string> ListenAddress(const std::string& port);

}  // namespace lipsync::config
