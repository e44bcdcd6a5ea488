#include "inference/ort_runtime.h"

#include <gtest/gtest.h>

namespace lipsync::inference {
namespace {

TEST(OrtRuntimeTest, LoadsBundledLibraryAndReportsCpuProvider) {
  auto rt = OrtRuntime::Initialize();
  ASSERT_TRUE(rt.ok()) << rt.status().ToString();
  EXPECT_FALSE((*rt)->version().empty());
  EXPECT_TRUE((*rt)->HasProvider("CPUExecutionProvider")) << (*rt)->ProvidersString();
  EXPECT_EQ(OrtRuntime::Get(), *rt);
}

}  // namespace
}  // namespace lipsync::inference
