// Hostile tenant files against the real `lipsync compositing` binary (issue 9), with
// a `lipsync inference` binary behind it: next to a
// good tenant, tenants whose files are built to hurt (a crop_rects.json a million
// levels deep, a PNG whose header claims 60000x60000, a truncated JPEG background, a
// tenant directory symlinked outside model_root) each get a clear gRPC status naming
// the problem, the second time from memory (the files are fixed or gone by then and
// the answer is still the same), the good tenant keeps working, concurrent requests
// for a hostile tenant all get their answer, and SIGTERM makes the process exit 0
// within its shutdown grace period.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "avatar/avatar_fixture.h"
#include "e2e/e2e_cluster.h"
#include "image/image.h"
#include "model_management.pb.h"

namespace lipsync::e2e {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
namespace pb = ::compositing;

constexpr int kGraceSeconds = 5;

// A copy (not a link) of the good tenant's files under a new name.
fs::path CopyTenant(const std::string& from, const fs::path& to) {
  fs::remove_all(to);
  fs::copy(ModelRoot() / from, to, fs::copy_options::recursive);
  return to;
}

grpc::Status Composite(pb::CompositingService::Stub& stub, const std::string& model) {
  pb::CompositeBatchRequest request;
  request.set_model_id(model);
  request.set_batch_size(2);
  request.set_audio_features(std::string(8192 * 4, '\0'));
  pb::CompositeBatchResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 30s);
  grpc::Status status = stub.InferBatchComposite(&context, request, &response);
  if (status.ok() && response.composited_frames_size() != 2) {
    return grpc::Status(grpc::StatusCode::INTERNAL, "expected 2 frames");
  }
  return status;
}

struct Hostile {
  std::string id;
  grpc::StatusCode code;
  std::string says;  // in the message
  fs::path fix;      // removed after the first answer (the second comes from memory)
};

