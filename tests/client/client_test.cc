// The test client: its statistics against hand-computed values, the contact-sheet
// image helpers, and a real run against both servers (split, loopback) that saves
// frames, an MP4 (Debian's ffmpeg) and a contact sheet.
#include <gtest/gtest.h>

#include <filesystem>

#include "client/client_runner.h"
#include "client/latency_summary.h"
#include "client/stream_saver.h"
#include "e2e/e2e_cluster.h"

namespace lipsync::client {
namespace {

TEST(LatencySummaryTest, PercentilesInterpolateLikeNumpy) {
  EXPECT_EQ(Percentile({}, 50), 0);
  EXPECT_DOUBLE_EQ(Percentile({5}, 99), 5);
  EXPECT_DOUBLE_EQ(Percentile({4, 1, 3, 2}, 50), 2.5);
  EXPECT_DOUBLE_EQ(Percentile({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, 99), 10.9);
  EXPECT_DOUBLE_EQ(Percentile({1, 2, 3}, 100), 3);
}

TEST(LatencySummaryTest, SummaryCountsOnlySuccessfulBatches) {
  std::vector<BatchRecord> records(3);
  records[0] = {0, 0, 10, true, "", 100, 90, 50, 30, 1000, 20000};
  records[1] = {0, 1, 10, true, "", 300, 280, 150, 90, 1000, 40000};
  records[2] = {0, 2, 10, false, "UNAVAILABLE: down", 5, 0, 0, 0, 1000, 0};
  ClientSummary s = Summarize(records, 2.0);
  EXPECT_EQ(s.batches, 3);
  EXPECT_EQ(s.failed_batches, 1);
  EXPECT_EQ(s.frames, 20);
  EXPECT_DOUBLE_EQ(s.fps, 10.0);
  EXPECT_DOUBLE_EQ(s.latency_p50_ms, 200);
  EXPECT_DOUBLE_EQ(s.latency_mean_ms, 200);
  EXPECT_DOUBLE_EQ(s.latency_max_ms, 300);
  EXPECT_DOUBLE_EQ(s.request_bytes_per_frame, 100);
  EXPECT_DOUBLE_EQ(s.response_bytes_per_frame, 3000);
  EXPECT_DOUBLE_EQ(s.inference_mean_ms, 100);
  EXPECT_NE(FormatSummary(s).find("10.0 FPS"), std::string::npos) << FormatSummary(s);
  EXPECT_NE(FormatBatch(records[2]).find("UNAVAILABLE: down"), std::string::npos);
}

TEST(StreamSaverTest, DownscaleAveragesBoxesAndSheetTiles) {
  image::Image src(4, 2, 3);
  for (int x = 0; x < 4; ++x) {
    for (int y = 0; y < 2; ++y) {
      for (int c = 0; c < 3; ++c) src.row(y)[x * 3 + c] = uint8_t(x < 2 ? 10 : 30 + y * 10);
    }
  }
  image::Image half = Downscale(src, 2);
  ASSERT_EQ(half.width, 2);
  ASSERT_EQ(half.height, 1);
  EXPECT_EQ(half.row(0)[0], 10);
  EXPECT_EQ(half.row(0)[3], 35);
  image::Image sheet = ContactSheet({half, half, half}, 2, 2);
  EXPECT_EQ(sheet.width, 4);
  EXPECT_EQ(sheet.height, 2);
  EXPECT_EQ(sheet.row(1)[0], 10);     // third tile, second row
  EXPECT_EQ(sheet.row(1)[2 * 3], 0);  // no fourth tile: black
}

TEST(ClientRunTest, StreamsBatchesAndSavesVideoAndContactSheet) {
  e2e::Cluster cluster(e2e::Mode::kSplit);
  ASSERT_TRUE(cluster.ok());
  ClientOptions options;
  options.server = "127.0.0.1:" + std::to_string(cluster.compositing_port());
  options.model = "identity";
  options.batches = 3;
  options.batch_size = 4;
  options.concurrency = 2;
  options.save_dir = (e2e::ModelRoot() / "client_run").string();
  int callbacks = 0;
  auto run = RunClient(options, [&](const BatchRecord& r) {
    ++callbacks;
    EXPECT_TRUE(r.ok) << r.error;
  });
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  // The warm-up loaded model and avatar before streaming: no batch paid for a load.
  EXPECT_GE(run->warm_up_ms, 0);
  EXPECT_TRUE(run->warm_up_error.empty()) << run->warm_up_error;
  for (const auto& record : run->records) EXPECT_FALSE(record.loaded_on_demand);
  EXPECT_EQ(callbacks, 6);
  EXPECT_EQ(run->summary.batches, 6);
  EXPECT_EQ(run->summary.failed_batches, 0);
  EXPECT_EQ(run->summary.frames, 24);
  EXPECT_GT(run->summary.fps, 0);
  // Server-side visual: only audio goes up (8192 floats a frame plus a few bytes).
  EXPECT_LT(run->summary.request_bytes_per_frame, 8192 * 4 + 64);
  ASSERT_TRUE(run->saved);
  EXPECT_EQ(run->outputs.frames, 12);  // stream 0 only
  EXPECT_TRUE(std::filesystem::exists(run->outputs.frames_dir + "/frame_00011.jpg"));
  EXPECT_TRUE(run->outputs.video_error.empty()) << run->outputs.video_error;
  EXPECT_GT(std::filesystem::file_size(run->outputs.video_path), 0u);
  auto sheet = image::ReadImageFile(run->outputs.contact_sheet_path);
  ASSERT_TRUE(sheet.ok());
  EXPECT_EQ(sheet->width, 4 * e2e::kWidth);
  EXPECT_EQ(sheet->height, 3 * e2e::kHeight);

  // A server that is not there: every batch fails as a record, not a crash.
  options.server = "127.0.0.1:1";
  options.save_dir.clear();
  options.concurrency = 1;
  options.batches = 1;
  options.timeout_seconds = 2;
  auto down = RunClient(options, [](const BatchRecord&) {});
  ASSERT_TRUE(down.ok());
  EXPECT_EQ(down->summary.failed_batches, 1);
  EXPECT_NE(down->warm_up_error.find("UNAVAILABLE"), std::string::npos) << down->warm_up_error;
  EXPECT_NE(down->records[0].error.find("UNAVAILABLE"), std::string::npos)
      << down->records[0].error;
}

}  // namespace
}  // namespace lipsync::client
