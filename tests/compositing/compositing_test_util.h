// Helpers for the compositing tests: running the cv2 reference script and comparing
// images.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "image/image.h"

namespace lipsync::testing {

// Runs tests/compositing/cv2_reference.py with Debian's python3 + OpenCV.
inline ::testing::AssertionResult RunCv2Reference(const std::string& args) {
  std::string cmd = std::string("/usr/bin/python3 ") + LIPSYNC_SOURCE_DIR +
                    "/tests/compositing/cv2_reference.py " + args;
  int rc = std::system(cmd.c_str());
  if (rc != 0) return ::testing::AssertionFailure() << cmd << " exited with " << rc;
  return ::testing::AssertionSuccess();
}

struct Diff {
  int max = 0;           // largest absolute difference in levels
  double over_zero = 0;  // fraction of samples that differ at all
  double over_one = 0;   // fraction that differ by more than one level
};

inline Diff Compare(const uint8_t* a, const uint8_t* b, size_t n) {
  Diff d;
  size_t nz = 0, n1 = 0;
  for (size_t i = 0; i < n; ++i) {
    int v = std::abs(int(a[i]) - int(b[i]));
    d.max = std::max(d.max, v);
    nz += v > 0;
    n1 += v > 1;
  }
  d.over_zero = double(nz) / n;
  d.over_one = double(n1) / n;
  return d;
}

inline Diff Compare(const image::Image& a, const image::Image& b) {
  EXPECT_EQ(a.width, b.width);
  EXPECT_EQ(a.height, b.height);
  EXPECT_EQ(a.pixels.size(), b.pixels.size());
  return Compare(a.pixels.data(), b.pixels.data(), std::min(a.pixels.size(), b.pixels.size()));
}

// A smooth BGR planar 3x320x320 "prediction" in [0, 1] (plus out-of-range samples
// at the corners to exercise clamping).
inline std::vector<float> MakePrediction(int seed) {
  std::vector<float> p(3 * 320 * 320);
  for (int c = 0; c < 3; ++c) {
    for (int y = 0; y < 320; ++y) {
      for (int x = 0; x < 320; ++x) {
        p[(c * 320 + y) * 320 + x] = static_cast<float>(
            0.5 + 0.45 * std::sin(x / (9.0 + c) + seed) * std::cos(y / (11.0 + seed)));
      }
    }
    p[c * 320 * 320] = -0.2f;
    p[c * 320 * 320 + 1] = 1.3f;
  }
  return p;
}

}  // namespace lipsync::testing
