// Soak + chaos driver (issue 9, "Must show"): N concurrent streams of raw-audio batches
// against a running compositing server for a set time while a chaos side kills the
// inference server, sends malformed requests and requests for hostile tenants, and
// rewrites the hostile tenants' files. Every request is classified:
//   returned  OK with the requested number of non-empty JPEG frames;
//   failed    a non-OK status with a non-empty message (counted per status code);
//   LOST      OK with missing or empty frames, non-OK with an empty message, or no answer
//             by deadline + margin (the call is then cancelled).
// Memory (VmRSS, RssAnon, RssFile of both servers) is sampled every second.
//
// Subcommands (bench/soak/soak_chaos.sh runs them all and starts the servers):
//   soak_chaos selftest
//       checks the classifier against a fake server that loses frames in every way above.
//   soak_chaos make-hostile --model-root DIR --outside DIR
//       adds the hostile tenants next to the demo tenant (which must exist).
//   soak_chaos run --server HOST:PORT --inference HOST:PORT --model-root DIR
//       --compositing-pid-file F --inference-pid-file F [--exits-log F] [--out DIR]
//       [--seconds 120] [--streams 8] [--batch 8] [--kill-every 20] [--deadline 30]
//       [--model demo]
//   Writes DIR/memory.csv and DIR/report.md. Exit status: 0 when nothing was lost and no
//   server exited on its own, 1 when a request was lost, 3 when a server crashed (exited
//   without being killed by the driver) but nothing was lost, 2 for a usage error.
//
// A benchmark program, not a library: plain main, no exception is thrown on purpose.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <numbers>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "audio/batch_audio.h"
#include "bench_util.h"
#include "common/flags.h"
#include "compositing.grpc.pb.h"
#include "image/image.h"
#include "inference.grpc.pb.h"
#include "rpc/grpc_status.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using lipsync::Expected;
using lipsync::Status;

double SecondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// ---------------------------------------------------------------------------------------
// Hostile tenants
// ---------------------------------------------------------------------------------------

constexpr const char* kHostileTenants[] = {"hostile_png", "hostile_crop", "hostile_onnx",
                                           "hostile_jpeg", "hostile_escape"};

uint32_t Crc32(const std::string& bytes) {
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char c : bytes) {
    crc ^= c;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return crc ^ 0xFFFFFFFFu;
}

void PutBe32(std::string& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(char((v >> shift) & 0xFF));
}

void PngChunk(std::string& out, const char* type, const std::string& data) {
  PutBe32(out, uint32_t(data.size()));
  std::string body = std::string(type, 4) + data;
  out += body;
  PutBe32(out, Crc32(body));
}

// A well-formed ~1 KB PNG whose IHDR claims width x height (bit depth, colour type as
// given) and whose single IDAT holds a valid zlib stream of 1024 zero bytes.
std::string HugePng(uint32_t width, uint32_t height, uint8_t bit_depth, uint8_t color_type) {
  std::string png("\x89PNG\r\n\x1a\n", 8);
  std::string ihdr;
  PutBe32(ihdr, width);
  PutBe32(ihdr, height);
  ihdr += char(bit_depth);
  ihdr += char(color_type);
  ihdr += std::string(3, '\0');  // compression, filter, interlace
  PngChunk(png, "IHDR", ihdr);
  // zlib header, one final stored block of 1024 zeros, adler32 (of 1024 zeros: 0x04000001).
  std::string idat = "\x78\x01";
  idat += '\x01';
  idat += '\x00';
  idat += '\x04';
  idat += '\xff';
  idat += '\xfb';
  idat += std::string(1024, '\0');
  PutBe32(idat, 0x04000001u);
  PngChunk(png, "IDAT", idat);
  PngChunk(png, "IEND", "");
  return png;
}

// Pathological crop_rects.json variants: valid or nearly valid JSON built to hurt.
std::string HostileCropRects(int variant, int frames) {
  switch (variant % 6) {
    case 0:  // deep nesting
      return std::string(200000, '[') + std::string(200000, ']');
    case 1: {  // huge numbers
      std::string s = "[";
      for (int i = 0; i < frames; ++i) {
        s += i ? "," : "";
        s += "[1e400, -99999999999999999999999999, 18446744073709551616, 2147483648]";
      }
      return s + "]";
    }
    case 2: {  // x2 < x1, y2 < y1
      std::string s = "[";
      for (int i = 0; i < frames; ++i) s += std::string(i ? "," : "") + "[300, 300, 100, 100]";
      return s + "]";
    }
    case 3: {  // 1.6M entries: 16.0 MB, just under the default 16 MiB file limit
      std::string s = "[";
      for (int i = 0; i < 1'600'000; ++i) s += std::string(i ? "," : "") + "[1,1,2,2]";
      return s + "]";
    }
    case 4:  // a 4 MB string where an array belongs, with escapes
      return "\"" + std::string(4 << 20, 'A') + "\\u0000\"";
    default: {  // rects far outside the frame, and wrong arity
      std::string s = "[";
      for (int i = 0; i < frames; ++i) {
        s += i ? "," : "";
        s += (i % 2) ? "[0, 0, 2000000000, 2000000000]" : "[1, 2, 3]";
      }
      return s + "]";
    }
  }
}

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = char(rng() & 0xFF);
  return s;
}

// Garbage .onnx variants: random bytes, a truncated real model, or a protobuf field
// claiming a 2 GB length.
std::string HostileOnnx(int variant, const std::string& real_model) {
  switch (variant % 3) {
    case 0:
      return RandomBytes(64 << 10, uint64_t(variant) + 17);
    case 1:
      return real_model.substr(0, real_model.size() / 2);
    default: {
      // field 7 (graph), wire type 2, length varint 0xFFFFFFF0 then a few bytes.
      std::string s = "\x08\x07\x3a";
      s += "\xf0\xff\xff\xff\x0f";
      return s + RandomBytes(256, 99);
    }
  }
}

// Writes through a temporary file and a rename so hard-linked files (shared with the demo
// tenant) are replaced, never modified.
Status WriteReplace(const fs::path& path, const std::string& bytes) {
  fs::path tmp = path;
  tmp += ".soak-tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), std::streamsize(bytes.size()));
    if (!out) return Status::FailedPrecondition("cannot write " + tmp.string());
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) return Status::FailedPrecondition("cannot rename to " + path.string());
  return Status::Ok();
}

// Hard-links (or copies) every file of `from` into `to`, recursively.
Status LinkTree(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::create_directories(to, ec);
  for (const auto& entry : fs::recursive_directory_iterator(from, ec)) {
    fs::path target = to / fs::relative(entry.path(), from);
    if (entry.is_directory()) {
      fs::create_directories(target, ec);
      continue;
    }
    if (fs::exists(target)) continue;
    fs::create_hard_link(entry.path(), target, ec);
    if (ec) fs::copy_file(entry.path(), target, ec);
    if (ec) return Status::FailedPrecondition("cannot link " + entry.path().string());
  }
  if (ec) return Status::FailedPrecondition("cannot read " + from.string());
  return Status::Ok();
}

