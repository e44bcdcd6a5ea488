#include "image/region_jpeg.h"

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <limits>
#include <new>
#include <string_view>

// jpeglib.h needs stdio.h's FILE first; jerror.h (ERREXIT) comes after jpeglib.h.
#include <jpeglib.h>

#include <jerror.h>

#include "image/jpeg_error.h"

namespace lipsync::image {
namespace {

constexpr int kMcuSize = 16;  // 4:2:0: one MCU covers 16x16 luma pixels
constexpr int kRowsPerWrite = kMcuSize;

using internal::JpegError;
using internal::OnJpegError;

// libjpeg destination writing straight into a std::string (no malloc'ed copy as with
// jpeg_mem_dest). `initial_size` is a guess; the buffer doubles when full.
struct StringDestination {
  jpeg_destination_mgr mgr;  // first member: libjpeg sees a jpeg_destination_mgr*
  std::string* out;
  size_t initial_size;

  static void Init(j_compress_ptr cinfo) {
    auto* self = reinterpret_cast<StringDestination*>(cinfo->dest);
    bool failed = false;
    try {
      self->out->resize(std::max<size_t>(self->initial_size, 4096));
    } catch (const std::bad_alloc&) {
      failed = true;
    }
    if (failed) ERREXIT(cinfo, JERR_OUT_OF_MEMORY);
    self->mgr.next_output_byte = reinterpret_cast<JOCTET*>(self->out->data());
    self->mgr.free_in_buffer = self->out->size();
  }
  // Called when the whole buffer is full (free_in_buffer is not meaningful here).
  static boolean Grow(j_compress_ptr cinfo) {
    auto* self = reinterpret_cast<StringDestination*>(cinfo->dest);
    const size_t used = self->out->size();
    bool failed = false;
    try {
      self->out->resize(used * 2);
    } catch (const std::bad_alloc&) {
      failed = true;
    }
    if (failed) ERREXIT(cinfo, JERR_OUT_OF_MEMORY);
    self->mgr.next_output_byte = reinterpret_cast<JOCTET*>(self->out->data() + used);
    self->mgr.free_in_buffer = self->out->size() - used;
    return TRUE;
  }
  static void Term(j_compress_ptr cinfo) {
    auto* self = reinterpret_cast<StringDestination*>(cinfo->dest);
    self->out->resize(self->out->size() - self->mgr.free_in_buffer);
  }
};

// Row `y` (0-based within the image being encoded) of packed RGB, or nullptr when the
// caller's source has no such row.
using RowFn = std::function<const uint8_t*(int y)>;

// The single encoder every path uses, so that the settings cannot drift apart between
// the background, the strips and the reference encode.
Status EncodeRows(const RowFn& row, int width, int height, int quality, int interval_mcus,
                  std::string* out) {
  jpeg_compress_struct cinfo;
  JpegError err;
  StringDestination dest;
  dest.out = out;
  // ~1.5 bits per pixel at q75 on textured frames; the buffer doubles if it is short.
  dest.initial_size = size_t(width) * size_t(height) / 4 + 1024;
  dest.mgr.init_destination = &StringDestination::Init;
  dest.mgr.empty_output_buffer = &StringDestination::Grow;
  dest.mgr.term_destination = &StringDestination::Term;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = OnJpegError;
  if (setjmp(err.jump)) {
    jpeg_destroy_compress(&cinfo);
    out->clear();
    return Status::Internal(std::string("JPEG encode failed: ") + err.message);
  }
  jpeg_create_compress(&cinfo);
  cinfo.dest = &dest.mgr;
  cinfo.image_width = static_cast<JDIMENSION>(width);
  cinfo.image_height = static_cast<JDIMENSION>(height);
  cinfo.input_components = 3;
  cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  cinfo.dct_method = JDCT_ISLOW;
  cinfo.optimize_coding = FALSE;  // standard tables: identical Huffman codes in every encode
  cinfo.smoothing_factor = 0;     // box downsampling: no chroma read across an MCU edge
  cinfo.comp_info[0].h_samp_factor = 2;
  cinfo.comp_info[0].v_samp_factor = 2;
  for (int c = 1; c < 3; ++c) {
    cinfo.comp_info[c].h_samp_factor = 1;
    cinfo.comp_info[c].v_samp_factor = 1;
  }
  cinfo.restart_interval = static_cast<unsigned int>(interval_mcus);
  jpeg_start_compress(&cinfo, TRUE);
  JSAMPROW rows[kRowsPerWrite];
  while (cinfo.next_scanline < cinfo.image_height) {
    const int first = static_cast<int>(cinfo.next_scanline);
    const int count = std::min(kRowsPerWrite, height - first);
    for (int i = 0; i < count; ++i) {
      const uint8_t* p = row(first + i);
      if (p == nullptr) {
        jpeg_destroy_compress(&cinfo);
        out->clear();
        return Status::InvalidArgument("row source returned no pixels for row " +
                                       std::to_string(first + i) + "; expected a row pointer");
      }
      rows[i] = const_cast<JSAMPROW>(p);
    }
    jpeg_write_scanlines(&cinfo, rows, static_cast<JDIMENSION>(count));
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  return Status::Ok();
}

Status ValidateSettings(int width, int height, const JpegSettings& settings) {
  if (width <= 0 || height <= 0 || width > JPEG_MAX_DIMENSION || height > JPEG_MAX_DIMENSION) {
    return Status::InvalidArgument("JPEG size " + std::to_string(width) + "x" +
                                   std::to_string(height) + " invalid; expected 1.." +
                                   std::to_string(JPEG_MAX_DIMENSION) + " per side");
  }
  if (settings.quality < 1 || settings.quality > 100) {
    return Status::InvalidArgument("JPEG quality " + std::to_string(settings.quality) +
                                   " invalid; expected 1..100");
  }
  if (settings.restart_interval_mcus < 1 || settings.restart_interval_mcus > 65535) {
    return Status::InvalidArgument("restart interval " +
                                   std::to_string(settings.restart_interval_mcus) +
                                   " MCUs invalid; expected 1..65535");
  }
  return Status::Ok();
}

Status ValidateStride(int width, size_t stride) {
  if (stride < size_t(width) * 3) {
    return Status::InvalidArgument(
        "stride " + std::to_string(stride) +
        " bytes too small; expected >= width*3 = " + std::to_string(size_t(width) * 3));
  }
  return Status::Ok();
}

int McusPerRow(int width) { return (width + kMcuSize - 1) / kMcuSize; }
int McuRows(int height) { return (height + kMcuSize - 1) / kMcuSize; }

// Splits a baseline JPEG produced by EncodeRows into its restart intervals: on return
// the entropy-coded bytes of interval i are jpeg[begin[i], end[i]), followed by RSTn
// (n = i mod 8) or, for the last one, EOI.
Status IndexIntervals(std::string_view jpeg, std::vector<uint32_t>* begin,
                      std::vector<uint32_t>* end) {
  const auto* bytes = reinterpret_cast<const uint8_t*>(jpeg.data());
  const size_t size = jpeg.size();
  if (size < 4 || size > std::numeric_limits<uint32_t>::max() || bytes[0] != 0xFF ||
      bytes[1] != 0xD8) {
    return Status::Internal("encoded JPEG does not start with SOI; expected a JPEG stream");
  }
  size_t pos = 2;
  size_t scan_start = 0;
  while (scan_start == 0) {
    if (pos + 4 > size || bytes[pos] != 0xFF) {
      return Status::Internal("malformed JPEG header at byte " + std::to_string(pos) +
                              "; expected a marker segment");
    }
    const uint8_t marker = bytes[pos + 1];
    const size_t length = (size_t(bytes[pos + 2]) << 8) | bytes[pos + 3];
    if (length < 2 || pos + 2 + length > size) {
      return Status::Internal("JPEG marker segment overruns the stream");
    }
    pos += 2 + length;
    if (marker == 0xDA) scan_start = pos;  // SOS: entropy-coded data follows
  }
  begin->clear();
  end->clear();
  size_t segment_start = scan_start;
  pos = scan_start;
  while (true) {
    const void* hit = std::memchr(bytes + pos, 0xFF, size - pos);
    if (hit == nullptr || static_cast<const uint8_t*>(hit) + 1 >= bytes + size) {
      return Status::Internal("JPEG entropy data has no EOI; expected a complete stream");
    }
    pos = size_t(static_cast<const uint8_t*>(hit) - bytes);
    const uint8_t next = bytes[pos + 1];
    if (next == 0x00) {  // stuffed 0xFF data byte
      pos += 2;
      continue;
    }
    const bool is_restart = next >= 0xD0 && next <= 0xD7;
    if (!is_restart && next != 0xD9) {
      return Status::Internal("unexpected JPEG marker in entropy data; expected RSTn or EOI");
    }
    if (is_restart && (next - 0xD0) != static_cast<int>(begin->size() % 8)) {
      return Status::Internal("RST markers out of sequence; expected RST(index mod 8)");
    }
    begin->push_back(static_cast<uint32_t>(segment_start));
    end->push_back(static_cast<uint32_t>(pos));
    if (!is_restart) return Status::Ok();
    pos += 2;
    segment_start = pos;
  }
}

}  // namespace

int EffectiveRestartInterval(int width, int requested_interval_mcus) {
  const int mcus_per_row = McusPerRow(std::max(width, 1));
  for (int interval = std::clamp(requested_interval_mcus, 1, mcus_per_row); interval > 1;
       --interval) {
    if (mcus_per_row % interval == 0) return interval;
  }
  return 1;
}

Expected<std::string> EncodeJpegWithRestarts(const uint8_t* rgb, int width, int height,
                                             size_t stride, const JpegSettings& settings) {
  LIPSYNC_RETURN_IF_ERROR(ValidateSettings(width, height, settings));
  LIPSYNC_RETURN_IF_ERROR(ValidateStride(width, stride));
  if (rgb == nullptr) return Status::InvalidArgument("no pixels; expected an RGB buffer");
  std::string out;
  LIPSYNC_RETURN_IF_ERROR(EncodeRows(
      [rgb, stride](int y) { return rgb + size_t(y) * stride; }, width, height, settings.quality,
      EffectiveRestartInterval(width, settings.restart_interval_mcus), &out));
  return out;
}

Expected<RegionJpegBackground> RegionJpegBackground::Create(const uint8_t* rgb, int width,
                                                            int height, size_t stride,
                                                            const JpegSettings& settings) {
  LIPSYNC_RETURN_IF_ERROR(ValidateSettings(width, height, settings));
  LIPSYNC_RETURN_IF_ERROR(ValidateStride(width, stride));
  if (rgb == nullptr) return Status::InvalidArgument("no pixels; expected an RGB buffer");
  RegionJpegBackground bg;
  bg.width_ = width;
  bg.height_ = height;
  bg.settings_ = settings;
  bg.interval_mcus_ = EffectiveRestartInterval(width, settings.restart_interval_mcus);
  bg.intervals_per_row_ = McusPerRow(width) / bg.interval_mcus_;
  bg.mcu_rows_ = McuRows(height);
  LIPSYNC_RETURN_IF_ERROR(EncodeRows([rgb, stride](int y) { return rgb + size_t(y) * stride; },
                                     width, height, settings.quality, bg.interval_mcus_,
                                     &bg.jpeg_));
  LIPSYNC_RETURN_IF_ERROR(IndexIntervals(bg.jpeg_, &bg.interval_begin_, &bg.interval_end_));
  const size_t expected = size_t(bg.mcu_rows_) * size_t(bg.intervals_per_row_);
  if (bg.interval_begin_.size() != expected) {
    return Status::Internal("background JPEG has " + std::to_string(bg.interval_begin_.size()) +
                            " restart intervals; expected " + std::to_string(expected));
  }
  bg.jpeg_.shrink_to_fit();
  return bg;
}

Expected<RegionJpegBackground> RegionJpegBackground::FromIndexed(
    std::string jpeg, int width, int height, const JpegSettings& settings,
    std::vector<uint32_t> interval_begin, std::vector<uint32_t> interval_end) {
  LIPSYNC_RETURN_IF_ERROR(ValidateSettings(width, height, settings));
  RegionJpegBackground bg;
  bg.width_ = width;
  bg.height_ = height;
  bg.settings_ = settings;
  bg.interval_mcus_ = EffectiveRestartInterval(width, settings.restart_interval_mcus);
  bg.intervals_per_row_ = McusPerRow(width) / bg.interval_mcus_;
  bg.mcu_rows_ = McuRows(height);
  const size_t expected = size_t(bg.mcu_rows_) * size_t(bg.intervals_per_row_);
  const size_t n = interval_begin.size();
  if (n != expected || interval_end.size() != n) {
    return Status::InvalidArgument("JPEG interval index has " + std::to_string(n) + "/" +
                                   std::to_string(interval_end.size()) + " entries; expected " +
                                   std::to_string(expected));
  }
  const auto* bytes = reinterpret_cast<const uint8_t*>(jpeg.data());
  const size_t size = jpeg.size();
  if (size < 4 || bytes[0] != 0xFF || bytes[1] != 0xD8 || interval_begin[0] < 4) {
    return Status::InvalidArgument("JPEG does not start with SOI and a header; expected one");
  }
  for (size_t i = 0; i < n; ++i) {
    const size_t b = interval_begin[i], e = interval_end[i];
    const uint8_t marker = i + 1 < n ? static_cast<uint8_t>(0xD0 + i % 8) : 0xD9;
    const size_t next = i + 1 < n ? size_t(interval_begin[i + 1]) : size;
    if (b > e || e + 2 != next || e + 2 > size || bytes[e] != 0xFF || bytes[e + 1] != marker) {
      return Status::InvalidArgument("JPEG interval " + std::to_string(i) +
                                     " does not match its bytes; expected data then RST" +
                                     std::to_string(i % 8) + " (or EOI last)");
    }
  }
  bg.jpeg_ = std::move(jpeg);
  bg.interval_begin_ = std::move(interval_begin);
  bg.interval_end_ = std::move(interval_end);
  return bg;
}

Expected<std::string> RegionJpegBackground::EncodeWithRegion(const uint8_t* frame_rgb,
                                                             size_t stride,
                                                             PixelRect changed) const {
  LIPSYNC_RETURN_IF_ERROR(ValidateStride(width_, stride));
  if (frame_rgb == nullptr) return Status::InvalidArgument("no pixels; expected an RGB frame");
  return EncodeWithRegion(
      [frame_rgb, stride](int x0, int y) {
        return frame_rgb + size_t(y) * stride + size_t(x0) * 3;
      },
      changed);
}

RegionJpegBackground::Grid RegionJpegBackground::Snap(PixelRect changed) const {
  Grid g;
  // 64-bit so that rects far outside the frame cannot overflow.
  const int64_t x0 = std::max<int64_t>(0, changed.x);
  const int64_t y0 = std::max<int64_t>(0, changed.y);
  const int64_t x1 = std::min<int64_t>(width_, int64_t(changed.x) + std::max(0, changed.width));
  const int64_t y1 = std::min<int64_t>(height_, int64_t(changed.y) + std::max(0, changed.height));
  if (x1 <= x0 || y1 <= y0) return g;  // nothing inside the frame changed
  g.empty = false;
  // Snap to the restart-interval grid: whole intervals horizontally, whole MCU rows
  // vertically.
  const int interval_px = interval_mcus_ * kMcuSize;
  g.first_col = static_cast<int>(x0 / interval_px);
  g.last_col = static_cast<int>((x1 - 1) / interval_px);
  g.first_row = static_cast<int>(y0 / kMcuSize);
  g.last_row = static_cast<int>((y1 - 1) / kMcuSize);
  const double touched = double(g.last_col - g.first_col + 1) * (g.last_row - g.first_row + 1);
  if (touched > kFullEncodeFraction * double(intervals_per_row_) * mcu_rows_) {
    // Whole MCU rows: when they are the whole frame this is a full encode whose output
    // needs no splicing; rows outside the touched band are still never read.
    g.first_col = 0;
    g.last_col = intervals_per_row_ - 1;
  }
  g.pixels.x = g.first_col * interval_px;
  g.pixels.y = g.first_row * kMcuSize;
  g.pixels.width = std::min(width_, (g.last_col + 1) * interval_px) - g.pixels.x;
  g.pixels.height = std::min(height_, (g.last_row + 1) * kMcuSize) - g.pixels.y;
  return g;
}

PixelRect RegionJpegBackground::ReadRect(PixelRect changed) const { return Snap(changed).pixels; }

Expected<std::string> RegionJpegBackground::EncodeWithRegion(const RowSource& rows,
                                                             PixelRect changed) const {
  if (changed.width < 0 || changed.height < 0) {
    return Status::InvalidArgument("changed rect " + std::to_string(changed.width) + "x" +
                                   std::to_string(changed.height) +
                                   " has a negative size; expected width, height >= 0");
  }
  if (!rows) return Status::InvalidArgument("no row source; expected a callable");
  const Grid g = Snap(changed);
  if (g.empty) return jpeg_;
  const int first_col = g.first_col, last_col = g.last_col;
  const int first_row = g.first_row, last_row = g.last_row;
  const int strip_rows = last_row - first_row + 1;
  const int strip_cols = last_col - first_col + 1;
  const bool whole_frame = strip_cols == intervals_per_row_ && strip_rows == mcu_rows_;
  const int strip_x = g.pixels.x;
  const int strip_y = g.pixels.y;
  const int strip_w = g.pixels.width;
  const int strip_h = g.pixels.height;
  std::string strip;
  LIPSYNC_RETURN_IF_ERROR(
      EncodeRows([&rows, strip_x, strip_y](int y) { return rows(strip_x, strip_y + y); }, strip_w,
                 strip_h, settings_.quality, interval_mcus_, &strip));
  if (whole_frame) return strip;  // same size and settings: already the full encode
  std::vector<uint32_t> strip_begin;
  std::vector<uint32_t> strip_end;
  LIPSYNC_RETURN_IF_ERROR(IndexIntervals(strip, &strip_begin, &strip_end));
  if (strip_begin.size() != size_t(strip_cols) * size_t(strip_rows)) {
    return Status::Internal("strip JPEG has " + std::to_string(strip_begin.size()) +
                            " restart intervals; expected " +
                            std::to_string(strip_cols * strip_rows));
  }

  // Cached bytes up to each new interval, the new interval, its RST renumbered to the
  // full frame's index; the tail after the last interval carries the EOI.
  std::string out;
  out.reserve(jpeg_.size() + strip.size());
  const size_t last_interval = interval_begin_.size() - 1;
  size_t cursor = 0;
  for (int r = 0; r < strip_rows; ++r) {
    for (int c = 0; c < strip_cols; ++c) {
      const size_t full = size_t(first_row + r) * intervals_per_row_ + size_t(first_col + c);
      const size_t part = size_t(r) * strip_cols + size_t(c);
      out.append(jpeg_, cursor, interval_begin_[full] - cursor);
      out.append(strip, strip_begin[part], strip_end[part] - strip_begin[part]);
      if (full < last_interval) {
        out.push_back(static_cast<char>(0xFF));
        out.push_back(static_cast<char>(0xD0 + full % 8));
        cursor = interval_begin_[full + 1];
      } else {
        cursor = interval_end_[full];
      }
    }
  }
  out.append(jpeg_, cursor, std::string::npos);
  return out;
}

int64_t RegionJpegBackground::memory_bytes() const {
  return int64_t(sizeof(*this)) + int64_t(jpeg_.capacity()) +
         int64_t((interval_begin_.capacity() + interval_end_.capacity()) * sizeof(uint32_t));
}

}  // namespace lipsync::image
