#include "image/image.h"

#include <fcntl.h>
#include <png.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
// jpeglib.h needs stdio.h's FILE first.
#include <jpeglib.h>

#include <cerrno>
#include <cmath>
#include <csetjmp>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <limits>
#include <new>
#include <sstream>

#include "image/jpeg_error.h"

namespace lipsync::image {

namespace {

// Progressive JPEGs may carry any number of scans, each a full pass over the
// coefficients; real encoders write about 10.
constexpr int kMaxJpegScans = 256;
// libpng: the largest ancillary chunk (decompressed zTXt/iCCP included) and how many
// ancillary chunks are kept.
constexpr size_t kPngChunkMallocMax = size_t(4) << 20;
constexpr png_uint_32 kPngChunkCacheMax = 128;
// How much of a file ReadImageFileInfo reads at most to find the header (JPEG APPn
// segments such as EXIF and ICC profiles come before the frame header).
constexpr size_t kMaxHeaderBytes = size_t(1) << 20;

std::string Dims(int64_t w, int64_t h) { return std::to_string(w) + "x" + std::to_string(h); }

Status CheckDims(const char* format, int64_t w, int64_t h, const DecodeLimits& limits) {
  if (w <= 0 || h <= 0) {
    return Status::InvalidArgument(std::string(format) + " header claims " + Dims(w, h) +
                                   " pixels; expected a positive size");
  }
  if (w > limits.max_width || h > limits.max_height) {
    return Status::InvalidArgument(
        std::string(format) + " header claims " + Dims(w, h) + " pixels; expected at most " +
        Dims(limits.max_width, limits.max_height) + " (limits.max_image_width/height)");
  }
  return Status::Ok();
}

Status CheckSize(size_t bytes, const DecodeLimits& limits) {
  if (limits.max_file_bytes > 0 && bytes > uint64_t(limits.max_file_bytes)) {
    return Status::InvalidArgument(
        "image is " + std::to_string(bytes) + " bytes; expected at most " +
        std::to_string(limits.max_file_bytes) + " (limits.max_image_file_mb)");
  }
  return Status::Ok();
}

uint32_t Be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}

bool IsPng(std::string_view b) {
  return b.size() >= 8 && std::memcmp(b.data(), "\x89PNG\r\n\x1a\n", 8) == 0;
}
bool IsJpeg(std::string_view b) {
  return b.size() >= 3 && uint8_t(b[0]) == 0xFF && uint8_t(b[1]) == 0xD8;
}

// Header of PNG/JPEG bytes. *need_more (optional) is set when `bytes` ends before the
// header does (the caller may read more of the file).
Expected<ImageInfo> ParseHeader(std::string_view bytes, bool* need_more) {
  if (need_more) *need_more = false;
  const auto* b = reinterpret_cast<const uint8_t*>(bytes.data());
  const size_t size = bytes.size();
  ImageInfo info;
  if (IsPng(bytes)) {
    info.format = ImageFormat::kPng;
    // Signature, then IHDR first: length 13, "IHDR", width, height (big endian).
    if (size < 8 + 8 + 13) {
      if (need_more) *need_more = true;
      return Status::InvalidArgument("PNG ends inside its IHDR header; expected 33 bytes or more");
    }
    if (Be32(b + 8) != 13 || std::memcmp(b + 12, "IHDR", 4) != 0) {
      return Status::InvalidArgument("PNG does not start with an IHDR chunk; not a valid PNG");
    }
    const uint32_t w = Be32(b + 16), h = Be32(b + 20);
    if (w > uint32_t(std::numeric_limits<int32_t>::max()) ||
        h > uint32_t(std::numeric_limits<int32_t>::max())) {
      return Status::InvalidArgument("PNG header claims " + Dims(w, h) +
                                     " pixels; the PNG format allows at most 2^31-1 per side");
    }
    info.width = int(w);
    info.height = int(h);
    return info;
  }
  if (IsJpeg(bytes)) {
    info.format = ImageFormat::kJpeg;
    size_t pos = 2;
    for (;;) {
      // Markers may be preceded by any number of 0xFF fill bytes.
      while (pos < size && b[pos] == 0xFF && pos + 1 < size && b[pos + 1] == 0xFF) ++pos;
      if (pos + 4 > size) {
        if (need_more) *need_more = true;
        return Status::InvalidArgument("JPEG ends before its frame header (SOFn); truncated");
      }
      if (b[pos] != 0xFF) {
        return Status::InvalidArgument("malformed JPEG header at byte " + std::to_string(pos) +
                                       "; expected a marker");
      }
      const uint8_t marker = b[pos + 1];
      if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) {  // no length
        pos += 2;
        continue;
      }
      if (marker == 0xD9 || marker == 0xDA) {
        return Status::InvalidArgument("JPEG has no frame header (SOFn) before its scan data");
      }
      const size_t length = (size_t(b[pos + 2]) << 8) | b[pos + 3];
      if (length < 2) {
        return Status::InvalidArgument("malformed JPEG marker segment length at byte " +
                                       std::to_string(pos));
      }
      const bool sof =
          marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
      if (sof) {
        if (pos + 9 > size) {
          if (need_more) *need_more = true;
          return Status::InvalidArgument("JPEG ends inside its frame header; truncated");
        }
        info.height = int((uint32_t(b[pos + 5]) << 8) | b[pos + 6]);
        info.width = int((uint32_t(b[pos + 7]) << 8) | b[pos + 8]);
        return info;
      }
      pos += 2 + length;
    }
  }
  return Status::InvalidArgument("neither PNG nor JPEG (by content)");
}