int CountFrames(const fs::path& frames_dir) {
  int n = 0;
  char name[64];
  for (;; ++n) {
    std::snprintf(name, sizeof name, "frame_%04d.png", n);
    if (!fs::exists(frames_dir / name)) return n;
  }
}

// Holds what the hostile files are made from and rewrites them on request.
class HostileTenants {
 public:
  static Expected<HostileTenants> Create(const fs::path& root, const fs::path& outside) {
    HostileTenants h;
    h.root_ = root;
    fs::path demo = root / "demo";
    h.frames_ = CountFrames(demo / "frames");
    if (h.frames_ < 1) return Status::NotFound("no demo tenant in " + root.string());
    auto model = lipsync::image::ReadFileBytes((demo / "checkpoint" / "model_best.onnx").string());
    if (!model.ok()) return model.status();
    h.real_model_ = std::move(*model);
    auto frame0 = lipsync::image::ReadImageFile((demo / "frames" / "frame_0000.png").string());
    if (!frame0.ok()) return frame0.status();
    auto jpeg = lipsync::image::EncodeJpeg(*frame0, 85);
    if (!jpeg.ok()) return jpeg.status();
    h.real_jpeg_ = std::move(*jpeg);

    std::error_code ec;
    for (const char* name : kHostileTenants) {
      if (std::string(name) == "hostile_escape") continue;
      fs::path dir = root / name;
      LIPSYNC_RETURN_IF_ERROR(LinkTree(demo, dir));
      // Own copies of the files that are rewritten.
      fs::path crop = dir / "crop_rects.json";
      auto text = lipsync::image::ReadFileBytes((demo / "crop_rects.json").string());
      if (!text.ok()) return text.status();
      LIPSYNC_RETURN_IF_ERROR(WriteReplace(crop, *text));
    }
    // A full tenant outside model_root, reached through a symlink inside it.
    fs::path escaped = outside / "escaped_tenant";
    LIPSYNC_RETURN_IF_ERROR(LinkTree(demo, escaped));
    fs::path link = root / "hostile_escape";
    fs::remove(link, ec);
    fs::create_directory_symlink(fs::absolute(escaped), link, ec);
    if (ec) return Status::FailedPrecondition("cannot symlink " + link.string());
    for (int kind = 0; kind < 4; ++kind) {
      std::string what;
      LIPSYNC_RETURN_IF_ERROR(h.Rewrite(kind, 0, &what));
      h.initial_.push_back(what);
    }
    return h;
  }

  // What Create wrote first.
  const std::vector<std::string>& initial() const { return initial_; }

  // A new tenant `name` holding the current hostile files of kHostileTenants[kind]: a name
  // the servers have not seen, so it is loaded afresh (a failed load is remembered and
  // only retried after a backoff, so rewriting the old tenant alone would rarely be read).
  Status Snapshot(int kind, const std::string& name) {
    return LinkTree(root_ / kHostileTenants[kind % 4], root_ / name);
  }

  // Rewrites hostile file `kind` (0 png, 1 crop, 2 onnx, 3 jpeg) with variant `variant`;
  // returns a short description of what was written.
  Status Rewrite(int kind, int variant, std::string* what = nullptr) {
    std::string desc;
    Status st;
    switch (kind % 4) {
      case 0: {
        static const uint32_t dims[][4] = {{60000, 60000, 8, 2},
                                           {2147483647u, 1, 8, 2},
                                           {60000, 60000, 16, 6},
                                           {1, 2147483647u, 16, 6}};
        const auto& d = dims[variant % 4];
        desc = "hostile_png frame_0000.png header " + std::to_string(d[0]) + "x" +
               std::to_string(d[1]) + " depth " + std::to_string(d[2]);
        st = WriteReplace(root_ / "hostile_png" / "frames" / "frame_0000.png",
                          HugePng(d[0], d[1], uint8_t(d[2]), uint8_t(d[3])));
        break;
      }
      case 1: {
        static const char* names[] = {"deep nesting", "huge numbers", "x2<x1",
                                      "1.6M entries", "4 MB string",  "outside/arity"};
        desc = std::string("hostile_crop crop_rects.json: ") + names[variant % 6];
        st = WriteReplace(root_ / "hostile_crop" / "crop_rects.json",
                          HostileCropRects(variant, frames_));
        break;
      }
      case 2: {
        static const char* names[] = {"random bytes", "truncated model", "2 GB length field"};
        desc = std::string("hostile_onnx model_best.onnx: ") + names[variant % 3];
        st = WriteReplace(root_ / "hostile_onnx" / "checkpoint" / "model_best.onnx",
                          HostileOnnx(variant, real_model_));
        break;
      }
      default: {
        // frame_0000 as a truncated JPEG (the .png is removed so the .jpg is used).
        static const double cuts[] = {0.5, 0.1, 0.9};
        size_t keep = std::max<size_t>(2, size_t(double(real_jpeg_.size()) * cuts[variant % 3]));
        desc = "hostile_jpeg frame_0000.jpg truncated to " + std::to_string(keep) + " of " +
               std::to_string(real_jpeg_.size()) + " bytes";
        std::error_code ec;
        fs::remove(root_ / "hostile_jpeg" / "frames" / "frame_0000.png", ec);
        st = WriteReplace(root_ / "hostile_jpeg" / "frames" / "frame_0000.jpg",
                          real_jpeg_.substr(0, keep));
        break;
      }
    }
    if (what != nullptr) *what = desc;
    return st;
  }

 private:
  fs::path root_;
  int frames_ = 0;
  std::string real_model_;
  std::string real_jpeg_;
  std::vector<std::string> initial_;
};

// ---------------------------------------------------------------------------------------
// Outcomes
// ---------------------------------------------------------------------------------------

enum class Verdict { kReturned, kFailed, kLost };

struct Tally {
  int64_t requests = 0;
  int64_t returned = 0;
  int64_t failed = 0;
  int64_t lost = 0;
  int64_t frames_requested = 0;
  int64_t frames_returned = 0;
  int64_t frames_failed = 0;
  int64_t frames_lost = 0;
  std::map<std::string, int64_t> failed_by_code;
  std::map<std::string, int64_t> lost_by_reason;
  std::string first_lost;

  void Add(Verdict v, int frames, const std::string& code_or_reason) {
    ++requests;
    frames_requested += frames;
    switch (v) {
      case Verdict::kReturned:
        ++returned;
        frames_returned += frames;
        break;
      case Verdict::kFailed:
        ++failed;
        frames_failed += frames;
        ++failed_by_code[code_or_reason];
        break;
      case Verdict::kLost:
        ++lost;
        frames_lost += frames;
        ++lost_by_reason[code_or_reason];
        if (first_lost.empty()) first_lost = code_or_reason;
        break;
    }
  }
};

