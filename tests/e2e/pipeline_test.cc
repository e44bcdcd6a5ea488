// The whole request path with real servers on loopback ports, in both deployments
// (split: two gRPC servers; single process: compositing calls InferenceServer directly):
// with the identity model and server-side visual input every returned frame reproduces
// its background frame, frames follow the documented background indexing, audio is
// per-frame or broadcast, bad inputs get inference's status, broken avatars name
// their file.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "avatar/crop_rects.h"
#include "e2e/e2e_cluster.h"
#include "image/image.h"

namespace lipsync::e2e {
namespace {

using namespace std::chrono_literals;
namespace pb = ::compositing;

constexpr size_t kAudioFloats = 8192;
constexpr size_t kVisualFloats = size_t(6) * 320 * 320;

std::string Floats(size_t n, float value) {
  std::vector<float> v(n, value);
  return std::string(reinterpret_cast<const char*>(v.data()), n * sizeof(float));
}

image::Image Background(const std::string& tenant, int index) {
  char name[32];
  std::snprintf(name, sizeof name, "frame_%04d.png", index);
  auto img = image::ReadImageFile((ModelRoot() / tenant / "frames" / name).string());
  EXPECT_TRUE(img.ok()) << img.status().ToString();
  return img.ok() ? *img : image::Image();
}

avatar::CropRect Rect(const std::string& tenant, int index) {
  auto rects = avatar::LoadCropRects((ModelRoot() / tenant / "crop_rects.json").string());
  EXPECT_TRUE(rects.ok());
  return rects.ok() ? (*rects)[size_t(index)] : avatar::CropRect{};
}

image::Image Crop(const image::Image& img, const avatar::CropRect& r) {
  image::Image out(r.width(), r.height(), 3);
  for (int y = 0; y < r.height(); ++y) {
    std::memcpy(out.row(y), img.row(r.y1 + y) + size_t(r.x1) * 3, size_t(r.width()) * 3);
  }
  return out;
}

pb::CompositeBatchRequest Request(const std::string& model, int batch, int start) {
  pb::CompositeBatchRequest r;
  r.set_model_id(model);
  r.set_batch_size(batch);
  r.set_start_frame_idx(start);
  r.set_audio_features(Floats(kAudioFloats, 0.f));
  return r;
}

grpc::Status Call(pb::CompositingService::Stub& stub, const pb::CompositeBatchRequest& request,
                  pb::CompositeBatchResponse* response) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 60s);
  return stub.InferBatchComposite(&context, request, response);
}

class PipelineTest : public ::testing::TestWithParam<Mode> {};

TEST_P(PipelineTest, RawOutputIsTheBackgroundExactOutsideTheRectAndCloseInside) {
  Cluster cluster(GetParam());
  ASSERT_TRUE(cluster.ok());
  auto request = Request("identity", 4, 0);
  request.set_output_format(pb::RAW_RGB);
  pb::CompositeBatchResponse response;
  grpc::Status status = Call(cluster.stub(), request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_TRUE(response.success());
  ASSERT_EQ(response.composited_frames_size(), 4);
  EXPECT_EQ(response.output_format(), pb::RAW_RGB);
  EXPECT_EQ(response.frame_width(), kWidth);
  EXPECT_EQ(response.frame_height(), kHeight);
  EXPECT_TRUE(response.model_loaded_on_demand());
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(response.background_frame_indices(i), i);
    const image::Image bg = Background("identity", i);
    const avatar::CropRect rect = Rect("identity", i);
    const std::string& frame = response.composited_frames(i);
    ASSERT_EQ(frame.size(), size_t(kWidth) * kHeight * 3);
    image::Image out(kWidth, kHeight, 3);
    std::memcpy(out.pixels.data(), frame.data(), frame.size());
    int outside_diffs = 0;
    for (int y = 0; y < kHeight; ++y) {
      for (int x = 0; x < kWidth; ++x) {
        if (x >= rect.x1 && x < rect.x2 && y >= rect.y1 && y < rect.y2) continue;
        outside_diffs += std::memcmp(out.row(y) + x * 3, bg.row(y) + x * 3, 3) != 0;
      }
    }
    EXPECT_EQ(outside_diffs, 0) << "frame " << i;
    const double psnr = image::Psnr(Crop(out, rect), Crop(bg, rect));
    EXPECT_GE(psnr, 30.0) << "frame " << i;
  }
  // The second call finds everything loaded.
  pb::CompositeBatchResponse again;
  ASSERT_TRUE(Call(cluster.stub(), request, &again).ok());
  EXPECT_FALSE(again.model_loaded_on_demand());
}

