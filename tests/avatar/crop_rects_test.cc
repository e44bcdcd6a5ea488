#include "avatar/crop_rects.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "avatar/avatar_fixture.h"

namespace lipsync::avatar {
namespace {

using ::testing::HasSubstr;

TEST(CropRectsTest, ParsesRects) {
  auto r = ParseCropRects("[[532,210,714,392],[1,2,3,4]]", "rects.json");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0], (CropRect{532, 210, 714, 392}));
  EXPECT_EQ((*r)[0].width(), 182);
  EXPECT_EQ((*r)[1], (CropRect{1, 2, 3, 4}));
}

TEST(CropRectsTest, ErrorsNameFileAndEntry) {
  struct Case {
    const char* json;
    const char* expect;
  } cases[] = {
      {"[[1,2,3,4]", "not valid JSON"},
      {"{", "expected a JSON array"},
      {"{\"a\": 1}", "expected a JSON array"},
      {"[[1,2,3,4],[1,2,3]]", "entry 1"},
      {"[[1,2,3,4],[0,0,10,10],[1.5,2,3,4]]", "entry 2: expected integer"},
      {"[[5,0,5,10]]", "entry 0: expected x1 < x2"},
      {"[[0,9,10,3]]", "y1 < y2"},
      {"[[-1,0,10,10]]", "entry 0"},
      {"[[\"a\",0,10,10]]", "integer"},
  };
  for (const auto& c : cases) {
    auto r = ParseCropRects(c.json, "my/crop_rects.json");
    ASSERT_FALSE(r.ok()) << c.json;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr("my/crop_rects.json")) << c.json;
    EXPECT_THAT(r.status().message(), HasSubstr(c.expect)) << r.status().message();
  }
}

TEST(CropRectsTest, ValidateCountAndBounds) {
  std::vector<CropRect> rects = {{0, 0, 10, 10}, {300, 200, 320, 240}};
  EXPECT_TRUE(ValidateCropRects(rects, 2, 320, 240, "r.json").ok());
  auto few = ValidateCropRects(rects, 3, 320, 240, "r.json");
  EXPECT_THAT(few.message(), HasSubstr("has 2 rects; expected one per frame (3)"));
  auto outside = ValidateCropRects(rects, 2, 310, 240, "r.json");
  EXPECT_THAT(outside.message(), HasSubstr("r.json: entry 1"));
  EXPECT_THAT(outside.message(), HasSubstr("outside the 310x240 frame"));
}

TEST(CropRectsTest, LoadMissingFileIsNotFound) {
  testing::TempDir dir;
  auto r = LoadCropRects((dir.path() / "nope.json").string());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
}

TEST(CropRectsTest, DeeplyNestedJsonIsRejectedAtTheDepthLimit) {
  // A million levels: a recursive parser or dump() would overflow the stack. The
  // stream stops at the first level the format does not have (3), well inside
  // limits.max_json_depth.
  for (int depth : {3, 17, 1000, 1'000'000}) {
    auto r = ParseCropRects(testing::DeeplyNestedJson(depth), "deep/crop_rects.json");
    ASSERT_EQ(r.status().code(), StatusCode::kInvalidArgument) << depth;
    EXPECT_THAT(r.status().message(), HasSubstr("deep/crop_rects.json: entry 0"));
    EXPECT_THAT(r.status().message(), HasSubstr("got a nested array"));
  }
  // Objects count too.
  std::string objects;
  for (int i = 0; i < 100000; ++i) objects += "{\"a\":";
  auto o = ParseCropRects(objects, "deep.json");
  EXPECT_EQ(o.status().code(), StatusCode::kInvalidArgument);
  // The configured depth applies: depth 2 is what the format needs.
  CropRectsLimits shallow;
  shallow.max_json_depth = 1;
  auto s1 = ParseCropRects("[[1,2,3,4]]", "r.json", shallow);
  EXPECT_EQ(s1.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s1.status().message(), HasSubstr("nested deeper than 1 levels"));
  EXPECT_THAT(s1.status().message(), HasSubstr("limits.max_json_depth"));
  EXPECT_THAT(
      ParseCropRects(testing::DeeplyNestedJson(1'000'000), "r.json", shallow).status().message(),
      HasSubstr("limits.max_json_depth"));
  shallow.max_json_depth = 2;
  EXPECT_TRUE(ParseCropRects("[[1,2,3,4]]", "r.json", shallow).ok());
}

