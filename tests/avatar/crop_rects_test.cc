#include "avatar/crop_rects.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

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
      {"{", "not valid JSON"},
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

}  // namespace
}  // namespace lipsync::avatar
