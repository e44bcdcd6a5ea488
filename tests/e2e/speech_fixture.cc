#include "e2e/speech_fixture.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "audio/wav_reader.h"
#include "demo/make_demo.h"
#include "e2e/e2e_cluster.h"
#include "modelgen/model_builder.h"

namespace lipsync::e2e {

const std::string& TalkingTenant() {
  static const std::string name = [] {
    // MakeDemo writes <out>/demo; staged beside the tenants, then moved in as "talking"
    // so the e2e root's own "demo" tenant (no audio encoder) stays as it is.
    const fs::path staging = ModelRoot() / "speech_staging";
    demo::MakeDemoOptions options;
    options.out_dir = staging.string();
    options.avatar.width = kWidth;
    options.avatar.height = kHeight;
    options.avatar.frames = kFrames;
    options.avatar.seed = 7;
    options.tenants = {"demo"};
    options.threads = 1;
    const Status made = demo::MakeDemo(options);
    EXPECT_TRUE(made.ok()) << made.ToString();
    std::error_code ec;
    fs::rename(staging / "demo", ModelRoot() / "talking", ec);
    EXPECT_FALSE(ec) << ec.message();
    fs::remove_all(staging, ec);
    return std::string("talking");
  }();
  return name;
}

bool Speak(const std::string& text, const std::string& wav_path) {
  const fs::path script = fs::path(wav_path).replace_extension(".ssml");
  std::ofstream(script) << text;
  const std::string command =
      "espeak-ng -m -s 150 -w '" + wav_path + "' -f '" + script.string() + "' 2>&1";
  const int rc = std::system(command.c_str());
  if (rc != 0 || !fs::exists(wav_path)) {
    std::fprintf(stderr, "'%s' failed (status %d)\n", command.c_str(), rc);
    return false;
  }
  return true;
}

Speech LoadSpeech(const std::string& wav_path, double pad_seconds) {
  Speech speech;
  auto decoded = audio::ReadAudioFile(wav_path);
  EXPECT_TRUE(decoded.ok()) << decoded.status().ToString();
  if (!decoded.ok()) return speech;
  speech.sample_rate = decoded->sample_rate;
  const size_t pad = size_t(pad_seconds * decoded->sample_rate);
  std::vector<float> samples(pad, 0.f);
  samples.insert(samples.end(), decoded->samples.begin(), decoded->samples.end());
  samples.resize(samples.size() + pad, 0.f);
  speech.pcm_s16le = audio::FloatToS16le(samples);
  const size_t per_frame = size_t(decoded->sample_rate / 25);
  speech.frames = int((samples.size() + per_frame - 1) / per_frame);
  return speech;
}

std::vector<double> FrameRms(const Speech& speech) {
  const size_t per_frame = size_t(speech.sample_rate / 25);
  const size_t samples = speech.pcm_s16le.size() / 2;
  const auto* pcm = reinterpret_cast<const int16_t*>(speech.pcm_s16le.data());
  std::vector<double> rms(size_t(speech.frames), 0.0);
  for (size_t f = 0; f < rms.size(); ++f) {
    double sum = 0;
    for (size_t i = f * per_frame; i < std::min(samples, (f + 1) * per_frame); ++i) {
      const double x = pcm[i] / 32768.0;
      sum += x * x;
    }
    rms[f] = std::sqrt(sum / double(per_frame));
  }
  return rms;
}

namespace {
int Luma(const uint8_t* rgb) { return (299 * rgb[0] + 587 * rgb[1] + 114 * rgb[2]) / 1000; }
}  // namespace

int MouthOpening(const image::Image& frame, const image::Image& background,
                 const avatar::CropRect& rect) {
  // ROI pixel u (0..319) is pixel u + 4 of the 328-pixel resize of the crop.
  const double sx = rect.width() / 328.0, sy = rect.height() / 328.0;
  const int x0 =
      rect.x1 + int(std::floor((modelgen::kMouthCenterX - modelgen::kMouthHalfWidth + 4) * sx));
  const int x1 =
      rect.x1 + int(std::ceil((modelgen::kMouthCenterX + modelgen::kMouthHalfWidth + 4) * sx));
  const int y0 =
      rect.y1 + int(std::floor((modelgen::kMouthCenterY - modelgen::kMouthMaxHalfHeight + 4) * sy));
  const int y1 =
      rect.y1 + int(std::ceil((modelgen::kMouthCenterY + modelgen::kMouthMaxHalfHeight + 4) * sy));
  int dark = 0;
  for (int y = std::max(0, y0); y < std::min(frame.height, y1); ++y) {
    for (int x = std::max(0, x0); x < std::min(frame.width, x1); ++x) {
      dark += Luma(frame.row(y) + x * 3) + 40 <= Luma(background.row(y) + x * 3);
    }
  }
  return dark;
}

image::Image TenantBackground(const std::string& tenant, int index) {
  char name[32];
  std::snprintf(name, sizeof name, "frame_%04d.png", index);
  auto img = image::ReadImageFile((ModelRoot() / tenant / "frames" / name).string());
  EXPECT_TRUE(img.ok()) << img.status().ToString();
  return img.ok() ? *img : image::Image();
}

avatar::CropRect TenantRect(const std::string& tenant, int index) {
  auto rects = avatar::LoadCropRects((ModelRoot() / tenant / "crop_rects.json").string());
  EXPECT_TRUE(rects.ok()) << rects.status().ToString();
  return rects.ok() && index < int(rects->size()) ? (*rects)[size_t(index)] : avatar::CropRect{};
}

double Pearson(const std::vector<double>& a, const std::vector<double>& b) {
  const size_t n = std::min(a.size(), b.size());
  if (n < 2) return 0;
  double ma = 0, mb = 0;
  for (size_t i = 0; i < n; ++i) ma += a[i], mb += b[i];
  ma /= double(n);
  mb /= double(n);
  double sab = 0, saa = 0, sbb = 0;
  for (size_t i = 0; i < n; ++i) {
    sab += (a[i] - ma) * (b[i] - mb);
    saa += (a[i] - ma) * (a[i] - ma);
    sbb += (b[i] - mb) * (b[i] - mb);
  }
  return saa > 0 && sbb > 0 ? sab / std::sqrt(saa * sbb) : 0;
}

}  // namespace lipsync::e2e
