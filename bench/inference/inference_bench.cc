// Server throughput vs. raw ONNX Runtime on the same model and batch, side by side.
//
//   inference_bench [--model bench.onnx] [--batches 1,8,24] [--clients 1,4] [--seconds 2]
//                   [--workers 8] [--intra-op-threads 0] [--cuda] [--ort-library PATH]
//                   [--compare-cpu] [--server-only] [--queue-delay-us N]
//
// For each (batch, clients) point: `clients` threads call OnnxModel::Run directly for
// --seconds ("raw ORT"), then `clients` threads send InferBatch through the real gRPC
// server on loopback for --seconds ("server"); frames/s of each and their ratio. Every
// client does at least one call after a warm-up call. Without --model the bench model
// (modelgen::WriteBenchModel, unet_328-sized, ~9.8 GFLOP/frame) is written to /tmp.
// --cuda requires the CUDA provider (startup error otherwise); --compare-cpu then checks
// the GPU output against the CPU provider's on one batch (max relative error < 1e-3,
// exit 1 otherwise); --server-only skips the raw column. bench/gpu_check.sh uses these.
// Not run by ctest.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>
#include <sstream>
#include <thread>

#include "common/flags.h"
#include "inference.grpc.pb.h"
#include "inference/inference_server.h"
#include "inference/onnx_model.h"
#include "inference/ort_runtime.h"
#include "modelgen/model_builder.h"
#include "rpc/inference_service.h"
#include "rpc/server_setup.h"

namespace {

using namespace lipsync;
namespace inf = lipsync::inference;
using Clock = std::chrono::steady_clock;

std::vector<int> ParseList(const std::string& text) {
  std::vector<int> values;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) values.push_back(std::stoi(item));
  return values;
}

// Runs `call` on `clients` threads: one warm-up each, then until `seconds` have passed
// (at least one timed call each). Returns frames per second over the timed calls.
template <typename Call>
double Measure(int clients, int batch, double seconds, Call call) {
  std::vector<std::thread> threads;
  std::atomic<int64_t> frames{0};
  std::atomic<bool> failed{false};
  std::atomic<int> warm{0};
  Clock::time_point start, end;
  std::atomic<bool> started{false};
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      if (!call(c)) failed = true;
      ++warm;
      while (!started.load()) std::this_thread::yield();
      do {
        if (!call(c)) {
          failed = true;
          return;
        }
        frames += batch;
      } while (Clock::now() < end);
    });
  }
  while (warm.load() < clients) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  start = Clock::now();
  end = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  started = true;
  for (auto& t : threads) t.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  if (failed.load()) return -1;
  return static_cast<double>(frames.load()) / elapsed;
}