TEST_P(PipelineTest, Jpeg95WholeFrameIsCloseToTheBackground) {
  config::CompositingConfig config = CompositingTestConfig();
  config.output.region_jpeg = true;  // the production defaults
  config.output.compact_backgrounds = true;
  Cluster cluster(GetParam(), config);
  ASSERT_TRUE(cluster.ok());
  auto request = Request("identity", 3, 2);
  request.set_jpeg_quality(95);
  pb::CompositeBatchResponse response;
  grpc::Status status = Call(cluster.stub(), request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.composited_frames_size(), 3);
  EXPECT_EQ(response.output_format(), pb::JPEG);
  EXPECT_GT(response.total_time_ms(), 0.f);
  EXPECT_GE(response.total_time_ms(), response.composite_time_ms());
  for (int i = 0; i < 3; ++i) {
    auto decoded = image::DecodeJpeg(response.composited_frames(i));
    ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
    EXPECT_GE(image::Psnr(*decoded, Background("identity", 2 + i)), 35.0) << "frame " << i;
  }
}

TEST_P(PipelineTest, FrameIndicesWrapAroundAndPingPong) {
  Cluster cluster(GetParam());
  ASSERT_TRUE(cluster.ok());
  auto request = Request("identity", 4, kFrames - 2);
  request.set_output_format(pb::RAW_RGB);
  pb::CompositeBatchResponse wrap;
  ASSERT_TRUE(Call(cluster.stub(), request, &wrap).ok());
  ASSERT_EQ(wrap.background_frame_indices_size(), 4);
  const int expected_wrap[] = {6, 7, 0, 1};
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(wrap.background_frame_indices(i), expected_wrap[i]);
    // The pixels far from the face are the right background's.
    const image::Image bg = Background("identity", expected_wrap[i]);
    EXPECT_EQ(std::memcmp(wrap.composited_frames(i).data(), bg.pixels.data(), bg.stride()), 0);
  }
  request.set_loop_mode(pb::PING_PONG);
  pb::CompositeBatchResponse pong;
  ASSERT_TRUE(Call(cluster.stub(), request, &pong).ok());
  const int expected_pong[] = {6, 7, 6, 5};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(pong.background_frame_indices(i), expected_pong[i]);
  // A large start keeps wrapping.
  auto far = Request("identity", 2, 8 * 1000 + 3);
  pb::CompositeBatchResponse far_response;
  ASSERT_TRUE(Call(cluster.stub(), far, &far_response).ok());
  EXPECT_EQ(far_response.background_frame_indices(0), 3);
  EXPECT_EQ(far_response.background_frame_indices(1), 4);
}

