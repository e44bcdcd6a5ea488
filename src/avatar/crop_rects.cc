#include "avatar/crop_rects.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <new>
#include <nlohmann/json.hpp>

#include "image/image.h"

namespace lipsync::avatar {

namespace {

using Json = nlohmann::json;

std::string Entry(const std::string& name, size_t index) {
  return name + ": entry " + std::to_string(index) + ": ";
}

// At most `max` characters of untrusted text, for messages.
std::string Quote(std::string_view text, size_t max = 40) {
  std::string out;
  for (char c : text.substr(0, max)) out += (c >= 0x20 && c < 0x7F) ? c : '?';
  if (text.size() > max) out += "...";
  return "'" + out + "'";
}

std::string RectText(const int64_t v[4], int n) {
  std::string s = "[";
  for (int k = 0; k < n; ++k) s += (k ? ", " : "") + std::to_string(v[k]);
  return s + "]";
}

// Streams the document (no tree is built) into rects, enforcing the schema, the depth
// limit and the value bounds as it goes; the first violation stops the parser.
class CropRectsSax : public nlohmann::json_sax<Json> {
 public:
  CropRectsSax(const std::string& name, const CropRectsLimits& limits, std::vector<CropRect>* out)
      : name_(name), limits_(limits), out_(out) {}

  const Status& error() const { return error_; }

  bool null() override { return Scalar("null"); }
  bool boolean(bool) override { return Scalar("a boolean"); }
  bool number_integer(number_integer_t v) override {
    return depth_ == 2 ? Coordinate(v, std::to_string(v)) : Scalar("a number");
  }
  bool number_unsigned(number_unsigned_t v) override {
    return depth_ == 2
               ? Coordinate(v > uint64_t(INT64_MAX) ? INT64_MAX : int64_t(v), std::to_string(v))
               : Scalar("a number");
  }
  bool number_float(number_float_t v, const string_t& text) override {
    if (depth_ != 2) return Scalar("a number");
    if (!std::isfinite(v) || v != std::floor(v)) {
      return Fail(Entry(name_, out_->size()) + "expected integer pixel coordinates, got " +
                  Quote(text));
    }
    if (v < 0 || v > kMaxCropCoordinate) return OutOfRange(Quote(text));
    return Coordinate(int64_t(v), text);
  }
  bool string(string_t& s) override { return Scalar("a string " + Quote(s, 20)); }
  bool binary(binary_t&) override { return Scalar("binary data"); }
  bool key(string_t&) override { return true; }  // objects are rejected at start_object

  bool start_object(std::size_t) override {
    if (!Deeper()) return false;
    if (depth_ == 1) {
      return Fail(name_ + ": expected a JSON array of [x1, y1, x2, y2], got an object");
    }
    return Fail(Entry(name_, out_->size()) + "expected [x1, y1, x2, y2], got an object");
  }
  bool end_object() override { return Fail(name_ + ": unexpected end of object"); }

  bool start_array(std::size_t) override {
    if (!Deeper()) return false;
    if (depth_ == 2) {
      if (int64_t(out_->size()) >= limits_.max_rects) {
        return Fail(name_ + ": more than " + std::to_string(limits_.max_rects) +
                    " entries; expected at most one per frame (limits.max_frames)");
      }
      count_ = 0;
      return true;
    }
    if (depth_ > 2) {
      return Fail(Entry(name_, out_->size()) +
                  "expected [x1, y1, x2, y2] of integers, got a nested array");
    }
    return true;
  }
  bool end_array() override {
    if (depth_ == 2) {
      if (count_ != 4) {
        return Fail(Entry(name_, out_->size()) + "expected [x1, y1, x2, y2], got " +
                    std::to_string(count_) + " value(s) " + RectText(v_, std::min(count_, 4)));
      }
      if (v_[0] >= v_[2] || v_[1] >= v_[3]) {
        return Fail(Entry(name_, out_->size()) + "expected x1 < x2 and y1 < y2, got " +
                    RectText(v_, 4));
      }
      out_->push_back(CropRect{int(v_[0]), int(v_[1]), int(v_[2]), int(v_[3])});
    }
    --depth_;
    return true;
  }

  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception&) override {
    return Fail(name_ + ": not valid JSON (at byte " + std::to_string(position) +
                "); expected an array of [x1, y1, x2, y2]");
  }

 private:
  bool Fail(std::string message) {
    if (error_.ok()) error_ = Status::InvalidArgument(std::move(message));
    return false;
  }
  bool Deeper() {
    if (++depth_ > limits_.max_json_depth) {
      return Fail(name_ + ": JSON nested deeper than " + std::to_string(limits_.max_json_depth) +
                  " levels (limits.max_json_depth); expected an array of [x1, y1, x2, y2]");
    }
    return true;
  }
  // A value that is not a coordinate where one was expected, or anything at the wrong
  // level.
  bool Scalar(const std::string& what) {
    if (depth_ == 0) {
      return Fail(name_ + ": expected a JSON array of [x1, y1, x2, y2], got " + what);
    }
    if (depth_ == 1) {
      return Fail(Entry(name_, out_->size()) + "expected [x1, y1, x2, y2], got " + what);
    }
    return Fail(Entry(name_, out_->size()) + "expected integer pixel coordinates, got " + what);
  }
  bool OutOfRange(const std::string& text) {
    return Fail(Entry(name_, out_->size()) + "coordinates must be in 0.." +
                std::to_string(kMaxCropCoordinate) + ", got " + text);
  }
  bool Coordinate(int64_t v, const std::string& text) {
    if (v < 0 || v > kMaxCropCoordinate) return OutOfRange(Quote(text));
    if (count_ >= 4) {
      return Fail(Entry(name_, out_->size()) + "expected [x1, y1, x2, y2], got more than 4 values");
    }
    v_[count_++] = v;
    return true;
  }

  const std::string& name_;
  const CropRectsLimits& limits_;
  std::vector<CropRect>* out_;
  Status error_;
  int depth_ = 0;
  int count_ = 0;
  int64_t v_[4] = {0, 0, 0, 0};
};

}  // namespace

Expected<std::vector<CropRect>> ParseCropRects(std::string_view json, const std::string& name,
                                               const CropRectsLimits& limits) {
  if (limits.max_file_bytes > 0 && int64_t(json.size()) > limits.max_file_bytes) {
    return Status::InvalidArgument(
        name + ": " + std::to_string(json.size()) + " bytes; expected at most " +
        std::to_string(limits.max_file_bytes) + " (limits.max_crop_rects_file_mb)");
  }
  std::vector<CropRect> rects;
  try {
    CropRectsSax sax(name, limits, &rects);
    const bool ok = Json::sax_parse(json, &sax, Json::input_format_t::json, /*strict=*/true);
    if (!sax.error().ok()) return sax.error();
    if (!ok) return Status::InvalidArgument(name + ": not valid JSON");
    rects.shrink_to_fit();
  } catch (const std::bad_alloc&) {
    return Status::ResourceExhausted(name + ": out of memory parsing it");
  } catch (const std::exception& e) {
    return Status::InvalidArgument(name + ": not valid JSON: " + Quote(e.what(), 120));
  }
  return rects;
}

Expected<std::vector<CropRect>> LoadCropRects(const std::string& path,
                                              const CropRectsLimits& limits) {
  LIPSYNC_ASSIGN_OR_RETURN(
      std::string text,
      image::ReadFileBytes(path,
                           limits.max_file_bytes > 0 ? limits.max_file_bytes : int64_t(1) << 40,
                           "limits.max_crop_rects_file_mb"));
  return ParseCropRects(text, path, limits);
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
