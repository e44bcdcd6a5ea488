// Region-only JPEG encoding: a background frame is encoded once with restart markers
// and its restart-interval byte ranges are kept; a frame that differs from it only
// inside a rectangle is encoded by re-encoding just the restart intervals the rectangle
// touches and splicing them between the cached ones. The output is byte-identical to
// EncodeJpegWithRestarts() of the whole frame.
//
// Why this works: every encode here uses the same quantisation tables, the standard
// (not optimised) Huffman tables, 4:2:0 box-filter subsampling (smoothing off, so no
// chroma sample reads across an MCU edge) and the ISLOW DCT; entropy coding restarts at
// every RST marker with the DC predictions reset, so an interval's bytes depend only on
// its own 16x16 MCUs. Intervals never cross an MCU row because the restart interval
// always divides the MCUs per row (see EffectiveRestartInterval). Only the RST numbers
// (interval index mod 8) differ between a strip encode and the full encode; they are
// rewritten while splicing.
//
// Thread-safety: RegionJpegBackground is immutable after Create(); any number of
// threads may call its const methods concurrently. Returned strings are owned by the
// caller.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/status.h"

namespace lipsync::image {

// Encoder settings shared by the background encode and every region encode. Always
// baseline, 4:2:0, ISLOW DCT, standard Huffman tables, JFIF header.
struct JpegSettings {
  int quality = 75;               // 1..100, libjpeg's jpeg_set_quality scale
  int restart_interval_mcus = 4;  // requested; see EffectiveRestartInterval
};

// Pixel rectangle in frame coordinates: [x, x+width) x [y, y+height).
struct PixelRect {
  int x = 0;
  int y = 0;
  int width = 0;
  int height = 0;
};

// The restart interval actually used for a frame `width` pixels wide: the largest
// divisor of the MCUs per row (ceil(width/16)) that is <= the requested interval (and
// >= 1), so that no interval spans two MCU rows. 1280 px (80 MCUs) with 4 -> 4;
// 1000 px (63 MCUs) with 4 -> 3; a prime MCU count falls back to 1.
int EffectiveRestartInterval(int width, int requested_interval_mcus);

// Full baseline encode of packed RGB rows with restart markers every
// EffectiveRestartInterval(width, settings.restart_interval_mcus) MCUs. This is the
// reference the region path reproduces byte for byte. INVALID_ARGUMENT on bad sizes,
// stride < width*3 or quality outside 1..100.
Expected<std::string> EncodeJpegWithRestarts(const uint8_t* rgb, int width, int height,
                                             size_t stride, const JpegSettings& settings);

class RegionJpegBackground {
 public:
  // Supplies pixel (x0, y) of the frame being encoded: a pointer to at least
  // (ReadRect(changed).x + ReadRect(changed).width - x0) * 3 bytes of RGB, i.e. up to
  // the right edge of the pixels the encode reads. x0 is ReadRect(changed).x in every
  // call of one encode. Called only for rows the encode needs, in increasing order; the
  // pointer must stay valid until the next call; nullptr if the source lacks the row.
  // A source may therefore hold just ReadRect(changed) (compact backgrounds).
  using RowSource = std::function<const uint8_t*(int x0, int y)>;

  // Encodes the background once and indexes its restart intervals.
  static Expected<RegionJpegBackground> Create(const uint8_t* rgb, int width, int height,
                                               size_t stride, const JpegSettings& settings);

  // Rebuilds a background from what Create() made and interval_begin()/interval_end()
  // gave (an avatar's prepared file): the index is checked against the bytes (one
  // entry per interval of this size and interval, in order, each followed by its RSTn or
  // the final EOI) so that EncodeWithRegion never reads outside them. O(intervals), no
  // decode. INVALID_ARGUMENT when they do not fit together.
  static Expected<RegionJpegBackground> FromIndexed(std::string jpeg, int width, int height,
                                                    const JpegSettings& settings,
                                                    std::vector<uint32_t> interval_begin,
                                                    std::vector<uint32_t> interval_end);

  // Encodes `frame_rgb` (same size as the background, identical to it outside
  // `changed`) by re-encoding only the restart intervals `changed` touches. `changed` is
  // clipped to the frame; an empty rect returns the background's bytes. Only the MCU
  // rows (16-px bands) that `changed` touches are read. When the touched intervals are
  // more than kFullEncodeFraction of the frame, whole MCU rows are re-encoded instead,
  // which for a rect spanning every MCU row is a plain full encode (same bytes either
  // way). INVALID_ARGUMENT on negative rect sizes, stride < width*3 or a missing row.
  Expected<std::string> EncodeWithRegion(const uint8_t* frame_rgb, size_t stride,
                                         PixelRect changed) const;
  // Same, reading rows on demand (e.g. a compositor that keeps only ReadRect).
  Expected<std::string> EncodeWithRegion(const RowSource& rows, PixelRect changed) const;

  // The pixels EncodeWithRegion(rows, changed) reads: `changed` clipped to the frame,
  // snapped out to whole restart intervals horizontally and whole MCU rows vertically
  // (whole MCU rows when beyond kFullEncodeFraction), clipped again. Width/height 0
  // when nothing inside the frame changed (nothing is read then).
  PixelRect ReadRect(PixelRect changed) const;

  const std::string& background_jpeg() const { return jpeg_; }
  int width() const { return width_; }
  int height() const { return height_; }
  const JpegSettings& settings() const { return settings_; }
  int restart_interval_mcus() const { return interval_mcus_; }
  int interval_count() const { return static_cast<int>(interval_begin_.size()); }
  // Entropy-coded bytes of interval i: background_jpeg()[begin[i], end[i]).
  const std::vector<uint32_t>& interval_begin() const { return interval_begin_; }
  const std::vector<uint32_t>& interval_end() const { return interval_end_; }
  // Heap bytes held (encoded background + interval index).
  int64_t memory_bytes() const;

  // Fraction of the frame's restart intervals above which EncodeWithRegion re-encodes
  // whole MCU rows: a narrower strip saves little there and splicing adds copies.
  static constexpr double kFullEncodeFraction = 0.6;

 private:
  RegionJpegBackground() = default;

  // `changed` on the restart-interval grid: intervals [first_col, last_col] of MCU rows
  // [first_row, last_row], covering `pixels`.
  struct Grid {
    bool empty = true;
    int first_col = 0, last_col = -1, first_row = 0, last_row = -1;
    PixelRect pixels;
  };
  Grid Snap(PixelRect changed) const;

  int width_ = 0;
  int height_ = 0;
  JpegSettings settings_;
  int interval_mcus_ = 1;
  int intervals_per_row_ = 1;
  int mcu_rows_ = 1;
  std::string jpeg_;
  // Entropy-coded bytes of interval i are jpeg_[interval_begin_[i], interval_end_[i]);
  // the RST marker (or, for the last interval, EOI) follows at interval_end_[i].
  std::vector<uint32_t> interval_begin_;
  std::vector<uint32_t> interval_end_;
};

}  // namespace lipsync::image
