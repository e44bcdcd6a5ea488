#include "common/model_id.h"

#include <gtest/gtest.h>

namespace lipsync {
namespace {

TEST(ModelIdTest, AcceptsOrdinaryIds) {
  for (const char* id : {"sanders", "user_123", "a", "A-b.c_9"}) {
    EXPECT_TRUE(ValidateModelId(id).ok()) << id;
  }
  EXPECT_TRUE(ValidateModelId(std::string(128, 'x')).ok());
}

TEST(ModelIdTest, RejectsPathsAndJunk) {
  for (const char* id : {"", "../x", "..", "a/b", "/etc", ".hidden", "a..b", "sp ace", "x\\y",
                         "tab\t"}) {
    Status st = ValidateModelId(id);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << id;
    EXPECT_NE(st.message().find("expected 1-128 characters"), std::string::npos);
  }
  EXPECT_FALSE(ValidateModelId(std::string(129, 'x')).ok());
}

}  // namespace
}  // namespace lipsync