// ---- PNG through libpng's low-level API (the simplified png_image API has no limits).

struct PngSource {
  const uint8_t* data = nullptr;
  size_t size = 0;
  size_t pos = 0;
  char message[256] = {};
};

void PngOnError(png_structp png, png_const_charp msg) {
  auto* src = static_cast<PngSource*>(png_get_error_ptr(png));
  std::snprintf(src->message, sizeof(src->message), "%s", msg ? msg : "libpng error");
  png_longjmp(png, 1);
}
void PngOnWarning(png_structp, png_const_charp) {}

void PngRead(png_structp png, png_bytep out, size_t n) {
  auto* src = static_cast<PngSource*>(png_get_io_ptr(png));
  if (n > src->size - src->pos) png_error(png, "unexpected end of file (truncated PNG)");
  std::memcpy(out, src->data + src->pos, n);
  src->pos += n;
}

// Phase 1: IHDR and the chunks before the image data; sets up the RGB8 transforms.
// Plain locals only (see jpeg_error.h on setjmp).
bool PngReadHeader(png_structp png, png_infop info, int max_w, int max_h, png_uint_32* w,
                   png_uint_32* h, size_t* rowbytes) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_set_user_limits(png, png_uint_32(max_w), png_uint_32(max_h));
  png_set_chunk_malloc_max(png, kPngChunkMallocMax);
  png_set_chunk_cache_max(png, kPngChunkCacheMax);
  png_read_info(png, info);
  *w = png_get_image_width(png, info);
  *h = png_get_image_height(png, info);
  const int color = png_get_color_type(png, info);
  const bool alpha = (color & PNG_COLOR_MASK_ALPHA) != 0 || png_get_valid(png, info, PNG_INFO_tRNS);
  png_set_expand(png);  // palette -> RGB, gray < 8 bits -> 8, tRNS -> alpha
  png_set_scale_16(png);
  if ((color & PNG_COLOR_MASK_COLOR) == 0) png_set_gray_to_rgb(png);
  if (alpha) {
    png_color_16 black{};
    png_set_background(png, &black, PNG_BACKGROUND_GAMMA_SCREEN, 0, 1.0);
  }
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  *rowbytes = png_get_rowbytes(png, info);
  return true;
}

// Phase 2: every row into `rows`, then the chunks after the image data.
bool PngReadRows(png_structp png, png_infop info, png_bytepp rows) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_read_image(png, rows);
  png_read_end(png, info);
  return true;
}

