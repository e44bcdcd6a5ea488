// `lipsync serve`: both services in one process for a single box. The compositing
// server calls the InferenceServer object directly (no serialization, no copies of
// the tensors); both gRPC services still listen on their configured ports, so clients
// and tools see the same APIs as in the split deployment.
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "cli/command.h"
#include "common/flags.h"
#include "common/log.h"
#include "compositing/compositing_server.h"
#include "config/config.h"
#include "inference/inference_server.h"
#include "rpc/compositing_service.h"
#include "rpc/inference_service.h"
#include "rpc/server_setup.h"
#include "web/web_server.h"
#include "webrtc/session_publisher.h"

namespace {

constexpr const char* kUsage =
    R"(usage: lipsync serve --inference-config inference.yaml --compositing-config compositing.yaml

Runs the inference server and the compositing server in one process: each config file is
the one its server takes on its own (`lipsync inference --config`, `lipsync compositing
--config`), and each service listens on its own `server.port`. The compositing side calls
inference in-process (its `inference_server.url` is not used; `timeout_seconds` still
bounds each call). SIGINT/SIGTERM: graceful shutdown of both, exit 0. SIGHUP: reopen the
audit logs and re-read the credentials files.
)";

int Fail(const lipsync::Status& status) {
  std::fprintf(stderr, "lipsync serve: %s\n", status.message().c_str());
  return 1;
}

int RunServe(int argc, char** argv) {
  using namespace lipsync;
  auto flags = Flags::Parse(argc, argv, {"inference-config", "compositing-config"}, {"help"});
  const bool help = flags.ok() && flags->Has("help");
  if (!flags.ok() || help || !flags->Has("inference-config") || !flags->Has("compositing-config")) {
    if (!flags.ok())
      std::fprintf(stderr, "lipsync serve: %s\n\n", flags.status().message().c_str());
    std::fprintf(help ? stdout : stderr, "%s", kUsage);
    return help ? 0 : 2;
  }
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  const std::string inference_path = flags->GetString("inference-config");
  const std::string compositing_path = flags->GetString("compositing-config");
  auto inference_config = config::LoadInferenceConfig(inference_path);
  if (!inference_config.ok()) return Fail(inference_config.status());
  auto compositing_config = config::LoadCompositingConfig(compositing_path);
  if (!compositing_config.ok()) return Fail(compositing_config.status());
  if (auto level = ParseLogLevel(compositing_config->logging.level); level.ok()) {
    SetLogLevel(*level);
  }

  const char* rule =
      "================================================================================";
  std::printf("%s\n🚀 Lip-sync server, single process (inference + compositing)\n%s\n", rule, rule);
  std::printf("✅ Configuration loaded from %s and %s\n", inference_path.c_str(),
              compositing_path.c_str());
  std::fflush(stdout);

  auto inference_server = lipsync::inference::InferenceServer::Create(*inference_config);
  if (!inference_server.ok()) return Fail(inference_server.status());
  std::printf("✅ Inference: ONNX Runtime %s, %d workers, %d models preloaded\n",
              (*inference_server)->ort_version().c_str(), (*inference_server)->worker_count(),
              (*inference_server)->preloaded_models());

  lipsync::compositing::CompositingServerOptions options;
  options.inference_label = "in-process";
  auto compositing_server = lipsync::compositing::CompositingServer::Create(
      *compositing_config, **inference_server, options);
  if (!compositing_server.ok()) return Fail(compositing_server.status());
  std::printf("✅ Compositing: %zu avatars known, %zu compositing threads, JPEG quality %d\n",
              (*compositing_server)->avatars().KnownIds().size(),
              (*compositing_server)->compositing_threads(),
              compositing_config->output.jpeg_quality);

  auto inference_listen = config::ListenAddress(inference_config->server.port);
  if (!inference_listen.ok()) return Fail(inference_listen.status());
  auto compositing_listen = config::ListenAddress(compositing_config->server.port);
  if (!compositing_listen.ok()) return Fail(compositing_listen.status());

  rpc::InferenceServiceImpl inference_service(inference_server->get());
  auto inference_options = rpc::ServerOptionsFromConfig(*inference_config);
  if (!inference_options.ok()) return Fail(inference_options.status());
  inference_options->serving_at_start = false;  // grpc.health.v1: SERVING once ready
  auto inference_grpc = rpc::GrpcServer::Start(*inference_options, {&inference_service});
  if (!inference_grpc.ok()) return Fail(inference_grpc.status());

  rpc::CompositingServiceImpl compositing_service(compositing_server->get());
  auto webrtc_hub = webrtc::StartHubFromConfig(*compositing_config);  // issue 13: Janus
  if (!webrtc_hub.ok()) return Fail(webrtc_hub.status());
  compositing_service.sessions().set_webrtc(*webrtc_hub);
  auto compositing_options = rpc::ServerOptionsFromConfig(*compositing_config);
  if (!compositing_options.ok()) return Fail(compositing_options.status());
  compositing_options->serving_at_start = false;  // grpc.health.v1: SERVING once ready
  auto compositing_grpc = rpc::GrpcServer::Start(*compositing_options, {&compositing_service});
  if (!compositing_grpc.ok()) return Fail(compositing_grpc.status());

  std::printf("\n🌐 Inference server listening on %s (port %d)\n", inference_listen->c_str(),
              (*inference_grpc)->port());
  std::printf("🌐 Compositing server listening on %s (port %d), calling inference in-process\n",
              compositing_listen->c_str(), (*compositing_grpc)->port());
  std::printf("   Live sessions (StreamSession, docs/STREAMING.md): up to %d\n",
              compositing_config->session.max_sessions);
  auto page_server =
      web::StartForCommand(*compositing_config, compositing_server->get(),
                           &(*compositing_grpc)->ops(), &compositing_service.sessions());
  (*inference_grpc)->SetServing(true);
  (*compositing_grpc)->SetServing(true);
  std::printf("\n✅ Ready to accept connections!\n%s\n", rule);
  std::fflush(stdout);

  const int signal_number = rpc::WaitForStopSignal(
      &stop_signals, {&(*inference_grpc)->ops(), &(*compositing_grpc)->ops()});
  LOG_INFO("serve: received %s, shutting down", signal_number == SIGINT ? "SIGINT" : "SIGTERM");
  if (page_server) page_server->Stop();
  // One grace period (the longer of the two configs) for both services, drained
  // together: health checks turn away new traffic, both cores refuse new requests
  // (UNAVAILABLE) and finish those in flight (compositing first: its requests still call
  // inference), then each gRPC server sends the last replies and closes.
  const int grace_seconds = std::max(compositing_config->server.shutdown_grace_seconds,
                                     inference_config->server.shutdown_grace_seconds);
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(grace_seconds);
  (*compositing_grpc)->SetServing(false);
  (*inference_grpc)->SetServing(false);
  compositing_service.sessions().Shutdown();  // live sessions never end on their own
  const bool compositing_drained = (*compositing_server)->Shutdown(rpc::Remaining(end));
  const bool inference_drained = (*inference_server)->Shutdown(rpc::Remaining(end));
  std::thread inference_close([&] { (*inference_grpc)->Close(end, inference_drained); });
  (*compositing_grpc)->Close(end, compositing_drained);
  inference_close.join();
  if (!compositing_drained || !inference_drained) {
    LOG_WARN("serve: grace period (%d s) ended with requests still running; they were cancelled",
             grace_seconds);
  }
  LOG_INFO("serve: stopped");
  return 0;
}

}  // namespace

LIPSYNC_COMMAND("serve", "inference + compositing in one process (no serialization between them)",
                RunServe);