struct CallResult {
  grpc::Status status;
  bool hung = false;  // no answer by deadline + margin; cancelled
  double seconds = 0;
  double deadline_s = 0;
};

// Starts an async call through `start(done)` and waits for it until deadline + margin.
CallResult WatchedCall(grpc::ClientContext& context, double deadline_s, double margin_s,
                       const std::function<void(std::function<void(grpc::Status)>)>& start) {
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::duration_cast<std::chrono::system_clock::duration>(
                           std::chrono::duration<double>(deadline_s)));
  auto promise = std::make_shared<std::promise<grpc::Status>>();
  std::future<grpc::Status> future = promise->get_future();
  const auto t0 = Clock::now();
  start([promise](grpc::Status s) { promise->set_value(std::move(s)); });
  CallResult result;
  if (future.wait_for(std::chrono::duration<double>(deadline_s + margin_s)) !=
      std::future_status::ready) {
    result.hung = true;
    context.TryCancel();
  }
  result.status = future.get();  // the callback always runs, after a cancel too
  result.seconds = SecondsSince(t0);
  result.deadline_s = deadline_s;
  return result;
}

std::string CodeName(const grpc::Status& s) { return lipsync::rpc::StatusCodeName(s.error_code()); }

// The code, and for DEADLINE_EXCEEDED whether our own deadline ran out or a server sent it.
std::string CodeName(const CallResult& r) {
  std::string name = CodeName(r.status);
  if (r.status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    name += r.seconds >= 0.98 * r.deadline_s ? " (client deadline)" : " (sent by the server)";
  }
  return name;
}

bool LooksLikeJpeg(const std::string& f) {
  return f.size() >= 4 && uint8_t(f[0]) == 0xFF && uint8_t(f[1]) == 0xD8 &&
         uint8_t(f[f.size() - 2]) == 0xFF && uint8_t(f[f.size() - 1]) == 0xD9;
}

// Classifies a CompositeBatch answer. `reason` gets the status code name or the loss reason.
Verdict Classify(const CallResult& r, const compositing::CompositeBatchResponse& response,
                 int frames, std::string* reason) {
  if (r.hung) {
    *reason = "no answer by deadline+margin";
    return Verdict::kLost;
  }
  if (!r.status.ok()) {
    if (r.status.error_message().empty()) {
      *reason = CodeName(r) + " with an empty message";
      return Verdict::kLost;
    }
    *reason = CodeName(r);
    return Verdict::kFailed;
  }
  if (!response.success()) {
    if (response.error().empty()) {
      *reason = "OK, success=false, empty error";
      return Verdict::kLost;
    }
    *reason = "OK with success=false";
    return Verdict::kFailed;
  }
  if (response.composited_frames_size() != frames) {
    *reason = "OK with " + std::to_string(response.composited_frames_size()) + " of " +
              std::to_string(frames) + " frames";
    return Verdict::kLost;
  }
  for (const auto& f : response.composited_frames()) {
    if (!LooksLikeJpeg(f)) {
      *reason = "OK with an empty or non-JPEG frame";
      return Verdict::kLost;
    }
  }
  *reason = "OK";
  return Verdict::kReturned;
}

// ---------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------

using lipsync::bench::ProcMem;
using lipsync::bench::ReadPidFile;
using lipsync::bench::ReadProcMem;

struct MemSample {
  double t = 0;
  ProcMem comp, inf;
};

// Least-squares slope of rss (MB) over time (min) for samples with t in [from, to].
double SlopeMbPerMin(const std::vector<MemSample>& s, double from, double to, bool compositing) {
  double n = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (const auto& m : s) {
    const ProcMem& p = compositing ? m.comp : m.inf;
    if (m.t < from || m.t > to || p.rss_kb < 0) continue;
    double x = m.t / 60.0, y = double(p.rss_kb) / 1024.0;
    n += 1;
    sx += x;
    sy += y;
    sxx += x * x;
    sxy += x * y;
  }
  double den = n * sxx - sx * sx;
  if (n < 3 || den <= 0) return std::nan("");
  return (n * sxy - sx * sy) / den;
}

// ---------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------

struct Options {
  std::string server, inference, model_root, comp_pid_file, inf_pid_file, exits_log;
  std::string out_dir = "out/soak";
  std::string model = "demo";
  double seconds = 120;
  int streams = 8;
  int batch = 8;
  double kill_every = 20;
  double deadline = 30;
  double margin = 10;
  int utterance_frames = 250;  // 10 s of synthetic speech, looped
};

using lipsync::bench::SyntheticSpeech;

struct ChaosKindStats {
  Tally tally;
  int64_t accepted = 0;  // OK answers to a request that should have been refused
  std::string example;   // first failure message (truncated)
};

class Soak {
 public:
  explicit Soak(Options o) : o_(std::move(o)) {}

  int Run();

 private:
  std::shared_ptr<grpc::Channel> NewChannel(const std::string& target, int salt) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(100 << 20);
    args.SetMaxSendMessageSize(200 << 20);
    args.SetInt("lipsync.soak.channel", salt);  // a connection of its own
    return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  }
  bool Running() const { return !stop_.load(); }
  void SleepFor(double seconds) {
    std::unique_lock<std::mutex> lock(stop_mu_);
    stop_cv_.wait_for(lock, std::chrono::duration<double>(seconds),
                      [this] { return stop_.load(); });
  }

  void StreamLoop(int stream);
  void ChaosRequestLoop();
  void HostileTenantLoop();
  void KillLoop();
  void RewriteLoop();
  void MemoryLoop();
  void ProgressLoop();

  void RecordChaos(const std::string& kind, const CallResult& r,
                   const compositing::CompositeBatchResponse* response, int frames,
                   bool ok_is_wrong);
  void Log(const std::string& line) {
    std::lock_guard<std::mutex> lock(log_mu_);
    std::printf("[soak %6.1fs] %s\n", SecondsSince(start_), line.c_str());
    std::fflush(stdout);
  }
  std::string Report(double wall_s);

  Options o_;
  Clock::time_point start_;
  std::atomic<bool> stop_{false};
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  std::mutex log_mu_;
  std::string speech_;

  std::mutex mu_;  // guards everything below
  Tally streams_;
  double max_latency_s_ = 0;
  std::map<std::string, ChaosKindStats> chaos_;
  std::vector<std::string> findings_;
  std::vector<MemSample> mem_;
  int kills_ = 0;
  int inference_restarts_seen_ = 0;
  std::vector<std::string> rewrites_;
  std::deque<std::pair<std::string, std::string>> fresh_;  // (base tenant, new copy)
  std::map<std::string, std::string> stream_examples_;     // status code -> first message
  int64_t rewrite_count_ = 0;
  int unexpected_exits_ = 0;
  int64_t bare_deadlines_ = 0;
  int64_t total_lost_ = 0;
};