Expected<Image> DecodePngUnguarded(std::string_view bytes, const DecodeLimits& limits) {
  LIPSYNC_RETURN_IF_ERROR(CheckSize(bytes.size(), limits));
  LIPSYNC_ASSIGN_OR_RETURN(ImageInfo header, ParseHeader(bytes, nullptr));
  if (header.format != ImageFormat::kPng) {
    return Status::InvalidArgument("not a valid PNG: no PNG signature");
  }
  LIPSYNC_RETURN_IF_ERROR(CheckDims("PNG", header.width, header.height, limits));

  PngSource src;
  src.data = reinterpret_cast<const uint8_t*>(bytes.data());
  src.size = bytes.size();
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, &PngOnError, &PngOnWarning);
  if (png == nullptr) return Status::ResourceExhausted("libpng: cannot create a read struct");
  png_infop info = png_create_info_struct(png);
  if (info == nullptr) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    return Status::ResourceExhausted("libpng: cannot create an info struct");
  }
  struct Cleanup {
    png_structp* png;
    png_infop* info;
    ~Cleanup() { png_destroy_read_struct(png, info, nullptr); }
  } cleanup{&png, &info};
  png_set_read_fn(png, &src, &PngRead);

  png_uint_32 w = 0, h = 0;
  size_t rowbytes = 0;
  if (!PngReadHeader(png, info, limits.max_width, limits.max_height, &w, &h, &rowbytes)) {
    return Status::InvalidArgument(std::string("not a valid PNG: ") + src.message);
  }
  LIPSYNC_RETURN_IF_ERROR(CheckDims("PNG", int64_t(w), int64_t(h), limits));
  if (rowbytes != size_t(w) * 3) {
    return Status::InvalidArgument(
        "PNG rows are " + std::to_string(rowbytes) +
        " bytes after conversion; expected width*3 = " + std::to_string(size_t(w) * 3));
  }
  Image img(int(w), int(h), 3);
  std::vector<png_bytep> rows(h);
  for (png_uint_32 y = 0; y < h; ++y) rows[y] = img.row(int(y));
  if (!PngReadRows(png, info, rows.data())) {
    return Status::InvalidArgument(std::string("corrupt or truncated PNG: ") + src.message);
  }
  return img;
}

// ---- JPEG

using internal::JpegError;
using internal::OnJpegError;
using internal::OnJpegMessageStrict;

struct JpegDecoder {
  jpeg_decompress_struct cinfo;
  JpegError err;
  jpeg_progress_mgr progress;
  bool created = false;
};

void OnJpegProgress(j_common_ptr cinfo) {
  auto* d = reinterpret_cast<j_decompress_ptr>(cinfo);
  if (d->input_scan_number > kMaxJpegScans) {
    auto* err = reinterpret_cast<JpegError*>(cinfo->err);
    std::snprintf(err->message, sizeof(err->message),
                  "more than %d progressive scans; expected a normal JPEG", kMaxJpegScans);
    longjmp(err->jump, 1);
  }
}

// Phase 1: the header. Plain locals only (see jpeg_error.h).
bool JpegReadHeader(JpegDecoder* d, const unsigned char* data, size_t size) {
  d->cinfo.err = jpeg_std_error(&d->err.mgr);
  d->err.mgr.error_exit = OnJpegError;
  d->err.mgr.emit_message = OnJpegMessageStrict;
  d->err.message[0] = '\0';
  if (setjmp(d->err.jump)) return false;
  jpeg_create_decompress(&d->cinfo);
  d->created = true;
  d->progress.progress_monitor = OnJpegProgress;
  d->cinfo.progress = &d->progress;
  jpeg_mem_src(&d->cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&d->cinfo, TRUE);
  return true;
}

// Phase 2: every scanline into `out` (height rows of `stride` bytes).
bool JpegReadPixels(JpegDecoder* d, uint8_t* out, size_t stride, size_t max_memory) {
  if (setjmp(d->err.jump)) return false;
  d->cinfo.out_color_space = JCS_RGB;
  d->cinfo.mem->max_memory_to_use = static_cast<long>(max_memory);
  jpeg_start_decompress(&d->cinfo);
  if (d->cinfo.output_components != 3) {
    std::snprintf(d->err.message, sizeof(d->err.message), "decodes to %d components; expected RGB",
                  d->cinfo.output_components);
    return false;
  }
  while (d->cinfo.output_scanline < d->cinfo.output_height) {
    JSAMPROW row = out + size_t(d->cinfo.output_scanline) * stride;
    jpeg_read_scanlines(&d->cinfo, &row, 1);
  }
  jpeg_finish_decompress(&d->cinfo);
  return true;
}

