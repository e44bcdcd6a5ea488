// Shared by the PNG and JPEG fuzz targets: checks on a decoded tenant frame and a
// differential check of the region-JPEG encoder (the compositor's path for tenant
// backgrounds) on it. Header-only, no state.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz/fuzz_util.h"
#include "image/image.h"
#include "image/region_jpeg.h"

namespace lipsync::fuzz {

// Frames up to this many pixels also go through the region encoder (keeps execs fast).
inline constexpr int64_t kMaxRegionCheckPixels = 96 * 96;

// The limits the harnesses decode under (a compositing server's limits section; smaller
// than the defaults so a header claiming a huge frame cannot slow the fuzzer down).
inline image::DecodeLimits FuzzDecodeLimits() {
  image::DecodeLimits limits;
  limits.max_width = 2048;
  limits.max_height = 2048;
  limits.max_file_bytes = 1 << 20;
  return limits;
}

// `decoded` = Decode<format>(bytes, FuzzDecodeLimits()).
inline void CheckDecoded(std::string_view bytes, image::ImageFormat format,
                         const Expected<image::Image>& decoded, const char* what) {
  const image::DecodeLimits limits = FuzzDecodeLimits();
  auto info = image::ReadImageInfo(bytes, limits);
  if (!info.ok()) {
    FUZZ_CHECK(info.status().code() == StatusCode::kInvalidArgument,
               "ReadImageInfo failed with " + info.status().ToString().substr(0, 200));
    FUZZ_CHECK_MESSAGE(info.status());
  }
  if (!decoded.ok()) {
    FUZZ_CHECK(decoded.status().code() == StatusCode::kInvalidArgument ||
                   decoded.status().code() == StatusCode::kResourceExhausted,
               std::string(what) + " failed with " + decoded.status().ToString().substr(0, 200));
    FUZZ_CHECK_MESSAGE(decoded.status());
    return;
  }
  const image::Image& img = *decoded;
  FUZZ_CHECK(img.width > 0 && img.height > 0 && img.channels == 3,
             std::string(what) + " returned a " + std::to_string(img.width) + "x" +
                 std::to_string(img.height) + "x" + std::to_string(img.channels) + " image");
  FUZZ_CHECK(img.pixels.size() == size_t(img.width) * size_t(img.height) * 3,
             std::string(what) + " returned a pixel buffer of the wrong size");
  FUZZ_CHECK(img.width <= limits.max_width && img.height <= limits.max_height,
             std::string(what) + " decoded a " + std::to_string(img.width) + "x" +
                 std::to_string(img.height) + " image over the limits");
  FUZZ_CHECK(
      info.ok() && info->format == format && info->width == img.width && info->height == img.height,
      std::string(what) + " decoded a " + std::to_string(img.width) + "x" +
          std::to_string(img.height) + " image whose header ReadImageInfo " +
          (info.ok() ? "read as " + std::to_string(info->width) + "x" + std::to_string(info->height)
                     : "refused: " + info.status().ToString().substr(0, 200)));

  if (int64_t(img.width) * img.height > kMaxRegionCheckPixels) return;
  // The frame as a background; a copy with a rectangle changed must encode to exactly
  // the bytes of a full encode (region_jpeg.h's contract).
  const uint8_t p0 = img.pixels[0];
  image::JpegSettings settings;
  settings.quality = 1 + p0 % 100;
  settings.restart_interval_mcus = 1 + img.pixels.back() % 8;
  auto background = image::RegionJpegBackground::Create(img.pixels.data(), img.width, img.height,
                                                        img.stride(), settings);
  FUZZ_CHECK(background.ok(), "RegionJpegBackground::Create failed: " +
                                  background.status().ToString().substr(0, 200));
  image::PixelRect rect;
  rect.x = (p0 * 7) % img.width;
  rect.y = (p0 * 13) % img.height;
  rect.width = std::max(1, img.width / 3);
  rect.height = std::max(1, img.height / 4);
  image::Image frame = img;
  for (int y = rect.y; y < std::min(img.height, rect.y + rect.height); ++y) {
    uint8_t* row = frame.row(y);
    for (int x = rect.x; x < std::min(img.width, rect.x + rect.width); ++x) {
      for (int c = 0; c < 3; ++c) row[x * 3 + c] = uint8_t(255 - row[x * 3 + c]);
    }
  }
  auto region = background->EncodeWithRegion(frame.pixels.data(), frame.stride(), rect);
  FUZZ_CHECK(region.ok(), "EncodeWithRegion failed: " + region.status().ToString().substr(0, 200));
  auto full = image::EncodeJpegWithRestarts(frame.pixels.data(), frame.width, frame.height,
                                            frame.stride(), settings);
  FUZZ_CHECK(full.ok(),
             "EncodeJpegWithRestarts failed: " + full.status().ToString().substr(0, 200));
  FUZZ_CHECK(*region == *full, "region encode differs from the full encode for a " +
                                   std::to_string(img.width) + "x" + std::to_string(img.height) +
                                   " frame");
  // Our own output decodes to the frame's size.
  auto again = image::DecodeJpeg(*full);
  FUZZ_CHECK(again.ok() && again->width == img.width && again->height == img.height,
             "re-decoding our JPEG failed");
}

}  // namespace lipsync::fuzz
