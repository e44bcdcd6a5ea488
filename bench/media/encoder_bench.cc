// H.264 encoder choice for live sessions: libx264 (ultrafast, superfast, veryfast) vs
// Cisco's openh264 (real-time mode, baseline, CAVLC) vs MJPEG, on 1280x720 frames of the
// demo avatar with a moving mouth, all in one run so the ratios are side by side:
// ms/frame on one core (RGB in -> access unit out, colour conversion included), bytes
// per frame at the same bitrate, and PSNR (RGB, all pixels) of what Debian's ffmpeg
// decodes against the input. Then the idle loop: re-encoding every idle frame vs
// encoding the ping-pong loop once (media::EncodeSequence) and replaying it.
//
// Run: build/lipsync make-demo --out /tmp/demo_root
//      build/bench/media/encoder_bench --frames /tmp/demo_root/demo/frames [--n 250]
//          [--bitrate 1500] [--fps 25]
// Not a test: figures go to docs/perf/h264_encoders.md.
#include <sched.h>
#include <time.h>
#include <wels/codec_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bench_util.h"
#include "image/image.h"
#include "libyuv/convert.h"
#include "media/h264_test_util.h"
#include "media/video_encoder.h"

namespace lipsync::media {
namespace {

using Clock = std::chrono::steady_clock;

struct Rect {
  int x0, y0, x1, y1;
};

// One encoder under test: RGB frame in, one access unit (or JPEG) out.
class BenchEncoder {
 public:
  virtual ~BenchEncoder() = default;
  virtual bool Encode(const image::Image& frame, bool force_key, std::string* out) = 0;
};

class ProductEncoder final : public BenchEncoder {
 public:
  explicit ProductEncoder(std::unique_ptr<VideoEncoder> e) : e_(std::move(e)) {}
  bool Encode(const image::Image& frame, bool force_key, std::string* out) override {
    auto r = e_->EncodeImage(frame, force_key);
    if (!r.ok()) {
      std::fprintf(stderr, "encode: %s\n", r.status().ToString().c_str());
      return false;
    }
    *out = std::move(r->data);
    return true;
  }

 private:
  std::unique_ptr<VideoEncoder> e_;
};

// openh264 through its API (WelsCreateSVCEncoder), configured like our x264: real-time
// camera mode, one spatial/temporal layer, baseline (CAVLC), bitrate RC without frame
// skipping, an IDR every key_interval frames, one thread.
class OpenH264Encoder final : public BenchEncoder {
 public:
  ~OpenH264Encoder() override {
    if (enc_ != nullptr) {
      enc_->Uninitialize();
      WelsDestroySVCEncoder(enc_);
    }
  }
  bool Init(int w, int h, int fps, int kbps, int key_interval, ECOMPLEXITY_MODE complexity) {
    w_ = w;
    h_ = h;
    fps_ = fps;
    if (WelsCreateSVCEncoder(&enc_) != 0 || enc_ == nullptr) return false;
    int log_level = WELS_LOG_ERROR;
    enc_->SetOption(ENCODER_OPTION_TRACE_LEVEL, &log_level);
    SEncParamExt p;
    enc_->GetDefaultParams(&p);
    p.iUsageType = CAMERA_VIDEO_REAL_TIME;
    p.iPicWidth = w;
    p.iPicHeight = h;
    p.fMaxFrameRate = float(fps);
    p.iTargetBitrate = kbps * 1000;
    p.iMaxBitrate = kbps * 1000;
    p.iRCMode = RC_BITRATE_MODE;
    p.bEnableFrameSkip = false;
    p.iTemporalLayerNum = 1;
    p.iSpatialLayerNum = 1;
    p.uiIntraPeriod = unsigned(key_interval);
    p.iMultipleThreadIdc = 1;
    p.iEntropyCodingModeFlag = 0;
    p.iComplexityMode = complexity;
    p.eSpsPpsIdStrategy = CONSTANT_ID;
    p.bEnableDenoise = false;
    p.bEnableSceneChangeDetect = false;
    p.sSpatialLayers[0].iVideoWidth = w;
    p.sSpatialLayers[0].iVideoHeight = h;
    p.sSpatialLayers[0].fFrameRate = float(fps);
    p.sSpatialLayers[0].iSpatialBitrate = kbps * 1000;
    p.sSpatialLayers[0].iMaxSpatialBitrate = kbps * 1000;
    p.sSpatialLayers[0].uiProfileIdc = PRO_BASELINE;
    p.sSpatialLayers[0].sSliceArgument.uiSliceMode = SM_SINGLE_SLICE;
    if (enc_->InitializeExt(&p) != cmResultSuccess) return false;
    int format = videoFormatI420;
    enc_->SetOption(ENCODER_OPTION_DATAFORMAT, &format);
    y_.resize(size_t(w) * h);
    u_.resize(size_t(w / 2) * (h / 2));
    v_.resize(u_.size());
    return true;
  }
  bool Encode(const image::Image& frame, bool force_key, std::string* out) override {
    libyuv::RAWToI420(frame.pixels.data(), int(frame.stride()), y_.data(), w_, u_.data(), w_ / 2,
                      v_.data(), w_ / 2, w_, h_);
    SSourcePicture pic;
    std::memset(&pic, 0, sizeof(pic));
    pic.iPicWidth = w_;
    pic.iPicHeight = h_;
    pic.iColorFormat = videoFormatI420;
    pic.iStride[0] = w_;
    pic.iStride[1] = pic.iStride[2] = w_ / 2;
    pic.pData[0] = y_.data();
    pic.pData[1] = u_.data();
    pic.pData[2] = v_.data();
    pic.uiTimeStamp = (frames_++) * 1000 / fps_;
    if (force_key) enc_->ForceIntraFrame(true);
    SFrameBSInfo info;
    std::memset(&info, 0, sizeof(info));
    if (enc_->EncodeFrame(&pic, &info) != cmResultSuccess) return false;
    out->clear();
    if (info.eFrameType == videoFrameTypeSkip) return true;
    for (int l = 0; l < info.iLayerNum; ++l) {
      const SLayerBSInfo& layer = info.sLayerInfo[l];
      size_t bytes = 0;
      for (int n = 0; n < layer.iNalCount; ++n) bytes += size_t(layer.pNalLengthInByte[n]);
      out->append(reinterpret_cast<const char*>(layer.pBsBuf), bytes);
    }
    return true;
  }

