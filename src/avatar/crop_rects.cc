#include "avatar/crop_rects.h"

#include <nlohmann/json.hpp>

#include "image/image.h"

namespace lipsync::avatar {

namespace {

std::string Entry(const std::string& name, size_t index) {
  return name + ": entry " + std::to_string(index) + ": ";
}

}  // namespace

Expected<std::vector<CropRect>> ParseCropRects(std::string_view json, const std::string& name) {
  nlohmann::json doc = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    return Status::InvalidArgument(name +
                                   ": not valid JSON; expected an array of [x1, y1, x2, y2]");
  }
  if (!doc.is_array()) {
    return Status::InvalidArgument(name + ": expected a JSON array of [x1, y1, x2, y2], got " +
                                   std::string(doc.type_name()));
  }
  std::vector<CropRect> rects;
  rects.reserve(doc.size());
  for (size_t i = 0; i < doc.size(); ++i) {
    const auto& item = doc[i];
    if (!item.is_array() || item.size() != 4) {
      return Status::InvalidArgument(Entry(name, i) + "expected [x1, y1, x2, y2], got " +
                                     item.dump());
    }
    int v[4];
    for (int k = 0; k < 4; ++k) {
      const auto& c = item[k];
      bool integral =
          c.is_number_integer() ||
          (c.is_number_float() && c.get<double>() == static_cast<int64_t>(c.get<double>()));
      if (!integral) {
        return Status::InvalidArgument(Entry(name, i) + "expected integer pixel coordinates, got " +
                                       item.dump());
      }
      double d = c.get<double>();
      if (d < 0 || d > 1e6) {
        return Status::InvalidArgument(Entry(name, i) + "coordinates must be in 0..1000000, got " +
                                       item.dump());
      }
      v[k] = static_cast<int>(d);
    }
    CropRect r{v[0], v[1], v[2], v[3]};
    if (r.x1 >= r.x2 || r.y1 >= r.y2) {
      return Status::InvalidArgument(Entry(name, i) + "expected x1 < x2 and y1 < y2, got " +
                                     item.dump());
    }
    rects.push_back(r);
  }
  return rects;
}

Expected<std::vector<CropRect>> LoadCropRects(const std::string& path) {
  LIPSYNC_ASSIGN_OR_RETURN(std::string text, image::ReadFileBytes(path));
  return ParseCropRects(text, path);
}

Status ValidateCropRects(const std::vector<CropRect>& rects, int num_frames, int width, int height,
                         const std::string& name) {
  if (static_cast<int64_t>(rects.size()) != num_frames) {
    return Status::InvalidArgument(name + ": has " + std::to_string(rects.size()) +
                                   " rects; expected one per frame (" + std::to_string(num_frames) +
                                   ")");
  }
  for (size_t i = 0; i < rects.size(); ++i) {
    const CropRect& r = rects[i];
    if (r.x1 < 0 || r.y1 < 0 || r.x2 > width || r.y2 > height) {
      return Status::InvalidArgument(
          Entry(name, i) + "[" + std::to_string(r.x1) + ", " + std::to_string(r.y1) + ", " +
          std::to_string(r.x2) + ", " + std::to_string(r.y2) + "] is outside the " +
          std::to_string(width) + "x" + std::to_string(height) + " frame");
    }
  }
  return Status::Ok();
}

}  // namespace lipsync::avatar
