// Test helpers: temporary directories and small generated avatars on disk
// (frames/frame_NNNN.png + crop_rects.json), shared by the avatar and compositing tests.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "avatar/crop_rects.h"
#include "image/image.h"

namespace lipsync::testing {

class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() /
            ("lipsync-avatar-" + std::to_string(rd()) + "-" + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

// A smooth, frame-dependent RGB test picture.
inline image::Image MakeFrame(int w, int h, int index) {
  image::Image img(w, h, 3);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      uint8_t* p = img.row(y) + x * 3;
      p[0] = static_cast<uint8_t>(128 + 100 * std::sin(x / 17.0 + index));
      p[1] = static_cast<uint8_t>(128 + 100 * std::cos(y / 13.0 + 0.5 * index));
      p[2] = static_cast<uint8_t>(255.0 * (x + y) / (w + h - 2));
    }
  }
  return img;
}

inline std::string RectsJson(const std::vector<avatar::CropRect>& rects) {
  std::string s = "[";
  for (size_t i = 0; i < rects.size(); ++i) {
    const auto& r = rects[i];
    s += (i ? "," : "") + std::string("[") + std::to_string(r.x1) + "," + std::to_string(r.y1) +
         "," + std::to_string(r.x2) + "," + std::to_string(r.y2) + "]";
  }
  return s + "]";
}

// Writes <root>/<id>/frames/frame_NNNN.png and <root>/<id>/crop_rects.json; returns
// the avatar directory. Rect i is `rect` shifted right by i % 3 pixels.
inline std::string WriteAvatar(const std::filesystem::path& root, const std::string& id, int frames,
                               int w, int h, avatar::CropRect rect) {
  auto dir = root / id;
  std::filesystem::create_directories(dir / "frames");
  std::vector<avatar::CropRect> rects;
  for (int i = 0; i < frames; ++i) {
    char name[32];
    std::snprintf(name, sizeof(name), "frame_%04d.png", i);
    EXPECT_TRUE(image::WritePng((dir / "frames" / name).string(), MakeFrame(w, h, i)).ok());
    avatar::CropRect r = rect;
    r.x1 += i % 3;
    r.x2 += i % 3;
    rects.push_back(r);
  }
  EXPECT_TRUE(image::WriteFileBytes((dir / "crop_rects.json").string(), RectsJson(rects)).ok());
  return dir.string();
}

// Hostile files (issue 9) --------------------------------------------------------

inline uint32_t Crc32(const std::string& data) {
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char c : data) {
    crc ^= c;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

inline std::string Be32(uint32_t v) {
  return {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
}

// A ~70-byte PNG whose valid, CRC-correct IHDR claims w x h RGB pixels, with almost no
// image data.
inline std::string PngClaiming(uint32_t w, uint32_t h) {
  auto chunk = [](const std::string& type, const std::string& data) {
    return Be32(uint32_t(data.size())) + type + data + Be32(Crc32(type + data));
  };
  const std::string ihdr = Be32(w) + Be32(h) + std::string("\x08\x02\x00\x00\x00", 5);
  const std::string idat("\x78\x9c\x63\x00\x00\x00\x01\x00\x01", 9);
  return std::string("\x89PNG\r\n\x1a\n", 8) + chunk("IHDR", ihdr) + chunk("IDAT", idat) +
         chunk("IEND", "");
}

// crop_rects.json text nested `depth` arrays deep: [[[[...]]]].
inline std::string DeeplyNestedJson(int depth) {
  return std::string(size_t(depth), '[') + std::string(size_t(depth), ']');
}

}  // namespace lipsync::testing