 private:
  ISVCEncoder* enc_ = nullptr;
  int w_ = 0, h_ = 0, fps_ = 25;
  int64_t frames_ = 0;
  std::vector<uint8_t> y_, u_, v_;
};

// The demo avatar's frames with a mouth that opens and closes like speech (the part a
// lip-sync model rewrites each frame), placed from crop_rects.json's face box.
image::Image SpeakingFrame(const image::Image& base, const Rect& face, int index) {
  image::Image img = base;
  const double t = index / 25.0;
  const double open = std::max(
      0.0, 0.55 * std::sin(2 * M_PI * 3.1 * t) + 0.45 * std::sin(2 * M_PI * 1.7 * t + 1.0));
  const int fw = face.x1 - face.x0, fh = face.y1 - face.y0;
  const double cx = face.x0 + 0.5 * fw, cy = face.y0 + 0.70 * fh;
  const double rx = 0.15 * fw, ry = 0.015 * fh + 0.07 * fh * open;
  for (int y = int(cy - ry - 6); y <= int(cy + ry + 6); ++y) {
    if (y < 0 || y >= img.height) continue;
    for (int x = int(cx - rx - 6); x <= int(cx + rx + 6); ++x) {
      if (x < 0 || x >= img.width) continue;
      const double dx = (x - cx) / rx, dy = (y - cy) / ry;
      const double d = std::sqrt(dx * dx + dy * dy);
      uint8_t* p = img.row(y) + size_t(x) * 3;
      if (d < 0.75) {  // mouth interior, teeth at the top when open
        bool teeth = open > 0.3 && dy < -0.35;
        p[0] = teeth ? 225 : uint8_t(70 + 30 * d);
        p[1] = teeth ? 220 : uint8_t(15 + 10 * d);
        p[2] = teeth ? 210 : uint8_t(25 + 10 * d);
      } else if (d < 1.0) {  // lips
        p[0] = uint8_t(175 - 20 * d);
        p[1] = uint8_t(85 - 10 * d);
        p[2] = uint8_t(90 - 10 * d);
      }
    }
  }
  return img;
}

// CPU time of this thread: what one encode costs a core, whatever else the box runs
// (wall time on a shared 2-core box includes waiting for the CPU).
double ThreadCpuMs() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) * 1e3 + double(ts.tv_nsec) / 1e6;
}