int Main(int argc, char** argv) {
  auto flags = Flags::Parse(argc - 1, argv + 1,
                            {"model", "batches", "clients", "seconds", "workers",
                             "intra-op-threads", "ort-library", "queue-delay-us"},
                            {"cuda", "compare-cpu", "server-only"});
  if (!flags.ok()) {
    std::fprintf(stderr, "%s\n", flags.status().ToString().c_str());
    return 2;
  }
  const std::vector<int> batches = ParseList(flags->GetString("batches", "1,8,24"));
  const std::vector<int> client_counts = ParseList(flags->GetString("clients", "1,4"));
  const double seconds = flags->GetDouble("seconds", 2.0).value();
  std::string model_path = flags->GetString("model");
  if (model_path.empty()) {
    model_path = "/tmp/lipsync_bench_model_" + std::to_string(::getpid()) + ".onnx";
    if (Status s = modelgen::WriteBenchModel(model_path, 1); !s.ok()) {
      std::fprintf(stderr, "writing the bench model: %s\n", s.ToString().c_str());
      return 1;
    }
  }

  config::InferenceConfig config;
  config.onnx.use_cuda = flags->Has("cuda");
  config.onnx.require_cuda = flags->Has("cuda");
  config.onnx.library_path = flags->GetString("ort-library");
  config.onnx.intra_op_threads = static_cast<int>(flags->GetInt("intra-op-threads", 0).value());
  config.server.worker_count_per_gpu = static_cast<int>(flags->GetInt("workers", 8).value());
  config.server.max_message_size_mb = 512;
  // Dynamic batching window (0 = off): groups concurrent requests into one Run.
  config.server.max_queue_delay_us = static_cast<int>(flags->GetInt("queue-delay-us", 0).value());
  config.capacity.idle_timeout_minutes = 0;
  config.models["bench"] = {model_path, true, ""};
  auto server = inf::InferenceServer::Create(config);
  if (!server.ok()) {
    std::fprintf(stderr, "%s\n", server.status().ToString().c_str());
    return 1;
  }
  rpc::InferenceServiceImpl service(server->get());
  rpc::ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.max_message_size_mb = 512;
  auto grpc_server = rpc::GrpcServer::Start(options, {&service});
  if (!grpc_server.ok()) {
    std::fprintf(stderr, "%s\n", grpc_server.status().ToString().c_str());
    return 1;
  }
  const int device = (*server)->plan().devices.front();
  // The raw side calls Run on the very session the server uses (pinned by this handle):
  // same model, device and memory arena; a second session would double the arena.
  auto handle = (*server)->registry().Acquire("bench");
  if (!handle.ok()) {
    std::fprintf(stderr, "%s\n", handle.status().ToString().c_str());
    return 1;
  }
  const inf::OnnxModel* raw_model = &handle->model();
  if (flags->Has("compare-cpu")) {
    auto cpu_model = inf::OnnxModel::Load({model_path, ""}, -1);
    if (!cpu_model.ok()) {
      std::fprintf(stderr, "%s\n", cpu_model.status().ToString().c_str());
      return 1;
    }
    const int batch = 2;
    std::vector<float> visual(static_cast<size_t>(batch) * 6 * 320 * 320);
    std::vector<float> audio(static_cast<size_t>(batch) * inf::kAudioFeatureFloats);
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> dist(0.f, 1.f);
    for (float& v : visual) v = dist(rng);
    for (float& v : audio) v = dist(rng);
    std::string on_device, on_cpu;
    Status a =
        raw_model->Run(batch, visual.data(), audio.data(), inf::OutputFormat::kFloat32, &on_device);
    Status b =
        (*cpu_model)->Run(batch, visual.data(), audio.data(), inf::OutputFormat::kFloat32, &on_cpu);
    if (!a.ok() || !b.ok() || on_device.size() != on_cpu.size()) {
      std::fprintf(stderr, "compare run failed: %s / %s\n", a.ToString().c_str(),
                   b.ToString().c_str());
      return 1;
    }
    const auto* x = reinterpret_cast<const float*>(on_device.data());
    const auto* y = reinterpret_cast<const float*>(on_cpu.data());
    double max_rel = 0;
    for (size_t i = 0; i < on_cpu.size() / sizeof(float); ++i) {
      const double rel =
          std::abs(x[i] - y[i]) / std::max(std::abs(static_cast<double>(y[i])), 1e-3);
      max_rel = std::max(max_rel, rel);
    }
    std::printf("device %d vs CPU provider, batch %d: max relative error %.3g (%s, limit 1e-3)\n",
                device, batch, max_rel, max_rel < 1e-3 ? "PASS" : "FAIL");
    if (max_rel >= 1e-3) return 1;
  }
  const std::string target = "127.0.0.1:" + std::to_string((*grpc_server)->port());
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(512 << 20);
  args.SetMaxSendMessageSize(512 << 20);

  std::printf("model %s | provider %s | ORT %s | %d workers | %.1f s per point\n",
              model_path.c_str(), (*server)->plan().provider.c_str(),
              (*server)->ort_version().c_str(), (*server)->worker_count(), seconds);
  std::printf("%6s %8s %16s %16s %8s\n", "batch", "clients", "raw ORT fr/s", "server fr/s",
              "ratio");
  for (int batch : batches) {
    const size_t visual_floats = static_cast<size_t>(batch) * 6 * 320 * 320;
    const size_t audio_floats = static_cast<size_t>(batch) * inf::kAudioFeatureFloats;
    std::vector<float> visual(visual_floats), audio(audio_floats);
    std::mt19937 rng(batch);
    std::uniform_real_distribution<float> dist(0.f, 1.f);
    for (float& v : visual) v = dist(rng);
    for (float& v : audio) v = dist(rng);
    ::inference::InferBatchRequest request;
    request.set_model_id("bench");
    request.set_batch_size(batch);
    request.set_visual_frames(visual.data(), visual_floats * sizeof(float));
    request.set_audio_features(audio.data(), audio_floats * sizeof(float));
    for (int clients : client_counts) {
      const double raw =
          flags->Has("server-only") ? 0.0 : Measure(clients, batch, seconds, [&](int) {
            std::string out;
            return raw_model
                ->Run(batch, visual.data(), audio.data(), inf::OutputFormat::kFloat32, &out)
                .ok();
          });
      std::vector<std::unique_ptr<::inference::InferenceService::Stub>> stubs;
      for (int c = 0; c < clients; ++c) {
        // One channel per client, as separate compositing servers would have.
        args.SetInt("lipsync.bench.channel", c);
        stubs.push_back(::inference::InferenceService::NewStub(
            grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args)));
      }
      const double served = Measure(clients, batch, seconds, [&](int c) {
        ::inference::InferBatchResponse response;
        grpc::ClientContext context;
        grpc::Status status = stubs[c]->InferBatch(&context, request, &response);
        if (!status.ok()) std::fprintf(stderr, "InferBatch: %s\n", status.error_message().c_str());
        return status.ok() && response.success();
      });
      std::printf("%6d %8d %16.2f %16.2f %8.3f\n", batch, clients, raw, served,
                  raw > 0 ? served / raw : 0.0);
      std::fflush(stdout);
    }
  }
  handle = inf::ModelHandle();  // unpin before the registry goes
  (*grpc_server)->Shutdown(std::chrono::seconds(1));
  if (!flags->Has("model")) std::filesystem::remove(model_path);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Main(argc, argv); }
