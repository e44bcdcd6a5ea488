#include "client/client_runner.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <thread>

#include "compositing.grpc.pb.h"
#include "rpc/grpc_status.h"

namespace lipsync::client {

namespace {

constexpr int kAudioFloats = 32 * 16 * 16;
constexpr size_t kVisualFloats = size_t(6) * 320 * 320;
constexpr double kFps = 25.0;

using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

Status ValidateOptions(const ClientOptions& o) {
  if (o.server.empty()) return Status::InvalidArgument("--server must be HOST:PORT, got ''");
  if (o.model.empty()) return Status::InvalidArgument("--model must name a model, got ''");
  if (o.batch_size < 1) {
    return Status::InvalidArgument("--batch-size must be >= 1, got " +
                                   std::to_string(o.batch_size));
  }
  if (o.utterance_frames <= 0 && o.batches < 1) {
    return Status::InvalidArgument("--batches must be >= 1, got " + std::to_string(o.batches));
  }
  if (o.concurrency < 1 || o.concurrency > 256) {
    return Status::InvalidArgument("--concurrency must be 1..256, got " +
                                   std::to_string(o.concurrency));
  }
  if (o.start_frame < 0) {
    return Status::InvalidArgument("--start-frame must be >= 0, got " +
                                   std::to_string(o.start_frame));
  }
  if (o.jpeg_quality < 0 || o.jpeg_quality > 100) {
    return Status::InvalidArgument("--jpeg-quality must be 0..100, got " +
                                   std::to_string(o.jpeg_quality));
  }
  if (o.timeout_seconds <= 0) return Status::InvalidArgument("--timeout must be > 0 seconds");
  if (o.utterance_frames > 0 && !o.audio_slicer) {
    return Status::InvalidArgument("an utterance needs an audio slicer");
  }
  return Status::Ok();
}

// Everything one stream needs; streams share only the record sink and the saver.
struct Shared {
  const ClientOptions* options = nullptr;
  const BatchCallback* on_batch = nullptr;
  StreamSaver* saver = nullptr;
  std::mutex mu;
  std::vector<BatchRecord> records;
  Status save_error;
};

void RunStream(int stream, Shared& shared) {
  const ClientOptions& o = *shared.options;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(o.max_message_mb * 1024 * 1024);
  args.SetMaxSendMessageSize(o.max_message_mb * 1024 * 1024);
  // Each stream its own connection, as separate clients would have.
  args.SetInt("lipsync.client.stream", stream);
  auto channel = grpc::CreateCustomChannel(o.server, grpc::InsecureChannelCredentials(), args);
  auto stub = compositing::CompositingService::NewStub(channel);

  const bool utterance = o.utterance_frames > 0;
  const int total_frames = utterance ? o.utterance_frames : o.batches * o.batch_size;
  const int batches = (total_frames + o.batch_size - 1) / o.batch_size;
  const auto stream_start = Clock::now();
  for (int b = 0; b < batches; ++b) {
    const int first = b * o.batch_size;
    const int frames = std::min(o.batch_size, total_frames - first);
    if (o.realtime) {
      // Batch b covers speech from first/25 s on; it cannot be sent before it was spoken.
      auto due = stream_start + std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double>(first / kFps));
      std::this_thread::sleep_until(due);
    }
    compositing::CompositeBatchRequest request;
    request.set_model_id(o.model);
    request.set_batch_size(frames);
    request.set_start_frame_idx(o.start_frame + first);
    if (o.format == FrameFormat::kJpeg) request.set_output_format(compositing::JPEG);
    if (o.format == FrameFormat::kRawRgb) request.set_output_format(compositing::RAW_RGB);
    request.set_jpeg_quality(o.jpeg_quality);
    if (o.ping_pong) request.set_loop_mode(compositing::PING_PONG);
    uint64_t seed = o.seed * 1000003u + uint64_t(stream) * 7919u + uint64_t(b);
    if (o.send_visual) request.set_visual_frames(RandomVisualFrames(frames, seed));

    BatchRecord record;
    record.stream = stream;
    record.batch_index = b;
    record.frames = frames;
    if (utterance) {
      auto audio = o.audio_slicer(first, frames);
      if (!audio.ok()) {
        record.error = audio.status().ToString();
        std::lock_guard<std::mutex> lock(shared.mu);
        if (*shared.on_batch) (*shared.on_batch)(record);
        shared.records.push_back(record);
        continue;
      }
      request.set_raw_audio(std::move(audio->pcm_s16le));
      request.set_sample_rate(audio->sample_rate);
      request.set_utterance_frames(audio->utterance_frames);
      request.set_end_of_utterance(audio->end_of_utterance);
    } else {
      request.set_audio_features(SyntheticAudioFeatures(o.synthetic_audio, frames, seed));
    }
    record.request_bytes = int64_t(request.ByteSizeLong());

    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::duration_cast<std::chrono::system_clock::duration>(
                             std::chrono::duration<double>(o.timeout_seconds)));
    compositing::CompositeBatchResponse response;
    const auto t0 = Clock::now();
    grpc::Status status = stub->InferBatchComposite(&context, request, &response);
    record.latency_ms = MsSince(t0);
    if (!status.ok()) {
      record.error =
          std::string(rpc::StatusCodeName(status.error_code())) + ": " + status.error_message();
    } else if (!response.success()) {
      record.error = "server error: " + response.error();
    } else if (response.composited_frames_size() != frames) {
      record.error = "expected " + std::to_string(frames) + " frames, got " +
                     std::to_string(response.composited_frames_size());
    } else {
      record.ok = true;
      record.response_bytes = int64_t(response.ByteSizeLong());
      record.server_total_ms = response.total_time_ms();
      record.inference_ms = response.inference_time_ms();
      record.composite_ms = response.composite_time_ms();
      record.loaded_on_demand = response.model_loaded_on_demand();
      if (shared.saver != nullptr && stream == 0) {
        const bool raw = response.output_format() == compositing::RAW_RGB;
        for (int i = 0; i < frames; ++i) {
          Status st = shared.saver->AddFrame(first + i, response.composited_frames(i), raw,
                                             response.frame_width(), response.frame_height());
          if (!st.ok()) {
            std::lock_guard<std::mutex> lock(shared.mu);
            if (shared.save_error.ok()) shared.save_error = st;
          }
        }
      }
    }
    std::lock_guard<std::mutex> lock(shared.mu);
    if (*shared.on_batch) (*shared.on_batch)(record);
    shared.records.push_back(std::move(record));
  }
}

}  // namespace