void Soak::StreamLoop(int stream) {
  auto stub = compositing::CompositingService::NewStub(NewChannel(o_.server, stream + 1));
  const int total = o_.utterance_frames;
  // Streams start at different points of the utterance so they do not move in lockstep.
  int start = (stream * 5 * o_.batch) % total;
  start -= start % o_.batch;
  while (Running()) {
    const int frames = std::min(o_.batch, total - start);
    lipsync::audio::BatchAudioSpec spec;
    spec.start_frame = start;
    spec.batch_size = frames;
    spec.utterance_frames = total;
    spec.end_of_utterance = start + frames == total;
    auto pcm = lipsync::audio::SliceBatchAudio(speech_, spec);
    if (!pcm.ok()) {
      Log("driver bug: cannot slice audio: " + pcm.status().ToString());
      stop_ = true;
      return;
    }
    compositing::CompositeBatchRequest request;
    request.set_model_id(o_.model);
    request.set_batch_size(frames);
    request.set_start_frame_idx(start);
    request.set_raw_audio(std::move(*pcm));
    request.set_sample_rate(16000);
    request.set_utterance_frames(total);
    request.set_end_of_utterance(spec.end_of_utterance);
    request.set_output_format(compositing::JPEG);
    compositing::CompositeBatchResponse response;
    grpc::ClientContext context;
    CallResult r = WatchedCall(context, o_.deadline, o_.margin, [&](auto done) {
      stub->async()->InferBatchComposite(&context, &request, &response, std::move(done));
    });
    std::string reason;
    Verdict v = Classify(r, response, frames, &reason);
    {
      std::lock_guard<std::mutex> lock(mu_);
      streams_.Add(v, frames, reason);
      if (v == Verdict::kFailed && !stream_examples_.count(reason)) {
        stream_examples_[reason] = r.status.error_message().substr(0, 200);
        if (r.status.ok()) stream_examples_[reason] = response.error().substr(0, 200);
      }
      max_latency_s_ = std::max(max_latency_s_, r.seconds);
      // A server-sent DEADLINE_EXCEEDED carrying only gRPC's own text names no hop.
      if (reason == "DEADLINE_EXCEEDED (sent by the server)" &&
          r.status.error_message() == "Deadline Exceeded") {
        ++bare_deadlines_;
      }
    }
    if (v == Verdict::kLost) {
      Log("LOST stream " + std::to_string(stream) + " frames [" + std::to_string(start) + ", " +
          std::to_string(start + frames) + "): " + reason + " (" +
          r.status.error_message().substr(0, 160) + ")");
    }
    start = (start + frames) % total;
  }
}

void Soak::RecordChaos(const std::string& kind, const CallResult& r,
                       const compositing::CompositeBatchResponse* response, int frames,
                       bool ok_is_wrong) {
  Verdict v;
  std::string reason;
  if (response != nullptr) {
    v = Classify(r, *response, frames, &reason);
  } else if (r.hung) {
    v = Verdict::kLost;
    reason = "no answer by deadline+margin";
  } else if (r.status.ok()) {
    v = Verdict::kReturned;
    reason = "OK";
  } else if (r.status.error_message().empty()) {
    v = Verdict::kLost;
    reason = CodeName(r) + " with an empty message";
  } else {
    v = Verdict::kFailed;
    reason = CodeName(r);
  }
  std::lock_guard<std::mutex> lock(mu_);
  ChaosKindStats& k = chaos_[kind];
  k.tally.Add(v, frames, reason);
  if (v == Verdict::kReturned && ok_is_wrong) ++k.accepted;
  if (k.example.empty() && !r.status.ok()) {
    k.example = CodeName(r) + ": " + r.status.error_message().substr(0, 140);
  }
  if (v == Verdict::kLost) {
    std::printf("[soak %6.1fs] LOST chaos %s: %s\n", SecondsSince(start_), kind.c_str(),
                reason.c_str());
  }
}

// Malformed requests, one at a time, round robin over the kinds.
void Soak::ChaosRequestLoop() {
  auto channel = NewChannel(o_.server, 1001);
  auto stub = compositing::CompositingService::NewStub(channel);
  grpc::GenericStub generic(channel);
  auto inf_channel = NewChannel(o_.inference, 1002);
  grpc::GenericStub inf_generic(inf_channel);
  auto inf_stub = inference::InferenceService::NewStub(inf_channel);
  const double deadline = 10;
  std::mt19937_64 rng(7);
  auto composite = [&](const std::string& kind, compositing::CompositeBatchRequest request,
                       int frames) {
    compositing::CompositeBatchResponse response;
    grpc::ClientContext context;
    CallResult r = WatchedCall(context, deadline, o_.margin, [&](auto done) {
      stub->async()->InferBatchComposite(&context, &request, &response, std::move(done));
    });
    RecordChaos(kind, r, &response, frames, true);
  };
  auto garbage = [&](const std::string& kind, grpc::GenericStub& g, const std::string& method) {
    std::string bytes = RandomBytes(size_t(1 + rng() % 4096), rng());
    grpc::Slice slice(bytes);
    grpc::ByteBuffer request(&slice, 1);
    grpc::ByteBuffer response;
    grpc::ClientContext context;
    CallResult r = WatchedCall(context, deadline, o_.margin, [&](auto done) {
      g.UnaryCall(&context, method, grpc::StubOptions(), &request, &response, std::move(done));
    });
    RecordChaos(kind, r, nullptr, 0, true);
  };
  auto good_request = [&](int frames) {
    compositing::CompositeBatchRequest request;
    lipsync::audio::BatchAudioSpec spec;
    spec.batch_size = frames;
    spec.utterance_frames = o_.utterance_frames;
    auto pcm = lipsync::audio::SliceBatchAudio(speech_, spec);
    request.set_model_id(o_.model);
    request.set_batch_size(frames);
    request.set_utterance_frames(o_.utterance_frames);
    if (pcm.ok()) request.set_raw_audio(std::move(*pcm));
    return request;
  };
  auto features = [&](int frames, float value) {
    std::vector<float> f(size_t(frames) * 8192, 0.25f);
    for (size_t i = 0; i < f.size(); i += 97) f[i] = value;
    return std::string(reinterpret_cast<const char*>(f.data()), f.size() * sizeof(float));
  };
  for (int i = 0; Running(); ++i) {
    switch (i % 12) {
      case 0:
        garbage("garbage bytes -> compositing", generic,
                "/compositing.CompositingService/InferBatchComposite");
        break;
      case 1:
        garbage("garbage bytes -> inference", inf_generic,
                "/inference.InferenceService/InferBatch");
        break;
      case 2: {
        auto r = good_request(8);
        r.set_batch_size(0);
        composite("batch_size 0", r, 0);
        break;
      }
      case 3: {
        auto r = good_request(8);
        r.set_batch_size(1'000'000);
        composite("batch_size 1000000", r, 1'000'000);
        break;
      }
      case 4: {
        auto r = good_request(8);
        r.set_batch_size(-8);
        composite("batch_size -8", r, 0);
        break;
      }
      case 5: {
        auto r = good_request(8);
        r.set_model_id("no_such_tenant_" + std::to_string(i));
        composite("unknown model id", r, 8);
        break;
      }
      case 6: {
        static const char* bad[] = {"../demo", "a/b", "", ".hidden", "x\n\x01y"};
        auto r = good_request(8);
        r.set_model_id(bad[(i / 12) % 5]);
        composite("invalid model id", r, 8);
        auto r2 = good_request(8);
        r2.set_model_id(std::string(300, 'm'));
        composite("invalid model id", r2, 8);
        break;
      }
      case 7: {
        compositing::CompositeBatchRequest r;
        r.set_model_id(o_.model);
        r.set_batch_size(8);
        r.set_audio_features(features(8, std::numeric_limits<float>::quiet_NaN()));
        composite("NaN audio features", r, 8);
        break;
      }
      case 8: {
        compositing::CompositeBatchRequest r;
        r.set_model_id(o_.model);
        r.set_batch_size(8);
        r.set_audio_features(features(8, std::numeric_limits<float>::infinity()));
        composite("Inf audio features", r, 8);
        break;
      }
      case 9: {
        auto r = good_request(8);
        std::string pcm = r.raw_audio();
        pcm.resize(pcm.size() - 3);  // odd length and short
        r.set_raw_audio(pcm);
        composite("raw audio of the wrong length", r, 8);
        break;
      }
      case 10: {
        // NaN visual frames straight to the inference server.
        inference::InferBatchRequest r;
        r.set_model_id(o_.model);
        r.set_batch_size(1);
        std::vector<float> visual(size_t(6) * 320 * 320, std::numeric_limits<float>::quiet_NaN());
        r.set_visual_frames(
            std::string(reinterpret_cast<const char*>(visual.data()), visual.size() * 4));
        r.set_audio_features(features(1, std::numeric_limits<float>::quiet_NaN()));
        inference::InferBatchResponse response;
        grpc::ClientContext context;
        CallResult res = WatchedCall(context, deadline, o_.margin, [&](auto done) {
          inf_stub->async()->InferBatch(&context, &r, &response, std::move(done));
        });
        RecordChaos("NaN tensors -> inference", res, nullptr, 0, true);
        break;
      }
      default: {
        auto r = good_request(8);
        r.set_start_frame_idx(-5);
        composite("start_frame_idx -5", r, 8);
        break;
      }
    }
    SleepFor(0.1);
  }
}

