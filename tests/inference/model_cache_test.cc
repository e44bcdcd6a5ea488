// The optimized-graph cache: miss then hit with identical outputs, keys (content,
// provider, hard links), corrupt / truncated / foreign entries reported and rebuilt,
// an unusable cache folder, and the config key reaching the registry.
#include "inference/model_cache.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "config/config.h"
#include "inference/model_registry.h"
#include "inference/onnx_model.h"
#include "inference/ort_runtime.h"
#include "inference/test_models.h"

namespace lipsync::inference {
namespace {

namespace fs = std::filesystem;

constexpr int kSize = 16;
constexpr const char* kCpu = "CPUExecutionProvider";

class ModelCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(OrtRuntime::Initialize().ok());
    dir_ = fs::temp_directory_path() /
           ("model_cache_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
    model_ = (dir_ / "model.onnx").string();
    ASSERT_TRUE(testing::WriteScaledModel(model_, kSize, 0.5f).ok());
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // Output of one frame whose visual input is all 0.8.
  static std::string RunOnce(const OnnxModel& model) {
    std::vector<float> visual(6 * kSize * kSize, 0.8f), audio(8192, 0.f);
    std::string out;
    Status st = model.Run(1, visual.data(), audio.data(), OutputFormat::kFloat32, &out);
    EXPECT_TRUE(st.ok()) << st.ToString();
    return out;
  }

  std::string EntryFile(ModelCache& cache) {
    auto key = cache.KeyFor(model_, label_);
    EXPECT_TRUE(key.ok()) << key.status().ToString();
    return key.ok() ? cache.EntryPath(*key) : "";
  }

  // Loads through `cache` and checks the output against the uncached model's.
  void LoadAndCompare(ModelCache& cache) {
    auto plain = OnnxModel::Load({model_, ""}, -1);
    auto cached = OnnxModel::Load({model_, ""}, -1, &cache);
    ASSERT_TRUE(plain.ok()) << plain.status().ToString();
    ASSERT_TRUE(cached.ok()) << cached.status().ToString();
    // The entry's provider label, as OnnxModel::Load keys it (wrapped for uint8 I/O or not).
    label_ = std::string(kCpu) + ((*cached)->uint8_io() ? " uint8-io" : "");
    EXPECT_EQ(RunOnce(**cached), RunOnce(**plain));
    float first;
    const std::string out = RunOnce(**cached);
    std::memcpy(&first, out.data(), 4);
    EXPECT_FLOAT_EQ(first, 0.4f);
  }

  fs::path dir_;
  std::string model_;
  std::string label_ = kCpu;
};

TEST_F(ModelCacheTest, FirstLoadWritesTheEntryAndTheNextLoadUsesIt) {
  ModelCache cache((dir_ / "cache").string());
  LoadAndCompare(cache);
  EXPECT_EQ(cache.writes(), 1);
  EXPECT_EQ(cache.hits(), 0);
  const std::string entry = EntryFile(cache);
  ASSERT_TRUE(fs::is_regular_file(entry));
  LoadAndCompare(cache);
  EXPECT_EQ(cache.hits(), 1);
  EXPECT_EQ(cache.writes(), 1);
  EXPECT_EQ(cache.corrupt(), 0);
  // Only finished entries are left in the folder (no temp files).
  int files = 0;
  for (const auto& f : fs::directory_iterator(dir_ / "cache")) {
    ++files;
    EXPECT_EQ(f.path().extension(), ".lsoc") << f.path();
  }
  EXPECT_EQ(files, 1);
}

TEST_F(ModelCacheTest, KeyFollowsContentAndProviderNotPath) {
  ModelCache cache((dir_ / "cache").string());
  const std::string link = (dir_ / "linked.onnx").string();
  const std::string copy = (dir_ / "copy.onnx").string();
  const std::string other = (dir_ / "other.onnx").string();
  fs::create_hard_link(model_, link);
  fs::copy_file(model_, copy);
  ASSERT_TRUE(testing::WriteScaledModel(other, kSize, 0.25f).ok());
  auto key = cache.KeyFor(model_, kCpu);
  ASSERT_TRUE(key.ok());
  EXPECT_EQ(key->size(), 64u);
  EXPECT_EQ(*cache.KeyFor(link, kCpu), *key);
  EXPECT_EQ(*cache.KeyFor(copy, kCpu), *key);
  EXPECT_NE(*cache.KeyFor(other, kCpu), *key);
  EXPECT_NE(*cache.KeyFor(model_, "CUDAExecutionProvider NVIDIA H200"), *key);
  EXPECT_FALSE(ModelCache::CpuFeatures().empty());
  EXPECT_EQ(cache.KeyFor((dir_ / "missing.onnx").string(), kCpu).status().code(),
            StatusCode::kNotFound);
}

TEST_F(ModelCacheTest, CorruptTruncatedAndForeignEntriesAreRebuilt) {
  ModelCache cache((dir_ / "cache").string());
  LoadAndCompare(cache);
  const std::string entry = EntryFile(cache);
  const auto size = fs::file_size(entry);
  ASSERT_GT(size, 100u);

  // One payload byte flipped: the checksum fails.
  {
    std::fstream f(entry, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(size - 10));
    char c = 0;
    f.read(&c, 1);
    f.seekp(static_cast<std::streamoff>(size - 10));
    c = static_cast<char>(c ^ 0x5a);
    f.write(&c, 1);
  }
  LoadAndCompare(cache);
  EXPECT_EQ(cache.corrupt(), 1);
  EXPECT_EQ(cache.writes(), 2);
  EXPECT_EQ(fs::file_size(entry), size);

  // Truncated: the size disagrees with the header (checked before mapping).
  fs::resize_file(entry, size / 2);
  LoadAndCompare(cache);
  EXPECT_EQ(cache.corrupt(), 2);
  EXPECT_EQ(cache.writes(), 3);

  // Shorter than a header, and a foreign file of the right name.
  fs::resize_file(entry, 5);
  LoadAndCompare(cache);
  EXPECT_EQ(cache.corrupt(), 3);
  {
    std::ofstream f(entry, std::ios::binary | std::ios::trunc);
    f << std::string(size, 'x');
  }
  LoadAndCompare(cache);
  EXPECT_EQ(cache.corrupt(), 4);
  EXPECT_EQ(cache.writes(), 5);
  EXPECT_EQ(fs::file_size(entry), size);
  auto read = cache.Read(*cache.KeyFor(model_, label_));
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(read->size() + 24, size);
}

TEST_F(ModelCacheTest, ReadReportsTheBadFileByPathAndRemovesIt) {
  ModelCache cache((dir_ / "cache").string());
  fs::create_directories(dir_ / "cache");
  const std::string key(64, 'a');
  EXPECT_EQ(cache.Read(key).status().code(), StatusCode::kNotFound);
  {
    std::ofstream f(cache.EntryPath(key), std::ios::binary);
    f << "LSOPTv2";
    f.put('\0');
    const char huge[8] = {0, 0, 0, 0, 0, 0, 0, 0x7f};  // a payload size far past the file
    f.write(huge, 8);
    f << std::string(8, '\0');
  }
  auto read = cache.Read(key);
  EXPECT_EQ(read.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(read.status().message().find(cache.EntryPath(key)), std::string::npos);
  EXPECT_NE(read.status().message().find("truncated"), std::string::npos);
  EXPECT_FALSE(fs::exists(cache.EntryPath(key)));
}

TEST_F(ModelCacheTest, UnusableCacheFolderStillLoadsTheModel) {
  const fs::path blocked = dir_ / "not_a_dir";
  { std::ofstream(blocked) << "a file where the cache folder should be"; }
  ModelCache cache((blocked / "cache").string());
  LoadAndCompare(cache);
  EXPECT_EQ(cache.writes(), 0);
}

TEST_F(ModelCacheTest, ConfigKeyGivesTheRegistryACache) {
  auto config = config::ParseInferenceConfig("model_cache_dir: " + (dir_ / "cache").string() + "\n",
                                             "inline");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->model_cache_dir, (dir_ / "cache").string());
  RegistryOptions o = RegistryOptionsFromConfig(*config, {-1});
  ASSERT_NE(o.cache, nullptr);
  EXPECT_EQ(o.cache->dir(), (dir_ / "cache").string());
  o.configured["m"] = ModelFiles{model_, ""};
  ModelRegistry registry(o);
  ASSERT_TRUE(registry.Load("m", false).ok());
  ASSERT_TRUE(registry.Unload("m").ok());
  ASSERT_TRUE(registry.Load("m", false).ok());
  EXPECT_EQ(o.cache->writes(), 1);
  EXPECT_EQ(o.cache->hits(), 1);
  EXPECT_EQ(RegistryOptionsFromConfig(config::InferenceConfig{}, {-1}).cache, nullptr);
}

// Writes a raw "optimized model" of `bytes` bytes and commits it as `key`.
Status CommitBytes(ModelCache& cache, const std::string& key, size_t bytes) {
  auto raw = cache.TempPath();
  if (!raw.ok()) return raw.status();
  { std::ofstream(*raw, std::ios::binary) << std::string(bytes, 'x'); }
  return cache.Commit(key, *raw);
}

// Sets the entry's last use (mtime) to `seconds` after the epoch.
void SetUsed(ModelCache& cache, const std::string& key, int64_t seconds) {
  fs::last_write_time(
      cache.EntryPath(key),
      fs::file_time_type::clock::from_sys(std::chrono::sys_seconds{std::chrono::seconds{seconds}}));
}

TEST_F(ModelCacheTest, SizeCapEvictsLeastRecentlyUsedEntries) {
  // Room for two 1000-byte entries (each 24 header bytes more), not three.
  ModelCache cache((dir_ / "capped").string(), 0, 2100);
  ASSERT_TRUE(CommitBytes(cache, "a", 1000).ok());
  ASSERT_TRUE(CommitBytes(cache, "b", 1000).ok());
  EXPECT_EQ(cache.evictions(), 0);
  SetUsed(cache, "a", 1000);
  SetUsed(cache, "b", 2000);
  ASSERT_TRUE(cache.Read("a").ok());  // a hit marks "a" used now: "b" is the oldest
  ASSERT_TRUE(CommitBytes(cache, "c", 1000).ok());
  EXPECT_EQ(cache.evictions(), 1);
  EXPECT_TRUE(fs::exists(cache.EntryPath("a")));
  EXPECT_FALSE(fs::exists(cache.EntryPath("b")));
  EXPECT_TRUE(fs::exists(cache.EntryPath("c")));
  EXPECT_EQ(cache.Read("b").status().code(), StatusCode::kNotFound);  // a miss: rebuilt

  // An entry larger than the cap on its own is kept (the one just written); the rest go.
  ASSERT_TRUE(CommitBytes(cache, "big", 3000).ok());
  EXPECT_TRUE(fs::exists(cache.EntryPath("big")));
  EXPECT_FALSE(fs::exists(cache.EntryPath("a")));
  EXPECT_FALSE(fs::exists(cache.EntryPath("c")));
  EXPECT_EQ(cache.evictions(), 3);

  // Without a cap nothing is removed.
  ModelCache uncapped((dir_ / "uncapped").string());
  for (const char* key : {"a", "b", "c"}) ASSERT_TRUE(CommitBytes(uncapped, key, 1000).ok());
  EXPECT_EQ(uncapped.Trim(), 0);
  EXPECT_EQ(uncapped.evictions(), 0);
}

TEST_F(ModelCacheTest, CapConfigKeyReachesTheCache) {
  auto config = config::ParseInferenceConfig(
      "model_cache_dir: " + (dir_ / "cache").string() + "\nmodel_cache_max_mb: 1\n", "inline");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->model_cache_max_mb, 1);
  EXPECT_EQ(config::InferenceConfig{}.model_cache_max_mb, 10240);
  RegistryOptions o = RegistryOptionsFromConfig(*config, {-1});
  ASSERT_NE(o.cache, nullptr);
  ASSERT_TRUE(CommitBytes(*o.cache, "a", 600 * 1024).ok());
  ASSERT_TRUE(CommitBytes(*o.cache, "b", 600 * 1024).ok());  // 1.2 MB > 1 MiB
  EXPECT_EQ(o.cache->evictions(), 1);
  EXPECT_FALSE(fs::exists(o.cache->EntryPath("a")));
  auto negative = config::ParseInferenceConfig("model_cache_max_mb: -1\n", "inline");
  EXPECT_FALSE(negative.ok());
}

}  // namespace
}  // namespace lipsync::inference