TEST_P(PipelineTest, PerFrameAudioDrivesEachFrameAndBroadcastAudioAll) {
  Cluster cluster(GetParam());
  ASSERT_TRUE(cluster.ok());
  auto run = [&](const std::string& audio) {
    auto request = Request("demo", 4, 0);
    request.set_output_format(pb::RAW_RGB);
    request.set_audio_features(audio);
    pb::CompositeBatchResponse response;
    grpc::Status status = Call(cluster.stub(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  };
  const auto silent = run(Floats(kAudioFloats, 0.f));
  const auto loud = run(Floats(kAudioFloats, 1.f));
  // silence, loud, silence, loud: frame by frame.
  std::string mixed;
  for (int i = 0; i < 4; ++i) mixed += Floats(kAudioFloats, i % 2 ? 1.f : 0.f);
  const auto per_frame = run(mixed);
  ASSERT_EQ(silent.composited_frames_size(), 4);
  ASSERT_EQ(loud.composited_frames_size(), 4);
  ASSERT_EQ(per_frame.composited_frames_size(), 4);
  for (int i = 0; i < 4; ++i) {
    EXPECT_NE(silent.composited_frames(i), loud.composited_frames(i)) << "the mouth must open";
    const auto& expected = i % 2 ? loud.composited_frames(i) : silent.composited_frames(i);
    EXPECT_EQ(per_frame.composited_frames(i), expected) << "frame " << i;
  }
}

TEST_P(PipelineTest, ClientVisualFramesAreUsedAsGiven) {
  Cluster cluster(GetParam());
  ASSERT_TRUE(cluster.ok());
  auto request = Request("identity", 2, 0);
  request.set_output_format(pb::RAW_RGB);
  request.set_visual_frames(Floats(2 * kVisualFloats, 0.f));  // a black face
  pb::CompositeBatchResponse response;
  ASSERT_TRUE(Call(cluster.stub(), request, &response).ok());
  const avatar::CropRect rect = Rect("identity", 0);
  const std::string& frame = response.composited_frames(0);
  const int cx = (rect.x1 + rect.x2) / 2, cy = (rect.y1 + rect.y2) / 2;
  const uint8_t* centre =
      reinterpret_cast<const uint8_t*>(frame.data()) + (size_t(cy) * kWidth + cx) * 3;
  EXPECT_EQ(centre[0] + centre[1] + centre[2], 0);
}

TEST_P(PipelineTest, BrokenAvatarsNameTheirFileWhileOthersKeepWorking) {
  Cluster cluster(GetParam());
  ASSERT_TRUE(cluster.ok());
  pb::CompositeBatchResponse response;
  grpc::Status bad_rects = Call(cluster.stub(), Request("badrects", 1, 0), &response);
  EXPECT_FALSE(bad_rects.ok());
  EXPECT_NE(bad_rects.error_message().find("crop_rects.json"), std::string::npos)
      << bad_rects.error_message();
  grpc::Status no_frames = Call(cluster.stub(), Request("noframes", 1, 0), &response);
  EXPECT_FALSE(no_frames.ok());
  EXPECT_NE(no_frames.error_message().find("frame"), std::string::npos)
      << no_frames.error_message();
  EXPECT_NE(no_frames.error_message().find("noframes"), std::string::npos)
      << no_frames.error_message();
  pb::CompositeBatchResponse good;
  grpc::Status ok = Call(cluster.stub(), Request("identity", 2, 0), &good);
  EXPECT_TRUE(ok.ok()) << ok.error_message();
  EXPECT_EQ(good.composited_frames_size(), 2);
}

TEST_P(PipelineTest, HealthAndModelManagementCoverBothServers) {
  Cluster cluster(GetParam());
  ASSERT_TRUE(cluster.ok());
  pb::HealthResponse health;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(cluster.stub().Health(&context, pb::HealthRequest(), &health).ok());
  }
  EXPECT_TRUE(health.healthy());
  EXPECT_TRUE(health.inference_server_healthy());
  EXPECT_EQ(health.version(), "1.0.0");
  EXPECT_EQ(health.loaded_models(), 0);
  EXPECT_GT(health.inference_checked_unix_ms(), 0);

  lipsync::admin::LoadModelRequest load;
  load.set_model_id("identity");
  lipsync::admin::LoadModelResponse loaded;
  {
    grpc::ClientContext context;
    grpc::Status st = cluster.stub().LoadModel(&context, load, &loaded);
    ASSERT_TRUE(st.ok()) << st.error_message();
  }
  EXPECT_TRUE(loaded.success());
  EXPECT_EQ(loaded.model().avatar().state(), lipsync::admin::READY);
  EXPECT_EQ(loaded.model().avatar().num_frames(), kFrames);
  EXPECT_EQ(loaded.model().inference().state(), lipsync::admin::READY);

  lipsync::admin::ListModelsRequest list_request;
  list_request.set_include_available(true);
  lipsync::admin::ListModelsResponse list;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(cluster.stub().ListModels(&context, list_request, &list).ok());
  }
  EXPECT_EQ(list.loaded_models(), 1);
  bool saw_identity = false, saw_demo = false;
  for (const auto& m : list.models()) {
    saw_identity |= m.model_id() == "identity" && m.avatar().state() == lipsync::admin::READY;
    saw_demo |= m.model_id() == "demo";
  }
  EXPECT_TRUE(saw_identity);
  EXPECT_TRUE(saw_demo);

  lipsync::admin::UnloadModelRequest unload;
  unload.set_model_id("identity");
  lipsync::admin::UnloadModelResponse unloaded;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(cluster.stub().UnloadModel(&context, unload, &unloaded).ok());
  }
  EXPECT_TRUE(unloaded.was_loaded());
  lipsync::admin::GetModelStatsRequest stats_request;
  stats_request.set_model_id("identity");
  lipsync::admin::GetModelStatsResponse stats;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(cluster.stub().GetModelStats(&context, stats_request, &stats).ok());
  }
  ASSERT_EQ(stats.models_size(), 1);
  EXPECT_NE(stats.models(0).avatar().state(), lipsync::admin::READY);
}