// Requests (and admin loads) for the hostile tenants, one at a time.
void Soak::HostileTenantLoop() {
  auto stub = compositing::CompositingService::NewStub(NewChannel(o_.server, 2001));
  const double deadline = 10;
  for (int i = 0; Running(); ++i) {
    std::string tenant = kHostileTenants[i % 5];
    std::string label = tenant;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!fresh_.empty() && i % 2 == 1) {
        tenant = fresh_.front().second;
        label = "new " + fresh_.front().first + " copy";
        fresh_.pop_front();
      }
    }
    if (label == tenant && (i / 5) % 4 == 3) {
      lipsync::admin::LoadModelRequest request;
      request.set_model_id(tenant);
      lipsync::admin::LoadModelResponse response;
      grpc::ClientContext context;
      CallResult r = WatchedCall(context, deadline, o_.margin, [&](auto done) {
        stub->async()->LoadModel(&context, &request, &response, std::move(done));
      });
      RecordChaos("LoadModel " + label, r, nullptr, 0, true);
    } else {
      compositing::CompositeBatchRequest request;
      lipsync::audio::BatchAudioSpec spec;
      spec.batch_size = 8;
      spec.utterance_frames = o_.utterance_frames;
      auto pcm = lipsync::audio::SliceBatchAudio(speech_, spec);
      request.set_model_id(tenant);
      request.set_batch_size(8);
      request.set_utterance_frames(o_.utterance_frames);
      if (pcm.ok()) request.set_raw_audio(std::move(*pcm));
      compositing::CompositeBatchResponse response;
      grpc::ClientContext context;
      CallResult r = WatchedCall(context, deadline, o_.margin, [&](auto done) {
        stub->async()->InferBatchComposite(&context, &request, &response, std::move(done));
      });
      RecordChaos("request " + label, r, &response, 8, true);
    }
    SleepFor(0.2);
  }
}

void Soak::KillLoop() {
  if (o_.kill_every <= 0) return;
  while (Running()) {
    SleepFor(o_.kill_every);
    if (!Running()) return;
    int pid = ReadPidFile(o_.inf_pid_file);
    if (pid > 0 && ::kill(pid, SIGKILL) == 0) {
      Log("chaos: SIGKILL inference server pid " + std::to_string(pid));
      std::lock_guard<std::mutex> lock(mu_);
      ++kills_;
    } else {
      Log("chaos: no inference server to kill (pid file " + o_.inf_pid_file + ")");
    }
  }
}

void Soak::RewriteLoop() {
  auto hostile = HostileTenants::Create(o_.model_root, fs::path(o_.out_dir) / "outside");
  if (!hostile.ok()) {
    Log("cannot prepare hostile tenants: " + hostile.status().ToString());
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    rewrites_ = hostile->initial();
  }
  for (int i = 1; Running(); ++i) {
    SleepFor(3);
    std::string what;
    const int kind = i % 4;
    Status st = hostile->Rewrite(kind, i / 4 + 1, &what);
    const std::string fresh = std::string(kHostileTenants[kind]) + "_r" + std::to_string(i);
    // No new copies of hostile_onnx: its avatar is valid, so each copy would add a whole
    // avatar to the compositing server's cache (memory that is not a leak).
    const bool snapshot = st.ok() && kind != 2;
    if (snapshot) st = hostile->Snapshot(kind, fresh);
    std::lock_guard<std::mutex> lock(mu_);
    if (snapshot && st.ok()) fresh_.push_back({kHostileTenants[kind], fresh});
    ++rewrite_count_;
    if (!st.ok()) what += " FAILED: " + st.ToString();
    if (std::find(rewrites_.begin(), rewrites_.end(), what) == rewrites_.end()) {
      rewrites_.push_back(what);
    }
  }
}

