#include "config/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <unistd.h>

namespace lipsync::config {
namespace {

using ::testing::HasSubstr;

std::string TestData(const std::string& name) {
  return std::string(LIPSYNC_SOURCE_DIR) + "/tests/config/testdata/" + name;
}

// The parse error message for `yaml` as an inference config (fails the test if it parses).
std::string InferenceError(const std::string& yaml) {
  auto parsed = ParseInferenceConfig(yaml, "inference.yaml");
  EXPECT_FALSE(parsed.ok()) << yaml;
  if (parsed.ok()) return "";
  EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument);
  return parsed.status().message();
}

std::string CompositingError(const std::string& yaml) {
  auto parsed = ParseCompositingConfig(yaml, "compositing.yaml");
  EXPECT_FALSE(parsed.ok()) << yaml;
  if (parsed.ok()) return "";
  EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument);
  return parsed.status().message();
}

TEST(ConfigTest, GuideInferenceFileParsesWithItsValues) {
  auto loaded = LoadInferenceConfig(TestData("guide_inference.yaml"));
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  const InferenceConfig& c = *loaded;
  EXPECT_EQ(c.source_path, TestData("guide_inference.yaml"));
  EXPECT_EQ(c.server.port, ":50051");
  EXPECT_EQ(c.server.max_message_size_mb, 100);
  EXPECT_EQ(c.server.worker_count_per_gpu, 8);
  EXPECT_EQ(c.server.queue_size, 50);
  EXPECT_TRUE(c.gpus.enabled);
  EXPECT_EQ(c.gpus.count, 1);  // differs from the default 0 (auto)
  EXPECT_DOUBLE_EQ(c.gpus.memory_gb_per_gpu, 24);
  EXPECT_EQ(c.gpus.assignment_strategy, AssignmentStrategy::kRoundRobin);
  EXPECT_EQ(c.onnx.library_path, "C:/onnxruntime-1.22.0/lib/onnxruntime.dll");
  EXPECT_TRUE(c.onnx.use_cuda);
  EXPECT_EQ(c.onnx.cuda_device_id, 0);
  EXPECT_EQ(c.capacity.max_models_per_gpu, 1000);
  EXPECT_EQ(c.capacity.eviction_policy, EvictionPolicy::kLfu);
  EXPECT_DOUBLE_EQ(c.capacity.idle_timeout_minutes, 60);
  ASSERT_EQ(c.models.size(), 1u);
  const auto& sanders = c.models.at("sanders");
  EXPECT_EQ(sanders.model_path,
            "d:/Projects/webcodecstest/minimal_server/models/sanders/checkpoint/model_best.onnx");
  EXPECT_FALSE(sanders.preload);
  EXPECT_EQ(sanders.audio_encoder_path, "");
}

TEST(ConfigTest, GuideCompositingFileParsesWithItsValues) {
  auto loaded = LoadCompositingConfig(TestData("guide_compositing.yaml"));
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  const CompositingConfig& c = *loaded;
  EXPECT_EQ(c.server.port, ":50052");
  EXPECT_EQ(c.server.max_message_size_mb, 100);
  EXPECT_EQ(c.inference_server.url, "localhost:50051");
  EXPECT_DOUBLE_EQ(c.inference_server.timeout_seconds, 10);
  EXPECT_EQ(c.inference_server.max_retries, 3);
  EXPECT_EQ(c.capacity.max_models, 11000);
  EXPECT_EQ(c.capacity.background_cache_frames, 600);
  EXPECT_EQ(c.capacity.eviction_policy, EvictionPolicy::kLfu);
  EXPECT_DOUBLE_EQ(c.capacity.idle_timeout_minutes, 60);
  EXPECT_EQ(c.output.format, OutputFormat::kJpeg);
  EXPECT_EQ(c.output.jpeg_quality, 75);
  ASSERT_EQ(c.models.size(), 1u);
  const auto& sanders = c.models.at("sanders");
  EXPECT_EQ(sanders.background_dir,
            "d:/Projects/webcodecstest/minimal_server/models/sanders/frames");
  EXPECT_EQ(sanders.crop_rects_path,
            "d:/Projects/webcodecstest/minimal_server/models/sanders/crop_rects.json");
  EXPECT_EQ(sanders.num_frames, 523);
  EXPECT_TRUE(sanders.preload_backgrounds);
  EXPECT_EQ(c.logging.level, "info");
  EXPECT_TRUE(c.logging.log_compositing_times);
  EXPECT_FALSE(c.logging.log_cache_stats);
}

