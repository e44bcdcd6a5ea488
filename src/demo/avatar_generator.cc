#include "demo/avatar_generator.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <thread>

#include "common/thread_pool.h"
#include "demo/raster.h"
#include "modelgen/model_builder.h"

namespace lipsync::demo {
namespace {

namespace fs = std::filesystem;

constexpr float kPi = 3.14159265358979f;
// SyncTalk_2D's ROI: the crop is resized to 328x328 and [4:324, 4:324] is the ROI.
constexpr float kResized = 328.f;
constexpr float kRoiOffset = 4.f;
// Crop side in head half-heights: nose-to-chin plus margins, like SyncTalk_2D's crops.
constexpr float kCropPerHead = 2.1f;
constexpr float kMouthBelowHeadCentre = 0.52f;  // in head half-heights

// Seeded choices that stay fixed across the frames of one avatar.
struct Look {
  Rgb skin, hair, shirt, wall_top, wall_bottom, floor;
  float phase_x, phase_y, phase_scale, offset_x;
};

float Pick(uint64_t seed, int salt) { return Hash01(seed, salt, 0x5eed); }

Rgb PickColor(uint64_t seed, int salt, const std::vector<Rgb>& palette) {
  const size_t i = std::min(palette.size() - 1, size_t(Pick(seed, salt) * palette.size()));
  return palette[i];
}

Look MakeLook(uint64_t seed) {
  Look look;
  look.skin =
      PickColor(seed, 1, {{224, 172, 140}, {198, 140, 104}, {150, 98, 66}, {236, 192, 164}});
  look.hair = PickColor(seed, 2, {{58, 40, 30}, {34, 28, 26}, {112, 62, 36}, {150, 120, 80}});
  look.shirt = PickColor(seed, 3, {{40, 70, 120}, {120, 40, 50}, {50, 100, 70}, {90, 90, 96}});
  const float warm = Pick(seed, 4);
  look.wall_top = Mix({190, 200, 214}, {222, 204, 178}, warm);
  look.wall_bottom = Scale(look.wall_top, 0.72f);
  look.floor = Mix({120, 86, 60}, {96, 96, 104}, Pick(seed, 5));
  look.phase_x = Pick(seed, 6) * 2 * kPi;
  look.phase_y = Pick(seed, 7) * 2 * kPi;
  look.phase_scale = Pick(seed, 8) * 2 * kPi;
  look.offset_x = (Pick(seed, 9) - 0.5f) * 0.06f;
  return look;
}

float HeadHalfHeight(const AvatarSpec& spec) {
  return std::min(0.16f * spec.height, 0.12f * spec.width);
}

uint8_t Clamp255(float v) { return static_cast<uint8_t>(std::clamp(v, 0.f, 255.f) + 0.5f); }

// The room: gradient wall with plaster texture, a window, pictures, a shelf, a floor.
image::Image RenderBackground(const AvatarSpec& spec, const Look& look) {
  const int w = spec.width, h = spec.height;
  const float unit = w / 1280.f;
  const uint64_t seed = spec.seed;
  image::Image img(w, h, 3);
  const int floor_y = int(0.8f * h);
  for (int y = 0; y < h; ++y) {
    uint8_t* row = img.row(y);
    const Rgb base = y < floor_y ? Mix(look.wall_top, look.wall_bottom, float(y) / floor_y)
                                 : Scale(look.floor, 1.f - 0.25f * (y - floor_y) / (h - floor_y));
    for (int x = 0; x < w; ++x) {
      float texture = 26.f * (ValueNoise(seed + 11, x, y, 170 * unit) - 0.5f) +
                      14.f * (ValueNoise(seed + 12, x, y, 48 * unit) - 0.5f) +
                      9.f * (ValueNoise(seed + 13, x, y, 12 * unit) - 0.5f) +
                      6.f * (ValueNoise(seed + 14, x, y, 3 * unit) - 0.5f);
      if (y >= floor_y) texture += 10.f * (ValueNoise(seed + 15, x, y * 8.f, 40 * unit) - 0.5f);
      row[3 * x + 0] = Clamp255(base.r + texture);
      row[3 * x + 1] = Clamp255(base.g + texture * 0.95f);
      row[3 * x + 2] = Clamp255(base.b + texture * 0.9f);
    }
  }
  // Floor boards.
  for (int i = 1; i < 8; ++i) {
    const float x = (i * 180 + Pick(seed, 40 + i) * 60) * unit;
    FillRect(img, x, floor_y, x + 2 * unit, h, Scale(look.floor, 0.6f), 0.6f);
  }
  // A window on one side, with its frame and bars.
  const bool window_left = Pick(seed, 20) < 0.5f;
  const float wx0 = (window_left ? 70 : 900) * unit, wy0 = 80 * unit;
  const float wx1 = wx0 + 300 * unit, wy1 = wy0 + 330 * unit;
  FillRect(img, wx0 - 10 * unit, wy0 - 10 * unit, wx1 + 10 * unit, wy1 + 10 * unit,
           {240, 240, 236});
  for (int y = int(wy0); y < int(wy1) && y < h; ++y) {
    for (int x = int(wx0); x < int(wx1) && x < w; ++x) {
      const float sky = float(y - wy0) / (wy1 - wy0);
      const float cloud = ValueNoise(seed + 30, x, y * 2.f, 40 * unit);
      Rgb c = Mix({120, 170, 230}, {200, 220, 240}, sky);
      c = Mix(c, {250, 250, 252}, std::clamp((cloud - 0.55f) * 3.f, 0.f, 1.f));
      BlendPixel(img, x, y, c, 1.f);
    }
  }
  FillRect(img, (wx0 + wx1) / 2 - 5 * unit, wy0, (wx0 + wx1) / 2 + 5 * unit, wy1, {235, 235, 230});
  FillRect(img, wx0, (wy0 + wy1) / 2 - 5 * unit, wx1, (wy0 + wy1) / 2 + 5 * unit, {235, 235, 230});
  // Pictures and a bookshelf on the other side.
  const float side = window_left ? 880 * unit : 80 * unit;
  for (int i = 0; i < 2; ++i) {
    const float px = side + i * 170 * unit, py = (90 + 40 * i) * unit;
    FillRect(img, px, py, px + 130 * unit, py + 100 * unit, {60, 45, 35});
    for (int k = 0; k < 6; ++k) {
      const Rgb c = {80 + 170 * Pick(seed, 50 + 10 * i + k), 80 + 170 * Pick(seed, 60 + k + i),
                     80 + 170 * Pick(seed, 70 + k - i)};
      FillEllipse(img, px + (20 + 90 * Pick(seed, 80 + k + 7 * i)) * unit,
                  py + (20 + 60 * Pick(seed, 90 + k + 7 * i)) * unit, 28 * unit, 20 * unit, c, 0.8f,
                  0.4f);
    }
  }
  const float shelf_y = 420 * unit;
  FillRect(img, side - 20 * unit, shelf_y, side + 330 * unit, shelf_y + 12 * unit, {110, 80, 55});
  float bx = side;
  for (int k = 0; bx < side + 300 * unit; ++k) {
    const float bw = (14 + 16 * Pick(seed, 100 + k)) * unit;
    const float bh = (60 + 50 * Pick(seed, 200 + k)) * unit;
    const Rgb c = {40 + 180 * Pick(seed, 300 + k), 40 + 150 * Pick(seed, 400 + k),
                   40 + 150 * Pick(seed, 500 + k)};
    FillRect(img, bx, shelf_y - bh, bx + bw - 2 * unit, shelf_y, c);
    bx += bw;
  }
  // A plant on the floor.
  const float plant_x = window_left ? 1150 * unit : 150 * unit;
  FillRect(img, plant_x - 40 * unit, 560 * unit, plant_x + 40 * unit, 650 * unit, {150, 80, 50});
  for (int k = 0; k < 14; ++k) {
    const float lx = plant_x + (Pick(seed, 600 + k) - 0.5f) * 150 * unit;
    const float ly = (430 + 130 * Pick(seed, 700 + k)) * unit;
    FillEllipse(img, lx, ly, 30 * unit, 14 * unit, {50, 110 + 60 * Pick(seed, 800 + k), 50}, 0.9f,
                0.6f);
  }
  return img;
}

void DrawSubject(image::Image& img, const FacePose& pose, const Look& look) {
  const float cx = pose.head_cx, cy = pose.head_cy, h = pose.head_ry;
  const Rgb skin = look.skin;
  // Torso and neck first: the head covers their tops.
  FillEllipse(img, cx, cy + 2.25f * h, 2.3f * h, 1.15f * h, look.shirt, 1.f, 0.6f);
  FillRect(img, cx - 0.33f * h, cy + 0.55f * h, cx + 0.33f * h, cy + 1.3f * h, Scale(skin, 0.86f));
  FillEllipse(img, cx, cy + 1.3f * h, 0.45f * h, 0.16f * h, Scale(skin, 0.86f));
  FillEllipse(img, cx, cy + 0.95f * h, 0.42f * h, 0.16f * h, Scale(skin, 0.7f), 0.45f);
  FillEllipse(img, cx, cy - 0.12f * h, 0.86f * h, 1.0f * h, look.hair, 1.f, 0.4f);
  for (float side : {-1.f, 1.f}) {
    FillEllipse(img, cx + side * 0.77f * h, cy - 0.02f * h, 0.1f * h, 0.17f * h, Scale(skin, 0.92f),
                1.f, 0.3f);
  }
  FillEllipse(img, cx, cy, 0.78f * h, h, skin, 1.f, 0.5f);
  FillEllipse(img, cx - 0.05f * h, cy - 0.8f * h, 0.8f * h, 0.42f * h, look.hair, 1.f, 0.3f,
              cy - 0.5f * h);
  const Rgb lid = Scale(look.hair, 0.8f);
  for (float side : {-1.f, 1.f}) {
    // Brows, eyes (white, iris, pupil, lid), cheeks.
    StrokeCurve(img, cx + side * 0.46f * h, cy - 0.23f * h, cx + side * 0.3f * h, cy - 0.33f * h,
                cx + side * 0.13f * h, cy - 0.26f * h, 0.055f * h, look.hair);
    const float ex = cx + side * 0.3f * h, ey = cy - 0.1f * h;
    FillEllipse(img, ex, ey, 0.13f * h, 0.065f * h, {236, 234, 228});
    FillEllipse(img, ex, ey, 0.055f * h, 0.055f * h, {70, 92, 64}, 1.f, 0.3f);
    FillEllipse(img, ex, ey, 0.025f * h, 0.025f * h, {14, 14, 16});
    StrokeCurve(img, ex - 0.14f * h, ey + 0.01f * h, ex, ey - 0.1f * h, ex + 0.14f * h,
                ey + 0.01f * h, 0.025f * h, lid);
    FillEllipse(img, cx + side * 0.42f * h, cy + 0.22f * h, 0.15f * h, 0.09f * h, {210, 110, 100},
                0.15f);
    FillEllipse(img, cx + side * 0.07f * h, cy + 0.27f * h, 0.04f * h, 0.02f * h,
                Scale(skin, 0.5f));
  }
  StrokeCurve(img, cx + 0.04f * h, cy - 0.08f * h, cx + 0.08f * h, cy + 0.12f * h, cx + 0.02f * h,
              cy + 0.24f * h, 0.04f * h, Scale(skin, 0.8f), 0.6f);
  FillEllipse(img, cx - 0.02f * h, cy + 0.2f * h, 0.05f * h, 0.04f * h, Scale(skin, 1.08f), 0.5f);
  // The closed mouth: lips, then the dark line between them, centred on mouth_cy.
  const float mx = pose.mouth_cx, my = pose.mouth_cy, hw = pose.mouth_half_width;
  const Rgb lip = Mix(skin, {176, 76, 78}, 0.55f);
  FillEllipse(img, mx, my - 0.035f * h, hw * 0.95f, 0.05f * h, Scale(lip, 0.9f), 1.f, 0.3f);
  FillEllipse(img, mx, my + 0.045f * h, hw * 0.85f, 0.06f * h, lip, 1.f, 0.4f);
  StrokeCurve(img, mx - hw, my - 0.012f * h, mx, my + 0.024f * h, mx + hw, my - 0.012f * h,
              std::max(1.5f, 0.035f * h), {68, 24, 30});
}

// Per-frame sensor grain, so consecutive frames differ like a real recording.
void AddGrain(image::Image& img, uint64_t seed, int frame) {
  const uint64_t frame_seed = seed * 7919 + uint64_t(frame) + 1;
  for (int y = 0; y < img.height; ++y) {
    uint8_t* row = img.row(y);
    for (int x = 0; x < img.width; ++x) {
      const float n = (Hash01(frame_seed, x, y) - 0.5f) * 7.f;
      for (int c = 0; c < 3; ++c) row[3 * x + c] = Clamp255(row[3 * x + c] + n);
    }
  }
}

std::string FrameName(int index) {
  char name[32];
  std::snprintf(name, sizeof name, "frame_%04d.png", index);
  return name;
}

Status WriteAtomically(const std::string& path,
                       const std::function<Status(const std::string&)>& write) {
  const std::string tmp = path + ".tmp";
  LIPSYNC_RETURN_IF_ERROR(write(tmp));
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    return Status::FailedPrecondition("cannot rename '" + tmp + "' to '" + path +
                                      "': " + ec.message() + " (expected a writable directory)");
  }
  return Status::Ok();
}

// frame_NNNN.png with NNNN >= frames (a longer earlier run) or half-written temporaries.
void RemoveStaleFrames(const std::string& frames_dir, int frames) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(frames_dir, ec)) {
    const std::string name = entry.path().filename().string();
    int index = -1;
    char tail[8] = {};
    const bool is_frame = std::sscanf(name.c_str(), "frame_%d.pn%7s", &index, tail) == 2;
    const bool is_tmp = name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0;
    if (is_tmp || (is_frame && index >= frames)) fs::remove(entry.path(), ec);
  }
}

}  // namespace

