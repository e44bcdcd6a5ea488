#include "demo/make_demo.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <set>

#include "image/image.h"
#include "modelgen/model_builder.h"

namespace lipsync::demo {
namespace {

namespace fs = std::filesystem;

// Bump when the generated frames or models change, so old outputs are not reused.
constexpr int kGeneratorVersion = 1;
constexpr char kManifestName[] = ".make-demo.json";

std::string Manifest(const std::string& tenant, const AvatarSpec& spec) {
  std::string text = "{\"generator\": " + std::to_string(kGeneratorVersion) + ", \"tenant\": \"" +
                     tenant + "\", \"width\": " + std::to_string(spec.width) +
                     ", \"height\": " + std::to_string(spec.height) +
                     ", \"frames\": " + std::to_string(spec.frames) +
                     ", \"seed\": " + std::to_string(spec.seed);
  if (tenant == "bench") text += ", \"bench_model_seed\": " + std::to_string(kBenchModelSeed);
  if (spec.burn_index) text += ", \"burn_index\": true";
  return text + "}\n";
}

bool UpToDate(const std::string& dir, const std::string& manifest, int frames) {
  auto recorded = image::ReadFileBytes(dir + "/" + kManifestName);
  if (!recorded.ok() || *recorded != manifest) return false;
  std::error_code ec;
  for (const char* file :
       {"crop_rects.json", "checkpoint/model_best.onnx", "checkpoint/audio_encoder.onnx"}) {
    if (!fs::exists(dir + "/" + file, ec)) return false;
  }
  char name[48];
  for (int i = 0; i < frames; ++i) {
    std::snprintf(name, sizeof name, "/frames/frame_%04d.png", i);
    if (fs::file_size(dir + name, ec) == 0 || ec) return false;
  }
  return true;
}

Status WriteModels(const std::string& tenant, const std::string& dir) {
  const std::string checkpoint = dir + "/checkpoint";
  std::error_code ec;
  fs::create_directories(checkpoint, ec);
  if (ec) {
    return Status::FailedPrecondition("cannot create '" + checkpoint + "': " + ec.message() +
                                      " (expected a writable output directory)");
  }
  const std::string model = checkpoint + "/model_best.onnx";
  if (tenant == "demo") {
    LIPSYNC_RETURN_IF_ERROR(modelgen::WriteDemoLipSyncModel(model));
  } else if (tenant == "bench") {
    LIPSYNC_RETURN_IF_ERROR(modelgen::WriteBenchModel(model, kBenchModelSeed));
  } else {
    LIPSYNC_RETURN_IF_ERROR(modelgen::WriteIdentityModel(model));
  }
  return modelgen::WriteAudioEncoderModel(checkpoint + "/audio_encoder.onnx");
}

Status CheckOptions(const MakeDemoOptions& options) {
  if (options.out_dir.empty()) {
    return Status::InvalidArgument("make-demo needs an output directory (--out DIR)");
  }
  if (options.tenants.empty()) {
    return Status::InvalidArgument(
        "make-demo: no tenant selected (expected some of demo, bench, "
        "identity)");
  }
  std::set<std::string> seen;
  for (const auto& tenant : options.tenants) {
    if (std::find(std::begin(kTenantNames), std::end(kTenantNames), tenant) ==
        std::end(kTenantNames)) {
      return Status::InvalidArgument("make-demo: unknown tenant '" + tenant +
                                     "' (expected demo, bench or identity)");
    }
    if (!seen.insert(tenant).second) {
      return Status::InvalidArgument("make-demo: tenant '" + tenant + "' given twice");
    }
  }
  return ValidateAvatarSpec(options.avatar);
}

}  // namespace

Status MakeDemo(const MakeDemoOptions& options) {
  LIPSYNC_RETURN_IF_ERROR(CheckOptions(options));
  auto report = [&](const std::string& stage, int done, int total) {
    if (options.progress) options.progress(stage, done, total);
  };
  const AvatarSpec& spec = options.avatar;
  std::string frames_source;  // the tenant whose frames the others link to
  for (const char* tenant : kTenantNames) {
    if (std::find(options.tenants.begin(), options.tenants.end(), tenant) ==
        options.tenants.end()) {
      continue;
    }
    const std::string dir = options.out_dir + "/" + tenant;
    const std::string manifest = Manifest(tenant, spec);
    if (!options.force && UpToDate(dir, manifest, spec.frames)) {
      report(std::string(tenant) + ": up to date", 1, 1);
      if (frames_source.empty()) frames_source = dir;
      continue;
    }
    std::error_code ec;
    fs::create_directories(dir, ec);
    fs::remove(dir + "/" + kManifestName, ec);  // an interrupted run is redone next time
    if (frames_source.empty()) {
      LIPSYNC_RETURN_IF_ERROR(GenerateAvatarFrames(
          spec, dir,
          [&](const std::string& stage, int done, int total) {
            report(std::string(tenant) + ": " + stage, done, total);
          },
          options.threads));
      frames_source = dir;
    } else {
      LIPSYNC_RETURN_IF_ERROR(LinkAvatarFrames(frames_source, dir, spec.frames));
      LIPSYNC_RETURN_IF_ERROR(image::WriteFileBytes(dir + "/crop_rects.json", CropRectsJson(spec)));
      report(std::string(tenant) + ": linked frames", spec.frames, spec.frames);
    }
    report(std::string(tenant) + ": models", 0, 2);
    LIPSYNC_RETURN_IF_ERROR(WriteModels(tenant, dir));
    report(std::string(tenant) + ": models", 2, 2);
    LIPSYNC_RETURN_IF_ERROR(image::WriteFileBytes(dir + "/" + kManifestName, manifest));
  }
  return Status::Ok();
}

}  // namespace lipsync::demo