TEST(ConfigTest, NonDefaultValuesAreRead) {
  // Every value differs from its default, so a key that is silently ignored fails here.
  auto c = ParseCompositingConfig(R"(
server: {port: "127.0.0.1:6000", max_message_size_mb: 7, max_batch_size: 9,
         compositing_threads: 3, shutdown_grace_seconds: 4, api_key: k1,
         tls: {cert_path: c.pem, key_path: k.pem, client_ca_path: ca.pem}}
inference_server: {url: "h:1", timeout_seconds: 2.5, max_retries: 0, api_key: k2, tls_ca_path: x}
capacity: {max_models: 5, background_cache_frames: 6, eviction_policy: lru,
           idle_timeout_minutes: 0, memory_limit_mb: 8000000000}
output: {format: raw, jpeg_quality: 100, paste_mode: resize, feather_px: 12, ping_pong: yes,
         region_jpeg: false, compact_backgrounds: off}
model_root: /srv/models
logging: {level: debug, log_compositing_times: false, log_cache_stats: true}
)",
                                  "c.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->server.port, "127.0.0.1:6000");
  EXPECT_EQ(c->server.max_message_size_mb, 7);
  EXPECT_EQ(c->server.max_batch_size, 9);
  EXPECT_EQ(c->server.compositing_threads, 3);
  EXPECT_EQ(c->server.shutdown_grace_seconds, 4);
  EXPECT_EQ(c->server.api_key, "k1");
  EXPECT_EQ(c->server.tls.client_ca_path, "ca.pem");
  EXPECT_EQ(c->inference_server.url, "h:1");
  EXPECT_DOUBLE_EQ(c->inference_server.timeout_seconds, 2.5);
  EXPECT_EQ(c->inference_server.max_retries, 0);
  EXPECT_EQ(c->inference_server.tls_ca_path, "x");
  EXPECT_EQ(c->capacity.eviction_policy, EvictionPolicy::kLru);
  EXPECT_EQ(c->capacity.memory_limit_mb, 8000000000);
  EXPECT_EQ(c->output.format, OutputFormat::kRaw);
  EXPECT_EQ(c->output.paste_mode, PasteMode::kResize);
  EXPECT_EQ(c->output.feather_px, 12);
  EXPECT_TRUE(c->output.ping_pong);
  EXPECT_FALSE(c->output.region_jpeg);
  EXPECT_FALSE(c->output.compact_backgrounds);
  EXPECT_EQ(c->model_root, "/srv/models");
  EXPECT_EQ(c->logging.level, "debug");
  EXPECT_TRUE(c->logging.log_cache_stats);

  auto i = ParseInferenceConfig(R"(
server: {max_batch_size: 16, max_queue_delay_us: 2000, api_key: s3cret}
gpus: {enabled: false, count: 2, assignment_strategy: least-loaded}
onnx: {require_cuda: true, intra_op_threads: 4, inter_op_threads: 2, use_cuda: false}
capacity: {failed_load_retry_seconds: 5, eviction_policy: lru}
models:
  a.b-c_1: {model_path: /m.onnx, preload: true, audio_encoder_path: /e.onnx}
model_root: /srv
)",
                                "i.yaml");
  ASSERT_TRUE(i.ok()) << i.status().ToString();
  EXPECT_EQ(i->server.max_batch_size, 16);
  EXPECT_EQ(i->server.max_queue_delay_us, 2000);
  EXPECT_EQ(i->server.api_key, "s3cret");
  EXPECT_FALSE(i->gpus.enabled);
  EXPECT_EQ(i->gpus.assignment_strategy, AssignmentStrategy::kLeastLoaded);
  EXPECT_TRUE(i->onnx.require_cuda);
  EXPECT_FALSE(i->onnx.use_cuda);
  EXPECT_EQ(i->onnx.intra_op_threads, 4);
  EXPECT_EQ(i->onnx.inter_op_threads, 2);
  EXPECT_DOUBLE_EQ(i->capacity.failed_load_retry_seconds, 5);
  EXPECT_EQ(i->capacity.eviction_policy, EvictionPolicy::kLru);
  ASSERT_EQ(i->models.count("a.b-c_1"), 1u);
  EXPECT_TRUE(i->models.at("a.b-c_1").preload);
  EXPECT_EQ(i->models.at("a.b-c_1").audio_encoder_path, "/e.onnx");
  EXPECT_EQ(i->model_root, "/srv");
}

