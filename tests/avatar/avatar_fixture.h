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

}  // namespace lipsync::testing
