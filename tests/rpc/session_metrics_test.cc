// A live session's stage times reach the compositing server's histograms (issue 12):
// `serve`-style (inference in-process), one H.264 session with speech over real gRPC on
// loopback, then GET /metrics: the inference, queue wait, audio and compositing
// histograms count exactly the session's inference batches, the encode histogram the
// frames it encoded, and Debian's `promtool check metrics` accepts the output. The
// cache statistics (model cache hits and misses, avatar evictions) are in both /metrics
// and the log_cache_stats line.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>

#include "common/loopback_http.h"
#include "compositing.grpc.pb.h"
#include "compositing/compositing_server.h"
#include "e2e/e2e_cluster.h"
#include "e2e/speech_fixture.h"
#include "inference/inference_server.h"
#include "rpc/cache_stats_log.h"
#include "rpc/compositing_service.h"
#include "rpc/inference_service.h"
#include "rpc/server_setup.h"

namespace lipsync::rpc {
namespace {

namespace pb = ::compositing;
using namespace std::chrono_literals;

constexpr const char* kPromtool = "/usr/bin/promtool";

// `seconds` of a 150 Hz buzz with a syllable envelope, 16 kHz s16le mono.
std::string Buzz(double seconds) {
  const int rate = 16000;
  const size_t n = size_t(seconds * rate);
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    const double t = double(i) / rate;
    const double env = 0.55 + 0.45 * std::sin(2 * M_PI * 4 * t);
    double v = 0;
    for (int h = 1; h <= 5; ++h) v += std::sin(2 * M_PI * 150 * h * t) / h;
    const auto s = static_cast<int16_t>(std::lround(6000 * env * v));
    out.push_back(char(s & 0xFF));
    out.push_back(char((s >> 8) & 0xFF));
  }
  return out;
}

// The value of the unlabelled-but-server sample `name` (first match); -1 if none.
double Value(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name + "{", 0) == 0 || line.rfind(name + " ", 0) == 0) {
      return std::stod(line.substr(line.rfind(' ') + 1));
    }
  }
  return -1;
}

TEST(SessionMetricsTest, SessionBatchesAndEncodedFramesReachTheStageHistograms) {
  if (::access(kPromtool, X_OK) != 0) GTEST_SKIP() << kPromtool << " missing";
  e2e::TalkingTenant();
  auto inference = inference::InferenceServer::Create(e2e::InferenceTestConfig());
  ASSERT_TRUE(inference.ok()) << inference.status().ToString();
  compositing::CompositingServerOptions options;
  options.inference_label = "in-process";
  auto server =
      compositing::CompositingServer::Create(e2e::CompositingTestConfig(), **inference, options);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  CompositingServiceImpl service(server->get());
  InferenceServiceImpl inference_service(inference->get());  // `serve`: both services
  ServerOptions io;
  io.listen_address = "127.0.0.1:0";
  io.ops.server_name = "inference";
  io.ops.metrics_port = 0;
  auto inference_grpc = GrpcServer::Start(io, {&inference_service});
  ASSERT_TRUE(inference_grpc.ok()) << inference_grpc.status().ToString();
  ServerOptions so;
  so.listen_address = "127.0.0.1:0";
  so.ops.server_name = "compositing";
  so.ops.metrics_port = 0;
  auto grpc_server = GrpcServer::Start(so, {&service});
  ASSERT_TRUE(grpc_server.ok()) << grpc_server.status().ToString();

  // One session: open (H.264), 1.5 s of speech at once, end of speech, close.
  auto stub = pb::CompositingService::NewStub(e2e::LoopbackChannel((*grpc_server)->port()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 120s);
  auto stream = stub->StreamSession(&context);
  pb::SessionInput in;
  in.mutable_open()->set_model_id(e2e::TalkingTenant());
  in.mutable_open()->set_sample_rate(16000);
  in.mutable_open()->set_codec(pb::H264);
  ASSERT_TRUE(stream->Write(in));
  in.Clear();
  in.mutable_audio()->set_pcm(Buzz(1.5));
  ASSERT_TRUE(stream->Write(in));
  for (auto kind : {pb::SessionControl::END_OF_SPEECH, pb::SessionControl::CLOSE}) {
    in.Clear();
    in.mutable_control()->set_kind(kind);
    ASSERT_TRUE(stream->Write(in));
  }
  stream->WritesDone();
  pb::SessionOutput out;
  pb::SessionStats last;
  int64_t frames = 0, speaking = 0;
  while (stream->Read(&out)) {
    if (out.has_stats()) last = out.stats();
    if (out.has_frame()) {
      ++frames;
      speaking += out.frame().speaking();
    }
  }
  grpc::Status status = stream->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_GT(last.inference_batches(), 0);
  ASSERT_GT(speaking, 0);

  const std::string answer = lipsync::testing::LoopbackHttp((*grpc_server)->ops().metrics_port(),
                                                            "GET /metrics HTTP/1.0\r\n\r\n");
  const size_t body_at = answer.find("\r\n\r\n");
  ASSERT_NE(body_at, std::string::npos);
  const std::string text = answer.substr(body_at + 4);
  // No unary call was made: every count is the session's.
  const double batches = double(last.inference_batches());
  EXPECT_EQ(Value(text, "lipsync_inference_seconds_count"), batches) << text;
  EXPECT_EQ(Value(text, "lipsync_queue_wait_seconds_count"), batches);
  EXPECT_EQ(Value(text, "lipsync_audio_seconds_count"), batches);
  EXPECT_EQ(Value(text, "lipsync_compositing_seconds_count"), batches);
  // H.264: the session encodes its speaking frames itself (idle ones may be replayed).
  EXPECT_GE(Value(text, "lipsync_encode_seconds_count"), double(speaking));
  EXPECT_LE(Value(text, "lipsync_encode_seconds_count"), double(frames));
  EXPECT_EQ(Value(text, "lipsync_session_duration_seconds_count"), 1);

  const std::string path = ::testing::TempDir() + "session_metrics.txt";
  std::ofstream(path) << text;
  FILE* pipe =
      ::popen((std::string(kPromtool) + " check metrics < " + path + " 2>&1").c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[4096];
  for (size_t n; (n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0;) output.append(buffer, n);
  const int rc = ::pclose(pipe);
  EXPECT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 0) << output;

  // Cache statistics: the session's batches found the model loaded, after one load.
  const std::string inference_answer = lipsync::testing::LoopbackHttp(
      (*inference_grpc)->ops().metrics_port(), "GET /metrics HTTP/1.0\r\n\r\n");
  // (One miss at most: a background prefetch may have loaded it first.)
  const double misses = Value(inference_answer, "lipsync_model_cache_misses_total");
  const double hits = Value(inference_answer, "lipsync_model_cache_hits_total");
  EXPECT_GE(misses, 0) << inference_answer;
  EXPECT_LE(misses, 1);
  EXPECT_GE(hits + misses, batches);
  EXPECT_EQ(Value(text, "lipsync_avatar_evictions_total"), 0);
  const std::string line = FormatCacheStats("compositing", service.Gauges()) + " | " +
                           FormatCacheStats("inference", inference_service.Gauges());
  EXPECT_NE(line.find(" avatar_evictions_total=0"), std::string::npos) << line;
  EXPECT_NE(line.find(" model_cache_misses_total="), std::string::npos) << line;
  EXPECT_NE(line.find(" model_cache_hits_total="), std::string::npos) << line;

  (*inference_grpc)->Shutdown(1s);
  (*grpc_server)->Shutdown(1s);
  (*server)->Shutdown(1s);
}

}  // namespace
}  // namespace lipsync::rpc
