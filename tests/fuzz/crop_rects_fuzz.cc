// Fuzz target: an avatar's crop_rects.json (tenant file) through ParseCropRects and
// ValidateCropRects. Every input must end as rects or an INVALID_ARGUMENT with a bounded
// message; accepted rects must satisfy the documented invariants.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "avatar/crop_rects.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The parser has no size limit of its own (the avatar loader caps the file size);
  // larger inputs only slow the fuzzer down.
  if (size > 64 * 1024) return -1;
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  auto rects = lipsync::avatar::ParseCropRects(json, "crop_rects.json");
  if (!rects.ok()) {
    FUZZ_CHECK(rects.status().code() == lipsync::StatusCode::kInvalidArgument,
               "ParseCropRects failed with " + rects.status().ToString().substr(0, 200));
    FUZZ_CHECK_MESSAGE(rects.status());
    return 0;
  }
  for (const auto& r : *rects) {
    FUZZ_CHECK(r.x1 >= 0 && r.y1 >= 0 && r.x1 < r.x2 && r.y1 < r.y2,
               "accepted rect [" + std::to_string(r.x1) + ", " + std::to_string(r.y1) + ", " +
                   std::to_string(r.x2) + ", " + std::to_string(r.y2) + "]");
  }
  // A 1280x720 avatar with as many frames as rects, and one frame fewer.
  const int n = static_cast<int>(rects->size());
  const lipsync::Status fits =
      lipsync::avatar::ValidateCropRects(*rects, n, 1280, 720, "crop_rects.json");
  FUZZ_CHECK_MESSAGE(fits);
  if (fits.ok()) {
    for (const auto& r : *rects) {
      FUZZ_CHECK(r.x2 <= 1280 && r.y2 <= 720, "rect outside the frame accepted");
    }
  }
  const lipsync::Status short_by_one =
      lipsync::avatar::ValidateCropRects(*rects, n + 1, 1280, 720, "crop_rects.json");
  FUZZ_CHECK(!short_by_one.ok(), "rect count != frame count accepted");
  FUZZ_CHECK_MESSAGE(short_by_one);
  return 0;
}