INSTANTIATE_TEST_SUITE_P(Deployments, PipelineTest,
                         ::testing::Values(Mode::kSplit, Mode::kSingleProcess),
                         [](const auto& info) {
                           return info.param == Mode::kSplit ? "Split" : "SingleProcess";
                         });

// Every bad input the inference server rejects gets the same status code when sent
// through the compositing server.
TEST(BadInputTest, CompositingAnswersWithInferencesStatus) {
  Cluster cluster(Mode::kSplit);
  ASSERT_TRUE(cluster.ok());
  struct Case {
    std::string name, model;
    int batch, start;
    size_t audio_floats;
    bool raw_audio_too;
  };
  const std::vector<Case> cases = {
      {"bad id", "../etc", 1, 0, kAudioFloats, false},
      {"unknown model", "nosuchmodel", 1, 0, kAudioFloats, false},
      {"batch 0", "identity", 0, 0, kAudioFloats, false},
      {"batch too large", "identity", 65, 0, kAudioFloats, false},
      {"audio size", "identity", 2, 0, 100, false},
      {"audio for 3 of 2 frames", "identity", 2, 0, 3 * kAudioFloats, false},
      {"no audio", "identity", 1, 0, 0, false},
      {"audio and raw audio", "identity", 1, 0, kAudioFloats, true},
  };
  for (const Case& c : cases) {
    pb::CompositeBatchRequest request;
    request.set_model_id(c.model);
    request.set_batch_size(c.batch);
    request.set_start_frame_idx(c.start);
    request.set_audio_features(Floats(c.audio_floats, 0.f));
    if (c.raw_audio_too) request.set_raw_audio(std::string(1280, '\0'));
    pb::CompositeBatchResponse response;
    grpc::Status through = Call(cluster.stub(), request, &response);

    ::inference::InferBatchRequest direct;
    direct.set_model_id(c.model);
    direct.set_batch_size(c.batch);
    direct.set_start_frame_idx(c.start);
    direct.set_audio_features(Floats(c.audio_floats, 0.f));
    if (c.raw_audio_too) direct.set_raw_audio(std::string(1280, '\0'));
    // Past the batch limit the frames would exceed the message size: inference must
    // reject the batch size before it looks at them.
    if (c.batch >= 1 && c.batch <= 64) {
      direct.set_visual_frames(Floats(size_t(c.batch) * kVisualFloats, 0.f));
    }
    ::inference::InferBatchResponse direct_response;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 60s);
    grpc::Status inference_status =
        cluster.inference_stub()->InferBatch(&context, direct, &direct_response);

    EXPECT_FALSE(through.ok()) << c.name;
    EXPECT_FALSE(inference_status.ok()) << c.name;
    EXPECT_EQ(through.error_code(), inference_status.error_code())
        << c.name << ": compositing said '" << through.error_message() << "', inference said '"
        << inference_status.error_message() << "'";
    EXPECT_FALSE(through.error_message().empty()) << c.name;
    EXPECT_FALSE(response.success()) << c.name;
  }
  // Fields only the compositing server has.
  auto visual = Request("identity", 2, 0);
  visual.set_visual_frames(Floats(kVisualFloats, 0.f));  // one frame's worth for two
  auto quality = Request("identity", 1, 0);
  quality.set_jpeg_quality(101);
  // start_frame_idx picks the background, so compositing checks it before any
  // inference call (the inference server rejects it as well).
  auto negative_start = Request("identity", 1, -1);
  auto format = Request("identity", 1, 0);
  format.set_output_format(static_cast<pb::OutputFormat>(7));
  for (const auto* request : {&visual, &quality, &negative_start, &format}) {
    pb::CompositeBatchResponse response;
    grpc::Status st = Call(cluster.stub(), *request, &response);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  }
}

}  // namespace
}  // namespace lipsync::e2e