Expected<Image> DecodeJpegUnguarded(std::string_view bytes, const DecodeLimits& limits) {
  LIPSYNC_RETURN_IF_ERROR(CheckSize(bytes.size(), limits));
  LIPSYNC_ASSIGN_OR_RETURN(ImageInfo header, ParseHeader(bytes, nullptr));
  if (header.format != ImageFormat::kJpeg) {
    return Status::InvalidArgument("corrupt JPEG: no JPEG SOI marker");
  }
  LIPSYNC_RETURN_IF_ERROR(CheckDims("JPEG", header.width, header.height, limits));

  JpegDecoder d;
  struct Cleanup {
    JpegDecoder* d;
    ~Cleanup() {
      if (d->created) jpeg_destroy_decompress(&d->cinfo);
    }
  } cleanup{&d};
  if (!JpegReadHeader(&d, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size())) {
    return Status::InvalidArgument(std::string("corrupt JPEG: ") + d.err.message);
  }
  // libjpeg's own view of the size (what it will allocate for), checked again.
  const int64_t w = d.cinfo.image_width, h = d.cinfo.image_height;
  LIPSYNC_RETURN_IF_ERROR(CheckDims("JPEG", w, h, limits));
  Image img(int(w), int(h), 3);
  // Whole-image coefficient buffers of a progressive JPEG are about 6 bytes per pixel.
  const size_t max_memory = size_t(w) * size_t(h) * 8 + (size_t(32) << 20);
  if (!JpegReadPixels(&d, img.pixels.data(), img.stride(), max_memory)) {
    return Status::InvalidArgument(std::string("corrupt or truncated JPEG: ") + d.err.message);
  }
  if (int64_t(d.cinfo.output_width) != w || int64_t(d.cinfo.output_height) != h) {
    return Status::InvalidArgument("JPEG decoded to " +
                                   Dims(d.cinfo.output_width, d.cinfo.output_height) +
                                   "; its header says " + Dims(w, h));
  }
  return img;
}

// Runs a decode step so that no exception leaves this library: an allocation failure
// (std::bad_alloc) or anything else thrown inside becomes a Status.
template <typename F>
auto Guarded(const char* what, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return Status::ResourceExhausted(std::string(what) + ": out of memory");
  } catch (const std::exception& e) {
    return Status::Internal(std::string(what) + ": " + std::string(e.what()).substr(0, 200));
  } catch (...) {
    return Status::Internal(std::string(what) + ": unknown exception");
  }
}

// Reads `path` (a regular file: a FIFO or device is refused without blocking) up to
// max_bytes. prefix_only: the first max_bytes bytes, whatever the file's size;
// otherwise the whole file, INVALID_ARGUMENT if it is larger (`limit_name`, if given,
// is named in the message).
Expected<std::string> ReadBounded(const std::string& path, int64_t max_bytes, bool prefix_only,
                                  const char* limit_name = nullptr) {
  const std::string limit = limit_name ? std::string(" (") + limit_name + ")" : std::string();
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    return Status::NotFound("cannot open file '" + path + "': " + std::strerror(errno));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    return Status::Internal("cannot stat '" + path + "': " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) {
    return Status::InvalidArgument("'" + path + "' is not a regular file; expected a file");
  }
  if (!prefix_only && st.st_size > max_bytes) {
    return Status::InvalidArgument("'" + path + "' is " + std::to_string(st.st_size) +
                                   " bytes; expected at most " + std::to_string(max_bytes) + limit);
  }
  // Never more than max_bytes + 1, even if the file grows while it is read.
  const size_t cap = size_t(max_bytes) + (prefix_only ? 0 : 1);
  std::string out;
  out.resize(std::min<size_t>(cap, size_t(std::max<off_t>(st.st_size, 0)) + 1));
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = ::read(fd, out.data() + got, out.size() - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::Internal("error reading '" + path + "': " + std::strerror(errno));
    }
    if (n == 0) break;
    got += size_t(n);
    if (got == out.size() && got < cap) out.resize(std::min(cap, got * 2));
  }
  out.resize(got);
  if (!prefix_only && int64_t(got) > max_bytes) {
    return Status::InvalidArgument("'" + path + "' grew past " + std::to_string(max_bytes) +
                                   " bytes while it was read; expected at most that" + limit);
  }
  return out;
}

}  // namespace