TEST(ConfigTest, EmptyAndMinimalFilesGiveTheGuideDefaults) {
  for (const char* text : {"{}", "", "# only a comment\n", "server:\nmodels:\n"}) {
    auto i = ParseInferenceConfig(text, "inference.yaml");
    ASSERT_TRUE(i.ok()) << i.status().ToString();
    EXPECT_EQ(i->server.port, ":50051");
    EXPECT_EQ(i->server.worker_count_per_gpu, 8);
    EXPECT_EQ(i->server.queue_size, 50);
    EXPECT_EQ(i->gpus.count, 0);
    EXPECT_EQ(i->capacity.eviction_policy, EvictionPolicy::kLfu);
    EXPECT_TRUE(i->models.empty());
    auto c = ParseCompositingConfig(text, "compositing.yaml");
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    EXPECT_EQ(c->server.port, ":50052");
    EXPECT_EQ(c->inference_server.url, "localhost:50051");
    EXPECT_EQ(c->capacity.max_models, 11000);
    EXPECT_EQ(c->output.jpeg_quality, 75);
    EXPECT_EQ(c->output.paste_mode, PasteMode::kSynctalk328);
    EXPECT_EQ(c->logging.level, "info");
  }
}

TEST(ConfigTest, WrongTypesNameFileKeyAndValue) {
  EXPECT_THAT(InferenceError("server:\n  queue_size: many\n"),
              HasSubstr("inference.yaml: server.queue_size: expected an integer, got 'many'"));
  EXPECT_THAT(InferenceError("server:\n  queue_size: 1.5\n"),
              HasSubstr("server.queue_size: expected an integer, got '1.5'"));
  EXPECT_THAT(InferenceError("gpus: {enabled: maybe}"),
              HasSubstr("gpus.enabled: expected true or false, got 'maybe'"));
  EXPECT_THAT(InferenceError("gpus: {memory_gb_per_gpu: lots}"),
              HasSubstr("gpus.memory_gb_per_gpu: expected a number, got 'lots'"));
  EXPECT_THAT(InferenceError("server: [1, 2]"),
              HasSubstr("inference.yaml: server: expected a mapping of keys, got a list"));
  EXPECT_THAT(InferenceError("onnx: {library_path: {a: 1}}"),
              HasSubstr("onnx.library_path: expected a string, got a mapping"));
  EXPECT_THAT(InferenceError("- a\n- b\n"), HasSubstr("expected a mapping of keys, got a list"));
  EXPECT_THAT(InferenceError("just words"),
              HasSubstr("expected a mapping of keys, got 'just words'"));
}

