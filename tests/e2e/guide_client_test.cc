// The deployment guide's Python client example (tests/e2e/guide_client.py: the guide's
// code with only the model id changed), run with Debian's python3-grpcio and stubs
// generated from OUR compositing.proto, against our compositing server: it must get
// its 24 frames (JPEGs of the avatar's size). The script's 'localhost:50052' is pointed
// at the test server's port when the script is copied to a temp dir.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "e2e/e2e_cluster.h"
#include "image/image.h"

namespace lipsync::e2e {
namespace {

TEST(GuideClientTest, PythonExampleGetsItsFrames) {
  if (std::system("/usr/bin/python3 -c 'import grpc, numpy' >/dev/null 2>&1") != 0 ||
      access("/usr/bin/grpc_python_plugin", X_OK) != 0) {
    GTEST_SKIP() << "needs /usr/bin/python3 with grpcio + numpy and grpc_python_plugin";
  }
  Cluster cluster(Mode::kSplit);
  ASSERT_TRUE(cluster.ok());
  const fs::path dir = ModelRoot() / "guide_client";
  fs::create_directories(dir);
  const std::string proto_dir = std::string(LIPSYNC_SOURCE_DIR) + "/proto";
  const std::string protoc = "protoc -I " + proto_dir + " --python_out=" + dir.string() +
                             " --grpc_python_out=" + dir.string() +
                             " --plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin " +
                             proto_dir + "/compositing.proto " + proto_dir +
                             "/model_management.proto";
  ASSERT_EQ(std::system(protoc.c_str()), 0) << protoc;

  std::stringstream script;
  script << std::ifstream(std::string(LIPSYNC_SOURCE_DIR) + "/tests/e2e/guide_client.py").rdbuf();
  std::string text = script.str();
  const std::string address = "'localhost:50052'";
  const size_t at = text.find(address);
  ASSERT_NE(at, std::string::npos);
  text.replace(at, address.size(),
               "'localhost:" + std::to_string(cluster.compositing_port()) + "'");
  std::ofstream(dir / "guide_client.py") << text;

  const std::string run =
      "cd " + dir.string() + " && /usr/bin/python3 guide_client.py > guide_client.out 2>&1";
  const int rc = std::system(run.c_str());
  std::stringstream out;
  out << std::ifstream(dir / "guide_client.out").rdbuf();
  ASSERT_EQ(rc, 0) << out.str();
  EXPECT_NE(out.str().find("Received 24 frames"), std::string::npos) << out.str();
  for (int i = 0; i < 24; ++i) {
    auto frame = image::ReadImageFile((dir / ("output_" + std::to_string(i) + ".jpg")).string());
    ASSERT_TRUE(frame.ok()) << frame.status().ToString();
    EXPECT_EQ(frame->width, kWidth);
    EXPECT_EQ(frame->height, kHeight);
  }
}

}  // namespace
}  // namespace lipsync::e2e
