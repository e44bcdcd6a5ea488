// Pixel buffers and file/JPEG codecs (libpng, libjpeg-turbo).
// Images are 8-bit interleaved, row-major, tightly packed (stride = width*channels).
// Decoding treats its input as untrusted: bounded by DecodeLimits, errors as values,
// no exception escapes (allocation failures included). Pure functions, thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace lipsync::image {

struct Image {
  int width = 0;
  int height = 0;
  int channels = 3;  // 3 = RGB, 1 = gray, 4 = RGBA
  std::vector<uint8_t> pixels;

  Image() = default;
  Image(int w, int h, int c) : width(w), height(h), channels(c), pixels(size_t(w) * h * c) {}
  size_t stride() const { return size_t(width) * channels; }
  uint8_t* row(int y) { return pixels.data() + size_t(y) * stride(); }
  const uint8_t* row(int y) const { return pixels.data() + size_t(y) * stride(); }
  bool empty() const { return pixels.empty(); }
};

// Bounds on an untrusted image, checked before anything is allocated for it: the file
// size before it is read, the width/height from the PNG/JPEG header before any pixel
// buffer exists (and libpng's own limits: png_set_user_limits, png_set_chunk_malloc_max;
// libjpeg's max_memory_to_use and a cap on progressive scans). The defaults are
// CompositingConfig::Limits' defaults.
struct DecodeLimits {
  int max_width = 7680;
  int max_height = 4320;
  int64_t max_file_bytes = int64_t(64) << 20;  // <= 0: no limit
};

enum class ImageFormat { kPng, kJpeg };

// What a PNG/JPEG header says, before any pixel is decoded.
struct ImageInfo {
  ImageFormat format = ImageFormat::kPng;
  int width = 0;
  int height = 0;
};

// Reads a PNG or JPEG file (by content, not extension) as RGB, within `limits`.
// NOT_FOUND if missing; INVALID_ARGUMENT naming the file if it is not a regular file,
// too large, claims dimensions over the limits, or is corrupt or truncated (libjpeg's
// "premature end of data" and other corrupt-data warnings included).
Expected<Image> ReadImageFile(const std::string& path, const DecodeLimits& limits = {});
// Reads only as much of the file as its header needs (a few KB at most) and checks the
// file size and dimensions against `limits`. Same errors as ReadImageFile, except that
// a corrupt body is not noticed.
Expected<ImageInfo> ReadImageFileInfo(const std::string& path, const DecodeLimits& limits = {});
// The header of PNG/JPEG bytes, checked against `limits` (max_file_bytes against
// bytes.size()). INVALID_ARGUMENT if it is neither or the header is malformed.
Expected<ImageInfo> ReadImageInfo(std::string_view bytes, const DecodeLimits& limits = {});
// Writes RGB (3 channels) or gray (1) PNG.
Status WritePng(const std::string& path, const Image& image);
// Decodes PNG bytes / JPEG bytes to RGB within `limits` (errors as ReadImageFile, not
// naming a file). PNG alpha is composited onto black; 16-bit samples are scaled to 8.
Expected<Image> DecodePng(std::string_view bytes, const DecodeLimits& limits = {});
Expected<Image> DecodeJpeg(std::string_view bytes, const DecodeLimits& limits = {});
// Baseline JPEG, 4:2:0, standard Huffman tables, quality 1..100, from packed RGB.
Expected<std::string> EncodeJpeg(const uint8_t* rgb, int width, int height, size_t stride,
                                 int quality);
inline Expected<std::string> EncodeJpeg(const Image& img, int quality) {
  return EncodeJpeg(img.pixels.data(), img.width, img.height, img.stride(), quality);
}
// Reads a whole file. NOT_FOUND if missing. With max_bytes > 0: INVALID_ARGUMENT naming
// the file (before reading it) when it is not a regular file or is larger than
// max_bytes (it never reads more than max_bytes + 1 bytes, even if it grows), naming
// `limit_name` (the config key) if given.
Expected<std::string> ReadFileBytes(const std::string& path, int64_t max_bytes = 0,
                                    const char* limit_name = nullptr);
Status WriteFileBytes(const std::string& path, std::string_view bytes);

// Peak signal-to-noise ratio in dB of two same-sized images (inf when identical).
double Psnr(const Image& a, const Image& b);

}  // namespace lipsync::image