TEST(ConfigTest, UnknownKeysAreRejectedWithTheKnownOnes) {
  std::string message = InferenceError("server:\n  quue_size: 5\n");
  EXPECT_THAT(message, HasSubstr("inference.yaml: unknown key 'server.quue_size'"));
  EXPECT_THAT(message, HasSubstr("did you mean 'queue_size'?"));
  EXPECT_THAT(message, HasSubstr("(known: port, max_message_size_mb, worker_count_per_gpu"));
  EXPECT_THAT(InferenceError("serverr: {}"), HasSubstr("unknown key 'serverr'"));
  EXPECT_THAT(InferenceError("models:\n  sanders:\n    model_pth: x\n"),
              HasSubstr("unknown key 'models.sanders.model_pth'"));
  EXPECT_THAT(CompositingError("output: {quality: 80}"), HasSubstr("unknown key 'output.quality'"));
  // Keys of the other server's file are unknown here.
  EXPECT_THAT(CompositingError("gpus: {count: 1}"), HasSubstr("unknown key 'gpus'"));
  EXPECT_THAT(InferenceError("server: {port: ':1', port: ':2'}"), HasSubstr("duplicate key"));
}

// The guide's "CUDA out of memory" fix repeats `capacity:`; yaml-cpp would keep only the
// first block, silently dropping the eviction settings.
constexpr const char* kGuideOomSnippet = R"(# Reduce max models per GPU
capacity:
  max_models_per_gpu: 500  # Was 1000

# Reduce batch size
# In test_client.go: batchSize = 16  # Was 24

# Enable aggressive eviction
capacity:
  eviction_policy: "lru"
  idle_timeout_minutes: 30  # Was 60
)";

TEST(ConfigTest, DuplicateKeysNameBothLines) {
  EXPECT_THAT(InferenceError(kGuideOomSnippet),
              HasSubstr("inference.yaml: capacity: duplicate key at line 9 (first at line 2); "
                        "expected each key once: merge the two into one mapping"));
  EXPECT_THAT(InferenceError("server:\n  port: ':1'\n  queue_size: 4\n  port: ':2'\n"),
              HasSubstr("server.port: duplicate key at line 4 (first at line 2)"));
  EXPECT_THAT(CompositingError("models:\n  a: {background_dir: d, crop_rects_path: c}\n"
                               "  a: {background_dir: e, crop_rects_path: f}\n"),
              HasSubstr("models.a: duplicate key at line 3 (first at line 2)"));
  // The merged form (docs/OPERATIONS.md) carries all three settings.
  auto merged = ParseInferenceConfig(
      "capacity:\n  max_models_per_gpu: 500\n  eviction_policy: \"lru\"\n"
      "  idle_timeout_minutes: 30\n",
      "inference.yaml");
  ASSERT_TRUE(merged.ok()) << merged.status().message();
  EXPECT_EQ(merged->capacity.max_models_per_gpu, 500);
  EXPECT_EQ(merged->capacity.eviction_policy, EvictionPolicy::kLru);
  EXPECT_EQ(merged->capacity.idle_timeout_minutes, 30);
}

TEST(ConfigTest, OutOfRangeValuesAreRejected) {
  EXPECT_THAT(CompositingError("output: {jpeg_quality: 0}"),
              HasSubstr("output.jpeg_quality: expected an integer in 1..100, got 0"));
  EXPECT_THAT(CompositingError("output: {jpeg_quality: 101}"),
              HasSubstr("output.jpeg_quality: expected an integer in 1..100, got 101"));
  EXPECT_THAT(InferenceError("server: {queue_size: 0}"),
              HasSubstr("server.queue_size: expected an integer >= 1, got 0"));
  EXPECT_THAT(InferenceError("server: {worker_count_per_gpu: -2}"),
              HasSubstr("server.worker_count_per_gpu"));
  EXPECT_THAT(InferenceError("server: {port: ':70000'}"), HasSubstr("server.port: invalid listen"));
  EXPECT_THAT(InferenceError("server: {port: 'localhost'}"), HasSubstr("server.port"));
  EXPECT_THAT(InferenceError("capacity: {eviction_policy: fifo}"),
              HasSubstr("capacity.eviction_policy: expected one of 'lru' 'lfu', got 'fifo'"));
  EXPECT_THAT(InferenceError("gpus: {assignment_strategy: random}"),
              HasSubstr("expected one of 'round-robin' 'least-loaded', got 'random'"));
  EXPECT_THAT(CompositingError("output: {format: png}"),
              HasSubstr("output.format: expected one of 'jpeg' 'raw', got 'png'"));
  EXPECT_THAT(CompositingError("output: {paste_mode: blend}"),
              HasSubstr("output.paste_mode: expected one of 'synctalk328' 'resize'"));
  EXPECT_THAT(CompositingError("logging: {level: verbose}"),
              HasSubstr("logging.level: expected one of 'debug' 'info' 'warn' 'error'"));
  EXPECT_THAT(CompositingError("inference_server: {timeout_seconds: 0}"),
              HasSubstr("inference_server.timeout_seconds: expected a number > 0, got 0"));
  EXPECT_THAT(InferenceError("gpus: {memory_gb_per_gpu: -1}"), HasSubstr("expected a number > 0"));
  EXPECT_THAT(InferenceError("server: {tls: {cert_path: a.pem}}"),
              HasSubstr("server.tls.key_path: expected cert_path and key_path together"));
  EXPECT_THAT(InferenceError("server: {max_message_size_mb: 5000}"),
              HasSubstr("expected an integer in 1..2047"));
}

