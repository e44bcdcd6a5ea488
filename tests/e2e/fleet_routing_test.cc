// Several inference servers behind one compositing server (issue 12), all real programs
// on loopback: three `lipsync inference` binaries and a `lipsync compositing` binary that
// either lists the three (inference_server.urls: rendezvous hashing in the compositing
// server, no extra hop) or points at Debian's nginx running the SHIPPED
// deploy/nginx/lipsync-inference.conf (only its addresses rewritten to loopback ports).
// Which server served a model is read from the servers themselves: each one's ListModels
// counts the requests it served per model (usage_count).
// Properties: every request for a model lands on one server, 36 models spread over all
// three, and stopping one server moves only its models while every request succeeds.
// GCC 12 reports a false -Wmaybe-uninitialized inside std::regex's NFA (GCC PR 105562)
// when this file is built with -fsanitize=address (scripts/sanitize.sh asan); the
// warning is placed in <functional>, which gtest includes first, so the pragma leads.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "e2e/e2e_cluster.h"

#ifndef LIPSYNC_SOURCE_DIR
#error "LIPSYNC_SOURCE_DIR must name the repository (for deploy/nginx)"
#endif

namespace lipsync::e2e {
namespace {

using namespace std::chrono_literals;
namespace pb = ::compositing;

constexpr int kModels = 36;
constexpr int kServers = 3;

std::string ModelName(int i) {
  char name[8];
  std::snprintf(name, sizeof name, "m%02d", i);
  return name;
}

// A model_root of kModels tenants, each a copy of the fixture's identity tenant.
const fs::path& FleetRoot() {
  static const fs::path root = [] {
    const fs::path r = ModelRoot() / "fleet";
    fs::create_directories(r);
    for (int i = 0; i < kModels; ++i) {
      fs::copy(ModelRoot() / "identity", r / ModelName(i), fs::copy_options::recursive);
    }
    return r;
  }();
  return root;
}

std::string ReadText(const fs::path& path) {
  std::stringstream text;
  text << std::ifstream(path, std::ios::binary).rdbuf();
  return text.str();
}

// Requests served per model by the inference server on `port` (its own count). With
// `must_answer` false a server that is not (yet) listening yields an empty map: the
// caller polls a server it has just restarted.
std::map<std::string, int64_t> ServedBy(int port, bool must_answer = true) {
  auto stub = ::inference::InferenceService::NewStub(LoopbackChannel(port));
  ::lipsync::admin::ListModelsRequest request;
  request.set_limit(1000);
  ::lipsync::admin::ListModelsResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 10s);
  const grpc::Status status = stub->ListModels(&context, request, &response);
  if (!status.ok()) {
    EXPECT_FALSE(must_answer) << "ListModels on :" << port << ": " << status.error_message();
    return {};
  }
  std::map<std::string, int64_t> served;
  for (const auto& model : response.models()) {
    if (model.inference().usage_count() > 0) {
      served[model.model_id()] = model.inference().usage_count();
    }
  }
  return served;
}

class Fleet {
 public:
  Fleet() : dir_(ModelRoot() / ("fleet_run_" + std::to_string(++runs_))) {
    FleetRoot();
    fs::create_directories(dir_);
    for (int i = 0; i < kServers; ++i) {
      ports_.push_back(FreePort());
      pids_.push_back(-1);
      StartInference(i);
    }
  }
  ~Fleet() {
    for (pid_t& pid : pids_) Stop(&pid);
    Stop(&compositing_);
    Stop(&nginx_);
  }

  void StartInference(int i) {
    const fs::path yaml = dir_ / ("inference_" + std::to_string(i) + ".yaml");
    std::ofstream(yaml) << "server:\n  port: \"127.0.0.1:" << ports_[i] << "\"\n"
                        << "  worker_count_per_gpu: 1\n  shutdown_grace_seconds: 5\n"
                        << "onnx:\n  use_cuda: false\n"
                        << "model_root: \"" << FleetRoot().string() << "\"\n";
    pids_[i] = Spawn({"inference", "--config", yaml.string()},
                     dir_ / ("inference_" + std::to_string(i) + ".log"));
  }
  void StopInference(int i) { Stop(&pids_[i]); }

  // `inference_server:` lines of the compositing config; starts it and returns a stub.
  std::unique_ptr<pb::CompositingService::Stub> StartCompositing(const std::string& inference) {
    const int port = FreePort();
    const fs::path yaml = dir_ / "compositing.yaml";
    std::ofstream(yaml) << "server:\n  port: \"127.0.0.1:" << port << "\"\n"
                        << "  compositing_threads: 2\n  shutdown_grace_seconds: 5\n"
                        << "inference_server:\n"
                        << inference << "  timeout_seconds: 20\n"
                        << "output:\n  region_jpeg: false\n"
                        << "model_root: \"" << FleetRoot().string() << "\"\n";
    compositing_ = Spawn({"compositing", "--config", yaml.string()}, dir_ / "compositing.log");
    return pb::CompositingService::NewStub(LoopbackChannel(port));
  }