void Soak::MemoryLoop() {
  std::ofstream csv(fs::path(o_.out_dir) / "memory.csv", std::ios::trunc);
  csv << "t_s,compositing_pid,compositing_rss_kb,compositing_anon_kb,compositing_file_kb,"
         "inference_pid,inference_rss_kb,inference_anon_kb,inference_file_kb\n";
  int last_inf_pid = 0;
  while (true) {
    MemSample m;
    m.t = SecondsSince(start_);
    m.comp = ReadProcMem(ReadPidFile(o_.comp_pid_file));
    m.inf = ReadProcMem(ReadPidFile(o_.inf_pid_file));
    csv << std::fixed;
    csv.precision(1);
    csv << m.t << ',' << m.comp.pid << ',' << m.comp.rss_kb << ',' << m.comp.anon_kb << ','
        << m.comp.file_kb << ',' << m.inf.pid << ',' << m.inf.rss_kb << ',' << m.inf.anon_kb << ','
        << m.inf.file_kb << '\n';
    csv.flush();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (m.inf.pid > 0 && last_inf_pid > 0 && m.inf.pid != last_inf_pid) {
        ++inference_restarts_seen_;
      }
      if (m.inf.pid > 0) last_inf_pid = m.inf.pid;
      mem_.push_back(m);
    }
    if (!Running()) return;
    SleepFor(1.0);
  }
}

void Soak::ProgressLoop() {
  while (Running()) {
    SleepFor(10);
    if (!Running()) return;
    std::lock_guard<std::mutex> lock(mu_);
    int64_t chaos_requests = 0, chaos_lost = 0;
    for (const auto& [kind, k] : chaos_) {
      chaos_requests += k.tally.requests;
      chaos_lost += k.tally.lost;
    }
    double comp_mb = 0, inf_mb = 0;
    if (!mem_.empty()) {
      comp_mb = double(mem_.back().comp.rss_kb) / 1024.0;
      inf_mb = double(mem_.back().inf.rss_kb) / 1024.0;
    }
    char line[512];
    std::snprintf(line, sizeof line,
                  "frames requested %lld returned %lld failed %lld LOST %lld | chaos requests "
                  "%lld lost %lld | kills %d | RSS compositing %.1f MB inference %.1f MB",
                  (long long)streams_.frames_requested, (long long)streams_.frames_returned,
                  (long long)streams_.frames_failed, (long long)streams_.frames_lost,
                  (long long)chaos_requests, (long long)chaos_lost, kills_, comp_mb, inf_mb);
    std::printf("[soak %6.1fs] %s\n", SecondsSince(start_), line);
    std::fflush(stdout);
  }
}

std::string Fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

