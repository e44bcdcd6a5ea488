#include "common/status.h"

#include <gtest/gtest.h>

namespace lipsync {
namespace {

Expected<int> Half(int x) {
  if (x % 2) return Status::InvalidArgument("odd");
  return x / 2;
}

Status Quarter(int x, int* out) {
  LIPSYNC_ASSIGN_OR_RETURN(int h, Half(x));
  LIPSYNC_ASSIGN_OR_RETURN(int q, Half(h));
  *out = q;
  return Status::Ok();
}

TEST(StatusTest, ExpectedCarriesValueOrError) {
  int out = 0;
  EXPECT_TRUE(Quarter(8, &out).ok());
  EXPECT_EQ(out, 2);
  Status st = Quarter(6, &out);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(st.ToString(), "INVALID_ARGUMENT: odd");
  EXPECT_EQ(st.WithContext("quarter").message(), "quarter: odd");
}

}  // namespace
}  // namespace lipsync