TEST(ConfigTest, ModelEntriesAreValidated) {
  EXPECT_THAT(InferenceError("models:\n  ../etc:\n    model_path: x\n"),
              HasSubstr("models.../etc: invalid model_id '../etc'"));
  EXPECT_THAT(InferenceError("models:\n  'a b':\n    model_path: x\n"),
              HasSubstr("invalid model_id 'a b'"));
  EXPECT_THAT(InferenceError("models:\n  sanders:\n    preload: true\n"),
              HasSubstr("models.sanders.model_path: expected the path of the model's .onnx file"));
  EXPECT_THAT(CompositingError("models:\n  s:\n    background_dir: /f\n"),
              HasSubstr("models.s.crop_rects_path: expected the path of crop_rects.json"));
  EXPECT_THAT(CompositingError("models:\n  s: 5\n"), HasSubstr("models.s: expected a mapping"));
  EXPECT_THAT(CompositingError("models: [a]"), HasSubstr("models: expected a mapping"));
}

TEST(ConfigTest, AllProblemsAreReportedTogether) {
  std::string message =
      InferenceError("server: {queue_size: x, worker_count_per_gpu: y}\nfoo: 1\n");
  EXPECT_THAT(message, HasSubstr("server.queue_size"));
  EXPECT_THAT(message, HasSubstr("server.worker_count_per_gpu"));
  EXPECT_THAT(message, HasSubstr("unknown key 'foo'"));
}

TEST(ConfigTest, SyntaxErrorsNameFileAndLine) {
  std::string message = InferenceError("server:\n  port: \":50051\"\n  queue_size: [1, 2\n");
  EXPECT_THAT(message, HasSubstr("inference.yaml:"));
  EXPECT_THAT(message, HasSubstr("YAML syntax error"));
  EXPECT_THAT(message, ::testing::ContainsRegex("inference\\.yaml:[34]:"));
  EXPECT_THAT(InferenceError("a: b: c\n"), HasSubstr("inference.yaml:1:"));
}

TEST(ConfigTest, MissingFileIsNotFoundNamingThePath) {
  auto loaded = LoadInferenceConfig("/nonexistent/dir/inference.yaml");
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(loaded.status().message(), HasSubstr("/nonexistent/dir/inference.yaml"));
  auto compositing = LoadCompositingConfig("/nonexistent/compositing.yaml");
  EXPECT_EQ(compositing.status().code(), StatusCode::kNotFound);
}