std::string Soak::Report(double wall_s) {
  std::lock_guard<std::mutex> lock(mu_);
  std::ostringstream r;
  r << "# Soak + chaos report\n\n";
  r << "- " << o_.streams << " streams x batches of " << o_.batch << " frames (raw 16 kHz audio, "
    << o_.utterance_frames << "-frame utterance looped) against `" << o_.server << "`, model `"
    << o_.model << "`, for " << Fmt("%.0f", wall_s) << " s; deadline " << Fmt("%.0f", o_.deadline)
    << " s per call, lost after deadline + " << Fmt("%.0f", o_.margin) << " s\n";
  r << "- inference server SIGKILLed every " << Fmt("%.0f", o_.kill_every) << " s: " << kills_
    << " kills, " << inference_restarts_seen_ << " restarts seen (new pid)\n";
  r << "- hostile tenant files rewritten " << rewrite_count_ << " times\n\n";

  r << "## Stream frames\n\n| | requests | frames |\n|---|---:|---:|\n";
  r << "| requested | " << streams_.requests << " | " << streams_.frames_requested << " |\n";
  r << "| returned (OK, all frames JPEG) | " << streams_.returned << " | "
    << streams_.frames_returned << " |\n";
  r << "| failed with a clear status | " << streams_.failed << " | " << streams_.frames_failed
    << " |\n";
  r << "| **lost** | **" << streams_.lost << "** | **" << streams_.frames_lost << "** |\n\n";
  if (!streams_.failed_by_code.empty()) {
    r << "Failed by status (first message of each):\n\n";
    for (const auto& [code, n] : streams_.failed_by_code) {
      std::string example = stream_examples_[code];
      for (auto& c : example) {
        if (uint8_t(c) < 0x20) c = ' ';
      }
      r << "- " << code << " x" << n << ": \"" << example << "\"\n";
    }
    r << "\n";
  }
  for (const auto& [why, n] : streams_.lost_by_reason) r << "- LOST: " << why << " x" << n << "\n";
  r << "Throughput: " << Fmt("%.1f", double(streams_.frames_returned) / std::max(wall_s, 1e-9))
    << " frames/s returned; slowest call " << Fmt("%.2f", max_latency_s_) << " s.\n\n";

  r << "## Chaos requests\n\n| kind | requests | failed (clear) | accepted (OK) | lost | "
       "status codes | example message |\n|---|---:|---:|---:|---:|---|---|\n";
  int64_t chaos_lost = 0;
  for (const auto& [kind, k] : chaos_) {
    chaos_lost += k.tally.lost;
    std::string codes;
    for (const auto& [code, n] : k.tally.failed_by_code) {
      codes += code + " " + std::to_string(n) + " ";
    }
    for (const auto& [why, n] : k.tally.lost_by_reason) {
      codes += "LOST(" + why + ") " + std::to_string(n) + " ";
    }
    std::string example = k.example;
    for (auto& c : example) {
      if (c == '|' || c == '\n' || uint8_t(c) < 0x20) c = ' ';
    }
    r << "| " << kind << " | " << k.tally.requests << " | " << k.tally.failed << " | " << k.accepted
      << " | " << k.tally.lost << " | " << codes << "| " << example << " |\n";
  }
  r << "\n## Hostile files written\n\n";
  for (const auto& w : rewrites_) r << "- " << w << "\n";

  r << "\n## Memory (VmRSS, sampled every second: " << mem_.size() << " samples)\n\n";
  if (!mem_.empty()) {
    const double end = mem_.back().t;
    auto at = [&](double t) -> const MemSample& {
      for (const auto& m : mem_) {
        if (m.t >= t) return m;
      }
      return mem_.back();
    };
    const MemSample &first = mem_.front(), &mid = at(end / 2), &last = mem_.back();
    auto mb = [](int64_t kb) { return Fmt("%.1f", double(kb) / 1024.0); };
    int64_t comp_max = 0;
    for (const auto& m : mem_) comp_max = std::max(comp_max, m.comp.rss_kb);
    const double slope2 = SlopeMbPerMin(mem_, end / 2, end, true);
    const double slope1 = SlopeMbPerMin(mem_, 0, end / 2, true);
    r << "| compositing server | first | mid | last | max |\n|---|---:|---:|---:|---:|\n";
    r << "| VmRSS MB | " << mb(first.comp.rss_kb) << " | " << mb(mid.comp.rss_kb) << " | "
      << mb(last.comp.rss_kb) << " | " << mb(comp_max) << " |\n";
    r << "| RssAnon MB | " << mb(first.comp.anon_kb) << " | " << mb(mid.comp.anon_kb) << " | "
      << mb(last.comp.anon_kb) << " | |\n";
    r << "| RssFile MB | " << mb(first.comp.file_kb) << " | " << mb(mid.comp.file_kb) << " | "
      << mb(last.comp.file_kb) << " | |\n\n";
    // In-flight work makes VmRSS swing by tens of MB from one second to the next, so the
    // trend is taken from the median of each window (10 s, or 1/12 of a long run).
    const double window = std::max(10.0, std::floor(end / 12.0));
    struct Window {
      double t0 = 0;
      std::vector<double> comp, inf;
    };
    std::vector<Window> windows;
    for (const auto& m : mem_) {
      size_t w = size_t(m.t / window);
      while (windows.size() <= w) windows.push_back({double(windows.size()) * window, {}, {}});
      if (m.comp.rss_kb >= 0) windows[w].comp.push_back(double(m.comp.rss_kb) / 1024.0);
      if (m.inf.rss_kb >= 0) windows[w].inf.push_back(double(m.inf.rss_kb) / 1024.0);
    }
    auto median = [](std::vector<double> v) {
      if (v.empty()) return std::nan("");
      std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
      return v[v.size() / 2];
    };
    r << "VmRSS MB per " << Fmt("%.0f", window)
      << " s window (compositing median [min-max]; inference median):\n\n"
      << "| from s | compositing | inference |\n|---:|---|---:|\n";
    std::vector<MemSample> medians;  // one pseudo-sample per full window, at its centre
    for (const auto& w : windows) {
      if (w.comp.empty()) continue;
      const double med = median(w.comp);
      r << "| " << Fmt("%.0f", w.t0) << " | " << Fmt("%.1f", med) << " ["
        << Fmt("%.0f", *std::min_element(w.comp.begin(), w.comp.end())) << "-"
        << Fmt("%.0f", *std::max_element(w.comp.begin(), w.comp.end())) << "] | "
        << Fmt("%.1f", median(w.inf)) << " |\n";
      if (w.t0 + window <= end + 1.0) {
        MemSample m;
        m.t = w.t0 + window / 2;
        m.comp.rss_kb = int64_t(med * 1024.0);
        medians.push_back(m);
      }
    }
    r << "\n";
    // Levels off: over the second half the window medians grow by less than 5% of the
    // mid-run size.
    const double mslope = SlopeMbPerMin(medians, end / 2, end, true);
    const double growth = mslope * (end / 2) / 60.0;
    const double mid_mb = double(mid.comp.rss_kb) / 1024.0;
    const bool level = std::isfinite(mslope) && growth < 0.05 * mid_mb;
    r << "Compositing VmRSS trend over the second half: " << Fmt("%+.1f", mslope)
      << " MB/min from the window medians (" << Fmt("%+.1f", growth) << " MB over "
      << Fmt("%.0f", end / 2) << " s), " << Fmt("%+.1f", slope2)
      << " MB/min from every sample; first half " << Fmt("%+.1f", slope1) << " MB/min: "
      << (!std::isfinite(mslope) ? "too short to tell (needs 3 windows in the 2nd half)"
          : level                ? "levels off"
                                 : "DOES NOT level off (medians grow >= 5% in the 2nd half)")
      << ".\n\n";
    // The inference server restarts after every kill: peak VmRSS per incarnation.
    std::vector<std::pair<int, int64_t>> peaks;
    for (const auto& m : mem_) {
      if (m.inf.pid <= 0 || m.inf.rss_kb < 0) continue;
      if (peaks.empty() || peaks.back().first != m.inf.pid) peaks.push_back({m.inf.pid, 0});
      peaks.back().second = std::max(peaks.back().second, m.inf.rss_kb);
    }
    r << "Inference server (restarted after each kill), peak VmRSS per process:";
    for (const auto& [pid, kb] : peaks) r << " " << mb(kb);
    r << " MB";
    if (o_.kill_every <= 0) {
      r << "; slope over the second half " << Fmt("%+.2f", SlopeMbPerMin(mem_, end / 2, end, false))
        << " MB/min";
    }
    r << ".\n\n";
  }

  // Server exits recorded by the script's supervisor: "<t> <server> <pid> <exit code>".
  int unexpected = 0;
  std::string exits;
  if (!o_.exits_log.empty()) {
    std::ifstream in(o_.exits_log);
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string t, server, pid;
      int code = 0;
      fields >> t >> server >> pid >> code;
      bool ours = server == "inference" && code == 137;
      if (!ours) {
        ++unexpected;
        exits += "- " + server + " pid " + pid + " exited with " + std::to_string(code) + " at " +
                 t + " (not killed by the driver)\n";
      }
    }
  }
  r << "## Server exits not caused by the driver\n\n" << (exits.empty() ? "none\n" : exits);
  for (const auto& [kind, k] : chaos_) {
    if (k.accepted > 0) {
      findings_.push_back(kind + ": " + std::to_string(k.accepted) +
                          " request(s) answered OK that should have been refused");
    }
  }
  if (unexpected > 0)
    findings_.push_back(std::to_string(unexpected) + " unexpected server exit(s)");
  if (bare_deadlines_ > 0) {
    findings_.push_back(std::to_string(bare_deadlines_) +
                        " stream batch(es) got DEADLINE_EXCEEDED from the server with only "
                        "gRPC's text \"Deadline Exceeded\" (clear code, but no hop named)");
  }
  r << "\n## Findings\n\n";
  if (findings_.empty()) r << "none\n";
  for (const auto& f : findings_) r << "- " << f << "\n";
  r << "\n**Lost: " << streams_.frames_lost << " stream frames, " << streams_.lost
    << " stream requests, " << chaos_lost << " chaos requests.**\n";
  unexpected_exits_ = unexpected;
  total_lost_ = streams_.lost + chaos_lost;
  return r.str();
}

