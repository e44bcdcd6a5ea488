#include "image/image.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
// jpeglib.h needs stdio.h's FILE first.
#include <jpeglib.h>

#include <cstdio>
#include <cstring>
#include <filesystem>

namespace lipsync::image {
namespace {

Image Gradient(int w, int h) {
  Image img(w, h, 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = img.row(y) + x * 3;
      p[0] = uint8_t(x * 255 / w);
      p[1] = uint8_t(y * 255 / h);
      p[2] = uint8_t((x + y) & 255);
    }
  return img;
}

TEST(ImageTest, PngRoundTripIsExact) {
  Image img = Gradient(67, 41);
  auto path = (std::filesystem::temp_directory_path() / "lipsync_image_test.png").string();
  ASSERT_TRUE(WritePng(path, img).ok());
  auto back = ReadImageFile(path);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->pixels, img.pixels);
  std::remove(path.c_str());
}

TEST(ImageTest, JpegRoundTripIsClose) {
  Image img = Gradient(128, 96);
  auto jpg = EncodeJpeg(img, 95);
  ASSERT_TRUE(jpg.ok());
  auto back = DecodeJpeg(*jpg);
  ASSERT_TRUE(back.ok());
  EXPECT_GT(Psnr(img, *back), 35.0);
}

TEST(ImageTest, CorruptInputIsAnErrorNotACrash) {
  EXPECT_EQ(DecodeJpeg(std::string("\xFF\xD8garbage", 9)).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodePng("\x89PNGnope").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadImageFile("/nonexistent/x.png").status().code(), StatusCode::kNotFound);
}

using ::testing::HasSubstr;

std::string TempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("lipsync_image_test_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

// Peak resident set of this process, bytes.
int64_t MaxRssBytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return int64_t(usage.ru_maxrss) * 1024;
}

uint32_t Crc32(const std::string& data) {
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char c : data) {
    crc ^= c;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

std::string Be32(uint32_t v) { return {char(v >> 24), char(v >> 16), char(v >> 8), char(v)}; }

std::string Chunk(const std::string& type, const std::string& data) {
  return Be32(uint32_t(data.size())) + type + data + Be32(Crc32(type + data));
}

// A ~70-byte PNG whose (valid, CRC-correct) IHDR claims w x h RGB pixels.
std::string PngClaiming(uint32_t w, uint32_t h) {
  std::string ihdr = Be32(w) + Be32(h) + std::string("\x08\x02\x00\x00\x00", 5);
  // A zlib stream of a few zero bytes: nowhere near enough data for the rows.
  const std::string idat("\x78\x9c\x63\x00\x00\x00\x01\x00\x01", 9);
  return std::string("\x89PNG\r\n\x1a\n", 8) + Chunk("IHDR", ihdr) + Chunk("IDAT", idat) +
         Chunk("IEND", "");
}

// A real 16x16 JPEG with its SOF0 rewritten to claim w x h.
std::string JpegClaiming(int w, int h) {
  std::string jpeg = *EncodeJpeg(Gradient(16, 16), 80);
  for (size_t i = 2; i + 9 < jpeg.size(); ++i) {
    if (uint8_t(jpeg[i]) == 0xFF && uint8_t(jpeg[i + 1]) == 0xC0) {
      jpeg[i + 5] = char(h >> 8);
      jpeg[i + 6] = char(h & 0xFF);
      jpeg[i + 7] = char(w >> 8);
      jpeg[i + 8] = char(w & 0xFF);
      return jpeg;
    }
  }
  ADD_FAILURE() << "no SOF0 in the encoded JPEG";
  return jpeg;
}

TEST(ImageLimitsTest, PngHeaderClaimingHugeDimensionsIsRejectedInBoundedMemory) {
  const std::string png = PngClaiming(60000, 60000);
  ASSERT_LT(png.size(), 100u);
  const std::string path = TempPath("huge.png");
  ASSERT_TRUE(WriteFileBytes(path, png).ok());
  const int64_t rss_before = MaxRssBytes();
  auto decoded = DecodePng(png);
  auto read = ReadImageFile(path);
  auto info = ReadImageFileInfo(path);
  const int64_t grown = MaxRssBytes() - rss_before;
  EXPECT_EQ(decoded.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(decoded.status().message(), HasSubstr("60000x60000"));
  EXPECT_THAT(decoded.status().message(), HasSubstr("limits.max_image_width/height"));
  EXPECT_EQ(read.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(read.status().message(), HasSubstr(path));
  EXPECT_EQ(info.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(info.status().message(), HasSubstr(path));
  // 60000x60000 RGB would be 10.8 GB; nothing of the sort was allocated.
  EXPECT_LT(grown, int64_t(100) << 20);
  // The biggest size the PNG format allows, and a zero width.
  EXPECT_EQ(DecodePng(PngClaiming(0x7FFFFFFF, 0x7FFFFFFF)).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodePng(PngClaiming(0xFFFFFFFF, 1)).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodePng(PngClaiming(0, 10)).status().code(), StatusCode::kInvalidArgument);
  std::remove(path.c_str());
}

TEST(ImageLimitsTest, JpegHeaderClaimingHugeDimensionsIsRejectedInBoundedMemory) {
  const std::string jpeg = JpegClaiming(60000, 60000);
  const std::string path = TempPath("huge.jpg");
  ASSERT_TRUE(WriteFileBytes(path, jpeg).ok());
  const int64_t rss_before = MaxRssBytes();
  auto decoded = DecodeJpeg(jpeg);
  auto read = ReadImageFile(path);
  const int64_t grown = MaxRssBytes() - rss_before;
  EXPECT_EQ(decoded.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(decoded.status().message(), HasSubstr("60000x60000"));
  EXPECT_EQ(read.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(read.status().message(), HasSubstr(path));
  EXPECT_LT(grown, int64_t(100) << 20);
  std::remove(path.c_str());
}

TEST(ImageLimitsTest, ConfiguredLimitsApply) {
  DecodeLimits small;
  small.max_width = 32;
  small.max_height = 32;
  auto jpeg = EncodeJpeg(Gradient(64, 16), 80);
  ASSERT_TRUE(jpeg.ok());
  EXPECT_EQ(DecodeJpeg(*jpeg, small).status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(DecodeJpeg(*jpeg).ok());
  const std::string path = TempPath("limits.png");
  ASSERT_TRUE(WritePng(path, Gradient(64, 16)).ok());
  auto wide = ReadImageFile(path, small);
  EXPECT_EQ(wide.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(wide.status().message(), HasSubstr("64x16"));
  DecodeLimits tiny_file;
  tiny_file.max_file_bytes = 100;
  auto big = ReadImageFile(path, tiny_file);
  EXPECT_EQ(big.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(big.status().message(), HasSubstr("limits.max_image_file_mb"));
  EXPECT_THAT(big.status().message(), HasSubstr(path));
  auto info = ReadImageFileInfo(path);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->format, ImageFormat::kPng);
  EXPECT_EQ(info->width, 64);
  EXPECT_EQ(info->height, 16);
  std::remove(path.c_str());
}

TEST(ImageLimitsTest, TruncatedJpegIsAnErrorNamingTheFile) {
  auto jpeg = EncodeJpeg(Gradient(128, 96), 90);
  ASSERT_TRUE(jpeg.ok());
  const std::string path = TempPath("truncated.jpg");
  ASSERT_TRUE(WriteFileBytes(path, jpeg->substr(0, jpeg->size() / 2)).ok());
  // ReadImageFileInfo sees only the header, which is intact.
  auto info = ReadImageFileInfo(path);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->width, 128);
  auto read = ReadImageFile(path);
  ASSERT_EQ(read.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(read.status().message(), HasSubstr(path));
  EXPECT_THAT(read.status().message(), HasSubstr("Premature end"));
  // Corrupt entropy-coded data (not truncated) is an error too, not a grey frame.
  std::string corrupt = *jpeg;
  for (size_t i = corrupt.size() / 2; i < corrupt.size() / 2 + 40; ++i) corrupt[i] = char(0xFF);
  EXPECT_EQ(DecodeJpeg(corrupt).status().code(), StatusCode::kInvalidArgument);
  std::remove(path.c_str());
}

TEST(ImageLimitsTest, TruncatedPngIsAnErrorNamingTheFile) {
  const std::string path = TempPath("truncated.png");
  ASSERT_TRUE(WritePng(path, Gradient(128, 96)).ok());
  auto bytes = ReadFileBytes(path);
  ASSERT_TRUE(bytes.ok());
  ASSERT_TRUE(WriteFileBytes(path, bytes->substr(0, bytes->size() / 2)).ok());
  auto read = ReadImageFile(path);
  ASSERT_EQ(read.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(read.status().message(), HasSubstr(path));
  EXPECT_THAT(read.status().message(), HasSubstr("truncated"));
  // The claimed-size PNG above has a valid header but almost no data.
  EXPECT_EQ(DecodePng(PngClaiming(64, 64)).status().code(), StatusCode::kInvalidArgument);
  std::remove(path.c_str());
}

TEST(ImageLimitsTest, NonRegularFilesAreRefusedWithoutBlocking) {
  const std::string fifo = TempPath("fifo.png");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  auto read = ReadImageFile(fifo);
  EXPECT_EQ(read.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(read.status().message(), HasSubstr("not a regular file"));
  EXPECT_EQ(ReadFileBytes(fifo, 1000).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadImageFile("/dev/zero").status().code(), StatusCode::kInvalidArgument);
  std::remove(fifo.c_str());
  const std::string text = TempPath("big.txt");
  ASSERT_TRUE(WriteFileBytes(text, std::string(1001, 'x')).ok());
  EXPECT_EQ(ReadFileBytes(text, 1000).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadFileBytes(text, 1001)->size(), 1001u);
  std::remove(text.c_str());
}

// A valid progressive JPEG with one scan per AC coefficient and component, each refined
// once: 3 + 63 * 3 * 2 = 381 scans, every one a full pass over the image.
std::string ManyScanJpeg(const Image& img) {
  std::vector<jpeg_scan_info> scans;
  for (int c = 0; c < 3; ++c) scans.push_back({1, {c, 0, 0, 0}, 0, 0, 0, 0});
  for (int k = 1; k < 64; ++k) {
    for (int c = 0; c < 3; ++c) {
      scans.push_back({1, {c, 0, 0, 0}, k, k, 0, 1});
      scans.push_back({1, {c, 0, 0, 0}, k, k, 1, 0});
    }
  }
  jpeg_compress_struct cinfo;
  jpeg_error_mgr err;
  cinfo.err = jpeg_std_error(&err);
  jpeg_create_compress(&cinfo);
  unsigned char* out = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &out, &size);
  cinfo.image_width = JDIMENSION(img.width);
  cinfo.image_height = JDIMENSION(img.height);
  cinfo.input_components = 3;
  cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&cinfo);
  cinfo.scan_info = scans.data();
  cinfo.num_scans = int(scans.size());
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(img.row(int(cinfo.next_scanline)));
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  std::string jpeg(reinterpret_cast<char*>(out), size);
  jpeg_destroy_compress(&cinfo);
  free(out);
  return jpeg;
}

TEST(ImageLimitsTest, ProgressiveJpegWithHundredsOfScansIsRefused) {
  const std::string jpeg = ManyScanJpeg(Gradient(64, 48));
  auto decoded = DecodeJpeg(jpeg);
  EXPECT_EQ(decoded.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(decoded.status().message(), HasSubstr("progressive scans"));
}

TEST(ImageTest, GrayPngDecodesToRgb) {
  Image gray(20, 10, 1);
  for (size_t i = 0; i < gray.pixels.size(); ++i) gray.pixels[i] = uint8_t(i * 7);
  const std::string path = TempPath("gray.png");
  ASSERT_TRUE(WritePng(path, gray).ok());
  auto back = ReadImageFile(path);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_EQ(back->channels, 3);
  for (size_t i = 0; i < gray.pixels.size(); ++i) {
    ASSERT_EQ(back->pixels[i * 3], gray.pixels[i]);
    ASSERT_EQ(back->pixels[i * 3 + 2], gray.pixels[i]);
  }
  std::remove(path.c_str());
}

}  // namespace
}  // namespace lipsync::image