TEST(ConfigTest, LoadedFileErrorsNameThePath) {
  auto dir = std::filesystem::temp_directory_path() / ("config_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "bad.yaml").string();
  std::ofstream(path) << "server:\n  queue_size: many\n";
  auto loaded = LoadInferenceConfig(path);
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(loaded.status().message(), HasSubstr(path + ": server.queue_size"));
  std::filesystem::remove_all(dir);
}

TEST(ConfigTest, OperationsKeysAreReadOnBothServers) {
  const char* text = R"(
server:
  rate_limit: {frames_per_second_per_model: 50, burst_frames: 120}
logging: {audit_log_path: /var/log/lipsync/audit.jsonl}
metrics: {port: 9464, host: 0.0.0.0}
)";
  auto i = ParseInferenceConfig(text, "i.yaml");
  ASSERT_TRUE(i.ok()) << i.status().ToString();
  EXPECT_DOUBLE_EQ(i->server.rate_limit.frames_per_second_per_model, 50);
  EXPECT_DOUBLE_EQ(i->server.rate_limit.burst_frames, 120);
  EXPECT_EQ(i->logging.audit_log_path, "/var/log/lipsync/audit.jsonl");
  EXPECT_EQ(i->metrics.port, 9464);
  EXPECT_EQ(i->metrics.host, "0.0.0.0");
  auto c = ParseCompositingConfig(text, "c.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_DOUBLE_EQ(c->server.rate_limit.frames_per_second_per_model, 50);
  EXPECT_DOUBLE_EQ(c->server.rate_limit.burst_frames, 120);
  EXPECT_EQ(c->logging.audit_log_path, "/var/log/lipsync/audit.jsonl");
  EXPECT_EQ(c->metrics.port, 9464);

  // Defaults: everything off.
  auto d = ParseCompositingConfig("{}", "c.yaml");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->server.rate_limit.frames_per_second_per_model, 0);
  EXPECT_TRUE(d->logging.audit_log_path.empty());
  EXPECT_EQ(d->metrics.port, 0);
  EXPECT_EQ(d->metrics.host, "127.0.0.1");

  EXPECT_THAT(InferenceError("server: {rate_limit: {frames_per_second_per_model: -1}}"),
              HasSubstr("server.rate_limit.frames_per_second_per_model: expected a number >= 0"));
  EXPECT_THAT(CompositingError("server: {rate_limit: {burst_frames: 10}}"),
              HasSubstr("server.rate_limit.burst_frames: expected frames_per_second_per_model"));
  EXPECT_THAT(CompositingError("metrics: {port: 70000}"),
              HasSubstr("metrics.port: expected an integer in 0..65535, got 70000"));
  EXPECT_THAT(InferenceError("metrics: {host: ''}"),
              HasSubstr("metrics.host: expected an address"));
  EXPECT_THAT(InferenceError("server: {rate_limit: {fps: 1}}"),
              HasSubstr("unknown key 'server.rate_limit.fps'"));
}