Status ValidateAvatarSpec(const AvatarSpec& spec) {
  if (spec.frames < 1 || spec.frames > 100000) {
    return Status::InvalidArgument("avatar frames " + std::to_string(spec.frames) +
                                   ": expected 1..100000");
  }
  if (spec.width < 64 || spec.height < 64 || spec.width > 8192 || spec.height > 8192) {
    return Status::InvalidArgument("avatar size " + std::to_string(spec.width) + "x" +
                                   std::to_string(spec.height) +
                                   ": expected width and height in 64..8192");
  }
  return Status::Ok();
}

FacePose AvatarPose(const AvatarSpec& spec, int frame) {
  const Look look = MakeLook(spec.seed);
  const float t = float(frame);  // 25 fps: periods of ~3-5 s
  const float scale = 1.f + 0.012f * std::sin(2 * kPi * t / 130.f + look.phase_scale);
  FacePose pose;
  pose.head_ry = HeadHalfHeight(spec) * scale;
  pose.head_cx = spec.width * (0.5f + look.offset_x) +
                 0.0065f * spec.width * std::sin(2 * kPi * t / 96.f + look.phase_x);
  pose.head_cy =
      0.43f * spec.height + 0.004f * spec.height * std::sin(2 * kPi * t / 70.f + look.phase_y);
  pose.mouth_cx = pose.head_cx;
  pose.mouth_cy = pose.head_cy + kMouthBelowHeadCentre * pose.head_ry;
  // As wide as the demo model's mouth once the crop is scaled to the ROI.
  pose.mouth_half_width = modelgen::kMouthHalfWidth / kResized * kCropPerHead * pose.head_ry;
  return pose;
}