std::string SyntheticAudioFeatures(SyntheticAudio kind, int frames, uint64_t seed) {
  std::string bytes(size_t(frames) * kAudioFloats * sizeof(float), '\0');
  if (kind == SyntheticAudio::kSilence) return bytes;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> loudness(0.0f, 1.0f);
  std::vector<float> frame(kAudioFloats);
  for (int f = 0; f < frames; ++f) {
    // One loudness per frame so a lip-sync model opens the mouth by a different amount
    // on each frame; loud is the largest.
    float level = kind == SyntheticAudio::kLoud ? 1.0f : loudness(rng);
    std::fill(frame.begin(), frame.end(), level);
    std::memcpy(bytes.data() + size_t(f) * kAudioFloats * sizeof(float), frame.data(),
                kAudioFloats * sizeof(float));
  }
  return bytes;
}

std::string RandomVisualFrames(int frames, uint64_t seed) {
  const size_t n = size_t(frames) * kVisualFloats;
  std::string bytes(n * sizeof(float), '\0');
  std::mt19937 rng(uint32_t(seed ^ (seed >> 32)));
  std::uniform_real_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> chunk(kVisualFloats);
  for (int f = 0; f < frames; ++f) {
    for (auto& v : chunk) v = dist(rng);
    std::memcpy(bytes.data() + size_t(f) * kVisualFloats * sizeof(float), chunk.data(),
                kVisualFloats * sizeof(float));
  }
  return bytes;
}

Expected<ClientRun> RunClient(const ClientOptions& options, const BatchCallback& on_batch) {
  LIPSYNC_RETURN_IF_ERROR(ValidateOptions(options));
  Shared shared;
  shared.options = &options;
  shared.on_batch = &on_batch;
  std::unique_ptr<StreamSaver> saver;
  if (!options.save_dir.empty()) {
    LIPSYNC_ASSIGN_OR_RETURN(saver, StreamSaver::Create(options.save_dir, options.model));
    shared.saver = saver.get();
  }
  ClientRun run;
  if (options.warm_up) {
    grpc::ChannelArguments args;
    auto stub = compositing::CompositingService::NewStub(
        grpc::CreateCustomChannel(options.server, grpc::InsecureChannelCredentials(), args));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(int64_t(options.timeout_seconds * 1000)));
    lipsync::admin::LoadModelRequest request;
    request.set_model_id(options.model);
    lipsync::admin::LoadModelResponse response;
    const auto start = Clock::now();
    grpc::Status status = stub->LoadModel(&context, request, &response);
    run.warm_up_ms = MsSince(start);
    if (!status.ok()) {
      run.warm_up_error =
          std::string(rpc::StatusCodeName(status.error_code())) + ": " + status.error_message();
    }
  }
  const auto t0 = Clock::now();
  std::vector<std::thread> streams;
  for (int s = 1; s < options.concurrency; ++s) {
    streams.emplace_back([s, &shared] { RunStream(s, shared); });
  }
  RunStream(0, shared);
  for (auto& t : streams) t.join();
  const double wall_s = MsSince(t0) / 1000.0;

  run.records = std::move(shared.records);
  run.summary = Summarize(run.records, wall_s);
  if (saver) {
    LIPSYNC_RETURN_IF_ERROR(shared.save_error);
    if (run.summary.frames > 0) {
      LIPSYNC_ASSIGN_OR_RETURN(run.outputs, saver->Finish(options.wav_path));
      run.saved = true;
    }
  }
  return run;
}

}  // namespace lipsync::client
