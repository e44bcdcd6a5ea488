// Face crop rectangles of an avatar (crop_rects.json): one [x1, y1, x2, y2] per
// background frame, in pixels, x2/y2 exclusive (numpy slicing img[y1:y2, x1:x2]).
// Pure functions; returned vectors are owned by the caller.
#pragma once

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

// Parses the JSON text. INVALID_ARGUMENT naming `name` and the entry index when the
// text is not an array of [int, int, int, int] with x1 < x2 and y1 < y2, x1, y1 >= 0.
Expected<std::vector<CropRect>> ParseCropRects(std::string_view json, const std::string& name);
// Reads and parses a file. NOT_FOUND if it is missing.
Expected<std::vector<CropRect>> LoadCropRects(const std::string& path);
// Checks that there is one rect per frame (at least `num_frames`; extra entries are
// an error too) and that each lies inside a width x height frame.
Status ValidateCropRects(const std::vector<CropRect>& rects, int num_frames, int width, int height,
                         const std::string& name);

}  // namespace lipsync::avatar