TEST(ConfigTest, HardeningKeysAreReadAndBounded) {
  const char* text = R"(
server:
  max_batch_size: 32
  rate_limit: {frames_per_second_per_credential: 100, credential_burst_frames: 200}
  connection:
    max_concurrent_streams: 8
    keepalive_time_seconds: 30
    keepalive_timeout_seconds: 5
    max_connection_idle_seconds: 120
    resource_quota_mb: 512
    max_threads: 64
    request_read_timeout_seconds: 10
auth: {credentials_file: /etc/lipsync/credentials.yaml, reload_interval_seconds: 2}
logging: {audit_fail_closed: true}
capacity: {failed_load_retry_seconds: 5, failed_load_retry_max_seconds: 80}
)";
  auto i = ParseInferenceConfig(std::string(text) +
                                    "limits: {max_model_file_mb: 300}\n"
                                    "server_extra: 1\n",
                                "i.yaml");
  ASSERT_FALSE(i.ok());  // server_extra is unknown
  i = ParseInferenceConfig(std::string(text) + "limits: {max_model_file_mb: 300}\n", "i.yaml");
  ASSERT_TRUE(i.ok()) << i.status().ToString();
  EXPECT_DOUBLE_EQ(i->server.rate_limit.frames_per_second_per_credential, 100);
  EXPECT_DOUBLE_EQ(i->server.rate_limit.credential_burst_frames, 200);
  EXPECT_EQ(i->server.connection.max_concurrent_streams, 8);
  EXPECT_DOUBLE_EQ(i->server.connection.keepalive_time_seconds, 30);
  EXPECT_DOUBLE_EQ(i->server.connection.keepalive_timeout_seconds, 5);
  EXPECT_DOUBLE_EQ(i->server.connection.max_connection_idle_seconds, 120);
  EXPECT_EQ(i->server.connection.resource_quota_mb, 512);
  EXPECT_EQ(i->server.connection.max_threads, 64);
  EXPECT_DOUBLE_EQ(i->server.connection.request_read_timeout_seconds, 10);
  EXPECT_EQ(i->auth.credentials_file, "/etc/lipsync/credentials.yaml");
  EXPECT_DOUBLE_EQ(i->auth.reload_interval_seconds, 2);
  EXPECT_TRUE(i->logging.audit_fail_closed);
  EXPECT_DOUBLE_EQ(i->capacity.failed_load_retry_seconds, 5);
  EXPECT_DOUBLE_EQ(i->capacity.failed_load_retry_max_seconds, 80);
  EXPECT_EQ(i->limits.max_model_file_mb, 300);
  EXPECT_DOUBLE_EQ(i->server.max_queue_share_per_model, 0.5);

  auto c = ParseCompositingConfig(std::string(text) +
                                      "limits: {max_image_width: 1920, max_image_height: 1080,"
                                      " max_image_file_mb: 8, max_crop_rects_file_mb: 2,"
                                      " max_json_depth: 6, max_frames: 5000}\n",
                                  "c.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->server.connection.max_threads, 64);
  EXPECT_EQ(c->auth.credentials_file, "/etc/lipsync/credentials.yaml");
  EXPECT_DOUBLE_EQ(c->capacity.failed_load_retry_max_seconds, 80);
  EXPECT_EQ(c->limits.max_image_width, 1920);
  EXPECT_EQ(c->limits.max_image_height, 1080);
  EXPECT_EQ(c->limits.max_image_file_mb, 8);
  EXPECT_EQ(c->limits.max_crop_rects_file_mb, 2);
  EXPECT_EQ(c->limits.max_json_depth, 6);
  EXPECT_EQ(c->limits.max_frames, 5000);

  // Defaults: authentication off, limits on.
  auto d = ParseCompositingConfig("{}", "c.yaml");
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->auth.credentials_file.empty());
  EXPECT_FALSE(d->logging.audit_fail_closed);
  EXPECT_EQ(d->server.connection.max_concurrent_streams, 64);
  EXPECT_EQ(d->limits.max_image_width, 7680);

  EXPECT_THAT(InferenceError("capacity: {failed_load_retry_seconds: 60, "
                             "failed_load_retry_max_seconds: 10}"),
              HasSubstr("capacity.failed_load_retry_max_seconds: expected at least"));
  EXPECT_THAT(InferenceError("server: {max_queue_share_per_model: 1.5}"),
              HasSubstr("server.max_queue_share_per_model: expected a fraction"));
  EXPECT_THAT(InferenceError("server: {max_queue_share_per_model: 0}"),
              HasSubstr("server.max_queue_share_per_model"));
  EXPECT_THAT(CompositingError("server: {connection: {max_concurrent_streams: 0}}"),
              HasSubstr("server.connection.max_concurrent_streams"));
  EXPECT_THAT(CompositingError("server: {connection: {request_read_timeout_seconds: 0}}"),
              HasSubstr("server.connection.request_read_timeout_seconds"));
  EXPECT_THAT(CompositingError("auth: {reload_interval_seconds: 0}"),
              HasSubstr("auth.reload_interval_seconds"));
  EXPECT_THAT(CompositingError("limits: {max_json_depth: 1}"), HasSubstr("limits.max_json_depth"));
  EXPECT_THAT(CompositingError("server: {rate_limit: {credential_burst_frames: 10}}"),
              HasSubstr("expected frames_per_second_per_credential as well"));
}

