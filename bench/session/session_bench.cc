// session_bench: N concurrent live sessions at real time in one process, against an
// in-process InferenceServer + CompositingServer and the demo assets (demo::MakeDemo,
// as `lipsync make-demo`: the "demo" tenant). Each session is fed espeak-ng speech in
// real-time chunks (sentences looped with pauses, END_OF_SPEECH after each) with an
// interrupt every few sentences; the sink timestamps every frame.
//
//   session_bench [--sessions 1,2,4,8] [--seconds 600] [--codec h264|mjpeg] [--idle]
//                 [--live-idle] [--model-root DIR] [--width 1280 --height 720 --frames 120]
//                 [--cuda] [--batch-frames 8] [--lookahead 0] [--chunk-ms 40]
//                 [--interrupt-every 3] [--out out/session_bench]
//
// Per N: drift (last pts vs the audio sample clock and vs the wall clock), delivered vs
// expected frames, late frames (delivered after their due time), repeated frames, frame
// latency p50/p99 (delivered minus due; negative = sent ahead), first speaking frame
// p50/p95 (its due time minus the sentence's first chunk), interrupt to idle, CPU per
// session (getrusage), encode ms/frame, and whether N holds (delivered >= 99% of
// expected and repeated <= 1%). --idle: no speech (idle CPU per session); --live-idle:
// idle H.264 frames encoded live instead of replayed from the idle loop cache.
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "compositing/compositing_server.h"
#include "config/config.h"
#include "demo/make_demo.h"
#include "inference/inference_server.h"
#include "session/espeak_tts.h"
#include "session/idle_loop_cache.h"
#include "session/live_session.h"

namespace {

using namespace lipsync;
using session::Clock;
namespace fs = std::filesystem;

struct Options {
  std::vector<int> sessions = {4};
  double seconds = 600;
  media::Codec codec = media::Codec::kH264;
  bool idle = false, live_idle = false, cuda = false;
  std::string model_root, out = "out/session_bench";
  int width = 1280, height = 720, frames = 120;
  int batch_frames = 8, lookahead = 0, chunk_ms = 40, interrupt_every = 3;
};

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double CpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

double Pct(std::vector<double> v, double p) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, size_t(p / 100.0 * double(v.size())));
  return v[i];
}

class BenchSink : public session::SessionSink {
 public:
  bool OnFrame(session::OutputFrame frame) override {
    const auto now = Clock::now();
    std::lock_guard<std::mutex> lock(mu_);
    ++frames_;
    bytes_ += frame.video.size();
    const auto due = start_ + std::chrono::microseconds(frame.pts_us);
    latency_ms_.push_back(Ms(now - due));
    if (now > due + std::chrono::milliseconds(1)) ++late_;
    last_pts_us_ = frame.pts_us;
    return true;
  }
  void OnEvent(const session::SessionEvent& e) override {
    std::lock_guard<std::mutex> lock(mu_);
    const auto due = start_ + std::chrono::microseconds(e.frame_index * 40000);
    if (e.kind == session::EventKind::kSpeechStarted && first_chunk_ != Clock::time_point{}) {
      first_speaking_ms_.push_back(Ms(due - first_chunk_));
      first_chunk_ = {};
    } else if (e.kind == session::EventKind::kInterrupted &&
               interrupted_at_ != Clock::time_point{}) {
      interrupt_ms_.push_back(Ms(due - interrupted_at_));
      interrupted_at_ = {};
    } else if (e.kind == session::EventKind::kError) {
      ++errors_;
    }
  }
  void set_start(Clock::time_point t) {
    std::lock_guard<std::mutex> lock(mu_);
    start_ = t;
  }
  void MarkFirstChunk() {
    std::lock_guard<std::mutex> lock(mu_);
    first_chunk_ = Clock::now();
  }
  void MarkInterrupt() {
    std::lock_guard<std::mutex> lock(mu_);
    interrupted_at_ = Clock::now();
    first_chunk_ = {};  // that sentence's start no longer counts
  }

  std::mutex mu_;
  Clock::time_point start_, first_chunk_, interrupted_at_;
  int64_t frames_ = 0, late_ = 0, errors_ = 0, last_pts_us_ = 0;
  size_t bytes_ = 0;
  std::vector<double> latency_ms_, first_speaking_ms_, interrupt_ms_;
};

