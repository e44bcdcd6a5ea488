// Pixel buffers and file/JPEG codecs (libpng, libjpeg-turbo).
// Images are 8-bit interleaved, row-major, tightly packed (stride = width*channels).
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

// Reads a PNG or JPEG file (by content, not extension) as RGB.
// NOT_FOUND if missing; INVALID_ARGUMENT naming the file if it cannot be decoded.
Expected<Image> ReadImageFile(const std::string& path);
// Writes RGB (3 channels) or gray (1) PNG.
Status WritePng(const std::string& path, const Image& image);
// Decodes PNG bytes / JPEG bytes to RGB.
Expected<Image> DecodePng(std::string_view bytes);
Expected<Image> DecodeJpeg(std::string_view bytes);
// Baseline JPEG, 4:2:0, standard Huffman tables, quality 1..100, from packed RGB.
Expected<std::string> EncodeJpeg(const uint8_t* rgb, int width, int height, size_t stride,
                                 int quality);
inline Expected<std::string> EncodeJpeg(const Image& img, int quality) {
  return EncodeJpeg(img.pixels.data(), img.width, img.height, img.stride(), quality);
}
// Reads a whole file. NOT_FOUND if missing.
Expected<std::string> ReadFileBytes(const std::string& path);
Status WriteFileBytes(const std::string& path, std::string_view bytes);

// Peak signal-to-noise ratio in dB of two same-sized images (inf when identical).
double Psnr(const Image& a, const Image& b);

}  // namespace lipsync::image
