// FindNonFinite / CheckFinite: NaN and +-Inf found at the right frame and value (any
// alignment, partial last frame), every finite value passes (denormals, -0, FLT_MAX),
// and a micro-measurement of the cost per 320x320 frame (printed, never asserted).
#include "inference/tensor_check.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <vector>

namespace lipsync::inference {
namespace {

std::string_view Bytes(const std::vector<float>& v, size_t offset_bytes = 0) {
  return {reinterpret_cast<const char*>(v.data()) + offset_bytes,
          v.size() * sizeof(float) - offset_bytes};
}

TEST(TensorCheckTest, FindsTheFirstNanOrInfWithItsFrame) {
  constexpr size_t kPerFrame = 1000;
  for (float bad :
       {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::signaling_NaN(),
        std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
        -std::nanf("")}) {
    std::vector<float> v(4 * kPerFrame, 0.25f);
    v[2 * kPerFrame + 17] = bad;
    v[3 * kPerFrame + 1] = bad;  // a later one is not reported
    auto found = FindNonFinite(Bytes(v), kPerFrame);
    ASSERT_TRUE(found.has_value()) << bad;
    EXPECT_EQ(found->frame, 2u);
    EXPECT_EQ(found->value, 17u);
    EXPECT_EQ(found->nan, std::isnan(bad));
  }
}

TEST(TensorCheckTest, EveryFiniteValuePasses) {
  std::vector<float> v = {0.f,
                          -0.f,
                          1.f,
                          -1.f,
                          std::numeric_limits<float>::max(),
                          std::numeric_limits<float>::lowest(),
                          std::numeric_limits<float>::min(),
                          std::numeric_limits<float>::denorm_min(),
                          -std::numeric_limits<float>::denorm_min()};
  EXPECT_FALSE(FindNonFinite(Bytes(v), 3).has_value());
  EXPECT_TRUE(CheckFinite(Bytes(v), 3, "visual_frames").ok());
  EXPECT_FALSE(FindNonFinite({}, 3).has_value());
}

TEST(TensorCheckTest, MisalignedBytesAndAPartialLastFrame) {
  std::vector<float> storage(11, 0.f);
  std::vector<char> bytes(sizeof(float) * 10 + 1);
  storage[9] = std::numeric_limits<float>::infinity();
  std::memcpy(bytes.data() + 1, storage.data(), sizeof(float) * 10);  // odd address
  auto found = FindNonFinite({bytes.data() + 1, sizeof(float) * 10}, 4);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->frame, 2u);  // frames of 4: [0,4) [4,8) [8,10)
  EXPECT_EQ(found->value, 1u);
  EXPECT_FALSE(found->nan);
}

TEST(TensorCheckTest, MessagesNameTheTensorAndFrame) {
  std::vector<float> v(8, 1.f);
  v[5] = std::numeric_limits<float>::quiet_NaN();
  Status st = CheckFinite(Bytes(v), 4, "audio_features");
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(),
            "audio_features frame 1 holds a NaN (value 1 of the frame); expected finite float32 "
            "values");
  Status shared = CheckFinite(Bytes(v), 8, "audio_features", /*shared_tensor=*/true);
  EXPECT_EQ(shared.message(),
            "audio_features (the one tensor used for every frame, frame 0) holds a NaN (value 5 "
            "of the frame); expected finite float32 values");
}

// The cost of the check on one unet_328 visual frame (6x320x320 float32, 2.4 MB) and
// one audio tensor (8192 floats): printed for PERFORMANCE notes, never asserted.
TEST(TensorCheckTest, MicroMeasurementPerFrame) {
  constexpr size_t kVisual = 6 * 320 * 320, kAudio = 8192, kFrames = 16;
  std::vector<float> visual(kVisual * kFrames, 0.5f), audio(kAudio * kFrames, 0.1f);
  const auto start = std::chrono::steady_clock::now();
  constexpr int kRounds = 20;
  size_t found = 0;
  for (int r = 0; r < kRounds; ++r) {
    found += FindNonFinite(Bytes(visual), kVisual).has_value();
    found += FindNonFinite(Bytes(audio), kAudio).has_value();
  }
  const double us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(found, 0u);
  std::printf(
      "NaN/Inf check: %.1f us per frame (6x320x320 visual + 8192 audio float32, %.2f "
      "GB/s)\n",
      us / (kRounds * kFrames), (kRounds * kFrames * (kVisual + kAudio) * 4.0) / (us * 1e3));
}

}  // namespace
}  // namespace lipsync::inference