struct Result {
  std::string name;
  double ms_median = 0, ms_p95 = 0, ms_mean = 0;  // wall
  double cpu_median = 0, cpu_mean = 0;
  double bytes_per_frame = 0;
  double key_bytes = 0;
  double psnr_mean = 0, psnr_min = 0;
  double mouth_psnr_mean = 0;  // the lower half of the face box only
  double peak_kbps = 0;        // highest bitrate over any 1 s window
  size_t max_frame_bytes = 0;
  std::string profile;  // H264: profile_idc/constraint flags of the first SPS
  bool headers_every_idr = true;
  int key_frames = 0;
  int decoded = 0;
  std::string stream;
};

using lipsync::bench::Percentile;

double RegionPsnr(const uint8_t* a, const uint8_t* b, int width, const Rect& r) {
  double se = 0;
  size_t n = 0;
  for (int y = r.y0; y < r.y1; ++y)
    for (int x = r.x0 * 3; x < r.x1 * 3; ++x) {
      size_t i = size_t(y) * size_t(width) * 3 + size_t(x);
      double d = double(a[i]) - double(b[i]);
      se += d * d;
      ++n;
    }
  return se == 0 ? 99.0 : 10.0 * std::log10(255.0 * 255.0 * double(n) / se);
}

void InspectH264(const std::string& au, Result* r) {
  bool idr = false, sps = false, pps = false;
  for (std::string_view nal : SplitAnnexB(au)) {
    int t = NalUnitType(nal);
    idr |= t == 5;
    pps |= t == 8;
    if (t == 7) {
      sps = true;
      if (r->profile.empty() && nal.size() >= 4) {
        char buf[64];
        std::snprintf(buf, sizeof(buf), "%d set0=%d set1=%d", uint8_t(nal[1]),
                      (uint8_t(nal[2]) >> 7) & 1, (uint8_t(nal[2]) >> 6) & 1);
        r->profile = buf;
      }
    }
  }
  if (idr) {
    ++r->key_frames;
    if (!sps || !pps) r->headers_every_idr = false;
  }
}

bool Run(const std::string& name, BenchEncoder& enc, const std::vector<image::Image>& frames,
         const std::vector<Rect>& mouths, int fps, bool jpeg, bool quality, Result* r) {
  r->name = name;
  std::vector<double> ms, cpu;
  std::vector<size_t> offsets;  // per-frame JPEG boundaries
  std::string au;
  double key_sum = 0;
  for (size_t i = 0; i < frames.size(); ++i) {
    auto t0 = Clock::now();
    double c0 = ThreadCpuMs();
    if (!enc.Encode(frames[i], i == 0, &au)) return false;
    cpu.push_back(ThreadCpuMs() - c0);
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    if (i == 0) key_sum = double(au.size());
    if (!jpeg) InspectH264(au, r);
    r->max_frame_bytes = std::max(r->max_frame_bytes, au.size());
    offsets.push_back(r->stream.size());
    r->stream += au;
  }
  offsets.push_back(r->stream.size());
  for (size_t i = 0; i + size_t(fps) <= frames.size(); ++i)
    r->peak_kbps = std::max(r->peak_kbps, double(offsets[i + size_t(fps)] - offsets[i]) * 8 / 1000);
  r->ms_median = Percentile(ms, 0.5);
  r->ms_p95 = Percentile(ms, 0.95);
  double sum = 0;
  for (double m : ms) sum += m;
  r->ms_mean = sum / double(ms.size());
  r->cpu_median = Percentile(cpu, 0.5);
  sum = 0;
  for (double c : cpu) sum += c;
  r->cpu_mean = sum / double(cpu.size());
  r->bytes_per_frame = double(r->stream.size()) / double(frames.size());
  r->key_bytes = key_sum;
  if (!quality) return true;
  const size_t fb = frames[0].pixels.size();
  double psnr_sum = 0, psnr_min = 99, mouth_sum = 0;
  auto on_frame = [&](int i, const uint8_t* rgb) {
    if (size_t(i) >= frames.size()) return;
    double p = testing::Psnr(rgb, frames[size_t(i)].pixels.data(), fb);
    mouth_sum +=
        RegionPsnr(rgb, frames[size_t(i)].pixels.data(), frames[0].width, mouths[size_t(i)]);
    psnr_sum += p;
    psnr_min = std::min(psnr_min, p);
  };
  if (jpeg) {
    r->decoded = 0;
    for (size_t i = 0; i < frames.size(); ++i) {
      auto img = image::DecodeJpeg(
          std::string_view(r->stream).substr(offsets[i], offsets[i + 1] - offsets[i]));
      if (!img.ok()) return false;
      on_frame(r->decoded++, img->pixels.data());
    }
  } else {
    r->decoded =
        testing::DecodeWithFfmpegEach(r->stream, frames[0].width, frames[0].height, on_frame);
  }
  if (r->decoded <= 0) return false;
  r->psnr_mean = psnr_sum / double(std::min<size_t>(size_t(r->decoded), frames.size()));
  r->mouth_psnr_mean = mouth_sum / double(std::min<size_t>(size_t(r->decoded), frames.size()));
  r->psnr_min = psnr_min;
  return true;
}