struct Row {
  int n = 0;
  double seconds = 0, expected = 0, delivered = 0, late_pct = 0, repeated = 0, held = 0;
  double lat_p50 = 0, lat_p99 = 0, first_p50 = NAN, first_p95 = NAN, intr_p50 = NAN, intr_max = NAN;
  double drift_audio_ms = 0, drift_wall_ms = 0, cpu_per_session = 0, encode_ms = 0;
  double cached_pct = 0, kbps = 0;
  int errors = 0;
  bool holds = false;
};

Row RunN(int n, const Options& o, compositing::CompositingServer& server,
         const std::vector<std::string>& sentences) {
  session::SessionConfig config;
  config.batch_frames = o.batch_frames;
  session::SessionHooks hooks;
  hooks.live_idle_frames = o.live_idle;
  session::SessionParams params;
  params.model_id = "demo";
  params.codec = o.codec;
  params.lookahead_frames = o.lookahead;
  std::vector<std::unique_ptr<BenchSink>> sinks;
  std::vector<std::unique_ptr<session::LiveSession>> sessions;
  for (int i = 0; i < n; ++i) {
    sinks.push_back(std::make_unique<BenchSink>());
    auto s = session::LiveSession::Start(params, config, server, sinks.back().get(), hooks);
    if (!s.ok()) {
      std::fprintf(stderr, "session %d: %s\n", i, s.status().ToString().c_str());
      std::exit(1);
    }
    sinks.back()->set_start((*s)->info().clock_start);
    sessions.push_back(std::move(*s));
  }
  const double cpu0 = CpuSeconds();
  const auto t0 = Clock::now();
  const auto end = t0 + std::chrono::milliseconds(int64_t(o.seconds * 1000));
  std::atomic<bool> stop{false};
  std::vector<std::thread> feeders;
  if (!o.idle) {
    for (int i = 0; i < n; ++i) {
      feeders.emplace_back([&, i] {
        const size_t chunk = size_t(16000 * o.chunk_ms / 1000) * 2;
        auto next = Clock::now() + std::chrono::milliseconds(300 * i);  // staggered
        for (int u = i; !stop; ++u) {
          std::this_thread::sleep_until(next);
          const std::string& pcm = sentences[size_t(u) % sentences.size()];
          const bool interrupt = o.interrupt_every > 0 && u % o.interrupt_every == 0;
          const size_t cut = interrupt ? pcm.size() / 2 / chunk * chunk : pcm.size();
          sinks[size_t(i)]->MarkFirstChunk();
          for (size_t off = 0; off < cut && !stop; off += chunk) {
            std::this_thread::sleep_until(next);
            (void)sessions[size_t(i)]->PushAudio(
                std::string_view(pcm).substr(off, std::min(chunk, cut - off)));
            next += std::chrono::milliseconds(o.chunk_ms);
          }
          if (interrupt) {
            std::this_thread::sleep_until(next + std::chrono::milliseconds(600));
            sinks[size_t(i)]->MarkInterrupt();
            sessions[size_t(i)]->Interrupt();
          } else {
            sessions[size_t(i)]->EndOfSpeech();
          }
          next = Clock::now() + std::chrono::milliseconds(1500 + 500 * (u % 3));  // a pause
        }
      });
    }
  }
  auto last_report = t0;
  while (Clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    if (Clock::now() - last_report >= std::chrono::seconds(10)) {
      last_report = Clock::now();
      int64_t frames = 0, repeated = 0;
      for (auto& s : sessions) {
        const auto st = s->stats();
        frames += st.frames_sent;
        repeated += st.repeated_frames;
      }
      const double el = std::chrono::duration<double>(Clock::now() - t0).count();
      std::printf("  N=%d %4.0f s: %lld frames (%.1f fps/session), %lld repeated, CPU %.0f%%\n", n,
                  el, static_cast<long long>(frames), double(frames) / n / el,
                  static_cast<long long>(repeated), 100 * (CpuSeconds() - cpu0) / el);
      std::fflush(stdout);
    }
  }
  stop = true;
  for (auto& f : feeders) f.join();
  const auto t1 = Clock::now();
  const double cpu = CpuSeconds() - cpu0;
  Row r;
  r.n = n;
  r.seconds = std::chrono::duration<double>(t1 - t0).count();
  std::vector<double> lat, first, intr;
  double expected = 0, delivered = 0, late = 0, repeated = 0, held = 0, enc_ms = 0, enc_n = 0,
         cached = 0, bytes = 0;
  for (int i = 0; i < n; ++i) {
    const auto st = sessions[size_t(i)]->stats();
    sessions[size_t(i)]->Cancel();
    BenchSink& k = *sinks[size_t(i)];
    std::lock_guard<std::mutex> lock(k.mu_);
    const double since_start = std::chrono::duration<double>(t1 - k.start_).count();
    expected += since_start * 25;
    delivered += double(k.frames_);
    late += double(k.late_);
    repeated += double(st.repeated_frames);
    held += double(st.held_frames);
    enc_ms += st.encode_ms;
    enc_n += double(st.encoded_frames);
    cached += double(st.cached_idle_frames);
    bytes += double(k.bytes_);
    r.errors += int(k.errors_);
    // Audio clock: the end of the last frame's audio vs the end of its pts slot.
    const double audio_end_ms = double(st.audio_samples_out) * 1000.0 / 16000;
    const double pts_end_ms = double(st.last_pts_us) / 1000 + 40;
    r.drift_audio_ms = std::max(r.drift_audio_ms, std::abs(pts_end_ms - audio_end_ms));
    r.drift_wall_ms =
        std::max(r.drift_wall_ms, std::abs(double(k.last_pts_us_) / 1000 - since_start * 1000));
    lat.insert(lat.end(), k.latency_ms_.begin(), k.latency_ms_.end());
    first.insert(first.end(), k.first_speaking_ms_.begin(), k.first_speaking_ms_.end());
    intr.insert(intr.end(), k.interrupt_ms_.begin(), k.interrupt_ms_.end());
  }
  r.expected = expected;
  r.delivered = delivered;
  r.late_pct = delivered > 0 ? 100 * late / delivered : 0;
  r.repeated = repeated;
  r.held = held;
  r.lat_p50 = Pct(lat, 50);
  r.lat_p99 = Pct(lat, 99);
  r.first_p50 = Pct(first, 50);
  r.first_p95 = Pct(first, 95);
  r.intr_p50 = Pct(intr, 50);
  r.intr_max = Pct(intr, 100);
  r.cpu_per_session = 100 * cpu / r.seconds / n;
  r.encode_ms = enc_n > 0 ? enc_ms / enc_n : 0;
  r.cached_pct = delivered > 0 ? 100 * cached / delivered : 0;
  r.kbps = bytes * 8 / 1000 / r.seconds / n;
  r.holds = delivered >= 0.99 * expected - n && repeated <= 0.01 * delivered;
  return r;
}

