// Test/bench helpers for H.264 streams: decode with Debian's ffmpeg CLI (a reference
// decoder independent of x264), PSNR, and a minimal slice-header reader.
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "image/image.h"

namespace lipsync::media::testing {

// Decodes an Annex B stream (or, with format "mjpeg", concatenated JPEGs) to packed
// RGB24 frames of w x h, concatenated. Returns false (with *error) if ffmpeg fails.
inline bool DecodeWithFfmpeg(const std::string& stream, int w, int h, std::vector<uint8_t>* rgb,
                             std::string* error, const char* format = "h264") {
  char dir_template[] = "/tmp/lipsync_media_XXXXXX";
  const char* dir = mkdtemp(dir_template);
  if (dir == nullptr) {
    *error = "mkdtemp failed";
    return false;
  }
  const std::string in = std::string(dir) + "/in.bin", out = std::string(dir) + "/out.rgb",
                    log = std::string(dir) + "/ffmpeg.log";
  bool ok = image::WriteFileBytes(in, stream).ok();
  if (ok) {
    std::string cmd = std::string("ffmpeg -nostdin -hide_banner -loglevel error -y -f ") + format +
                      " -i '" + in + "' -fps_mode passthrough -f rawvideo -pix_fmt rgb24 '" + out +
                      "' 2>'" + log + "'";
    ok = std::system(cmd.c_str()) == 0;
    if (!ok) {
      auto text = image::ReadFileBytes(log);
      *error = "ffmpeg failed: " + (text.ok() ? text->substr(0, 2000) : std::string("?"));
    }
  } else {
    *error = "cannot write " + in;
  }
  if (ok) {
    auto bytes = image::ReadFileBytes(out);
    ok = bytes.ok();
    if (ok) rgb->assign(bytes->begin(), bytes->end());
    if (ok && rgb->size() % (size_t(w) * h * 3) != 0) {
      *error = "decoded size " + std::to_string(rgb->size()) + " is not a multiple of a frame";
      ok = false;
    }
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return ok;
}

// Like DecodeWithFfmpeg, but hands each decoded RGB24 frame to `on_frame(index, rgb)`
// as ffmpeg produces it (no whole-stream buffer). Returns the number of frames, or -1.
template <typename OnFrame>
int DecodeWithFfmpegEach(const std::string& stream, int w, int h, OnFrame on_frame,
                         const char* format = "h264") {
  char path_template[] = "/tmp/lipsync_media_XXXXXX";
  int fd = mkstemp(path_template);
  if (fd < 0) return -1;
  close(fd);
  const std::string in(path_template);
  int frames = -1;
  if (image::WriteFileBytes(in, stream).ok()) {
    std::string cmd = std::string("ffmpeg -nostdin -hide_banner -loglevel error -f ") + format +
                      " -i '" + in + "' -fps_mode passthrough -f rawvideo -pix_fmt rgb24 -";
    if (FILE* pipe = popen(cmd.c_str(), "r")) {
      std::vector<uint8_t> frame(size_t(w) * h * 3);
      frames = 0;
      while (fread(frame.data(), 1, frame.size(), pipe) == frame.size())
        on_frame(frames++, frame.data());
      if (pclose(pipe) != 0) frames = -1;
    }
  }
  std::remove(in.c_str());
  return frames;
}

// PSNR over all bytes of two equally sized buffers (99 dB when identical).
inline double Psnr(const uint8_t* a, const uint8_t* b, size_t n) {
  double se = 0;
  for (size_t i = 0; i < n; ++i) {
    double d = double(a[i]) - double(b[i]);
    se += d * d;
  }
  if (se == 0) return 99.0;
  return 10.0 * std::log10(255.0 * 255.0 * double(n) / se);
}

// Exp-Golomb reader over a NAL payload (emulation prevention bytes removed).
class BitReader {
 public:
  explicit BitReader(std::string_view nal) {
    int zeros = 0;
    for (size_t i = 1; i < nal.size(); ++i) {  // skip the NAL header byte
      uint8_t b = uint8_t(nal[i]);
      if (zeros >= 2 && b == 3) {
        zeros = 0;
        continue;
      }
      zeros = b == 0 ? zeros + 1 : 0;
      rbsp_.push_back(b);
    }
  }
  int Bit() {
    if (pos_ >= rbsp_.size() * 8) return 0;
    int bit = (rbsp_[pos_ / 8] >> (7 - pos_ % 8)) & 1;
    ++pos_;
    return bit;
  }
  uint32_t Ue() {
    int zeros = 0;
    while (Bit() == 0 && zeros < 32) ++zeros;
    uint32_t v = 0;
    for (int i = 0; i < zeros; ++i) v = (v << 1) | uint32_t(Bit());
    return (1u << zeros) - 1 + v;
  }

 private:
  std::vector<uint8_t> rbsp_;
  size_t pos_ = 0;
};

// slice_type % 5 of a slice NAL (0 P, 1 B, 2 I).
inline int SliceType(std::string_view nal) {
  BitReader r(nal);
  r.Ue();  // first_mb_in_slice
  return int(r.Ue() % 5);
}

}  // namespace lipsync::media::testing