CropRect AvatarCropRect(const AvatarSpec& spec, int frame) {
  const FacePose pose = AvatarPose(spec, frame);
  int side = int(std::lround(kCropPerHead * pose.head_ry));
  side = std::clamp(side, 8, std::min(spec.width, spec.height));
  // Pixel centre u of the ROI is (u + 4 + 0.5) * side / 328 into the crop.
  const float mouth_in_crop_x = (modelgen::kMouthCenterX + kRoiOffset + 0.5f) * side / kResized;
  const float mouth_in_crop_y = (modelgen::kMouthCenterY + kRoiOffset + 0.5f) * side / kResized;
  int x1 = int(std::lround(pose.mouth_cx - mouth_in_crop_x));
  int y1 = int(std::lround(pose.mouth_cy - mouth_in_crop_y));
  x1 = std::clamp(x1, 0, spec.width - side);
  y1 = std::clamp(y1, 0, spec.height - side);
  return {x1, y1, x1 + side, y1 + side};
}

void BurnFrameIndex(image::Image& img, int frame) {
  const int rows = std::min(16, img.height);
  for (int y = 0; y < rows; ++y) {
    uint8_t* row = img.row(y);
    for (int x = 0; x < img.width; ++x) {
      const int cell = x * 16 / img.width;
      const bool white = cell == 0 ? true : cell == 1 ? false : ((frame >> (15 - cell)) & 1) != 0;
      for (int c = 0; c < img.channels; ++c) row[x * img.channels + c] = white ? 255 : 0;
    }
  }
}