  // Debian's nginx with the shipped file: the upstream servers and the listen address
  // rewritten to loopback ports, everything else as shipped, included from a minimal
  // main config whose pid, logs and temp paths lie in this run's directory.
  // Returns the port nginx listens on, or 0 (test failure recorded).
  int StartNginx() {
    const std::string shipped =
        ReadText(fs::path(LIPSYNC_SOURCE_DIR) / "deploy/nginx/lipsync-inference.conf");
    std::string conf = shipped;
    const std::regex upstream_server(R"(server\s+10\.0\.0\.1[1-3]:50051)");
    int replaced = 0;
    std::string out;
    std::sregex_iterator it(conf.begin(), conf.end(), upstream_server), end;
    size_t last = 0;
    for (; it != end; ++it, ++replaced) {
      out += conf.substr(last, it->position() - last);
      out += "server 127.0.0.1:" + std::to_string(ports_[replaced % kServers]);
      last = it->position() + it->length();
    }
    out += conf.substr(last);
    EXPECT_EQ(replaced, kServers) << "the shipped nginx file should list three servers";
    const int port = FreePort();
    const std::string listen = "listen 10.0.0.10:50051 http2;";
    const size_t at = out.find(listen);
    EXPECT_NE(at, std::string::npos) << "the shipped nginx file's listen line changed";
    if (replaced != kServers || at == std::string::npos) return 0;
    out.replace(at, listen.size(), "listen 127.0.0.1:" + std::to_string(port) + " http2;");
    std::ofstream(dir_ / "lipsync-inference.conf") << out;

    const fs::path temp = dir_ / "nginx_temp";
    fs::create_directories(temp);
    // Workers drop to `nobody` when the master runs as root: let them use the temp dir.
    chmod(temp.c_str(), 0777);
    std::ofstream(dir_ / "nginx.conf")
        << "daemon off;\nworker_processes 1;\n"
        << "pid " << (dir_ / "nginx.pid").string() << ";\n"
        << "error_log " << (dir_ / "nginx_error.log").string() << " info;\n"
        << "events { worker_connections 256; }\n"
        << "http {\n"
        << "  log_format route '$http_x_model_id $upstream_addr $status';\n"
        << "  access_log " << (dir_ / "nginx_access.log").string() << " route;\n"
        << "  client_body_temp_path " << (temp / "body").string() << ";\n"
        << "  proxy_temp_path " << (temp / "proxy").string() << ";\n"
        << "  fastcgi_temp_path " << (temp / "fastcgi").string() << ";\n"
        << "  uwsgi_temp_path " << (temp / "uwsgi").string() << ";\n"
        << "  scgi_temp_path " << (temp / "scgi").string() << ";\n"
        << "  include " << (dir_ / "lipsync-inference.conf").string() << ";\n"
        << "}\n";
    const std::string check =
        "/usr/sbin/nginx -t -q -p " + dir_.string() + " -e " + (dir_ / "nginx_error.log").string() +
        " -c " + (dir_ / "nginx.conf").string() + " 2>" + (dir_ / "nginx_check.log").string();
    EXPECT_EQ(std::system(check.c_str()), 0) << ReadText(dir_ / "nginx_check.log");
    nginx_ = fork();
    if (nginx_ == 0) {
      const std::string prefix = dir_.string(), config = (dir_ / "nginx.conf").string(),
                        errors = (dir_ / "nginx_error.log").string();
      execl("/usr/sbin/nginx", "nginx", "-p", prefix.c_str(), "-e", errors.c_str(), "-c",
            config.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    // Ready once it accepts a connection (bounded).
    for (int i = 0; i < 200; ++i) {
      if (ReadText(dir_ / "nginx.pid").size() > 0) break;
      std::this_thread::sleep_for(25ms);
    }
    EXPECT_FALSE(ReadText(dir_ / "nginx.pid").empty()) << ReadText(dir_ / "nginx_error.log");
    return port;
  }

  const std::vector<int>& ports() const { return ports_; }
  std::string target(int i) const { return "127.0.0.1:" + std::to_string(ports_[i]); }
  const fs::path& dir() const { return dir_; }

 private:
  static void Stop(pid_t* pid) {
    if (*pid <= 0) return;
    kill(*pid, SIGTERM);
    int status = 0;
    waitpid(*pid, &status, 0);
    *pid = -1;
  }

  static inline int runs_ = 0;
  fs::path dir_;
  std::vector<int> ports_;
  std::vector<pid_t> pids_;
  pid_t compositing_ = -1;
  pid_t nginx_ = -1;
};

grpc::Status Composite(pb::CompositingService::Stub& stub, const std::string& model) {
  pb::CompositeBatchRequest request;
  request.set_model_id(model);
  request.set_batch_size(2);
  request.set_audio_features(std::string(8192 * 4, '\0'));
  pb::CompositeBatchResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 30s);
  return stub.InferBatchComposite(&context, request, &response);
}

// Sends `rounds` requests for every model; every one must succeed.
void SendAll(pb::CompositingService::Stub& stub, int rounds) {
  for (int round = 0; round < rounds; ++round) {
    for (int i = 0; i < kModels; ++i) {
      const grpc::Status status = Composite(stub, ModelName(i));
      ASSERT_TRUE(status.ok()) << ModelName(i) << ": " << status.error_message();
    }
  }
}

// Which server (index) served each model, from the servers' own counts; every model
// served by exactly one of `alive`, `expected` requests each (counted since `before`).
std::map<std::string, int> Owners(const Fleet& fleet, const std::vector<int>& alive,
                                  const std::vector<std::map<std::string, int64_t>>& before,
                                  int expected) {
  std::map<std::string, int> owner;
  for (int server : alive) {
    for (const auto& [model, count] : ServedBy(fleet.ports()[server])) {
      const int64_t added = count - (before.empty()                ? 0
                                     : before[server].count(model) ? before[server].at(model)
                                                                   : 0);
      if (added == 0) continue;
      EXPECT_EQ(owner.count(model), 0u) << model << " was served by two servers";
      EXPECT_EQ(added, expected) << model << " on server " << server;
      owner[model] = server;
    }
  }
  EXPECT_EQ(owner.size(), size_t(kModels)) << "every model should have been served";
  return owner;
}

std::vector<std::map<std::string, int64_t>> Counts(const Fleet& fleet) {
  std::vector<std::map<std::string, int64_t>> counts;
  for (int port : fleet.ports()) counts.push_back(ServedBy(port));
  return counts;
}

// The shared scenario: route, check the spread, stop one server, route again.
// Returns {owners before, owners after} for mode-specific checks.
std::pair<std::map<std::string, int>, std::map<std::string, int>> RunScenario(
    Fleet& fleet, pb::CompositingService::Stub& stub) {
  SendAll(stub, 2);
  const std::map<std::string, int> first = Owners(fleet, {0, 1, 2}, {}, 2);
  std::map<int, int> per_server;
  for (const auto& [model, server] : first) ++per_server[server];
  for (int server = 0; server < kServers; ++server) {
    // 36 models, 3 servers: about 12 each (the share depends on the hash of the ports
    // picked; a server with none would mean no spreading at all).
    EXPECT_GE(per_server[server], 1) << "server " << server << " got no model";
  }

  std::printf("[ figures  ] %d models: %d / %d / %d per server\n", kModels, per_server[0],
              per_server[1], per_server[2]);
  const std::vector<std::map<std::string, int64_t>> before = Counts(fleet);
  fleet.StopInference(0);
  SendAll(stub, 2);
  const std::map<std::string, int> second = Owners(fleet, {1, 2}, before, 2);
  int moved = 0;
  for (const auto& [model, server] : first) {
    if (server != 0) {
      EXPECT_EQ(second.at(model), server) << model << " moved though its server stayed";
    } else {
      ++moved;
    }
  }
  EXPECT_EQ(moved, per_server[0]);
  std::printf("[ figures  ] server 0 stopped: %d models moved, %d stayed\n", moved,
              kModels - moved);
  return {first, second};
}

TEST(FleetRoutingTest, RendezvousListInTheCompositingServer) {
  Fleet fleet;
  const std::vector<std::string> targets = {fleet.target(0), fleet.target(1), fleet.target(2)};
  auto stub = fleet.StartCompositing("  urls: [\"" + targets[0] + "\", \"" + targets[1] + "\", \"" +
                                     targets[2] + "\"]\n");
  const auto [first, second] = RunScenario(fleet, *stub);
  // The owners are exactly the rendezvous order's: first choice, then the next one up.
  for (const auto& [model, server] : first) {
    const std::vector<size_t> order = rpc::RendezvousOrder(targets, model);
    EXPECT_EQ(server, int(order[0])) << model;
    if (server == 0 && second.count(model)) {
      EXPECT_EQ(second.at(model), int(order[1])) << model;
    }
  }
  // Back again: a restarted server gets its models back (they are its by hash).
  fleet.StartInference(0);
  bool back = false;
  for (int attempt = 0; attempt < 50 && !back; ++attempt) {
    ASSERT_TRUE(Composite(*stub, "m00").ok());
    back = ServedBy(fleet.ports()[int(rpc::RendezvousOrder(targets, "m00")[0])],
                    /*must_answer=*/false)
               .count("m00");
    if (!back) std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(back) << "m00 did not return to its first-choice server";
}

TEST(FleetRoutingTest, ShippedNginxConfigRoutesByModelId) {
  ASSERT_TRUE(fs::exists("/usr/sbin/nginx")) << "Debian's nginx is required (scripts/setup.sh)";
  Fleet fleet;
  const int nginx_port = fleet.StartNginx();
  ASSERT_GT(nginx_port, 0);
  auto stub = fleet.StartCompositing("  url: \"127.0.0.1:" + std::to_string(nginx_port) + "\"\n");
  RunScenario(fleet, *stub);
  // nginx saw the model id header on every inference call and passed it upstream.
  const std::string access = ReadText(fleet.dir() / "nginx_access.log");
  EXPECT_NE(access.find("m00 127.0.0.1:"), std::string::npos) << access.substr(0, 2000);
}

// The config key: a YAML list of HOST:PORT; other shapes are errors naming the key, and
// the backend refuses an empty or repeated entry.
TEST(FleetConfigTest, InferenceServerUrlsIsAListOfAddresses) {
  auto config = config::ParseCompositingConfig(
      "inference_server:\n  urls: [\"10.0.0.11:50051\", \"10.0.0.12:50051\"]\n", "c.yaml");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->inference_server.urls,
            (std::vector<std::string>{"10.0.0.11:50051", "10.0.0.12:50051"}));
  const rpc::GrpcBackendOptions options = rpc::BackendOptionsFromConfig(*config);
  EXPECT_TRUE(options.target.empty());
  EXPECT_EQ(options.targets, config->inference_server.urls);

  auto scalar = config::ParseCompositingConfig("inference_server:\n  urls: \"a:1\"\n", "c.yaml");
  ASSERT_FALSE(scalar.ok());
  EXPECT_NE(scalar.status().message().find("inference_server.urls: expected a list of strings"),
            std::string::npos)
      << scalar.status().message();
  auto nested =
      config::ParseCompositingConfig("inference_server:\n  urls: [[\"a:1\"]]\n", "c.yaml");
  ASSERT_FALSE(nested.ok());
  EXPECT_NE(nested.status().message().find("entry 1: expected a string"), std::string::npos)
      << nested.status().message();

  auto twice =
      config::ParseCompositingConfig("inference_server:\n  urls: [\"a:1\", \"a:1\"]\n", "c.yaml");
  ASSERT_TRUE(twice.ok());
  EXPECT_EQ(
      rpc::GrpcInferenceBackend::Create(rpc::BackendOptionsFromConfig(*twice)).status().code(),
      StatusCode::kInvalidArgument);
}

// Rendezvous hashing itself: spread, and the few moves when the list changes.
TEST(RendezvousOrderTest, AddingAServerMovesAboutAQuarterAndRemovingMovesOnlyItsModels) {
  const std::vector<std::string> three = {"10.0.0.11:50051", "10.0.0.12:50051", "10.0.0.13:50051"};
  std::vector<std::string> four = three;
  four.push_back("10.0.0.14:50051");
  const std::vector<std::string> two = {three[0], three[2]};
  constexpr int kIds = 3000;
  int moved_on_add = 0;
  std::map<std::string, int> spread;
  for (int i = 0; i < kIds; ++i) {
    const std::string id = "tenant_" + std::to_string(i);
    const std::string before = three[rpc::RendezvousOrder(three, id)[0]];
    const std::string after = four[rpc::RendezvousOrder(four, id)[0]];
    ++spread[before];
    if (after != before) {
      ++moved_on_add;
      EXPECT_EQ(after, four[3]) << id << " moved between two old servers";
    }
    const std::vector<size_t> order = rpc::RendezvousOrder(three, id);
    const std::string without = two[rpc::RendezvousOrder(two, id)[0]];
    if (before != three[1]) {
      EXPECT_EQ(without, before) << id << " moved though its server stayed";
    } else {
      EXPECT_EQ(without, three[order[1]]) << id << ": not its second choice";
    }
    EXPECT_EQ(rpc::RendezvousOrder(three, id), order) << "must be stable";
  }
  EXPECT_GT(moved_on_add, kIds / 4 - kIds / 20);
  EXPECT_LT(moved_on_add, kIds / 4 + kIds / 20);
  for (const auto& [server, count] : spread) {
    EXPECT_GT(count, kIds / 3 - kIds / 20) << server;
    EXPECT_LT(count, kIds / 3 + kIds / 20) << server;
  }
}

}  // namespace
}  // namespace lipsync::e2e
