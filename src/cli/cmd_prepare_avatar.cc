// `lipsync prepare-avatar --config compositing.yaml [ID ...]`: writes the prepared
// avatar files (avatar/prepared_store.h) the compositing server would otherwise build
// on first load.
#include <cstdio>

#include "avatar/avatar_registry.h"
#include "avatar/prepared_store.h"
#include "cli/command.h"
#include "common/flags.h"
#include "config/config.h"

namespace {

constexpr char kUsage[] =
    "usage: lipsync prepare-avatar --config compositing.yaml [--store-dir DIR] [ID ...]\n"
    "Writes each avatar's prepared file (every avatar the config knows when no ID is\n"
    "given) into server.avatar_store_dir, or DIR. A current file is kept; a stale or\n"
    "corrupt one is rebuilt. Safe to run while the server runs.\n";

int Fail(const std::string& message) {
  std::fprintf(stderr, "prepare-avatar: %s\n%s", message.c_str(), kUsage);
  return 2;
}

}  // namespace

static int RunPrepareAvatar(int argc, char** argv) {
  auto flags = lipsync::Flags::Parse(argc, argv, {"config", "store-dir"}, {"help"});
  if (!flags.ok()) return Fail(flags.status().message());
  if (flags->Has("help")) {
    std::printf("%s", kUsage);
    return 0;
  }
  if (flags->GetString("config").empty()) return Fail("--config FILE is required");
  auto config = lipsync::config::LoadCompositingConfig(flags->GetString("config"));
  if (!config.ok()) return Fail(config.status().ToString());
  auto options = lipsync::avatar::AvatarRegistryOptions::FromConfig(*config);
  if (flags->Has("store-dir")) options.avatar_store_dir = flags->GetString("store-dir");
  if (options.avatar_store_dir.empty()) {
    return Fail("server.avatar_store_dir is \"off\"; give --store-dir DIR");
  }
  options.start_sweeper = false;
  lipsync::avatar::AvatarRegistry registry(options);
  std::vector<std::string> ids = flags->positional();
  const bool every = ids.empty();
  if (every) ids = registry.KnownIds();
  int failed = 0;
  for (const std::string& id : ids) {
    auto source = registry.SourceFor(id);
    if (!source && every) continue;  // a model_root directory without frames/
    if (!source) {
      std::fprintf(stderr, "%s: no such avatar in the config's models or model_root\n", id.c_str());
      ++failed;
      continue;
    }
    auto result = lipsync::avatar::PrepareAvatar(*source);
    if (!result.ok()) {
      std::fprintf(stderr, "%s: %s\n", id.c_str(), result.status().ToString().c_str());
      ++failed;
      continue;
    }
    std::printf("%s: %s %s, %.1f MB, %.0f ms\n", id.c_str(), result->path.c_str(),
                result->built ? "built" : "already current", result->file_bytes / 1e6, result->ms);
    std::fflush(stdout);
  }
  return failed == 0 ? 0 : 1;
}

LIPSYNC_COMMAND("prepare-avatar", "write prepared avatar files (fast cold loads)",
                RunPrepareAvatar);
