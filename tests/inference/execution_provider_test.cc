// The CUDA path on a machine without a usable GPU: cuda requested ends in a clear
// error (require_cuda) or the logged CPU fallback, naming the missing library and
// where it looked. The runtime is the bundled core loaded through a symlink in a
// temporary directory, so the test decides whether the CUDA provider library lies
// "beside the core" (an empty stand-in file: it is never loaded, the checks before
// it stop first on a machine without the CUDA libraries).
#include "inference/execution_provider.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "inference/ort_runtime.h"

namespace lipsync::inference {
namespace {

namespace fs = std::filesystem;

class ExecutionProviderTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() /
                        ("execution_provider_test_" + std::to_string(::getpid())));
    fs::create_directories(*dir_ / "core");
    fs::create_symlink(fs::canonical(LIPSYNC_DEFAULT_ORT_LIBRARY),
                       *dir_ / "core" / "libonnxruntime.so.1");
    OrtRuntimeOptions options;
    options.library_path = (*dir_ / "core" / "libonnxruntime.so.1").string();
    auto runtime = OrtRuntime::Initialize(options);
    ASSERT_TRUE(runtime.ok()) << runtime.status().ToString();
    runtime_ = *runtime;
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(*dir_, ec);
    delete dir_;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove(ProviderPath(), ec);
  }
  static fs::path ProviderPath() { return *dir_ / "core" / kCudaProviderLibrary; }
  static void PlaceProviderStandIn() { std::ofstream(ProviderPath()) << ""; }
  static std::string MakeDir(const std::string& name) {
    fs::create_directories(*dir_ / name);
    return (*dir_ / name).string();
  }

  static fs::path* dir_;
  static OrtRuntime* runtime_;
};
fs::path* ExecutionProviderTest::dir_ = nullptr;
OrtRuntime* ExecutionProviderTest::runtime_ = nullptr;

TEST_F(ExecutionProviderTest, BundledCoreHasTheCudaProviderBridge) {
  // scripts/setup.sh installs the onnxruntime-node core: CPU, and CUDA when the
  // provider library lies beside it.
  EXPECT_TRUE(runtime_->HasProvider("CUDAExecutionProvider")) << runtime_->ProvidersString();
  EXPECT_EQ(runtime_->version(), "1.29.0");
}

TEST_F(ExecutionProviderTest, MissingProviderLibraryIsNamedWithWhereItLooked) {
  if (!runtime_->HasProvider("CUDAExecutionProvider")) GTEST_SKIP() << "CPU-only core";
  ExecutionConfig config;
  config.gpu_count = 1;
  auto plan = PlanExecution(config, *runtime_);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_FALSE(plan->cuda);
  EXPECT_EQ(plan->devices, std::vector<int>{kCpuDevice});
  EXPECT_NE(plan->reason.find(kCudaProviderLibrary), std::string::npos) << plan->reason;
  EXPECT_NE(plan->reason.find((*dir_ / "core").string()), std::string::npos) << plan->reason;
  EXPECT_NE(plan->reason.find("LIPSYNC_CUDA=1"), std::string::npos) << plan->reason;

  config.require_cuda = true;
  auto required = PlanExecution(config, *runtime_);
  EXPECT_EQ(required.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(required.status().message().find(kCudaProviderLibrary), std::string::npos);
}

TEST_F(ExecutionProviderTest, NoGpuFallsBackToCpuOrFailsWhenRequired) {
  if (!runtime_->HasProvider("CUDAExecutionProvider")) GTEST_SKIP() << "CPU-only core";
  if (GpuCount() > 0) GTEST_SKIP() << "this machine has a GPU";
  PlaceProviderStandIn();
  ExecutionConfig config;  // gpus auto-detected: NVML finds none
  auto plan = PlanExecution(config, *runtime_);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_FALSE(plan->cuda);
  EXPECT_EQ(plan->provider, "CPUExecutionProvider");
  EXPECT_NE(plan->reason.find("no NVIDIA driver"), std::string::npos) << plan->reason;

  config.require_cuda = true;
  auto required = PlanExecution(config, *runtime_);
  EXPECT_EQ(required.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(required.status().message().find("require_cuda"), std::string::npos);
}

TEST_F(ExecutionProviderTest, MissingCudaLibrariesAreNamedWithTheDirectoriesSearched) {
  if (!runtime_->HasProvider("CUDAExecutionProvider")) GTEST_SKIP() << "CPU-only core";
  if (NvmlAvailable()) GTEST_SKIP() << "this machine has an NVIDIA driver";
  PlaceProviderStandIn();
  ExecutionConfig config;
  config.gpu_count = 1;  // the operator says there is a GPU: the libraries decide
  config.cuda_library_dirs = {MakeDir("wheels/nvidia/cu13/lib"),
                              MakeDir("wheels/nvidia/cudnn/lib")};
  auto plan = PlanExecution(config, *runtime_);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_FALSE(plan->cuda);
  // No driver here: libcuda.so.1 is missing, named with every place searched.
  EXPECT_NE(plan->reason.find("libcuda.so.1 (NVIDIA driver): not found in"), std::string::npos)
      << plan->reason;
  EXPECT_NE(plan->reason.find(config.cuda_library_dirs[0]), std::string::npos) << plan->reason;
  EXPECT_NE(plan->reason.find(config.cuda_library_dirs[1]), std::string::npos) << plan->reason;
  EXPECT_NE(plan->reason.find("system library path"), std::string::npos) << plan->reason;
  // Every required library is accounted for: loaded (a CUDA toolkit may be installed
  // without a driver) or named as missing.
  CudaLibraryReport report = LoadCudaLibraries(config.cuda_library_dirs);
  for (const char* lib : {"libcuda.so.1", "libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13",
                          "libcurand.so.10", "libcudnn.so.9"}) {
    bool seen = false;
    for (const auto& line : report.loaded) seen = seen || line.rfind(lib, 0) == 0;
    for (const auto& line : report.missing) seen = seen || line.rfind(lib, 0) == 0;
    EXPECT_TRUE(seen) << lib << " neither loaded nor missing: " << report.Describe();
  }

  config.require_cuda = true;
  auto required = PlanExecution(config, *runtime_);
  EXPECT_EQ(required.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(required.status().message().find("libcuda.so.1"), std::string::npos);
}

TEST_F(ExecutionProviderTest, ABrokenLibraryFileIsReportedNotSkipped) {
  const std::string dir = MakeDir("broken");
  std::ofstream(fs::path(dir) / "libcudart.so.13") << "not an ELF file";
  CudaLibraryReport report = LoadCudaLibraries({dir});
  bool named = false;
  for (const auto& line : report.missing) {
    if (line.rfind("libcudart.so.13", 0) == 0) {
      named = true;
      EXPECT_NE(line.find(dir + "/libcudart.so.13 exists but does not load"), std::string::npos)
          << line;
    }
  }
  EXPECT_TRUE(named) << report.Describe();
  EXPECT_FALSE(report.ok());
}

TEST_F(ExecutionProviderTest, CudaProviderOptionsNeedAGpuNotACrash) {
  // Appending the provider with no provider library beside the core: an error value.
  Ort::SessionOptions options = runtime_->MakeSessionOptions();
  Status st = AppendCudaProvider(options, 0);
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_FALSE(st.message().empty());
}

}  // namespace
}  // namespace lipsync::inference
