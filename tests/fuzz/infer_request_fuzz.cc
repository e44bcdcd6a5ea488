// Fuzz target: request validation of the inference server. The input is a serialized
// inference.InferBatchRequest (the wire message of InferBatch); it is parsed, turned
// into an InferRequest exactly as rpc/inference_service.cc does, and sent to a real
// in-process InferenceServer (CPU, ONNX Runtime) serving one 16x16 test model with an
// audio encoder, so validation, the raw-audio checks and, for valid requests, the
// batched Run all execute.
//
// Checks: every request ends as a result of the documented size or as an error status
// with a bounded message and one of the codes Infer documents (INTERNAL is a finding);
// nothing crashes or hangs (each request has a 10 s deadline).
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "fuzz/fuzz_util.h"
#include "inference.pb.h"
#include "inference/inference_server.h"
#include "inference/test_models.h"
#include "modelgen/model_builder.h"

namespace {

namespace inf = lipsync::inference;
using lipsync::StatusCode;

constexpr int kSize = 16;  // the test model's frame size
constexpr int kMaxBatch = 4;

// Created once per process and deliberately never destroyed (its worker threads and
// ONNX Runtime outlive any exit-time destructor ordering).
inf::InferenceServer* g_server = nullptr;

[[noreturn]] void SetupFailed(const std::string& what) {
  std::fprintf(stderr, "infer_request fuzz setup failed: %s\n", what.c_str());
  std::exit(2);
}

void Setup() {
  namespace fs = std::filesystem;
  const fs::path dir =
      fs::temp_directory_path() / ("lipsync_fuzz_infer_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string model = (dir / "model_best.onnx").string();
  if (auto s = inf::testing::WriteScaledModel(model, kSize, 1.0f); !s.ok()) {
    SetupFailed(s.ToString());
  }
  if (auto s = lipsync::modelgen::WriteAudioEncoderModel((dir / "audio_encoder.onnx").string());
      !s.ok()) {
    SetupFailed(s.ToString());
  }
  lipsync::config::InferenceConfig config;
  config.onnx.use_cuda = false;
  config.onnx.intra_op_threads = 1;
  config.gpus.enabled = false;
  config.server.worker_count_per_gpu = 1;
  config.server.max_batch_size = kMaxBatch;
  config.capacity.idle_timeout_minutes = 0;
  config.models["fuzz-model"] = {model, /*preload=*/true, ""};
  auto server = inf::InferenceServer::Create(config);
  if (!server.ok()) SetupFailed(server.status().ToString());
  if ((*server)->preloaded_models() != 1) SetupFailed("the test model did not preload");
  g_server = server->release();
  // The model files are loaded; the directory is not needed any more.
  std::error_code ec;
  fs::remove_all(dir, ec);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  Setup();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // gRPC caps messages (server.max_message_size_mb); a 4-frame 16x16 request is < 140 KB.
  if (size > 256 * 1024) return -1;
  ::inference::InferBatchRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) {
    lipsync::fuzz::Note("not an InferBatchRequest");  // gRPC refuses it
    return 0;
  }

  // As rpc::InferenceServiceImpl::InferBatch builds it.
  inf::InferRequest in;
  in.model_id = request.model_id();
  in.batch_size = request.batch_size();
  in.visual_frames = request.visual_frames();
  in.visual_format = static_cast<inf::VisualFormat>(static_cast<int>(request.visual_format()));
  in.audio_features = request.audio_features();
  in.raw_audio = request.raw_audio();
  in.sample_rate = request.sample_rate() == 0 ? 16000 : request.sample_rate();
  in.start_frame_idx = request.start_frame_idx();
  in.utterance_frames = request.utterance_frames();
  in.end_of_utterance = request.end_of_utterance();
  in.output_format = static_cast<inf::OutputFormat>(static_cast<int>(request.output_format()));
  in.deadline = inf::Clock::now() + std::chrono::seconds(10);

  auto result = g_server->Infer(in);
  lipsync::fuzz::Note(result.ok() ? "OK, " + std::to_string(result->batch_size) + " frames"
                                  : result.status().ToString());
  if (!result.ok()) {
    const StatusCode code = result.status().code();
    FUZZ_CHECK(code == StatusCode::kInvalidArgument || code == StatusCode::kNotFound ||
                   code == StatusCode::kFailedPrecondition ||
                   code == StatusCode::kResourceExhausted ||
                   code == StatusCode::kDeadlineExceeded || code == StatusCode::kUnavailable,
               "Infer failed with " + result.status().ToString().substr(0, 300));
    FUZZ_CHECK_MESSAGE(result.status());
    return 0;
  }
  const size_t value_bytes = result->output_format == inf::OutputFormat::kUint8 ? 1 : 4;
  FUZZ_CHECK(result->batch_size == in.batch_size && result->height == kSize &&
                 result->width == kSize && result->output_format == in.output_format,
             "Infer returned batch " + std::to_string(result->batch_size) + " of " +
                 std::to_string(result->height) + "x" + std::to_string(result->width));
  FUZZ_CHECK(result->output.size() == size_t(in.batch_size) * 3 * kSize * kSize * value_bytes,
             "Infer returned " + std::to_string(result->output.size()) + " output bytes");
  return 0;
}
