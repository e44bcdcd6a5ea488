// Face crop rectangles of an avatar (crop_rects.json): one [x1, y1, x2, y2] per
// background frame, in pixels, x2/y2 exclusive (numpy slicing img[y1:y2, x1:x2]).
// The file is a tenant's, so untrusted: its size is checked before it is read, it is
// parsed as a stream (nlohmann's SAX interface, no document tree) with a nesting-depth
// limit, every value is bounded, and messages quote at most a few dozen characters of
// it. Pure functions; returned vectors are owned by the caller.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace lipsync::avatar {

struct CropRect {
  int x1 = 0, y1 = 0, x2 = 0, y2 = 0;
  int width() const { return x2 - x1; }
  int height() const { return y2 - y1; }
  bool operator==(const CropRect&) const = default;
};

// Bounds on crop_rects.json (CompositingConfig::Limits; these are its defaults).
struct CropRectsLimits {
  int64_t max_file_bytes = int64_t(16) << 20;  // limits.max_crop_rects_file_mb
  int max_json_depth = 16;                     // limits.max_json_depth
  int max_rects = 100000;                      // limits.max_frames
};

// The largest coordinate accepted at parse time (the frame size is checked later, by
// ValidateCropRects).
inline constexpr int kMaxCropCoordinate = 1'000'000;

// Parses the JSON text. INVALID_ARGUMENT naming `name` (and the entry index where there
// is one) when it is not valid JSON, nests deeper than max_json_depth, is not an array
// of at most max_rects [x1, y1, x2, y2] entries of integers in 0..kMaxCropCoordinate
// (integral floats such as 10.0 are accepted; 10.5, strings, booleans, null are not)
// with x1 < x2 and y1 < y2, or is longer than max_file_bytes.
Expected<std::vector<CropRect>> ParseCropRects(std::string_view json, const std::string& name,
                                               const CropRectsLimits& limits = {});
// Reads and parses a file: NOT_FOUND if it is missing, INVALID_ARGUMENT if it is not a
// regular file or is larger than max_file_bytes (checked before reading).
Expected<std::vector<CropRect>> LoadCropRects(const std::string& path,
                                              const CropRectsLimits& limits = {});
// Checks that there is one rect per frame (at least `num_frames`; extra entries are
// an error too) and that each lies inside a width x height frame.
Status ValidateCropRects(const std::vector<CropRect>& rects, int num_frames, int width, int height,
                         const std::string& name);

}  // namespace lipsync::avatar
