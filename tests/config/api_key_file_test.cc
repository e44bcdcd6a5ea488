// *.api_key_file (issue 12): a credential read at load from a file (a mounted
// Kubernetes Secret) instead of an inline key in a ConfigMap.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "config/config.h"

namespace lipsync::config {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

fs::path Dir() {
  const fs::path dir = fs::path(::testing::TempDir()) / "api_key_file_test";
  fs::create_directories(dir);
  return dir;
}

fs::path Write(const std::string& name, const std::string& text) {
  const fs::path path = Dir() / name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

TEST(ApiKeyFileTest, ReadsTheKeyWithoutTrailingNewlines) {
  auto key = ReadKeyFile("inference_server.api_key_file", Write("k1", "s3cret\r\n\n").string());
  ASSERT_TRUE(key.ok()) << key.status().message();
  EXPECT_EQ(*key, "s3cret");
}

TEST(ApiKeyFileTest, MissingEmptyOrTooBigFilesAreRefusedNamingTheFile) {
  const std::string missing = (Dir() / "nosuch").string();
  auto a = ReadKeyFile("inference_server.api_key_file", missing);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(a.status().message(), HasSubstr("inference_server.api_key_file '" + missing + "'"));

  auto b = ReadKeyFile("server.api_key_file", Write("empty", "\n").string());
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(b.status().message(), HasSubstr("empty"));

  auto c = ReadKeyFile("server.api_key_file",
                       Write("big", std::string(kMaxKeyFileBytes + 1, 'k')).string());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("over 4096 bytes"));

  auto d = ReadKeyFile("server.api_key_file", Dir().string());
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(), HasSubstr("not a regular file"));
}

TEST(ApiKeyFileTest, InlineKeyAndFileAreMutuallyExclusive) {
  auto parsed = ParseCompositingConfig(
      "inference_server:\n  api_key: abc\n  api_key_file: /run/key\n", "c.yaml");
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(parsed.status().message(), HasSubstr("api_key_file"));
  EXPECT_THAT(parsed.status().message(), HasSubstr("both set"));
}

TEST(ApiKeyFileTest, LoadReadsEveryKeyFile) {
  const fs::path key = Write("inference.key", "hop-key\n");
  const fs::path own = Write("own.key", "own-key\n");
  const fs::path compositing =
      Write("compositing.yaml", "server:\n  api_key_file: " + own.string() +
                                    "\ninference_server:\n  api_key_file: " + key.string() + "\n");
  auto c = LoadCompositingConfig(compositing.string());
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->inference_server.api_key, "hop-key");
  EXPECT_EQ(c->server.api_key, "own-key");
  const fs::path inference =
      Write("inference.yaml", "server:\n  api_key_file: " + own.string() + "\n");
  auto i = LoadInferenceConfig(inference.string());
  ASSERT_TRUE(i.ok()) << i.status().message();
  EXPECT_EQ(i->server.api_key, "own-key");
  // A file that went missing fails the load, naming the key and the file.
  const fs::path broken = Write(
      "broken.yaml", "inference_server:\n  api_key_file: " + (Dir() / "gone").string() + "\n");
  auto b = LoadCompositingConfig(broken.string());
  ASSERT_FALSE(b.ok());
  EXPECT_THAT(b.status().message(), HasSubstr("inference_server.api_key_file"));
  EXPECT_THAT(b.status().message(), HasSubstr("gone"));
}

}  // namespace
}  // namespace lipsync::config
