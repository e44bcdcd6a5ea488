#include "image/image.h"

#include <gtest/gtest.h>

#include <cstdio>
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

}  // namespace
}  // namespace lipsync::image
