#include "image/image.h"

#include <png.h>
#include <stdio.h>
// jpeglib.h needs stdio.h's FILE first.
#include <jpeglib.h>

#include <cmath>
#include <csetjmp>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "image/jpeg_error.h"

namespace lipsync::image {

Expected<std::string> ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound("cannot open file '" + path + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return Status::Internal("error reading '" + path + "'");
  return ss.str();
}

Status WriteFileBytes(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return Status::Internal("cannot create file '" + path + "'");
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) return Status::Internal("error writing '" + path + "'");
  return Status::Ok();
}

Expected<Image> DecodePng(std::string_view bytes) {
  png_image png;
  std::memset(&png, 0, sizeof(png));
  png.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&png, bytes.data(), bytes.size())) {
    return Status::InvalidArgument(std::string("not a valid PNG: ") + png.message);
  }
  png.format = PNG_FORMAT_RGB;
  Image img(static_cast<int>(png.width), static_cast<int>(png.height), 3);
  if (!png_image_finish_read(&png, nullptr, img.pixels.data(), 0, nullptr)) {
    std::string msg = png.message;
    png_image_free(&png);
    return Status::InvalidArgument("corrupt PNG: " + msg);
  }
  return img;
}

Status WritePng(const std::string& path, const Image& image) {
  if (image.channels != 3 && image.channels != 1) {
    return Status::InvalidArgument("WritePng supports 1 or 3 channels");
  }
  png_image png;
  std::memset(&png, 0, sizeof(png));
  png.version = PNG_IMAGE_VERSION;
  png.width = static_cast<png_uint_32>(image.width);
  png.height = static_cast<png_uint_32>(image.height);
  png.format = image.channels == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
  // Favour speed: demo avatars are hundreds of noisy 720p frames; size barely changes.
  png.flags = PNG_IMAGE_FLAG_FAST;
  if (!png_image_write_to_file(&png, path.c_str(), 0, image.pixels.data(),
                               static_cast<png_int_32>(image.stride()), nullptr)) {
    return Status::Internal("writing PNG '" + path + "' failed: " + png.message);
  }
  return Status::Ok();
}

using internal::JpegError;
using internal::OnJpegError;

Expected<Image> DecodeJpeg(std::string_view bytes) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = OnJpegError;
  Image img;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return Status::InvalidArgument(std::string("corrupt JPEG: ") + err.message);
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes.data()),
               static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  cinfo.out_color_space = JCS_RGB;
  jpeg_start_decompress(&cinfo);
  img = Image(static_cast<int>(cinfo.output_width), static_cast<int>(cinfo.output_height), 3);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = img.row(static_cast<int>(cinfo.output_scanline));
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return img;
}

Expected<std::string> EncodeJpeg(const uint8_t* rgb, int width, int height, size_t stride,
                                 int quality) {
  if (width <= 0 || height <= 0 || quality < 1 || quality > 100) {
    return Status::InvalidArgument("EncodeJpeg: bad size or quality (1..100)");
  }
  jpeg_compress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = OnJpegError;
  unsigned char* out = nullptr;
  unsigned long out_size = 0;
  if (setjmp(err.jump)) {
    jpeg_destroy_compress(&cinfo);
    free(out);
    return Status::Internal(std::string("JPEG encode failed: ") + err.message);
  }
  jpeg_create_compress(&cinfo);
  jpeg_mem_dest(&cinfo, &out, &out_size);
  cinfo.image_width = static_cast<JDIMENSION>(width);
  cinfo.image_height = static_cast<JDIMENSION>(height);
  cinfo.input_components = 3;
  cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  cinfo.dct_method = JDCT_ISLOW;
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(rgb + size_t(cinfo.next_scanline) * stride);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  std::string result(reinterpret_cast<char*>(out), out_size);
  jpeg_destroy_compress(&cinfo);
  free(out);
  return result;
}

Expected<Image> ReadImageFile(const std::string& path) {
  LIPSYNC_ASSIGN_OR_RETURN(std::string bytes, ReadFileBytes(path));
  Expected<Image> img = Status::InvalidArgument("unknown format");
  if (bytes.size() >= 8 && std::memcmp(bytes.data(), "\x89PNG", 4) == 0) {
    img = DecodePng(bytes);
  } else if (bytes.size() >= 3 && static_cast<unsigned char>(bytes[0]) == 0xFF &&
             static_cast<unsigned char>(bytes[1]) == 0xD8) {
    img = DecodeJpeg(bytes);
  } else {
    return Status::InvalidArgument("'" + path + "' is neither PNG nor JPEG");
  }
  if (!img.ok()) return img.status().WithContext("'" + path + "'");
  return img;
}

double Psnr(const Image& a, const Image& b) {
  if (a.width != b.width || a.height != b.height || a.channels != b.channels) return 0;
  double se = 0;
  for (size_t i = 0; i < a.pixels.size(); ++i) {
    double d = double(a.pixels[i]) - double(b.pixels[i]);
    se += d * d;
  }
  if (se == 0) return std::numeric_limits<double>::infinity();
  double mse = se / double(a.pixels.size());
  return 10.0 * std::log10(255.0 * 255.0 / mse);
}

}  // namespace lipsync::image
