#include "config/config.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/model_id.h"
#include "config/yaml_reader.h"

namespace lipsync::config {
namespace {

using internal::ErrorList;
using internal::MapReader;

// gRPC caps one message at INT_MAX bytes.
constexpr int64_t kMaxMessageSizeMb = 2047;
constexpr int64_t kMaxPort = 65535;

void ReadLogging(MapReader& r, LoggingConfig* logging) {
  r.String("level", &logging->level);
  if (logging->level != "debug" && logging->level != "info" && logging->level != "warn" &&
      logging->level != "error") {
    r.Fail("level", "expected one of 'debug' 'info' 'warn' 'error', got '" + logging->level + "'");
  }
  r.Bool("log_compositing_times", &logging->log_compositing_times);
  r.Bool("log_cache_stats", &logging->log_cache_stats);
  r.Double("cache_stats_interval_seconds", &logging->cache_stats_interval_seconds, 0,
           /*min_exclusive=*/true);
  r.String("audit_log_path", &logging->audit_log_path);
  r.Bool("audit_fail_closed", &logging->audit_fail_closed);
}

void ReadRateLimit(MapReader& r, RateLimitConfig* limit) {
  r.Double("frames_per_second_per_model", &limit->frames_per_second_per_model, 0);
  r.Double("burst_frames", &limit->burst_frames, 0);
  if (limit->burst_frames > 0 && limit->frames_per_second_per_model == 0) {
    r.Fail("burst_frames",
           "expected frames_per_second_per_model as well (a burst without a rate limits "
           "nothing), got only burst_frames");
  }
  r.Double("frames_per_second_per_credential", &limit->frames_per_second_per_credential, 0);
  r.Double("credential_burst_frames", &limit->credential_burst_frames, 0);
  if (limit->credential_burst_frames > 0 && limit->frames_per_second_per_credential == 0) {
    r.Fail("credential_burst_frames",
           "expected frames_per_second_per_credential as well (a burst without a rate limits "
           "nothing), got only credential_burst_frames");
  }
}

void ReadAuth(MapReader& r, AuthConfig* auth) {
  r.String("credentials_file", &auth->credentials_file);
  r.Double("reload_interval_seconds", &auth->reload_interval_seconds, 0, /*min_exclusive=*/true);
}

void ReadConnection(MapReader& r, ConnectionConfig* c) {
  r.Int("max_concurrent_streams", &c->max_concurrent_streams, 1, 100000);
  r.Double("keepalive_time_seconds", &c->keepalive_time_seconds, 0, /*min_exclusive=*/true);
  r.Double("keepalive_timeout_seconds", &c->keepalive_timeout_seconds, 0, true);
  r.Double("max_connection_idle_seconds", &c->max_connection_idle_seconds, 0, true);
  r.Int64("resource_quota_mb", &c->resource_quota_mb, 16, 1 << 20);
  r.Int("max_threads", &c->max_threads, 4, 100000);
  r.Double("request_read_timeout_seconds", &c->request_read_timeout_seconds, 0, true);
}

void ReadRetry(MapReader& r, double* first, double* max) {
  r.Double("failed_load_retry_seconds", first, 0);
  r.Double("failed_load_retry_max_seconds", max, 0);
  if (*max < *first) {
    r.Fail("failed_load_retry_max_seconds",
           "expected at least failed_load_retry_seconds (" + std::to_string(*first) + "), got " +
               std::to_string(*max));
  }
}

void ReadMetrics(MapReader& r, MetricsConfig* metrics) {
  r.Int("port", &metrics->port, 0, kMaxPort);
  r.String("host", &metrics->host);
  if (metrics->host.empty()) {
    r.Fail("host", "expected an address to bind, e.g. 127.0.0.1 or 0.0.0.0, got nothing");
  }
}

void ReadTls(MapReader& r, TlsConfig* tls) {
  r.String("cert_path", &tls->cert_path);
  r.String("key_path", &tls->key_path);
  r.String("client_ca_path", &tls->client_ca_path);
  if (tls->cert_path.empty() != tls->key_path.empty()) {
    r.Fail(tls->cert_path.empty() ? "cert_path" : "key_path",
           "expected cert_path and key_path together (TLS needs both), got only one");
  }
  if (!tls->client_ca_path.empty() && tls->cert_path.empty()) {
    r.Fail("client_ca_path",
           "expected cert_path and key_path as well (client certificates "
           "are checked only on a TLS listener)");
  }
}

void ReadPort(MapReader& r, std::string* port) {
  r.String("port", port);
  Expected<std::string> address = ListenAddress(*port);
  if (!address.ok()) r.Fail("port", address.status().message());
}

// Model ids become directory names, so a bad one is a config error, not a runtime one.
std::string ModelIdProblem(const std::string& id) { return ValidateModelId(id).message(); }

void RequireNonEmpty(MapReader& r, const char* key, const std::string& value, const char* what) {
  if (value.empty()) r.Fail(key, std::string("expected ") + what + ", got nothing");
}

template <typename Config>
Expected<Config> ParseDocument(const std::string& yaml, const std::string& name,
                               void (*read)(MapReader&, Config*)) {
  ErrorList errors{name, {}};
  Config config;
  try {
    YAML::Node root = YAML::Load(yaml);
    MapReader reader(root, "", &errors);
    if (reader.valid()) {
      read(reader, &config);
      reader.Finish();
    }
  } catch (const YAML::Exception& e) {
    // mark is 0-based; editors count from 1.
    return Status::InvalidArgument(
        name + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) +
        ": YAML syntax error: " + e.msg + " (expected a YAML mapping like the deployment guide's)");
  } catch (const std::exception& e) {
    return Status::InvalidArgument(name + ": cannot read configuration: " + e.what());
  }
  if (!errors.messages.empty()) {
    std::string message = errors.messages.front();
    for (size_t i = 1; i < errors.messages.size(); ++i) message += "; " + errors.messages[i];
    return Status::InvalidArgument(message);
  }
  return config;
}

// The internal hop (compositing -> inference) carries per frame the uint8 visual input
// (6x320x320), the float32 audio features (32x16x16) and answers with the uint8 mouth
// region (3x320x320). A full batch must fit in one message on both servers.
constexpr int64_t kInternalHopBytesPerFrame = 6 * 320 * 320 + 32 * 16 * 16 * 4;

void CheckBatchFitsMessage(MapReader& r, int max_batch_size, int max_message_size_mb) {
  const int64_t needed = static_cast<int64_t>(max_batch_size) * kInternalHopBytesPerFrame;
  const int64_t allowed = static_cast<int64_t>(max_message_size_mb) * 1024 * 1024;
  if (needed > allowed) {
    r.Fail("max_message_size_mb",
           "expected at least " + std::to_string((needed + (1 << 20) - 1) >> 20) +
               " MB to carry a full batch of max_batch_size " + std::to_string(max_batch_size) +
               " frames (" + std::to_string(kInternalHopBytesPerFrame) +
               " bytes each on the inference hop), got " + std::to_string(max_message_size_mb));
  }
}

// api_key, or api_key_file (read by the Load functions), never both.
void ReadApiKey(MapReader& r, std::string* key, std::string* file) {
  r.String("api_key", key);
  r.String("api_key_file", file);
  if (!key->empty() && !file->empty()) {
    r.Fail("api_key_file",
           "api_key and api_key_file are both set; expected one of them (the file for a "
           "mounted Secret)");
  }
}

// Replaces `key` with the contents of `file` when one is named.
Status ResolveKeyFile(const std::string& name, const std::string& file, std::string* key) {
  if (file.empty()) return Status::Ok();
  LIPSYNC_ASSIGN_OR_RETURN(*key, ReadKeyFile(name, file));
  return Status::Ok();
}

void ReadInference(MapReader& root, InferenceConfig* c) {
  root.Section("server", [&](MapReader& r) {
    auto& s = c->server;
    ReadPort(r, &s.port);
    r.Int("max_message_size_mb", &s.max_message_size_mb, 1, kMaxMessageSizeMb);
    r.Int("worker_count_per_gpu", &s.worker_count_per_gpu, 1, 1024);
    r.Int("queue_size", &s.queue_size, 1, INT32_MAX);
    r.Int("max_batch_size", &s.max_batch_size, 1, 4096);
    r.Int("max_queue_delay_us", &s.max_queue_delay_us, 0, 10'000'000);
    r.Int("shutdown_grace_seconds", &s.shutdown_grace_seconds, 0, 86400);
    r.Bool("legacy_errors", &s.legacy_errors);
    ReadApiKey(r, &s.api_key, &s.api_key_file);
    r.Section("tls", [&](MapReader& t) { ReadTls(t, &s.tls); });
    r.Section("rate_limit", [&](MapReader& l) { ReadRateLimit(l, &s.rate_limit); });
    r.Section("connection", [&](MapReader& l) { ReadConnection(l, &s.connection); });
    CheckBatchFitsMessage(r, s.max_batch_size, s.max_message_size_mb);
    r.Double("max_queue_share_per_model", &s.max_queue_share_per_model, 0, true);
    if (s.max_queue_share_per_model > 1) {
      r.Fail("max_queue_share_per_model",
             "expected a fraction of queue_size in (0, 1], got " +
                 std::to_string(s.max_queue_share_per_model));
    }
  });
  root.Section("auth", [&](MapReader& r) { ReadAuth(r, &c->auth); });
  root.Section("gpus", [&](MapReader& r) {
    auto& g = c->gpus;
    r.Bool("enabled", &g.enabled);
    r.Int("count", &g.count, 0, 1024);
    r.Double("memory_gb_per_gpu", &g.memory_gb_per_gpu, 0, /*min_exclusive=*/true);
    r.Enum("assignment_strategy", &g.assignment_strategy,
           {{"round-robin", AssignmentStrategy::kRoundRobin},
            {"least-loaded", AssignmentStrategy::kLeastLoaded}});
  });
  root.Section("onnx", [&](MapReader& r) {
    auto& o = c->onnx;
    r.String("library_path", &o.library_path);
    r.Bool("use_cuda", &o.use_cuda);
    r.Int("cuda_device_id", &o.cuda_device_id, 0, 1023);
    r.Bool("require_cuda", &o.require_cuda);
    r.StringList("cuda_library_dirs", &o.cuda_library_dirs, 64);
    r.Int("intra_op_threads", &o.intra_op_threads, 0, 4096);
    r.Int("inter_op_threads", &o.inter_op_threads, 0, 4096);
  });
  root.Section("capacity", [&](MapReader& r) {
    auto& cap = c->capacity;
    r.Int("max_models_per_gpu", &cap.max_models_per_gpu, 1, INT32_MAX);
    r.Enum("eviction_policy", &cap.eviction_policy,
           {{"lru", EvictionPolicy::kLru}, {"lfu", EvictionPolicy::kLfu}});
    r.Double("idle_timeout_minutes", &cap.idle_timeout_minutes, 0);
    ReadRetry(r, &cap.failed_load_retry_seconds, &cap.failed_load_retry_max_seconds);
  });
  root.Section("limits", [&](MapReader& r) {
    r.Int64("max_model_file_mb", &c->limits.max_model_file_mb, 1, 1 << 20);
  });
  root.Entries("models", ModelIdProblem, [&](const std::string& id, MapReader& r) {
    InferenceModelEntry entry;
    r.String("model_path", &entry.model_path);
    r.Bool("preload", &entry.preload);
    r.String("audio_encoder_path", &entry.audio_encoder_path);
    RequireNonEmpty(r, "model_path", entry.model_path, "the path of the model's .onnx file");
    c->models[id] = std::move(entry);
  });
  root.String("model_root", &c->model_root);
  root.String("model_cache_dir", &c->model_cache_dir);
  root.Int64("model_cache_max_mb", &c->model_cache_max_mb, 0, int64_t{1} << 30);
  root.Section("logging", [&](MapReader& r) { ReadLogging(r, &c->logging); });
  root.Section("metrics", [&](MapReader& r) { ReadMetrics(r, &c->metrics); });
}

void ReadCompositing(MapReader& root, CompositingConfig* c) {
  root.Section("server", [&](MapReader& r) {
    auto& s = c->server;
    ReadPort(r, &s.port);
    r.Int("max_message_size_mb", &s.max_message_size_mb, 1, kMaxMessageSizeMb);
    r.Int("max_batch_size", &s.max_batch_size, 1, 4096);
    r.Int("compositing_threads", &s.compositing_threads, 0, 4096);
    r.Int("max_inflight_requests", &s.max_inflight_requests, 0, 1000000);
    r.Int("shutdown_grace_seconds", &s.shutdown_grace_seconds, 0, 86400);
    r.String("avatar_store_dir", &s.avatar_store_dir);
    r.Bool("legacy_errors", &s.legacy_errors);
    ReadApiKey(r, &s.api_key, &s.api_key_file);
    r.Section("tls", [&](MapReader& t) { ReadTls(t, &s.tls); });
    r.Section("rate_limit", [&](MapReader& l) { ReadRateLimit(l, &s.rate_limit); });
    r.Section("connection", [&](MapReader& l) { ReadConnection(l, &s.connection); });
    CheckBatchFitsMessage(r, s.max_batch_size, s.max_message_size_mb);
  });
  root.Section("auth", [&](MapReader& r) { ReadAuth(r, &c->auth); });
  root.Section("inference_server", [&](MapReader& r) {
    auto& i = c->inference_server;
    r.String("url", &i.url);
    RequireNonEmpty(r, "url", i.url, "the inference server's HOST:PORT");
    r.StringList("urls", &i.urls, 256);  // checked by GrpcInferenceBackend::Create
    r.Double("timeout_seconds", &i.timeout_seconds, 0, /*min_exclusive=*/true);
    r.Int("max_retries", &i.max_retries, 0, 100);
    ReadApiKey(r, &i.api_key, &i.api_key_file);
    r.String("tls_ca_path", &i.tls_ca_path);
  });
  root.Section("capacity", [&](MapReader& r) {
    auto& cap = c->capacity;
    r.Int("max_models", &cap.max_models, 1, INT32_MAX);
    r.Int("background_cache_frames", &cap.background_cache_frames, 1, INT32_MAX);
    r.Enum("eviction_policy", &cap.eviction_policy,
           {{"lru", EvictionPolicy::kLru}, {"lfu", EvictionPolicy::kLfu}});
    r.Double("idle_timeout_minutes", &cap.idle_timeout_minutes, 0);
    r.Int64("memory_limit_mb", &cap.memory_limit_mb, 0, INT64_MAX);
    ReadRetry(r, &cap.failed_load_retry_seconds, &cap.failed_load_retry_max_seconds);
  });
  root.Section("limits", [&](MapReader& r) {
    auto& l = c->limits;
    r.Int("max_image_width", &l.max_image_width, 16, 65535);
    r.Int("max_image_height", &l.max_image_height, 16, 65535);
    r.Int64("max_image_file_mb", &l.max_image_file_mb, 1, 1 << 16);
    r.Int64("max_crop_rects_file_mb", &l.max_crop_rects_file_mb, 1, 1 << 16);
    r.Int("max_json_depth", &l.max_json_depth, 2, 1000);
    r.Int("max_frames", &l.max_frames, 1, 10'000'000);
  });
  root.Section("output", [&](MapReader& r) {
    auto& o = c->output;
    r.Enum("format", &o.format, {{"jpeg", OutputFormat::kJpeg}, {"raw", OutputFormat::kRaw}});
    r.Int("jpeg_quality", &o.jpeg_quality, 1, 100);
    r.Enum("paste_mode", &o.paste_mode,
           {{"synctalk328", PasteMode::kSynctalk328}, {"resize", PasteMode::kResize}});
    r.Int("feather_px", &o.feather_px, 0, 160);
    r.Bool("ping_pong", &o.ping_pong);
    r.Bool("region_jpeg", &o.region_jpeg);
    r.Bool("compact_backgrounds", &o.compact_backgrounds);
  });
  root.Section("session", [&](MapReader& r) {
    auto& s = c->session;
    r.Int("max_sessions", &s.max_sessions, 1, 100000);
    r.Double("max_buffered_seconds", &s.max_buffered_seconds, 0, /*min_exclusive=*/true);
    if (s.max_buffered_seconds > 3600) r.Fail("max_buffered_seconds", "expected at most 3600");
    r.Double("max_chunk_seconds", &s.max_chunk_seconds, 0, /*min_exclusive=*/true);
    if (s.max_chunk_seconds > 60) r.Fail("max_chunk_seconds", "expected at most 60");
    r.Int("max_ahead_frames", &s.max_ahead_frames, 0, 50);
    r.Int("batch_frames", &s.batch_frames, 1, 64);
    if (s.batch_frames > c->server.max_batch_size) {
      r.Fail("batch_frames", "expected at most server.max_batch_size (" +
                                 std::to_string(c->server.max_batch_size) + ")");
    }
    r.Double("vad_threshold_dbfs", &s.vad_threshold_dbfs, -120);
    if (s.vad_threshold_dbfs > 0) r.Fail("vad_threshold_dbfs", "expected at most 0 (dBFS)");
    r.Int("crossfade_frames", &s.crossfade_frames, 0, 25);
    r.Int("default_bitrate_kbps", &s.default_bitrate_kbps, 50, 50000);
    r.Int("vbv_buffer_ms", &s.vbv_buffer_ms, 10, 10000);
    r.Int("key_interval_frames", &s.key_interval_frames, 1, 3000);
    r.Enum("x264_preset", &s.x264_preset,
           {{"ultrafast", std::string("ultrafast")}, {"superfast", std::string("superfast")},
            {"veryfast", std::string("veryfast")}, {"faster", std::string("faster")},
            {"fast", std::string("fast")}, {"medium", std::string("medium")}});
    r.Int("viewer_queue_frames", &s.viewer_queue_frames, 1, 10000);
  });
  root.Entries("models", ModelIdProblem, [&](const std::string& id, MapReader& r) {
    CompositingModelEntry entry;
    r.String("background_dir", &entry.background_dir);
    r.String("crop_rects_path", &entry.crop_rects_path);
    r.Int("num_frames", &entry.num_frames, 0, INT32_MAX);
    r.Bool("preload_backgrounds", &entry.preload_backgrounds);
    RequireNonEmpty(r, "background_dir", entry.background_dir,
                    "the directory holding frame_NNNN.png");
    RequireNonEmpty(r, "crop_rects_path", entry.crop_rects_path, "the path of crop_rects.json");
    c->models[id] = std::move(entry);
  });
  root.String("model_root", &c->model_root);
  root.Section("logging", [&](MapReader& r) { ReadLogging(r, &c->logging); });
  root.Section("metrics", [&](MapReader& r) { ReadMetrics(r, &c->metrics); });
  root.Section("web", [&](MapReader& r) {
    r.String("host", &c->web.host);
    if (c->web.host.empty()) r.Fail("host", "expected an address to bind, e.g. 127.0.0.1");
    r.Int("port", &c->web.port, 0, kMaxPort);
    r.String("root", &c->web.root);
    r.Int("max_connections", &c->web.max_connections, 1, 100000);
  });
  root.Section("webrtc", [&](MapReader& r) {
    CompositingConfig::WebRtc& w = c->webrtc;
    r.Bool("enabled", &w.enabled);
    r.String("janus_url", &w.janus_url);
    r.String("public_janus_url", &w.public_janus_url);
    r.String("api_secret", &w.api_secret);
    r.String("admin_key", &w.admin_key);
    r.String("admin_url", &w.admin_url);
    r.String("admin_secret", &w.admin_secret);
    r.String("rtp_host", &w.rtp_host);
    r.String("rtp_interface", &w.rtp_interface);
    r.String("instance", &w.instance);
    r.Double("timeout_seconds", &w.timeout_seconds, 0, true);
    r.Entries(
        "ice_servers",
        [](const std::string& name) -> std::string {
          return name.empty() || name.size() > 64 ? "expected a name of 1..64 characters" : "";
        },
        [&](const std::string&, MapReader& e) {
          CompositingConfig::WebRtc::IceServer ice;
          e.StringList("urls", &ice.urls, 16);
          e.String("username", &ice.username);
          e.String("credential", &ice.credential);
          if (ice.urls.empty()) e.Fail("urls", "expected at least one stun:/turn:/turns: URL");
          w.ice_servers.push_back(std::move(ice));
        });
    if (w.enabled) {
      RequireNonEmpty(r, "api_secret", w.api_secret, "Janus's api_secret (janus.jcfg)");
      RequireNonEmpty(r, "admin_key", w.admin_key,
                      "the streaming plugin's admin_key (janus.plugin.streaming.jcfg)");
      RequireNonEmpty(r, "admin_secret", w.admin_secret,
                      "Janus's admin_secret (janus.jcfg), for per-session viewer tokens");
    }
  });
}

Expected<std::string> ReadConfigFile(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return Status::NotFound("config file '" + path +
                            "' does not exist (expected a YAML file; pass --config PATH)");
  }
  if (std::filesystem::is_directory(path, ec)) {
    return Status::InvalidArgument("config file '" + path +
                                   "' is a directory (expected a YAML file)");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound("cannot open config file '" + path + "' for reading");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

Expected<InferenceConfig> ParseInferenceConfig(const std::string& yaml, const std::string& name) {
  return ParseDocument<InferenceConfig>(yaml, name, &ReadInference);
}

Expected<CompositingConfig> ParseCompositingConfig(const std::string& yaml,
                                                   const std::string& name) {
  return ParseDocument<CompositingConfig>(yaml, name, &ReadCompositing);
}

Expected<InferenceConfig> LoadInferenceConfig(const std::string& path) {
  LIPSYNC_ASSIGN_OR_RETURN(std::string text, ReadConfigFile(path));
  LIPSYNC_ASSIGN_OR_RETURN(InferenceConfig config, ParseInferenceConfig(text, path));
  config.source_path = path;
  LIPSYNC_RETURN_IF_ERROR(
      ResolveKeyFile("server.api_key_file", config.server.api_key_file, &config.server.api_key));
  return config;
}

Expected<CompositingConfig> LoadCompositingConfig(const std::string& path) {
  LIPSYNC_ASSIGN_OR_RETURN(std::string text, ReadConfigFile(path));
  LIPSYNC_ASSIGN_OR_RETURN(CompositingConfig config, ParseCompositingConfig(text, path));
  config.source_path = path;
  LIPSYNC_RETURN_IF_ERROR(
      ResolveKeyFile("server.api_key_file", config.server.api_key_file, &config.server.api_key));
  LIPSYNC_RETURN_IF_ERROR(ResolveKeyFile("inference_server.api_key_file",
                                         config.inference_server.api_key_file,
                                         &config.inference_server.api_key));
  return config;
}

Expected<std::string> ReadKeyFile(const std::string& key, const std::string& path) {
  const std::string where = key + " '" + path.substr(0, 256) + "'";
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) {
    return Status::NotFound(where + " does not exist (expected a file holding the key, e.g. a "
                                    "mounted Kubernetes Secret)");
  }
  if (!std::filesystem::is_regular_file(status)) {
    return Status::InvalidArgument(where + " is not a regular file (expected the key's file)");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound("cannot open " + where + " for reading");
  std::string text(kMaxKeyFileBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > kMaxKeyFileBytes) {
    return Status::InvalidArgument(where + " is over " + std::to_string(kMaxKeyFileBytes) +
                                   " bytes (expected one key)");
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  if (text.empty()) return Status::InvalidArgument(where + " is empty (expected one key)");
  return text;
}

Expected<std::string> ListenAddress(const std::string& port) {
  auto bad = [&](const char* why) {
    return Status::InvalidArgument("invalid listen address '" + port + "': " + why +
                                   " (expected ':PORT', 'HOST:PORT' or '[IPv6]:PORT' with PORT "
                                   "in 0..65535; 0 picks a free port)");
  };
  auto parse_port = [](const std::string& digits, int64_t* out) {
    if (digits.empty() || digits.size() > 5) return false;
    for (char ch : digits) {
      if (ch < '0' || ch > '9') return false;
    }
    *out = std::stoll(digits);
    return *out <= kMaxPort;
  };
  int64_t number = 0;
  if (parse_port(port, &number)) return "0.0.0.0:" + port;  // bare "50051"
  const size_t colon = port.rfind(':');
  if (colon == std::string::npos) return bad("no ':' before the port");
  std::string host = port.substr(0, colon);
  const std::string digits = port.substr(colon + 1);
  if (!parse_port(digits, &number)) return bad("the port is not a number in 0..65535");
  if (host.empty()) return "0.0.0.0:" + digits;
  const bool bracketed = host.front() == '[' && host.back() == ']' && host.size() > 2;
  if (!bracketed && host.find(':') != std::string::npos) {
    return bad("an IPv6 host must be in brackets");
  }
  for (char ch : host) {
    if (ch == ' ' || ch == '/' || ch == '\t') return bad("the host contains a space or '/'");
  }
  return port;
}

}  // namespace lipsync::config
