// `lipsync inference --config inference.yaml [--port HOST:PORT]`: the inference server.
// Thin: load config, build InferenceServer + gRPC service, print the startup banner with
// the real values, serve until SIGINT/SIGTERM, then shut down gracefully (exit 0).
#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "cli/command.h"
#include "common/flags.h"
#include "common/log.h"
#include "config/config.h"
#include "inference/gpu_info.h"
#include "inference/inference_server.h"
#include "rpc/inference_service.h"
#include "rpc/server_setup.h"

namespace lipsync::cli {
namespace {

constexpr const char* kRule =
    "================================================================================";

int Fail(const Status& status) {
  std::fprintf(stderr, "lipsync inference: %s\n", status.ToString().c_str());
  return 1;
}

void PrintBanner(const config::InferenceConfig& config, inference::InferenceServer& server,
                 const std::string& address) {
  const inference::ExecutionPlan& plan = server.plan();
  const int gpu_count = plan.cuda ? static_cast<int>(plan.devices.size()) : 0;
  std::printf("%s\n", kRule);
  std::printf("🎮 Inference Server (%s Processing)\n", plan.cuda ? "GPU" : "CPU");
  std::printf("%s\n", kRule);
  std::printf("✅ Configuration loaded from %s\n",
              config.source_path.empty() ? "(defaults)" : config.source_path.c_str());
  std::printf("   GPU count: %d\n", gpu_count);
  std::printf("   Workers per %s: %d (%d in all)\n", plan.cuda ? "GPU" : "device",
              config.server.worker_count_per_gpu, server.worker_count());
  std::printf("   Max models per %s: %d\n", plan.cuda ? "GPU" : "device",
              config.capacity.max_models_per_gpu);
  std::printf("   ONNX Runtime: %s (version %s)\n", server.ort_library_path().c_str(),
              server.ort_version().c_str());
  std::printf("   Execution provider: %s (%s)\n", plan.provider.c_str(), plan.reason.c_str());
  std::printf("\n📦 Initializing model registry...\n");
  std::printf("✅ Model registry initialized (%d models preloaded)\n", server.preloaded_models());
  std::printf("\n🎮 GPU Status:\n");
  if (!plan.cuda) {
    std::printf("   none in use (CPU provider)\n");
  } else {
    for (const auto& gpu : inference::QueryGpus()) {
      std::printf("   GPU %d: %s, %d models, %lld MB used / %lld MB total\n", gpu.device_id,
                  gpu.name.c_str(), server.registry().loaded_count(gpu.device_id),
                  static_cast<long long>(gpu.memory_used_mb),
                  static_cast<long long>(gpu.memory_total_mb));
    }
  }
  std::printf("\n🌐 Inference server listening on %s\n", address.c_str());
  std::printf("   Protocol: gRPC with Protobuf%s%s\n",
              config.server.tls.cert_path.empty() ? "" : ", TLS",
              config.server.api_key.empty() ? "" : ", API key required");
  std::printf("   Features:\n");
  std::printf("      • %s ONNX inference (%s)\n", plan.cuda ? "GPU-accelerated" : "CPU",
              plan.provider.c_str());
  std::printf("      • Batch processing (up to %d frames, one Run per batch)\n",
              config.server.max_batch_size);
  if (config.server.max_queue_delay_us > 0) {
    std::printf("      • Dynamic batching (window %d us)\n", config.server.max_queue_delay_us);
  }
  std::printf("      • Multi-model support (%zu configured%s)\n", config.models.size(),
              config.model_root.empty() ? "" : (", root " + config.model_root).c_str());
  std::printf("      • Health monitoring\n");
  std::printf("\n✅ Ready to accept connections!\n");
  std::printf("%s\n", kRule);
  std::fflush(stdout);
}

int RunInference(int argc, char** argv) {
  auto flags = Flags::Parse(argc, argv, {"config", "port"}, {"help"});
  if (!flags.ok()) return Fail(flags.status());
  if (flags->Has("help") || !flags->Has("config")) {
    std::printf(
        "usage: lipsync inference --config inference.yaml [--port HOST:PORT]\n"
        "  --port  overrides server.port (':PORT' or 'HOST:PORT'; port 0 picks a free one)\n");
    return flags->Has("help") ? 0 : 2;
  }
  // Signals are taken by sigwait below; block them before any thread starts so no
  // worker thread receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto config = config::LoadInferenceConfig(flags->GetString("config"));
  if (!config.ok()) return Fail(config.status());
  if (flags->Has("port")) config->server.port = flags->GetString("port");
  auto level = ParseLogLevel(config->logging.level);
  if (!level.ok()) return Fail(level.status());
  SetLogLevel(*level);
  auto address = config::ListenAddress(config->server.port);
  if (!address.ok()) return Fail(address.status());

  auto server = inference::InferenceServer::Create(*config);
  if (!server.ok()) return Fail(server.status());
  rpc::InferenceServiceImpl service(server->get());
  auto options = rpc::ServerOptionsFromConfig(*config);
  if (!options.ok()) return Fail(options.status());
  options->serving_at_start = false;  // grpc.health.v1: SERVING once ready below
  auto grpc_server = rpc::GrpcServer::Start(*options, {&service});
  if (!grpc_server.ok()) return Fail(grpc_server.status());
  if (int port = (*grpc_server)->ops().metrics_port(); port > 0) {
    LOG_INFO("Prometheus metrics on http://%s:%d/metrics", config->metrics.host.c_str(), port);
  }
  const std::string host = address->substr(0, address->rfind(':'));
  (*grpc_server)->SetServing(true);
  PrintBanner(*config, **server, host + ":" + std::to_string((*grpc_server)->port()));

  const int signal_number = rpc::WaitForStopSignal(&signals, {&(*grpc_server)->ops()});
  const auto end = std::chrono::steady_clock::now() +
                   std::chrono::seconds(config->server.shutdown_grace_seconds);
  LOG_INFO("received %s: finishing requests in flight (grace %d s)",
           signal_number == SIGINT ? "SIGINT" : "SIGTERM", config->server.shutdown_grace_seconds);
  (*grpc_server)->SetServing(false);  // health checks turn away new traffic first
  // The service answers UNAVAILABLE from here on.
  const bool drained = (*server)->Shutdown(rpc::Remaining(end));
  (*grpc_server)->Close(end, drained);
  if (!drained) LOG_WARN("grace period ended with requests still running; they were cancelled");
  LOG_INFO("inference server stopped");
  return 0;
}

}  // namespace

LIPSYNC_COMMAND("inference", "run the inference server (gRPC InferenceService)", RunInference);

}  // namespace lipsync::cli
