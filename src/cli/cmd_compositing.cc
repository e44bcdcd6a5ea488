// `lipsync compositing --config compositing.yaml`: the compositing server (CPU side) of
// the split deployment, calling a remote inference server over gRPC.
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "cli/command.h"
#include "common/flags.h"
#include "common/log.h"
#include "compositing/compositing_server.h"
#include "config/config.h"
#include "rpc/compositing_service.h"
#include "rpc/grpc_inference_backend.h"
#include "rpc/server_setup.h"
#include "web/web_server.h"
#include "webrtc/session_publisher.h"

namespace {

constexpr const char* kUsage = R"(usage: lipsync compositing --config compositing.yaml

Serves CompositingService (default port :50052): calls the inference server named by
inference_server.url, pastes the generated mouth region onto the avatar's background
frames and returns JPEG (or raw RGB) frames. The config file takes the deployment
guide's keys (see deploy/compositing.yaml). SIGINT/SIGTERM: stop accepting calls, let
calls in flight finish (server.shutdown_grace_seconds), exit 0.
)";

const char* PolicyName(lipsync::config::EvictionPolicy p) {
  return p == lipsync::config::EvictionPolicy::kLru ? "lru" : "lfu";
}

int RunCompositing(int argc, char** argv) {
  using namespace lipsync;
  auto flags = Flags::Parse(argc, argv, {"config"}, {"help"});
  if (!flags.ok() || flags->Has("help") || !flags->Has("config")) {
    if (!flags.ok())
      std::fprintf(stderr, "lipsync compositing: %s\n\n", flags.status().message().c_str());
    std::fprintf(flags.ok() && flags->Has("help") ? stdout : stderr, "%s", kUsage);
    return flags.ok() && flags->Has("help") ? 0 : 2;
  }
  // Block the stop signals before any thread starts (threads inherit the mask), so
  // only sigwait below receives them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  const std::string path = flags->GetString("config");
  auto config = config::LoadCompositingConfig(path);
  if (!config.ok()) {
    std::fprintf(stderr, "lipsync compositing: %s\n", config.status().message().c_str());
    return 1;
  }
  if (auto level = ParseLogLevel(config->logging.level); level.ok()) SetLogLevel(*level);

  const char* rule =
      "================================================================================";
  std::printf("%s\n🎨 Compositing Server (CPU + Background Resources)\n%s\n", rule, rule);
  std::printf("✅ Configuration loaded from %s\n", path.c_str());
  std::printf("   Inference server: %s\n", config->inference_server.url.c_str());
  std::printf("   Max models: %d\n", config->capacity.max_models);
  std::printf("   Background cache: %d frames per model\n",
              config->capacity.background_cache_frames);
  std::printf("   Eviction policy: %s\n", PolicyName(config->capacity.eviction_policy));
  std::printf(
      "   Configured models: %zu%s\n", config->models.size(),
      config->model_root.empty() ? "" : (" (+ model_root " + config->model_root + ")").c_str());
  std::printf("\n🔌 Connecting to inference server at %s...\n",
              config->inference_server.url.c_str());
  std::fflush(stdout);

  auto backend = rpc::GrpcInferenceBackend::Create(rpc::BackendOptionsFromConfig(*config));
  if (!backend.ok()) {
    std::fprintf(stderr, "lipsync compositing: %s\n", backend.status().message().c_str());
    return 1;
  }
  auto info = (*backend)->Health(std::chrono::steady_clock::now() + std::chrono::seconds(3));
  if (info.ok()) {
    std::printf(
        "✅ Connected to inference server\n   GPUs: %d\n   Loaded models: %d/%d\n   Version: %s\n",
        info->gpu_count, info->loaded_models, info->max_models, info->version.c_str());
  } else {
    // Not fatal: the compositing server serves once the inference server is up.
    std::printf(
        "⚠️  Inference server not reachable yet (%s); requests fail with UNAVAILABLE until it "
        "is\n",
        info.status().ToString().c_str());
  }

  std::printf("\n📦 Initializing compositing registry...\n");
  auto server = lipsync::compositing::CompositingServer::Create(*config, **backend);
  if (!server.ok()) {
    std::fprintf(stderr, "lipsync compositing: %s\n", server.status().message().c_str());
    return 1;
  }
  std::printf(
      "✅ Compositing registry initialized (%d models loaded, %zu known, %zu compositing threads)\n",
      (*server)->avatars().loaded_count(), (*server)->avatars().KnownIds().size(),
      (*server)->compositing_threads());

  auto listen = config::ListenAddress(config->server.port);
  if (!listen.ok()) {
    std::fprintf(stderr, "lipsync compositing: %s\n", listen.status().message().c_str());
    return 1;
  }
  rpc::CompositingServiceImpl service(server->get());
  auto webrtc_hub = webrtc::StartHubFromConfig(*config);  // issue 13: Janus
  if (!webrtc_hub.ok()) {
    std::fprintf(stderr, "lipsync compositing: %s\n", webrtc_hub.status().message().c_str());
    return 1;
  }
  service.sessions().set_webrtc(*webrtc_hub);
  auto options = rpc::ServerOptionsFromConfig(*config);
  if (!options.ok()) {
    std::fprintf(stderr, "lipsync compositing: %s\n", options.status().message().c_str());
    return 1;
  }
  options->serving_at_start = false;  // grpc.health.v1: SERVING once ready below
  auto grpc_server = rpc::GrpcServer::Start(*options, {&service});
  if (!grpc_server.ok()) {
    std::fprintf(stderr, "lipsync compositing: %s\n", grpc_server.status().message().c_str());
    return 1;
  }
  if (int port = (*grpc_server)->ops().metrics_port(); port > 0) {
    LOG_INFO("Prometheus metrics on http://%s:%d/metrics", config->metrics.host.c_str(), port);
  }
  const char* format = config->output.format == config::OutputFormat::kJpeg ? "JPEG" : "raw RGB";
  std::printf("\n🌐 Compositing server listening on %s (port %d)\n", listen->c_str(),
              (*grpc_server)->port());
  std::printf("   Protocol: gRPC with Protobuf%s\n",
              config->server.tls.cert_path.empty() ? "" : " over TLS");
  std::printf("   Features:\n");
  std::printf("      • Calls inference server for GPU work (uint8 output, x-model-id routing)\n");
  std::printf("      • Server-side visual input from cached backgrounds\n");
  std::printf("      • Lazy-loading background cache (%s eviction)\n",
              PolicyName(config->capacity.eviction_policy));
  std::printf(
      "      • Multi-model compositing (%s paste-back, feather %d px)\n",
      config->output.paste_mode == config::PasteMode::kSynctalk328 ? "synctalk328" : "resize",
      config->output.feather_px);
  std::printf("      • %s encoding (quality: %d)\n", format, config->output.jpeg_quality);
  std::printf(
      "      • Live sessions (StreamSession, docs/STREAMING.md): up to %d, H.264 or MJPEG\n",
      config->session.max_sessions);
  auto page_server =
      web::StartForCommand(*config, server->get(), &(*grpc_server)->ops(), &service.sessions());
  (*grpc_server)->SetServing(true);
  std::printf("\n✅ Ready to accept connections!\n%s\n", rule);
  std::fflush(stdout);

  const int signal_number = rpc::WaitForStopSignal(&stop_signals, {&(*grpc_server)->ops()});
  LOG_INFO("compositing: received %s, shutting down (grace %d s)",
           signal_number == SIGINT ? "SIGINT" : "SIGTERM", config->server.shutdown_grace_seconds);
  if (page_server) page_server->Stop();
  const auto end = std::chrono::steady_clock::now() +
                   std::chrono::seconds(config->server.shutdown_grace_seconds);
  (*grpc_server)->SetServing(false);  // health checks turn away new traffic first
  service.sessions().Shutdown();      // live sessions never end on their own
  const bool drained = (*server)->Shutdown(rpc::Remaining(end));  // new calls: UNAVAILABLE
  (*grpc_server)->Close(end, drained);
  if (!drained) LOG_WARN("grace period ended with requests still running; they were cancelled");
  LOG_INFO("compositing: stopped");
  return 0;
}

}  // namespace

LIPSYNC_COMMAND("compositing", "compositing server (CPU): --config compositing.yaml",
                RunCompositing);