TEST(ConfigTest, MessageSizeMustCarryAFullBatchOnTheInternalHop) {
  // 64 frames x 630 KB = 40 MB: the guide's 100 MB holds it, 32 MB does not.
  EXPECT_TRUE(ParseInferenceConfig("server: {max_message_size_mb: 100}", "i.yaml").ok());
  EXPECT_THAT(InferenceError("server: {max_message_size_mb: 32}"),
              HasSubstr("server.max_message_size_mb: expected at least 40 MB to carry a full "
                        "batch of max_batch_size 64 frames"));
  EXPECT_THAT(CompositingError("server: {max_message_size_mb: 10, max_batch_size: 64}"),
              HasSubstr("server.max_message_size_mb: expected at least 40 MB"));
  EXPECT_TRUE(
      ParseCompositingConfig("server: {max_message_size_mb: 10, max_batch_size: 8}", "c.yaml")
          .ok());
}

TEST(ConfigTest, WebSectionIsReadAndBounded) {
  auto defaults = ParseCompositingConfig("", "c.yaml");
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->web.host, "127.0.0.1");
  EXPECT_EQ(defaults->web.port, 8080);
  auto c = ParseCompositingConfig(
      "web: {host: 0.0.0.0, port: 0, root: /srv/web, max_connections: 3}", "c.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->web.host, "0.0.0.0");
  EXPECT_EQ(c->web.port, 0);
  EXPECT_EQ(c->web.root, "/srv/web");
  EXPECT_EQ(c->web.max_connections, 3);
  EXPECT_THAT(CompositingError("web: {port: 70000}"), HasSubstr("web.port"));
  EXPECT_THAT(CompositingError("web: {max_connections: 0}"), HasSubstr("web.max_connections"));
  EXPECT_THAT(CompositingError("web: {hots: x}"), HasSubstr("hots"));
}

TEST(ConfigTest, DeployExamplesParse) {
  const std::string root = std::string(LIPSYNC_SOURCE_DIR) + "/deploy/";
  auto i = LoadInferenceConfig(root + "inference.yaml");
  ASSERT_TRUE(i.ok()) << i.status().ToString();
  EXPECT_FALSE(i->model_root.empty());
  auto c = LoadCompositingConfig(root + "compositing.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_FALSE(c->model_root.empty());
  // The documented production configuration runs with credentials on.
  EXPECT_FALSE(i->auth.credentials_file.empty());
  EXPECT_FALSE(c->auth.credentials_file.empty());
}

TEST(ListenAddressTest, ExpandsAndValidates) {
  EXPECT_EQ(*ListenAddress(":50051"), "0.0.0.0:50051");
  EXPECT_EQ(*ListenAddress("50051"), "0.0.0.0:50051");
  EXPECT_EQ(*ListenAddress("127.0.0.1:0"), "127.0.0.1:0");
  EXPECT_EQ(*ListenAddress("localhost:7"), "localhost:7");
  EXPECT_EQ(*ListenAddress("[::1]:50051"), "[::1]:50051");
  for (const char* bad : {"", ":", "host", ":65536", "::1:80", "h:-1", "h:8x", "a b:1"}) {
    auto address = ListenAddress(bad);
    ASSERT_FALSE(address.ok()) << bad;
    EXPECT_EQ(address.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(address.status().message(), HasSubstr("expected ':PORT'"));
  }
}

}  // namespace
}  // namespace lipsync::config

namespace lipsync::config {
namespace {

TEST(ConfigTest, GarbageIsAnErrorNotACrash) {
  const std::string inputs[] = {std::string("\x00\xff\xfe", 3),
                                std::string(5000, '['),
                                "a: *undefined_alias",
                                "server: {port: !!binary abc}",
                                "? [a, b]\n: 1\n",
                                "server:\n  port:\n    - 1\n",
                                "\t\tx: 1"};
  for (const std::string& text : inputs) {
    auto parsed = ParseInferenceConfig(text, "x.yaml");
    if (!parsed.ok()) {
      EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument);
      EXPECT_THAT(parsed.status().message(), ::testing::StartsWith("x.yaml"));
    }
  }
}

}  // namespace
}  // namespace lipsync::config