std::string Table(const std::vector<Row>& rows) {
  std::ostringstream t;
  char buf[1024];
  t << "| N | s | delivered/expected | late % | repeated | held | latency p50/p99 ms | first "
       "speaking p50/p95 ms | interrupt->idle p50/max ms | drift audio/wall ms | CPU %/session "
       "| encode ms/frame | cached idle % | kbit/s/session | errors | holds |\n"
       "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const Row& r : rows) {
    std::snprintf(buf, sizeof(buf),
                  "| %d | %.0f | %.0f/%.0f | %.2f | %.0f | %.0f | %.1f/%.1f | %.0f/%.0f | "
                  "%.0f/%.0f | %.1f/%.1f | %.1f | %.2f | %.0f | %.0f | %d | %s |\n",
                  r.n, r.seconds, r.delivered, r.expected, r.late_pct, r.repeated, r.held,
                  r.lat_p50, r.lat_p99, r.first_p50, r.first_p95, r.intr_p50, r.intr_max,
                  r.drift_audio_ms, r.drift_wall_ms, r.cpu_per_session, r.encode_ms, r.cached_pct,
                  r.kbps, r.errors, r.holds ? "yes" : "no");
    t << buf;
  }
  return t.str();
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--sessions") {
      o.sessions.clear();
      std::stringstream ss(next());
      for (std::string x; std::getline(ss, x, ',');) o.sessions.push_back(std::stoi(x));
    } else if (a == "--seconds") {
      o.seconds = std::stod(next());
    } else if (a == "--codec") {
      o.codec = next() == "mjpeg" ? media::Codec::kMjpeg : media::Codec::kH264;
    } else if (a == "--idle") {
      o.idle = true;
    } else if (a == "--live-idle") {
      o.live_idle = true;
    } else if (a == "--cuda") {
      o.cuda = true;
    } else if (a == "--model-root") {
      o.model_root = next();
    } else if (a == "--width") {
      o.width = std::stoi(next());
    } else if (a == "--height") {
      o.height = std::stoi(next());
    } else if (a == "--frames") {
      o.frames = std::stoi(next());
    } else if (a == "--batch-frames") {
      o.batch_frames = std::stoi(next());
    } else if (a == "--lookahead") {
      o.lookahead = std::stoi(next());
    } else if (a == "--chunk-ms") {
      o.chunk_ms = std::max(10, std::stoi(next()));
    } else if (a == "--interrupt-every") {
      o.interrupt_every = std::stoi(next());
    } else if (a == "--out") {
      o.out = next();
    } else {
      std::fprintf(stderr, "unknown option %s (see the file's header)\n", a.c_str());
      return 2;
    }
  }
  fs::create_directories(o.out);
  if (o.model_root.empty()) {
    o.model_root = o.out + "/models";
    demo::MakeDemoOptions mo;
    mo.out_dir = o.model_root;
    mo.avatar.width = o.width;
    mo.avatar.height = o.height;
    mo.avatar.frames = o.frames;
    mo.tenants = {"demo"};
    std::printf("making the demo tenant (%dx%d, %d frames) in %s ...\n", o.width, o.height,
                o.frames, o.model_root.c_str());
    std::fflush(stdout);
    const Status made = demo::MakeDemo(mo);
    if (!made.ok()) {
      std::fprintf(stderr, "make-demo: %s\n", made.ToString().c_str());
      return 1;
    }
  }
  config::InferenceConfig ic;
  ic.server.port = "127.0.0.1:0";
  ic.onnx.use_cuda = o.cuda;
  ic.capacity.idle_timeout_minutes = 0;
  ic.model_root = o.model_root;
  auto inference = inference::InferenceServer::Create(ic);
  if (!inference.ok()) {
    std::fprintf(stderr, "inference server: %s\n", inference.status().ToString().c_str());
    return 1;
  }
  config::CompositingConfig cc;
  cc.server.port = "127.0.0.1:0";
  cc.capacity.idle_timeout_minutes = 0;
  cc.model_root = o.model_root;
  compositing::CompositingServerOptions so;
  so.inference_label = "in-process";
  auto server = compositing::CompositingServer::Create(cc, **inference, so);
  if (!server.ok()) {
    std::fprintf(stderr, "compositing server: %s\n", server.status().ToString().c_str());
    return 1;
  }
  std::vector<std::string> sentences;
  for (const char* text : {"The quick brown fox jumps over the lazy dog.",
                           "Live sessions stream speech in and video out at a steady frame rate.",
                           "Please hold on while I look that up for you.",
                           "One two three four five six seven eight nine ten."}) {
    auto tts = session::SpeakText(text, "en-us", 16000);
    if (!tts.ok()) {
      std::fprintf(stderr, "espeak-ng: %s\n", tts.status().ToString().c_str());
      return 1;
    }
    sentences.push_back(tts->pcm_s16le);
  }
  std::printf("session_bench: %s, %s, %.0f s per N, batch_frames %d, %s\n",
              media::CodecName(o.codec), o.idle ? "idle only" : "speech + interrupts", o.seconds,
              o.batch_frames,
              o.live_idle ? "idle frames encoded live" : "idle frames from the idle loop cache");
  std::vector<Row> rows;
  for (int n : o.sessions) {
    std::printf("N=%d ...\n", n);
    std::fflush(stdout);
    rows.push_back(RunN(n, o, **server, sentences));
    std::printf("%s", Table({rows.back()}).c_str());
    std::fflush(stdout);
  }
  int holds = 0;
  for (const Row& r : rows) {
    if (r.holds) holds = std::max(holds, r.n);
  }
  std::ostringstream cmd;
  for (int i = 0; i < argc; ++i) cmd << (i ? " " : "") << argv[i];
  std::ostringstream report;
  report << "# session_bench\n\n`" << cmd.str() << "`\n\n"
         << media::CodecName(o.codec) << " (" << media::H264EncoderName() << "), "
         << (o.idle ? "idle only" : "speech + interrupts") << ", " << o.seconds
         << " s per N, demo tenant " << o.width << "x" << o.height << " x " << o.frames
         << " frames, " << std::thread::hardware_concurrency() << " cores, "
         << (o.live_idle ? "idle encoded live" : "idle loop cache") << "\n\n"
         << Table(rows) << "\nThe box holds " << holds
         << " session(s) (delivered >= 99% of expected, repeated <= 1%).\n";
  std::printf("\n%s", report.str().c_str());
  std::ofstream(o.out + "/report.md") << report.str();
  std::_Exit(0);  // skip the servers' teardown
}