TEST(HostileTenantTest, EachHostileTenantGetsAClearStatusOthersServeSigtermExitsZero) {
  const fs::path root = ModelRoot();
  std::vector<Hostile> hostile;

  // crop_rects.json: valid JSON a million levels deep (crashed the server before).
  {
    const fs::path dir = CopyTenant("identity", root / "hostile_rects");
    ASSERT_TRUE(image::WriteFileBytes((dir / "crop_rects.json").string(),
                                      testing::DeeplyNestedJson(1'000'000))
                    .ok());
    hostile.push_back(
        {"hostile_rects", grpc::StatusCode::INVALID_ARGUMENT, "crop_rects.json: entry 0", dir});
  }
  // A 70-byte PNG whose header claims 60000x60000 (threw and left the tenant loading
  // forever, or cost gigabytes, before).
  {
    const fs::path dir = CopyTenant("identity", root / "hostile_png");
    ASSERT_TRUE(image::WriteFileBytes((dir / "frames" / "frame_0000.png").string(),
                                      testing::PngClaiming(60000, 60000))
                    .ok());
    hostile.push_back({"hostile_png", grpc::StatusCode::INVALID_ARGUMENT, "60000x60000", dir});
  }
  // A truncated JPEG background (was served as a half-grey frame). Frame 1, which the
  // first batch touches: with the prepared avatar store a load decodes only frame 0 and
  // the frames a request needs (issue 11), so the request that needs it fails, and the
  // broken frame is then answered from memory.
  {
    const fs::path dir = CopyTenant("identity", root / "hostile_jpeg");
    auto frame = image::ReadImageFile((dir / "frames" / "frame_0001.png").string());
    ASSERT_TRUE(frame.ok());
    auto jpeg = image::EncodeJpeg(*frame, 90);
    ASSERT_TRUE(jpeg.ok());
    fs::remove(dir / "frames" / "frame_0001.png");
    ASSERT_TRUE(image::WriteFileBytes((dir / "frames" / "frame_0001.jpg").string(),
                                      jpeg->substr(0, jpeg->size() / 2))
                    .ok());
    hostile.push_back({"hostile_jpeg", grpc::StatusCode::INVALID_ARGUMENT, "frame_0001.jpg", dir});
  }
  // A tenant directory symlinked outside model_root (was served).
  const fs::path outside =
      fs::temp_directory_path() / ("lipsync_outside_" + std::to_string(getpid()));
  {
    CopyTenant("identity", outside);
    fs::remove(root / "escape");
    fs::create_directory_symlink(outside, root / "escape");
    hostile.push_back(
        {"escape", grpc::StatusCode::PERMISSION_DENIED, "leaves model_root", root / "escape"});
  }

  const int inference_port = FreePort();
  const fs::path inference_yaml = root / "hostile_inference.yaml";
  std::ofstream(inference_yaml) << "server:\n  port: \"127.0.0.1:" << inference_port << "\"\n"
                                << "  worker_count_per_gpu: 1\n"
                                << "  shutdown_grace_seconds: " << kGraceSeconds << "\n"
                                << "onnx:\n  use_cuda: false\n"
                                << "model_root: \"" << root.string() << "\"\n";
  const int port = FreePort();
  const pid_t inference =
      Spawn({"inference", "--config", inference_yaml.string()}, root / "hostile_inference.log");
  const fs::path comp_yaml = root / "hostile_compositing.yaml";
  std::ofstream(comp_yaml) << "server:\n  port: \"127.0.0.1:" << port << "\"\n"
                           << "  shutdown_grace_seconds: " << kGraceSeconds << "\n"
                           << "inference_server:\n  url: \"127.0.0.1:" << inference_port
                           << "\"\n  timeout_seconds: 20\n"
                           << "capacity:\n  failed_load_retry_seconds: 600\n"
                           << "model_root: \"" << root.string() << "\"\n";
  const fs::path log = root / "hostile_compositing.log";
  const pid_t compositing = Spawn({"compositing", "--config", comp_yaml.string()}, log);
  auto stub = pb::CompositingService::NewStub(LoopbackChannel(port));

  grpc::Status good = Composite(*stub, "identity");
  EXPECT_TRUE(good.ok()) << good.error_message();

  // Concurrent first requests for every hostile tenant: each gets its answer.
  std::vector<std::thread> threads;
  std::vector<grpc::Status> concurrent(hostile.size() * 4);
  for (size_t i = 0; i < concurrent.size(); ++i) {
    threads.emplace_back(
        [&, i] { concurrent[i] = Composite(*stub, hostile[i % hostile.size()].id); });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < concurrent.size(); ++i) {
    const Hostile& h = hostile[i % hostile.size()];
    EXPECT_EQ(concurrent[i].error_code(), h.code) << h.id << ": " << concurrent[i].error_message();
    EXPECT_THAT(concurrent[i].error_message(), HasSubstr(h.says)) << h.id;
  }

  for (const Hostile& h : hostile) {
    grpc::Status first = Composite(*stub, h.id);
    EXPECT_EQ(first.error_code(), h.code) << h.id << ": " << first.error_message();
    EXPECT_THAT(first.error_message(), HasSubstr(h.says)) << h.id;
    EXPECT_LT(first.error_message().size(), 1000u) << h.id;
    // The hostile files are gone now; the same answer comes from memory (within
    // capacity.failed_load_retry_seconds), without reading anything.
    fs::remove_all(h.fix);
    grpc::Status second = Composite(*stub, h.id);
    EXPECT_EQ(second.error_code(), h.code) << h.id;
    EXPECT_EQ(second.error_message(), first.error_message()) << h.id;
    // The good tenant is unaffected.
    grpc::Status still = Composite(*stub, "identity");
    EXPECT_TRUE(still.ok()) << h.id << ": " << still.error_message();
  }

  // The server's own view: the hostile tenants are FAILED with their error.
  {
    auto admin = pb::CompositingService::NewStub(LoopbackChannel(port));
    lipsync::admin::GetModelStatsRequest request;
    request.set_model_id("hostile_png");
    lipsync::admin::GetModelStatsResponse response;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 10s);
    grpc::Status st = admin->GetModelStats(&context, request, &response);
    ASSERT_TRUE(st.ok()) << st.error_message();
    ASSERT_EQ(response.models_size(), 1);
    EXPECT_EQ(response.models(0).avatar().state(), lipsync::admin::FAILED);
    EXPECT_THAT(response.models(0).avatar().error(), HasSubstr("60000x60000"));
  }

  // SIGTERM: exit 0 within the shutdown grace period (nothing is parked on a load).
  ASSERT_EQ(kill(compositing, SIGTERM), 0);
  int status = 0;
  pid_t done = 0;
  const auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(kGraceSeconds);
  while ((done = waitpid(compositing, &status, WNOHANG)) == 0 &&
         std::chrono::steady_clock::now() < limit) {
    std::this_thread::sleep_for(20ms);
  }
  if (done == 0) {
    kill(compositing, SIGKILL);
    waitpid(compositing, &status, 0);
    kill(inference, SIGKILL);
    waitpid(inference, &status, 0);
    FAIL() << "lipsync compositing did not exit within " << kGraceSeconds << " s of SIGTERM; see "
           << log;
  }
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  kill(inference, SIGTERM);
  waitpid(inference, &status, 0);
  std::error_code ec;
  fs::remove_all(outside, ec);
}

}  // namespace
}  // namespace lipsync::e2e