int Soak::Run() {
  std::error_code ec;
  fs::create_directories(o_.out_dir, ec);
  speech_ = SyntheticSpeech(o_.utterance_frames);
  start_ = Clock::now();
  Log("running " + std::to_string(o_.streams) + " streams for " + Fmt("%.0f", o_.seconds) +
      " s against " + o_.server + " (inference " + o_.inference + ")");
  std::vector<std::thread> threads;
  threads.emplace_back([this] { MemoryLoop(); });
  threads.emplace_back([this] { RewriteLoop(); });
  for (int s = 0; s < o_.streams; ++s) threads.emplace_back([this, s] { StreamLoop(s); });
  threads.emplace_back([this] { ChaosRequestLoop(); });
  threads.emplace_back([this] { HostileTenantLoop(); });
  threads.emplace_back([this] { KillLoop(); });
  threads.emplace_back([this] { ProgressLoop(); });
  SleepFor(o_.seconds);
  {
    std::lock_guard<std::mutex> lock(stop_mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  Log("time is up; waiting for the calls in flight");
  for (auto& t : threads) t.join();
  const double wall = SecondsSince(start_);
  std::string report = Report(wall);
  std::string path = (fs::path(o_.out_dir) / "report.md").string();
  std::ofstream(path, std::ios::trunc) << report;
  std::printf("\n%s\nFiles: %s, %s\n", report.c_str(), path.c_str(),
              (fs::path(o_.out_dir) / "memory.csv").string().c_str());
  if (total_lost_ > 0) return 1;
  if (unexpected_exits_ > 0) return 3;
  return 0;
}

// ---------------------------------------------------------------------------------------
// Self-test: the classifier against a fake compositing server that misbehaves on purpose,
// so a report of 0 lost means the detector was able to see a loss.
// ---------------------------------------------------------------------------------------

class MisbehavingCompositing final : public compositing::CompositingService::Service {
 public:
  grpc::Status InferBatchComposite(grpc::ServerContext* context,
                                   const compositing::CompositeBatchRequest* request,
                                   compositing::CompositeBatchResponse* response) override {
    const std::string& mode = request->model_id();
    const std::string jpeg("\xFF\xD8\xFF\xE0 fake \xFF\xD9", 12);
    int frames = request->batch_size();
    if (mode == "empty_message") return grpc::Status(grpc::StatusCode::INTERNAL, "");
    if (mode == "clear") {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "batch_size must be 1..64, got 0");
    }
    if (mode == "success_false_empty") return grpc::Status::OK;  // success=false, no error
    if (mode == "hang") {
      for (int i = 0; i < 50 && !context->IsCancelled(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
    if (mode == "short") frames -= 1;
    for (int i = 0; i < frames; ++i) {
      response->add_composited_frames(mode == "empty_frame" && i == 1 ? "" : jpeg);
    }
    response->set_success(true);
    return grpc::Status::OK;
  }
};

int SelfTest() {
  MisbehavingCompositing service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    std::fprintf(stderr, "soak_chaos selftest: cannot start the fake server\n");
    return 1;
  }
  auto stub = compositing::CompositingService::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  struct Case {
    const char* mode;
    Verdict expected;
    double deadline, margin;
  };
  // "hang" answers after 5 s; the watchdog gives up after deadline + margin = 1 s (a
  // negative margin stands in for a deadline that gRPC failed to enforce).
  const Case cases[] = {
      {"ok", Verdict::kReturned, 5, 1},        {"clear", Verdict::kFailed, 5, 1},
      {"short", Verdict::kLost, 5, 1},         {"empty_frame", Verdict::kLost, 5, 1},
      {"empty_message", Verdict::kLost, 5, 1}, {"success_false_empty", Verdict::kLost, 5, 1},
      {"hang", Verdict::kLost, 3, -2}};
  const char* names[] = {"returned", "failed", "LOST"};
  int wrong = 0;
  for (const Case& c : cases) {
    compositing::CompositeBatchRequest request;
    request.set_model_id(c.mode);
    request.set_batch_size(4);
    compositing::CompositeBatchResponse response;
    grpc::ClientContext context;
    CallResult r = WatchedCall(context, c.deadline, c.margin, [&](auto done) {
      stub->async()->InferBatchComposite(&context, &request, &response, std::move(done));
    });
    std::string reason;
    Verdict v = Classify(r, response, 4, &reason);
    const bool ok = v == c.expected;
    wrong += ok ? 0 : 1;
    std::printf("selftest %-20s -> %-8s (%s)\n", c.mode, names[int(v)], reason.c_str());
    if (!ok) std::printf("  WRONG: expected %s\n", names[int(c.expected)]);
  }
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  std::printf("selftest: %s\n", wrong == 0 ? "the classifier sees every kind of loss" : "FAILED");
  return wrong == 0 ? 0 : 1;
}

int Usage(const std::string& message) {
  std::fprintf(stderr,
               "soak_chaos: %s\n"
               "usage: soak_chaos selftest\n"
               "       soak_chaos make-hostile --model-root DIR --outside DIR\n"
               "       soak_chaos run --server HOST:PORT --inference HOST:PORT --model-root DIR\n"
               "         --compositing-pid-file F --inference-pid-file F [--exits-log F]\n"
               "         [--out DIR] [--seconds 120] [--streams 8] [--batch 8]\n"
               "         [--kill-every 20] [--deadline 30] [--model demo]\n",
               message.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return Usage("missing subcommand");
  const std::string command = argv[1];
  auto flags = lipsync::Flags::Parse(
      argc - 2, argv + 2,
      {"model-root", "outside", "server", "inference", "compositing-pid-file", "inference-pid-file",
       "exits-log", "out", "seconds", "streams", "batch", "kill-every", "deadline", "model"});
  if (!flags.ok()) return Usage(flags.status().message());
  if (command == "selftest") return SelfTest();
  if (command == "make-hostile") {
    if (!flags->Has("model-root") || !flags->Has("outside")) {
      return Usage("make-hostile needs --model-root and --outside");
    }
    auto h = HostileTenants::Create(flags->GetString("model-root"), flags->GetString("outside"));
    if (!h.ok()) {
      std::fprintf(stderr, "soak_chaos: %s\n", h.status().ToString().c_str());
      return 1;
    }
    std::printf("hostile tenants written under %s\n", flags->GetString("model-root").c_str());
    return 0;
  }
  if (command != "run") return Usage("unknown subcommand '" + command.substr(0, 40) + "'");
  Options o;
  o.server = flags->GetString("server");
  o.inference = flags->GetString("inference");
  o.model_root = flags->GetString("model-root");
  o.comp_pid_file = flags->GetString("compositing-pid-file");
  o.inf_pid_file = flags->GetString("inference-pid-file");
  o.exits_log = flags->GetString("exits-log");
  o.out_dir = flags->GetString("out", o.out_dir);
  o.model = flags->GetString("model", o.model);
  if (o.server.empty() || o.inference.empty() || o.model_root.empty() || o.comp_pid_file.empty() ||
      o.inf_pid_file.empty()) {
    return Usage("run needs --server, --inference, --model-root and both pid files");
  }
  auto seconds = flags->GetDouble("seconds", o.seconds);
  auto kill_every = flags->GetDouble("kill-every", o.kill_every);
  auto deadline = flags->GetDouble("deadline", o.deadline);
  auto streams = flags->GetInt("streams", o.streams);
  auto batch = flags->GetInt("batch", o.batch);
  for (const auto* v : {&seconds, &kill_every, &deadline}) {
    if (!v->ok()) return Usage(v->status().message());
  }
  for (const auto* v : {&streams, &batch}) {
    if (!v->ok()) return Usage(v->status().message());
  }
  if (*seconds <= 0 || *deadline <= 0 || *kill_every < 0) {
    return Usage("--seconds and --deadline must be > 0, --kill-every >= 0");
  }
  if (*streams < 1 || *streams > 256 || *batch < 1 || *batch > 64) {
    return Usage("--streams must be 1..256 and --batch 1..64");
  }
  o.seconds = *seconds;
  o.kill_every = *kill_every;
  o.deadline = *deadline;
  o.streams = int(*streams);
  o.batch = int(*batch);
  return Soak(o).Run();
}