Expected<std::string> ReadFileBytes(const std::string& path, int64_t max_bytes,
                                    const char* limit_name) {
  if (max_bytes > 0) {
    return Guarded("reading a file",
                   [&] { return ReadBounded(path, max_bytes, false, limit_name); });
  }
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

Expected<ImageInfo> ReadImageInfo(std::string_view bytes, const DecodeLimits& limits) {
  LIPSYNC_RETURN_IF_ERROR(CheckSize(bytes.size(), limits));
  LIPSYNC_ASSIGN_OR_RETURN(ImageInfo info, ParseHeader(bytes, nullptr));
  LIPSYNC_RETURN_IF_ERROR(CheckDims(info.format == ImageFormat::kPng ? "PNG" : "JPEG", info.width,
                                    info.height, limits));
  return info;
}

Expected<ImageInfo> ReadImageFileInfo(const std::string& path, const DecodeLimits& limits) {
  return Guarded("reading an image header", [&]() -> Expected<ImageInfo> {
    // The size check first (on the whole file), then as little of it as the header needs.
    const int64_t max_file =
        limits.max_file_bytes > 0 ? limits.max_file_bytes : std::numeric_limits<int64_t>::max() - 1;
    std::error_code ec;
    const auto file_size = std::filesystem::file_size(path, ec);
    if (!ec && int64_t(file_size) > max_file) {
      return Status::InvalidArgument("'" + path + "' is " + std::to_string(file_size) +
                                     " bytes; expected at most " + std::to_string(max_file) +
                                     " (limits.max_image_file_mb)");
    }
    for (size_t want = 64 << 10;; want *= 4) {
      want = std::min(want, kMaxHeaderBytes);
      LIPSYNC_ASSIGN_OR_RETURN(std::string head, ReadBounded(path, int64_t(want), true));
      bool need_more = false;
      Expected<ImageInfo> info = ParseHeader(head, &need_more);
      if (need_more && head.size() == want && want < kMaxHeaderBytes) continue;
      if (!info.ok()) return info.status().WithContext("'" + path + "'");
      Status dims = CheckDims(info->format == ImageFormat::kPng ? "PNG" : "JPEG", info->width,
                              info->height, limits);
      if (!dims.ok()) return dims.WithContext("'" + path + "'");
      return info;
    }
  });
}

Expected<Image> DecodePng(std::string_view bytes, const DecodeLimits& limits) {
  return Guarded("decoding PNG", [&] { return DecodePngUnguarded(bytes, limits); });
}

Expected<Image> DecodeJpeg(std::string_view bytes, const DecodeLimits& limits) {
  return Guarded("decoding JPEG", [&] { return DecodeJpegUnguarded(bytes, limits); });
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

Expected<Image> ReadImageFile(const std::string& path, const DecodeLimits& limits) {
  return Guarded("reading an image", [&]() -> Expected<Image> {
    const int64_t max_file =
        limits.max_file_bytes > 0 ? limits.max_file_bytes : std::numeric_limits<int64_t>::max() - 1;
    LIPSYNC_ASSIGN_OR_RETURN(std::string bytes,
                             ReadBounded(path, max_file, false, "limits.max_image_file_mb"));
    Expected<Image> img = Status::InvalidArgument("unknown format");
    if (IsPng(bytes)) {
      img = DecodePngUnguarded(bytes, limits);
    } else if (IsJpeg(bytes)) {
      img = DecodeJpegUnguarded(bytes, limits);
    } else {
      return Status::InvalidArgument("'" + path + "' is neither PNG nor JPEG");
    }
    if (!img.ok()) return img.status().WithContext("'" + path + "'");
    return img;
  });
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
