// Fuzz target: request validation of the compositing server, end to end in-process.
// The input is a serialized compositing.CompositeBatchRequest; it is parsed, turned into
// a CompositeRequest exactly as rpc/compositing_service.cc does, and sent to a real
// CompositingServer (one 320x240, 8-frame demo avatar with region JPEG and compact
// backgrounds, the defaults) in front of a real in-process InferenceServer (CPU, the
// identity model and an audio encoder). Validation, the avatar load, the raw-audio path,
// inference, paste-back and JPEG/RGB output all run for valid requests.
//
// Checks: every request ends as frames of the documented shape or as an error status
// with a bounded message and one of the codes InferBatchComposite documents (INTERNAL
// is a finding); nothing crashes or hangs (each request has a 10 s deadline).
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "compositing.pb.h"
#include "compositing/compositing_server.h"
#include "demo/avatar_generator.h"
#include "fuzz/fuzz_util.h"
#include "inference/inference_server.h"
#include "modelgen/model_builder.h"

namespace {

namespace fs = std::filesystem;
using lipsync::StatusCode;
namespace comp = lipsync::compositing;

constexpr int kWidth = 320, kHeight = 240, kFrames = 8, kMaxBatch = 4;
constexpr const char* kTenant = "fuzz-avatar";

// Created once per process and deliberately never destroyed (worker threads and ONNX
// Runtime outlive any exit-time destructor ordering).
lipsync::inference::InferenceServer* g_inference = nullptr;
comp::CompositingServer* g_server = nullptr;
fs::path g_root;

[[noreturn]] void SetupFailed(const std::string& what) {
  std::fprintf(stderr, "composite_request fuzz setup failed: %s\n", what.c_str());
  std::exit(2);
}

void Setup() {
  g_root = fs::temp_directory_path() / ("lipsync_fuzz_composite_" + std::to_string(::getpid()));
  const fs::path tenant = g_root / kTenant;
  fs::create_directories(tenant / "checkpoint");
  std::atexit([] {
    std::error_code ec;
    fs::remove_all(g_root, ec);
  });
  lipsync::demo::AvatarSpec spec;
  spec.width = kWidth;
  spec.height = kHeight;
  spec.frames = kFrames;
  if (auto s = lipsync::demo::GenerateAvatarFrames(spec, tenant.string(), nullptr, 1); !s.ok()) {
    SetupFailed(s.ToString());
  }
  if (auto s = lipsync::modelgen::WriteIdentityModel(
          (tenant / "checkpoint" / "model_best.onnx").string());
      !s.ok()) {
    SetupFailed(s.ToString());
  }
  if (auto s = lipsync::modelgen::WriteAudioEncoderModel(
          (tenant / "checkpoint" / "audio_encoder.onnx").string());
      !s.ok()) {
    SetupFailed(s.ToString());
  }

  lipsync::config::InferenceConfig ic;
  ic.onnx.use_cuda = false;
  ic.onnx.intra_op_threads = 1;
  ic.gpus.enabled = false;
  ic.server.worker_count_per_gpu = 1;
  ic.server.max_batch_size = kMaxBatch;
  ic.capacity.idle_timeout_minutes = 0;
  ic.model_root = g_root.string();
  auto inference = lipsync::inference::InferenceServer::Create(ic);
  if (!inference.ok()) SetupFailed(inference.status().ToString());
  g_inference = inference->release();

  lipsync::config::CompositingConfig cc;
  cc.server.max_batch_size = kMaxBatch;
  cc.server.compositing_threads = 1;
  cc.capacity.idle_timeout_minutes = 0;
  cc.model_root = g_root.string();
  comp::CompositingServerOptions options;
  options.inference_label = "in-process";
  auto server = comp::CompositingServer::Create(cc, *g_inference, options);
  if (!server.ok()) SetupFailed(server.status().ToString());
  g_server = server->release();
  auto loaded = g_server->LoadModel(kTenant, /*force_reload=*/false);
  if (!loaded.ok()) SetupFailed("loading the avatar: " + loaded.status().ToString());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  Setup();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A 4-frame request with per-frame audio features is ~131 KB.
  if (size > 256 * 1024) return -1;
  ::compositing::CompositeBatchRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) {
    lipsync::fuzz::Note("not a CompositeBatchRequest");  // gRPC refuses it
    return 0;
  }
  // As rpc::CompositingServiceImpl::InferBatchComposite builds it.
  comp::CompositeRequest in;
  in.model_id = request.model_id();
  in.batch_size = request.batch_size();
  in.start_frame_idx = request.start_frame_idx();
  in.visual_frames = request.visual_frames();
  in.audio_features = request.audio_features();
  in.raw_audio = request.raw_audio();
  in.sample_rate = request.sample_rate();
  in.utterance_frames = request.utterance_frames();
  in.end_of_utterance = request.end_of_utterance();
  in.output_format = static_cast<comp::FormatChoice>(static_cast<int>(request.output_format()));
  in.jpeg_quality = request.jpeg_quality();
  in.loop_mode = static_cast<comp::LoopChoice>(static_cast<int>(request.loop_mode()));
  in.deadline = comp::Clock::now() + std::chrono::seconds(10);

  auto result = g_server->InferBatchComposite(in);
  lipsync::fuzz::Note(result.ok() ? "OK, " + std::to_string(result->frames.size()) + " frames"
                                  : result.status().ToString());
  if (!result.ok()) {
    const StatusCode code = result.status().code();
    FUZZ_CHECK(code == StatusCode::kInvalidArgument || code == StatusCode::kNotFound ||
                   code == StatusCode::kFailedPrecondition ||
                   code == StatusCode::kResourceExhausted ||
                   code == StatusCode::kDeadlineExceeded || code == StatusCode::kUnavailable,
               "InferBatchComposite failed with " + result.status().ToString().substr(0, 300));
    FUZZ_CHECK_MESSAGE(result.status());
    return 0;
  }
  const size_t batch = size_t(in.batch_size);
  FUZZ_CHECK(result->frames.size() == batch && result->background_indices.size() == batch,
             "InferBatchComposite returned " + std::to_string(result->frames.size()) +
                 " frames for batch " + std::to_string(batch));
  FUZZ_CHECK(result->frame_width == kWidth && result->frame_height == kHeight,
             "frames are " + std::to_string(result->frame_width) + "x" +
                 std::to_string(result->frame_height));
  for (size_t i = 0; i < batch; ++i) {
    const int bg = result->background_indices[i];
    FUZZ_CHECK(bg >= 0 && bg < kFrames, "background index " + std::to_string(bg));
    const std::string& frame = result->frames[i];
    if (result->raw_rgb) {
      FUZZ_CHECK(frame.size() == size_t(kWidth) * kHeight * 3,
                 "raw frame of " + std::to_string(frame.size()) + " bytes");
    } else {
      FUZZ_CHECK(frame.size() > 4 && uint8_t(frame[0]) == 0xFF && uint8_t(frame[1]) == 0xD8,
                 "JPEG frame without SOI");
    }
  }
  return 0;
}