void PinToOneCore() {
  cpu_set_t set;
  CPU_ZERO(&set);
  int cpu = sched_getcpu();
  CPU_SET(cpu < 0 ? 0 : cpu, &set);
  sched_setaffinity(0, sizeof(set), &set);
}

int Main(int argc, char** argv) {
  std::string dir;
  int n = 250, fps = 25, key_interval = 50, rounds = 3;
  std::vector<int> bitrates = {1500};
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--frames")
      dir = argv[i + 1];
    else if (a == "--n")
      n = std::atoi(argv[i + 1]);
    else if (a == "--bitrates") {
      bitrates.clear();
      for (const char* p = argv[i + 1]; *p != 0;) {
        bitrates.push_back(std::atoi(p));
        const char* comma = std::strchr(p, ',');
        p = comma != nullptr ? comma + 1 : p + std::strlen(p);
      }
    } else if (a == "--fps")
      fps = std::atoi(argv[i + 1]);
    else if (a == "--rounds")
      rounds = std::max(1, std::atoi(argv[i + 1]));
    else if (a == "--key-interval")
      key_interval = std::atoi(argv[i + 1]);
  }
  if (dir.empty() || n < 2 || bitrates.empty()) {
    std::fprintf(stderr,
                 "usage: encoder_bench --frames DIR (from `lipsync make-demo --out X`: "
                 "X/demo/frames) [--n 250] [--bitrates 1500,800] [--fps 25] [--key-interval 50] "
                 "[--rounds 3]\n");
    return 2;
  }
  PinToOneCore();
  // The avatar's frames and face boxes.
  std::vector<std::string> paths;
  for (auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().extension() == ".png") paths.push_back(e.path().string());
  std::sort(paths.begin(), paths.end());
  if (paths.empty()) {
    std::fprintf(stderr, "no PNG frames in %s\n", dir.c_str());
    return 1;
  }
  std::vector<image::Image> base;
  for (auto& p : paths) {
    auto img = image::ReadImageFile(p);
    if (!img.ok() || img->channels != 3) {
      std::fprintf(stderr, "cannot read %s\n", p.c_str());
      return 1;
    }
    base.push_back(std::move(img).value());
  }
  std::vector<Rect> faces(base.size(), Rect{545, 196, 789, 440});
  {
    auto json = image::ReadFileBytes(
        (std::filesystem::path(dir).parent_path() / "crop_rects.json").string());
    if (json.ok()) {
      size_t k = 0;
      const char* s = json->c_str();
      while (k < faces.size() && (s = std::strchr(s, '[')) != nullptr) {
        Rect r{};
        if (std::sscanf(s, "[%d,%d,%d,%d]", &r.x0, &r.y0, &r.x1, &r.y1) == 4) faces[k++] = r;
        ++s;
      }
    }
  }
  const int w = base[0].width, h = base[0].height;
  // Ping-pong order over the avatar's frames: 0..N-1..1 (the idle loop, no jump).
  std::vector<int> loop;
  for (int i = 0; i < int(base.size()); ++i) loop.push_back(i);
  for (int i = int(base.size()) - 2; i >= 1; --i) loop.push_back(i);
  auto mouth_of = [&](int k) {
    Rect f = faces[size_t(k)];
    return Rect{std::max(0, f.x0), std::max(0, (f.y0 + f.y1) / 2), std::min(w, f.x1),
                std::min(h, f.y1)};
  };
  std::vector<image::Image> speaking;
  std::vector<Rect> speaking_mouths;
  for (int i = 0; i < n; ++i) {
    int k = loop[size_t(i) % loop.size()];
    speaking.push_back(SpeakingFrame(base[size_t(k)], faces[size_t(k)], i));
    speaking_mouths.push_back(mouth_of(k));
  }

  EncoderOptions o;
  o.width = w;
  o.height = h;
  o.fps = fps;
  o.bitrate_kbps = bitrates[0];
  o.key_interval_frames = key_interval;
  std::vector<Result> results;
  auto run_product = [&](const std::string& name, EncoderOptions opt,
                         const std::vector<image::Image>& frames,
                         const std::vector<Rect>& mouths) -> bool {
    auto e = CreateVideoEncoder(opt);
    if (!e.ok()) {
      std::fprintf(stderr, "%s: %s\n", name.c_str(), e.status().ToString().c_str());
      return false;
    }
    ProductEncoder pe(std::move(e).value());
    Result r;
    if (!Run(name, pe, frames, mouths, fps, opt.codec == Codec::kMjpeg, true, &r)) return false;
    results.push_back(std::move(r));
    return true;
  };
  for (int kbps : bitrates) {
    o.bitrate_kbps = kbps;
    results.clear();
    std::printf(
        "\nencoder_bench: %d frames %dx%d at %d fps, %d kbps, key every %d, one core, best of %d "
        "rounds\n",
        n, w, h, fps, kbps, key_interval, rounds);
    // Every encoder once per round, rounds interleaved so a busy box slows all alike;
    // the table keeps each encoder's fastest round (quality from round 0: the output
    // is deterministic).
    struct Entry {
      std::string name;
      std::function<std::unique_ptr<BenchEncoder>()> make;
      bool jpeg;
    };
    std::vector<Entry> entries;
    auto product = [&](EncoderOptions opt) {
      return [opt]() -> std::unique_ptr<BenchEncoder> {
        auto e = CreateVideoEncoder(opt);
        if (!e.ok()) {
          std::fprintf(stderr, "%s\n", e.status().ToString().c_str());
          return nullptr;
        }
        return std::make_unique<ProductEncoder>(std::move(e).value());
      };
    };
    for (const char* preset : {"ultrafast", "superfast", "veryfast"}) {
      EncoderOptions x = o;
      x.preset = preset;
      entries.push_back({std::string("x264 ") + preset, product(x), false});
    }
    for (int vbv : {500, 1000}) {  // the default is 250 ms
      EncoderOptions x = o;
      x.vbv_buffer_ms = vbv;
      entries.push_back({"x264 ultrafast, VBV " + std::to_string(vbv) + " ms", product(x), false});
    }
    for (auto [cname, cx] :
         {std::make_pair("low", LOW_COMPLEXITY), std::make_pair("medium", MEDIUM_COMPLEXITY)}) {
      ECOMPLEXITY_MODE mode = cx;
      entries.push_back({std::string("openh264 rt ") + cname,
                         [=]() -> std::unique_ptr<BenchEncoder> {
                           auto oh = std::make_unique<OpenH264Encoder>();
                           if (!oh->Init(w, h, fps, kbps, key_interval, mode)) return nullptr;
                           return oh;
                         },
                         false});
    }
    for (int q : {75, 85}) {
      EncoderOptions m = o;
      m.codec = Codec::kMjpeg;
      m.jpeg_quality = q;
      entries.push_back({"MJPEG q" + std::to_string(q), product(m), true});
    }
    for (int round = 0; round < rounds; ++round) {
      for (size_t i = 0; i < entries.size(); ++i) {
        auto enc = entries[i].make();
        if (enc == nullptr) return 1;
        Result r;
        if (!Run(entries[i].name, *enc, speaking, speaking_mouths, fps, entries[i].jpeg, round == 0,
                 &r))
          return 1;
        if (round == 0) {
          results.push_back(std::move(r));
        } else {
          Result& best = results[i];
          best.cpu_mean = std::min(best.cpu_mean, r.cpu_mean);
          best.cpu_median = std::min(best.cpu_median, r.cpu_median);
          best.ms_median = std::min(best.ms_median, r.ms_median);
          best.ms_p95 = std::min(best.ms_p95, r.ms_p95);
        }
      }
    }
    const double base_cpu = results[0].cpu_mean;
    std::printf(
        "\n| encoder | CPU ms/frame mean | CPU p50 | vs x264 ultrafast | wall ms p50 | wall p95 | "
        "bytes/frame | kbps | peak kbps (1 s) | max frame bytes | first key frame bytes | PSNR "
        "mean dB | PSNR min dB | mouth PSNR dB | SPS profile | key frames (SPS+PPS each) | "
        "decoded |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (auto& r : results)
      std::printf(
          "| %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.0f | %.0f | %.0f | %zu | %.0f | %.2f | %.2f "
          "| "
          "%.2f | %s | %d (%s) | %d/%d |\n",
          r.name.c_str(), r.cpu_mean, r.cpu_median, r.cpu_mean / base_cpu, r.ms_median, r.ms_p95,
          r.bytes_per_frame, r.bytes_per_frame * 8 * fps / 1000, r.peak_kbps, r.max_frame_bytes,
          r.key_bytes, r.psnr_mean, r.psnr_min, r.mouth_psnr_mean,
          r.profile.empty() ? "-" : r.profile.c_str(), r.key_frames,
          r.headers_every_idr ? "yes" : "NO", r.decoded, n);
  }
  o.bitrate_kbps = bitrates[0];

  // Idle: the avatar's own frames in ping-pong order, no mouth change.
  std::vector<image::Image> idle;
  std::vector<Rect> idle_mouths;
  for (int k : loop) {
    idle.push_back(base[size_t(k)]);
    idle_mouths.push_back(mouth_of(k));
  }
  std::printf(
      "\nidle loop: %zu frames (ping-pong over %zu), x264 ultrafast VBV 250 ms / openh264 low, %d "
      "kbps\n",
      idle.size(), base.size(), o.bitrate_kbps);
  std::printf(
      "| idle strategy | encode CPU ms per idle frame (mean) | one-time CPU ms | bytes/frame | "
      "cache "
      "bytes | replay us/frame | PSNR mean dB |\n|---|---|---|---|---|---|---|\n");
  EncoderOptions idle_opt = o;
  idle_opt.preset = "ultrafast";
  {
    results.clear();
    if (!run_product("live", idle_opt, idle, idle_mouths)) return 1;
    const Result& r = results.back();
    std::printf("| x264: encode every idle frame | %.2f | - | %.0f | - | - | %.2f |\n", r.cpu_mean,
                r.bytes_per_frame, r.psnr_mean);
    OpenH264Encoder oh;
    Result ro;
    if (!oh.Init(w, h, fps, o.bitrate_kbps, key_interval, LOW_COMPLEXITY) ||
        !Run("openh264", oh, idle, idle_mouths, fps, false, true, &ro))
      return 1;
    std::printf("| openh264 low: encode every idle frame | %.2f | - | %.0f | - | - | %.2f |\n",
                ro.cpu_mean, ro.bytes_per_frame, ro.psnr_mean);
  }
  for (int ki : {key_interval, key_interval / 2}) {
    if (ki < 1) continue;
    EncoderOptions c = idle_opt;
    c.key_interval_frames = ki;
    std::vector<const uint8_t*> ptrs;
    for (auto& f : idle) ptrs.push_back(f.pixels.data());
    double c0 = ThreadCpuMs();
    auto cached = EncodeSequence(c, ptrs);
    double once_ms = ThreadCpuMs() - c0;
    if (!cached.ok()) {
      std::fprintf(stderr, "EncodeSequence: %s\n", cached.status().ToString().c_str());
      return 1;
    }
    size_t bytes = 0;
    for (auto& f : *cached) bytes += f.data.size();
    // Replay: what the session does per idle frame (copy the cached access unit out).
    const int reps = 20;
    std::string sink;
    size_t checksum = 0;
    auto t1 = Clock::now();
    for (int rep = 0; rep < reps; ++rep)
      for (auto& f : *cached) {
        sink = f.data;
        checksum += sink.size();
      }
    double replay_us = std::chrono::duration<double, std::micro>(Clock::now() - t1).count() /
                       double(reps * cached->size());
    std::string stream;
    for (auto& f : *cached) stream += f.data;
    double psnr_sum = 0;
    int decoded = testing::DecodeWithFfmpegEach(stream, w, h, [&](int i, const uint8_t* rgb) {
      if (size_t(i) < idle.size())
        psnr_sum += testing::Psnr(rgb, idle[size_t(i)].pixels.data(), idle[0].pixels.size());
    });
    std::printf(
        "| x264: cached closed GOP, key every %d (EncodeSequence once, replay) | 0 | %.0f | %.0f | "
        "%zu "
        "| %.2f | %.2f |\n",
        ki, once_ms, double(bytes) / double(cached->size()), bytes, replay_us,
        decoded > 0 ? psnr_sum / decoded : 0.0);
    if (checksum == 0) std::printf("(empty)\n");
  }
  return 0;
}

}  // namespace
}  // namespace lipsync::media

int main(int argc, char** argv) { return lipsync::media::Main(argc, argv); }
