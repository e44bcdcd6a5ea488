// `lipsync client`: the deployment guide's test client (see client/client_runner.h).
#include <cstdio>
#include <cstdlib>
#include <string>

#include "cli/command.h"
#include "client/client_runner.h"
#include "client/session_client.h"
#include "client/utterance.h"
#include "common/flags.h"

namespace {

constexpr const char* kUsage = R"(usage: lipsync client [flags]

Streams batches of one model through a compositing server and prints per-batch timings
and a summary (FPS, p50/p99 latency, bytes per frame each way).

  --server HOST:PORT      compositing server (default localhost:50052)
  --model ID              model / avatar id (default demo)
  --batches N             batches per stream (default 10; ignored with --audio)
  --batch-size B          frames per batch (default 24)
  --concurrency K         parallel streams, each its own connection (default 1)
  --start-frame S         first background frame (default 0; not with --audio)
  --send-visual           send random 6x320x320 visual frames, like the guide's example
                          (default: the server builds them from its cached backgrounds)
  --audio FILE            stream this speech (WAV or any libsndfile format) as raw audio,
                          batch by batch, over the whole utterance
  --realtime              pace each stream at 25 frames per second
  --audio-features KIND   synthetic features without --audio: loud | silence | random
                          (default random: a different loudness per frame)
  --format jpeg|raw       ask for JPEG or raw RGB frames (default: the server's)
  --jpeg-quality Q        1..100 (default: the server's)
  --ping-pong             loop the avatar video back and forth instead of wrapping
  --timeout SECONDS       per call (default 60)
  --seed N                random seed (default 1)
  --save DIR              write stream 0's frames to DIR/frames/, an MP4 DIR/<model>.mp4
                          (25 fps, with the speech when --audio) and DIR/contact_sheet.png
  --quiet                 only the summary
  --no-warm-up            don't ask the server to load the model before streaming (the
                          first batch then includes the load)

Live session (docs/STREAMING.md): lipsync client --stream --audio FILE [flags]
  --stream                one StreamSession from --audio: sent at the file's rate (or
                          resampled to 16 kHz), in 20 ms chunks at real time with
                          --realtime, else in 1 s chunks as fast as the server takes them;
                          then END_OF_SPEECH and CLOSE. Prints the first speaking frame
                          latency, delivered fps, repeated/dropped frames, A/V offset, drift
  --codec h264|mjpeg      video codec (default h264)
  --bitrate KBPS          H.264 bitrate (default: the server's)
  --lookahead FRAMES      audio lookahead 1..13 (default: the server's full 13)
  --api-key KEY           credential (default: $LIPSYNC_API_KEY)
  --save DIR              DIR/session.mp4 (video + the received audio), session.h264|mjpeg,
                          session.wav
)";

int RunStream(const lipsync::Flags& flags) {
  using namespace lipsync;
  auto fail = [](const Status& st) {
    std::fprintf(stderr, "lipsync client --stream: %s\n", st.message().c_str());
    return 2;
  };
  client::StreamOptions o;
  o.server = flags.GetString("server", o.server);
  o.model = flags.GetString("model", o.model);
  o.audio_path = flags.GetString("audio");
  if (o.audio_path.empty()) {
    return fail(
        Status::InvalidArgument("--stream needs --audio FILE (a WAV or any libsndfile "
                                "format)"));
  }
  o.realtime = flags.Has("realtime");
  o.save_dir = flags.GetString("save");
  const char* env_key = std::getenv("LIPSYNC_API_KEY");
  o.api_key = flags.GetString("api-key", env_key != nullptr ? env_key : "");
  const std::string codec = flags.GetString("codec", "h264");
  if (codec != "h264" && codec != "mjpeg") {
    return fail(Status::InvalidArgument("--codec must be h264 or mjpeg, got '" +
                                        codec.substr(0, 40) + "'"));
  }
  o.h264 = codec == "h264";
  auto bitrate = flags.GetInt("bitrate", 0);
  auto lookahead = flags.GetInt("lookahead", 0);
  auto timeout = flags.GetDouble("timeout", o.timeout_seconds);
  for (const Status* st : {&bitrate.status(), &lookahead.status(), &timeout.status()}) {
    if (!st->ok()) return fail(*st);
  }
  o.bitrate_kbps = int(*bitrate);
  o.lookahead_frames = int(*lookahead);
  o.timeout_seconds = *timeout;
  std::printf("Live session: %s, model '%s', %s, %s, audio %s\n", o.server.c_str(), o.model.c_str(),
              o.h264 ? "H.264" : "MJPEG",
              o.realtime ? "real time (20 ms chunks)" : "as fast as possible (1 s chunks)",
              o.audio_path.c_str());
  std::fflush(stdout);
  auto report = client::RunStreamSession(o);
  if (!report.ok()) {
    std::fprintf(stderr, "lipsync client --stream: %s\n", report.status().message().c_str());
    return 1;
  }
  std::printf("\n%s", client::FormatStreamReport(*report).c_str());
  return report->frames > 0 && report->speaking_frames > 0 ? 0 : 1;
}

int RunClient(int argc, char** argv) {
  using namespace lipsync;
  auto flags = Flags::Parse(
      argc, argv,
      {"server", "model", "batches", "batch-size", "concurrency", "start-frame", "audio",
       "audio-features", "format", "jpeg-quality", "timeout", "seed", "save", "codec", "bitrate",
       "lookahead", "api-key"},
      {"send-visual", "realtime", "ping-pong", "quiet", "no-warm-up", "help", "stream"});
  if (!flags.ok()) {
    std::fprintf(stderr, "lipsync client: %s\n\n%s", flags.status().message().c_str(), kUsage);
    return 2;
  }
  if (flags->Has("help")) {
    std::printf("%s", kUsage);
    return 0;
  }
  if (flags->Has("stream")) return RunStream(*flags);
  client::ClientOptions o;
  o.server = flags->GetString("server", o.server);
  o.model = flags->GetString("model", o.model);
  auto fail = [](const Status& st) {
    std::fprintf(stderr, "lipsync client: %s\n", st.message().c_str());
    return 2;
  };
  auto batches = flags->GetInt("batches", o.batches);
  auto batch_size = flags->GetInt("batch-size", o.batch_size);
  auto concurrency = flags->GetInt("concurrency", o.concurrency);
  auto start = flags->GetInt("start-frame", 0);
  auto quality = flags->GetInt("jpeg-quality", 0);
  auto timeout = flags->GetDouble("timeout", o.timeout_seconds);
  auto seed = flags->GetInt("seed", 1);
  for (const Status* st : {&batches.status(), &batch_size.status(), &concurrency.status(),
                           &start.status(), &quality.status(), &timeout.status(), &seed.status()}) {
    if (!st->ok()) return fail(*st);
  }
  o.batches = int(*batches);
  o.batch_size = int(*batch_size);
  o.concurrency = int(*concurrency);
  o.start_frame = int(*start);
  o.jpeg_quality = int(*quality);
  o.timeout_seconds = *timeout;
  o.seed = uint64_t(*seed);
  o.send_visual = flags->Has("send-visual");
  o.realtime = flags->Has("realtime");
  o.ping_pong = flags->Has("ping-pong");
  o.save_dir = flags->GetString("save");

  std::string kind = flags->GetString("audio-features", "random");
  if (kind == "loud") {
    o.synthetic_audio = client::SyntheticAudio::kLoud;
  } else if (kind == "silence") {
    o.synthetic_audio = client::SyntheticAudio::kSilence;
  } else if (kind == "random") {
    o.synthetic_audio = client::SyntheticAudio::kRandom;
  } else {
    return fail(Status::InvalidArgument("--audio-features must be loud, silence or random, got '" +
                                        kind + "'"));
  }
  std::string format = flags->GetString("format", "");
  if (format == "jpeg") {
    o.format = client::FrameFormat::kJpeg;
  } else if (format == "raw") {
    o.format = client::FrameFormat::kRawRgb;
  } else if (!format.empty()) {
    return fail(Status::InvalidArgument("--format must be jpeg or raw, got '" + format + "'"));
  }

  const std::string audio_path = flags->GetString("audio");
  if (!audio_path.empty()) {
    if (flags->Has("start-frame")) {
      return fail(Status::InvalidArgument(
          "--start-frame cannot be used with --audio: the utterance starts at frame 0"));
    }
    auto utterance = client::LoadUtterance(audio_path);
    if (!utterance.ok()) return fail(utterance.status());
    std::printf("Audio: %s, %.2f s at %d Hz -> %d frames\n", audio_path.c_str(),
                (*utterance)->seconds, (*utterance)->sample_rate, (*utterance)->frames);
    o.utterance_frames = (*utterance)->frames;
    o.audio_slicer = client::MakeUtteranceSlicer(*utterance);
    o.wav_path = audio_path;
  }

  const bool quiet = flags->Has("quiet");
  o.warm_up = !flags->Has("no-warm-up");
  std::printf(
      "Client: %s, model '%s', batch %d, %s, %d stream(s), visual %s\n", o.server.c_str(),
      o.model.c_str(), o.batch_size,
      o.utterance_frames > 0 ? "whole utterance" : (std::to_string(o.batches) + " batches").c_str(),
      o.concurrency, o.send_visual ? "sent by client" : "built by server");
  std::fflush(stdout);
  auto run = client::RunClient(o, [quiet](const client::BatchRecord& r) {
    if (!quiet || !r.ok) std::printf("%s\n", client::FormatBatch(r).c_str());
    std::fflush(stdout);
  });
  if (!run.ok()) return fail(run.status());
  if (run->warm_up_ms >= 0) {
    std::printf("\nWarm-up (LoadModel before streaming): %.1f ms%s%s\n", run->warm_up_ms,
                run->warm_up_error.empty() ? "" : ", failed: ", run->warm_up_error.c_str());
  }
  std::printf("\n%s", client::FormatSummary(run->summary).c_str());
  if (run->saved) {
    const auto& out = run->outputs;
    std::printf("\nSaved\n  frames:        %s (%d JPEGs)\n", out.frames_dir.c_str(), out.frames);
    if (!out.video_path.empty()) {
      std::printf("  video:         %s\n", out.video_path.c_str());
    } else {
      std::printf("  video:         not written: %s\n", out.video_error.c_str());
    }
    std::printf("  contact sheet: %s\n", out.contact_sheet_path.c_str());
  }
  return run->summary.failed_batches == 0 && run->summary.batches > 0 ? 0 : 1;
}

}  // namespace

LIPSYNC_COMMAND("client", "test client: stream batches through a compositing server", RunClient);
