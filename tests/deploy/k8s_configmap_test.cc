// The config files shipped in deploy/k8s/configmaps.yaml are accepted by the servers'
// own loader (a ConfigMap the server rejects would crash-loop every pod).
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <string>

#include "config/config.h"

namespace lipsync::config {
namespace {

TEST(K8sConfigMapTest, ShippedConfigsParse) {
  const std::string path = std::string(LIPSYNC_SOURCE_DIR) + "/deploy/k8s/configmaps.yaml";
  std::vector<YAML::Node> docs = YAML::LoadAllFromFile(path);
  int checked = 0;
  for (const YAML::Node& doc : docs) {
    if (!doc["kind"] || doc["kind"].as<std::string>() != "ConfigMap") continue;
    const YAML::Node data = doc["data"];
    if (data["inference.yaml"]) {
      auto parsed =
          ParseInferenceConfig(data["inference.yaml"].as<std::string>(), "inference.yaml");
      ASSERT_TRUE(parsed.ok()) << parsed.status().message();
      EXPECT_EQ(parsed->gpus.count, 1);  // one GPU per pod
      EXPECT_TRUE(parsed->onnx.require_cuda);
      ++checked;
    }
    if (data["compositing.yaml"]) {
      auto parsed =
          ParseCompositingConfig(data["compositing.yaml"].as<std::string>(), "compositing.yaml");
      ASSERT_TRUE(parsed.ok()) << parsed.status().message();
      EXPECT_TRUE(parsed->logging.log_cache_stats);
      ++checked;
    }
  }
  EXPECT_EQ(checked, 2) << "expected the inference and the compositing config in " << path;
}

}  // namespace
}  // namespace lipsync::config