TEST(CropRectsTest, PathologicalFilesAreRejectedNamingFileAndEntry) {
  struct Case {
    std::string json;
    const char* expect;
  } cases[] = {
      {"[[0,0,99999999999999999999999999,10]]", "entry 0: coordinates must be in 0..1000000"},
      {"[[0,0,18446744073709551615,10]]", "entry 0: coordinates must be in"},
      {"[[0,0,10,10],[0,0,-9223372036854775808,10]]", "entry 1: coordinates must be in"},
      {"[[0,0,10,10],[2147483648,0,2147483649,10]]", "entry 1: coordinates must be in"},
      {"[[0,0,1e300,10]]", "entry 0: coordinates must be in"},
      {"[[0,0,10.5,10]]", "entry 0: expected integer"},
      {"[[0,0,10,10,5]]", "entry 0: expected [x1, y1, x2, y2], got more than 4"},
      {"[[0,0,10]]", "entry 0: expected [x1, y1, x2, y2], got 3 value(s)"},
      {"[[]]", "entry 0: expected [x1, y1, x2, y2], got 0"},
      {"[[true,0,10,10]]", "entry 0: expected integer pixel coordinates, got a boolean"},
      {"[[null,0,10,10]]", "entry 0: expected integer"},
      {"[[{\"x\":1},0,10,10]]", "entry 0: expected [x1, y1, x2, y2], got an object"},
      {"[[0,0,10,10],[[0,0,10,10]]]",
       "entry 1: expected [x1, y1, x2, y2] of integers, got a nested"},
      {"[[0,0,10,10],5]", "entry 1: expected [x1, y1, x2, y2], got a number"},
      {"[[0,0,10,10]] [[0,0,10,10]]", "not valid JSON"},
      {"[[0,0,10,10]", "not valid JSON"},
      {"", "not valid JSON"},
      {"5", "expected a JSON array"},
      {"\"" + std::string(100000, 'A') + "\"", "expected a JSON array"},
      {"[[\"" + std::string(100000, 'B') + "\",0,10,10]]", "entry 0: expected integer"},
      {"[[0,0,10,10],[5,5,5,6]]", "entry 1: expected x1 < x2"},
  };
  for (const auto& c : cases) {
    auto r = ParseCropRects(c.json, "bad/crop_rects.json");
    ASSERT_EQ(r.status().code(), StatusCode::kInvalidArgument) << c.json.substr(0, 80);
    EXPECT_THAT(r.status().message(), HasSubstr("bad/crop_rects.json")) << c.json.substr(0, 80);
    EXPECT_THAT(r.status().message(), HasSubstr(c.expect)) << r.status().message().substr(0, 300);
    // Untrusted content is never echoed unbounded.
    EXPECT_LT(r.status().message().size(), 300u) << c.json.substr(0, 80);
  }
  // Integral floats are still integers.
  auto f = ParseCropRects("[[1.0,2,3e1,40]]", "r.json");
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ((*f)[0], (CropRect{1, 2, 30, 40}));
}

TEST(CropRectsTest, EntryCountAndFileSizeAreBounded) {
  CropRectsLimits limits;
  limits.max_rects = 3;
  std::string four = "[[0,0,1,1],[0,0,1,1],[0,0,1,1],[0,0,1,1]]";
  auto r = ParseCropRects(four, "r.json", limits);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("more than 3 entries"));
  EXPECT_THAT(r.status().message(), HasSubstr("limits.max_frames"));
  limits.max_rects = 4;
  EXPECT_TRUE(ParseCropRects(four, "r.json", limits).ok());

  testing::TempDir dir;
  const std::string path = (dir.path() / "crop_rects.json").string();
  ASSERT_TRUE(image::WriteFileBytes(path, four).ok());
  limits.max_file_bytes = 10;
  auto big = LoadCropRects(path, limits);
  EXPECT_EQ(big.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(big.status().message(), HasSubstr(path));
  EXPECT_THAT(big.status().message(), HasSubstr("limits.max_crop_rects_file_mb"));
  EXPECT_EQ(ParseCropRects(four, "r.json", limits).status().code(), StatusCode::kInvalidArgument);
  // A FIFO (or device) is refused at once instead of blocking the loader.
  const std::string fifo = (dir.path() / "fifo.json").string();
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  auto f = LoadCropRects(fifo);
  EXPECT_EQ(f.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(f.status().message(), HasSubstr("not a regular file"));
}

}  // namespace
}  // namespace lipsync::avatar