image::Image RenderAvatarFrame(const AvatarSpec& spec, int frame) {
  const Look look = MakeLook(spec.seed);
  image::Image img = RenderBackground(spec, look);
  DrawSubject(img, AvatarPose(spec, frame), look);
  AddGrain(img, spec.seed, frame);
  if (spec.burn_index) BurnFrameIndex(img, frame);
  return img;
}

std::string CropRectsJson(const AvatarSpec& spec) {
  std::string json = "[";
  for (int i = 0; i < spec.frames; ++i) {
    const CropRect r = AvatarCropRect(spec, i);
    json += (i ? ",\n " : "") + std::string("[") + std::to_string(r.x1) + "," +
            std::to_string(r.y1) + "," + std::to_string(r.x2) + "," + std::to_string(r.y2) + "]";
  }
  return json + "]\n";
}

Status GenerateAvatarFrames(const AvatarSpec& spec, const std::string& dir,
                            const ProgressFn& progress, int threads) {
  LIPSYNC_RETURN_IF_ERROR(ValidateAvatarSpec(spec));
  const std::string frames_dir = dir + "/frames";
  std::error_code ec;
  fs::create_directories(frames_dir, ec);
  if (ec) {
    return Status::FailedPrecondition("cannot create '" + frames_dir + "': " + ec.message() +
                                      " (expected a writable output directory)");
  }
  RemoveStaleFrames(frames_dir, spec.frames);

  const Look look = MakeLook(spec.seed);
  const image::Image background = RenderBackground(spec, look);
  const int workers =
      threads > 0 ? threads : int(std::max(1u, std::thread::hardware_concurrency()));
  ThreadPool pool(size_t(std::max(1, workers - 1)));  // the caller works too
  std::mutex mu;
  Status first_error;
  int done = 0;
  pool.ParallelFor(size_t(spec.frames), [&](size_t i) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!first_error.ok()) return;
    }
    image::Image frame = background;
    DrawSubject(frame, AvatarPose(spec, int(i)), look);
    AddGrain(frame, spec.seed, int(i));
    if (spec.burn_index) BurnFrameIndex(frame, int(i));
    Status written =
        WriteAtomically(frames_dir + "/" + FrameName(int(i)),
                        [&](const std::string& tmp) { return image::WritePng(tmp, frame); });
    std::lock_guard<std::mutex> lock(mu);
    if (!written.ok() && first_error.ok()) first_error = written;
    ++done;
    if (progress && first_error.ok()) progress("frames", done, spec.frames);
  });
  LIPSYNC_RETURN_IF_ERROR(first_error);
  return WriteAtomically(dir + "/crop_rects.json", [&](const std::string& tmp) {
    return image::WriteFileBytes(tmp, CropRectsJson(spec));
  });
}

Status LinkAvatarFrames(const std::string& from_dir, const std::string& to_dir, int frames) {
  const std::string from_frames = from_dir + "/frames", to_frames = to_dir + "/frames";
  std::error_code ec;
  fs::create_directories(to_frames, ec);
  if (ec) {
    return Status::FailedPrecondition("cannot create '" + to_frames + "': " + ec.message() +
                                      " (expected a writable output directory)");
  }
  RemoveStaleFrames(to_frames, frames);
  for (int i = 0; i < frames; ++i) {
    const fs::path from = fs::path(from_frames) / FrameName(i),
                   to = fs::path(to_frames) / FrameName(i);
    if (!fs::exists(from, ec)) {
      return Status::NotFound("frame '" + from.string() + "' is missing (expected " +
                              std::to_string(frames) + " frames to link)");
    }
    if (fs::exists(to, ec) && fs::equivalent(from, to, ec)) continue;
    fs::remove(to, ec);
    fs::create_hard_link(from, to, ec);
    if (ec) fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
    if (ec) {
      return Status::FailedPrecondition("cannot link or copy '" + from.string() + "' to '" +
                                        to.string() + "': " + ec.message());
    }
  }
  return Status::Ok();
}

}  // namespace lipsync::demo
