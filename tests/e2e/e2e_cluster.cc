#include "e2e/e2e_cluster.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <chrono>
#include <cstdio>
#include <sstream>
#include <thread>

#include <cstdlib>
#include <fstream>

#include "demo/avatar_generator.h"
#include "modelgen/model_builder.h"

namespace lipsync::e2e {

namespace {

void MakeTenant(const fs::path& dir, bool demo_model, uint64_t seed) {
  fs::create_directories(dir / "checkpoint");
  demo::AvatarSpec spec;
  spec.width = kWidth;
  spec.height = kHeight;
  spec.frames = kFrames;
  spec.seed = seed;
  Status st = demo::GenerateAvatarFrames(spec, dir.string(), nullptr, 1);
  EXPECT_TRUE(st.ok()) << st.ToString();
  const std::string model = (dir / "checkpoint" / "model_best.onnx").string();
  st = demo_model ? modelgen::WriteDemoLipSyncModel(model) : modelgen::WriteIdentityModel(model);
  EXPECT_TRUE(st.ok()) << st.ToString();
}

}  // namespace

const fs::path& ModelRoot() {
  static const fs::path root = [] {
    fs::path r = fs::temp_directory_path() / ("lipsync_e2e_" + std::to_string(::getpid()));
    fs::remove_all(r);
    MakeTenant(r / "identity", false, 1);
    MakeTenant(r / "demo", true, 2);
    MakeTenant(r / "badrects", false, 3);
    std::ofstream(r / "badrects" / "crop_rects.json") << "{ this is not json";
    MakeTenant(r / "noframes", false, 4);
    for (const auto& e : fs::directory_iterator(r / "noframes" / "frames")) fs::remove(e.path());
    // The temp dir goes with the process (set KEEP_E2E_DIR=1 to inspect it).
    std::atexit([] {
      if (std::getenv("KEEP_E2E_DIR") == nullptr) {
        std::error_code ec;
        fs::remove_all(fs::temp_directory_path() / ("lipsync_e2e_" + std::to_string(::getpid())),
                       ec);
      }
    });
    return r;
  }();
  return root;
}

config::InferenceConfig InferenceTestConfig() {
  config::InferenceConfig c;
  c.server.port = "127.0.0.1:0";
  c.server.worker_count_per_gpu = 1;
  c.onnx.use_cuda = false;
  c.capacity.idle_timeout_minutes = 0;
  c.model_root = ModelRoot().string();
  return c;
}

config::CompositingConfig CompositingTestConfig() {
  config::CompositingConfig c;
  c.server.port = "127.0.0.1:0";
  c.server.compositing_threads = 2;
  c.inference_server.timeout_seconds = 20;
  c.capacity.idle_timeout_minutes = 0;
  c.output.region_jpeg = false;
  c.output.compact_backgrounds = false;
  c.model_root = ModelRoot().string();
  return c;
}

std::shared_ptr<grpc::Channel> LoopbackChannel(int port) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(200 << 20);
  args.SetMaxSendMessageSize(200 << 20);
  return grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port),
                                   grpc::InsecureChannelCredentials(), args);
}

Cluster::Cluster(Mode mode, const config::CompositingConfig& compositing_config,
                 compositing::CompositingServerOptions options) {
  auto created = inference::InferenceServer::Create(InferenceTestConfig());
  EXPECT_TRUE(created.ok()) << created.status().ToString();
  if (!created.ok()) return;
  inference_ = std::move(*created);
  inference::InferenceBackend* backend = inference_.get();
  if (mode == Mode::kSplit) {
    inference_service_ = std::make_unique<rpc::InferenceServiceImpl>(inference_.get());
    rpc::ServerOptions io;
    io.listen_address = "127.0.0.1:0";
    io.ops.server_name = "inference";
    io.ops.metrics_port = 0;  // /metrics on a free port
    auto started = rpc::GrpcServer::Start(io, {inference_service_.get()});
    EXPECT_TRUE(started.ok()) << started.status().ToString();
    if (!started.ok()) return;
    inference_grpc_ = std::move(*started);
    rpc::GrpcBackendOptions bo;
    bo.target = "127.0.0.1:" + std::to_string(inference_grpc_->port());
    bo.max_retries = compositing_config.inference_server.max_retries;
    auto remote = rpc::GrpcInferenceBackend::Create(bo);
    EXPECT_TRUE(remote.ok()) << remote.status().ToString();
    if (!remote.ok()) return;
    remote_ = std::move(*remote);
    backend = remote_.get();
    inference_stub_ =
        ::inference::InferenceService::NewStub(LoopbackChannel(inference_grpc_->port()));
    options.inference_label = bo.target;
  } else {
    options.inference_label = "in-process";
  }
  auto server = compositing::CompositingServer::Create(compositing_config, *backend, options);
  EXPECT_TRUE(server.ok()) << server.status().ToString();
  if (!server.ok()) return;
  server_ = std::move(*server);
  service_ = std::make_unique<rpc::CompositingServiceImpl>(server_.get());
  rpc::ServerOptions co;
  co.listen_address = "127.0.0.1:0";
  co.ops.server_name = "compositing";
  co.ops.metrics_port = 0;
  auto started = rpc::GrpcServer::Start(co, {service_.get()});
  EXPECT_TRUE(started.ok()) << started.status().ToString();
  if (!started.ok()) return;
  compositing_grpc_ = std::move(*started);
  stub_ = ::compositing::CompositingService::NewStub(LoopbackChannel(compositing_grpc_->port()));
  ok_ = true;
}

Cluster::~Cluster() {
  using namespace std::chrono_literals;
  if (compositing_grpc_) compositing_grpc_->Shutdown(1s);
  if (server_) server_->Shutdown(1s);
  if (inference_grpc_) inference_grpc_->Shutdown(1s);
}

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

pid_t Spawn(const std::vector<std::string>& args, const fs::path& log) {
  const pid_t pid = fork();
  if (pid == 0) {
    FILE* f = std::fopen(log.c_str(), "w");
    dup2(fileno(f), STDOUT_FILENO);
    dup2(fileno(f), STDERR_FILENO);
    const std::string binary = std::string(LIPSYNC_BINARY_DIR) + "/lipsync";
    std::vector<char*> argv = {const_cast<char*>(binary.c_str())};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(binary.c_str(), argv.data());
    _exit(127);
  }
  auto read_log = [&] {
    std::stringstream text;
    text << std::ifstream(log, std::ios::binary).rdbuf();
    return text.str();
  };
  for (int i = 0; i < 600; ++i) {
    if (read_log().find("Ready to accept connections") != std::string::npos) return pid;
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ADD_FAILURE() << "lipsync " << args[0] << " did not become ready:\n" << read_log();
  return pid;
}

}  // namespace lipsync::e2e
