#include "compositing/compositor.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>
#include <type_traits>

namespace lipsync::compositing {

namespace {

using Ms = std::chrono::duration<double, std::milli>;
using SteadyClock = std::chrono::steady_clock;

constexpr size_t kFacePixels = size_t(kFaceSize) * kFaceSize;

// Per-thread buffers reused across frames and requests.
struct FrameScratch {
  PasteBack paste;
  std::vector<uint8_t> face = std::vector<uint8_t>(kFacePixels * 3);
  image::Image work;  // background copy being composited
  VisualInputBuilder visual;
};

FrameScratch& Scratch() {
  thread_local FrameScratch scratch;
  return scratch;
}

void CopyInto(const image::Image& src, image::Image& dst) {
  if (dst.width != src.width || dst.height != src.height || dst.channels != src.channels) {
    dst.width = src.width;
    dst.height = src.height;
    dst.channels = src.channels;
    dst.pixels.resize(src.pixels.size());
  }
  std::memcpy(dst.pixels.data(), src.pixels.data(), src.pixels.size());
}

// Whole original frame in `work`: the held pixels, or (compact, output other than the
// cached JPEG's) the frame re-read from its file, so that no JPEG generation loss
// reaches the output; if the file is gone, the cached JPEG decoded with the held region
// restored on top.
Status FullBackground(const avatar::Avatar& avatar, int index, const avatar::BackgroundFrame& bg,
                      image::Image& work) {
  if (!bg.compact()) {
    CopyInto(bg.pixels, work);
    return Status::Ok();
  }
  if (auto original = avatar.ReadOriginal(index); original.ok()) {
    work = std::move(original).value();
    return Status::Ok();
  }
  // Our own cached JPEG of a frame the avatar already admitted: its size is the limit.
  image::DecodeLimits limits;
  limits.max_width = std::max(limits.max_width, bg.frame_width);
  limits.max_height = std::max(limits.max_height, bg.frame_height);
  limits.max_file_bytes = 0;
  LIPSYNC_ASSIGN_OR_RETURN(work, image::DecodeJpeg(bg.jpeg->background_jpeg(), limits));
  const image::PixelRect& held = bg.pixels_rect;
  for (int y = 0; y < held.height; ++y) {
    std::memcpy(work.row(held.y + y) + size_t(held.x) * 3, bg.pixels.row(y),
                size_t(held.width) * 3);
  }
  return Status::Ok();
}

}  // namespace

Compositor::Compositor(size_t threads)
    : pool_(std::max<size_t>(
          1, (threads == 0 ? std::max(1u, std::thread::hardware_concurrency()) : threads) - 1)) {}

Expected<CompositeResult> Compositor::Compose(avatar::Avatar& avatar, const ModelOutputView& output,
                                              int64_t start_frame, avatar::LoopMode loop,
                                              const CompositeOptions& options) {
  auto t0 = SteadyClock::now();
  if (output.batch < 1 || output.data == nullptr) {
    return Status::InvalidArgument("compose: batch is " + std::to_string(output.batch) +
                                   "; expected at least one frame of model output");
  }
  if (options.format == config::OutputFormat::kJpeg &&
      (options.jpeg_quality < 1 || options.jpeg_quality > 100)) {
    return Status::InvalidArgument("jpeg_quality " + std::to_string(options.jpeg_quality) +
                                   " out of range; expected 1..100");
  }
  if (start_frame < 0) {
    return Status::InvalidArgument("start_frame_idx " + std::to_string(start_frame) +
                                   " is negative; expected >= 0");
  }
  if (options.feather_px < 0) {
    return Status::InvalidArgument("feather_px must be >= 0");
  }
  const int batch = output.batch;
  const size_t frame_bytes =
      kFacePixels * 3 * (output.type == OutputType::kFloat32 ? sizeof(float) : 1);
  CompositeResult result;
  result.frames.resize(batch);
  result.background_indices.resize(batch);
  result.frame_width = avatar.width();
  result.frame_height = avatar.height();
  std::vector<Status> errors(batch);
  std::vector<CompositeTimings> times(batch);

  pool_.ParallelFor(batch, [&](size_t i) {
    FrameScratch& s = Scratch();
    CompositeTimings& t = times[i];
    auto fail = [&](const Status& st) { errors[i] = st; };
    auto a = SteadyClock::now();
    int index =
        avatar::BackgroundIndex(start_frame, static_cast<int64_t>(i), avatar.num_frames(), loop);
    result.background_indices[i] = index;
    auto handle = avatar.Frame(index);
    if (!handle.ok()) return fail(handle.status());
    const avatar::BackgroundFrame& bg = **handle;
    const avatar::CropRect& rect = avatar.rect(index);
    const bool region = options.format == config::OutputFormat::kJpeg && bg.jpeg &&
                        bg.jpeg->settings().quality == options.jpeg_quality;
    if (region) {
      CopyInto(bg.pixels, s.work);
    } else if (Status st = FullBackground(avatar, index, bg, s.work); !st.ok()) {
      return fail(st);
    }
    const image::PixelRect area =
        region ? bg.pixels_rect : image::PixelRect{0, 0, bg.frame_width, bg.frame_height};
    auto b = SteadyClock::now();
    ModelOutputToRgb(static_cast<const uint8_t*>(output.data) + i * frame_bytes, output.type,
                     s.face.data());
    auto c = SteadyClock::now();
    avatar::CropRect local{rect.x1 - area.x, rect.y1 - area.y, rect.x2 - area.x, rect.y2 - area.y};
    if (Status st =
            s.paste.Paste(s.face.data(), options.paste_mode, options.feather_px, local,
                          s.work.pixels.data(), s.work.width, s.work.height, s.work.stride());
        !st.ok()) {
      return fail(st);
    }
    auto d = SteadyClock::now();
    if (options.format == config::OutputFormat::kRaw) {
      result.frames[i].assign(reinterpret_cast<const char*>(s.work.pixels.data()),
                              s.work.pixels.size());
    } else if (region) {
      bool outside = false;
      auto rows = [&](int x0, int y) -> const uint8_t* {
        if (y < area.y || y >= area.y + area.height || x0 < area.x) {
          outside = true;  // cannot happen: compact frames hold the encode's ReadRect
          return nullptr;
        }
        return s.work.row(y - area.y) + size_t(x0 - area.x) * 3;
      };
      auto jpeg = bg.jpeg->EncodeWithRegion(rows, {rect.x1, rect.y1, rect.width(), rect.height()});
      if (outside) {
        return fail(Status::Internal("region JPEG encode read pixels outside those held"));
      }
      if (!jpeg.ok()) return fail(jpeg.status());
      result.frames[i] = std::move(jpeg).value();
    } else {
      auto jpeg = image::EncodeJpeg(s.work, options.jpeg_quality);
      if (!jpeg.ok()) return fail(jpeg.status());
      result.frames[i] = std::move(jpeg).value();
    }
    auto e = SteadyClock::now();
    t.background_ms = Ms(b - a).count();
    t.convert_ms = Ms(c - b).count();
    t.paste_ms = Ms(d - c).count();
    t.encode_ms = Ms(e - d).count();
  });

  for (int i = 0; i < batch; ++i) {
    if (!errors[i].ok()) {
      return errors[i].WithContext("avatar '" + avatar.id() + "' frame " + std::to_string(i));
    }
    result.timings.background_ms += times[i].background_ms;
    result.timings.convert_ms += times[i].convert_ms;
    result.timings.paste_ms += times[i].paste_ms;
    result.timings.encode_ms += times[i].encode_ms;
  }
  result.timings.total_ms = Ms(SteadyClock::now() - t0).count();
  return result;
}

Status Compositor::BuildVisualInputs(avatar::Avatar& avatar, int64_t start_frame, int batch,
                                     avatar::LoopMode loop, float* out,
                                     std::vector<int>* background_indices) {
  return BuildVisualInputsAs(avatar, start_frame, batch, loop, out, background_indices);
}

Status Compositor::BuildVisualInputsU8(avatar::Avatar& avatar, int64_t start_frame, int batch,
                                       avatar::LoopMode loop, uint8_t* out,
                                       std::vector<int>* background_indices) {
  return BuildVisualInputsAs(avatar, start_frame, batch, loop, out, background_indices);
}

template <typename T>
Status Compositor::BuildVisualInputsAs(avatar::Avatar& avatar, int64_t start_frame, int batch,
                                       avatar::LoopMode loop, T* out,
                                       std::vector<int>* background_indices) {
  if (batch < 1 || out == nullptr) {
    return Status::InvalidArgument("visual input: batch is " + std::to_string(batch) +
                                   "; expected at least one frame");
  }
  if (start_frame < 0) {
    return Status::InvalidArgument("start_frame_idx " + std::to_string(start_frame) +
                                   " is negative; expected >= 0");
  }
  std::vector<Status> errors(batch);
  std::vector<int> indices(batch);
  pool_.ParallelFor(batch, [&](size_t i) {
    int index =
        avatar::BackgroundIndex(start_frame, static_cast<int64_t>(i), avatar.num_frames(), loop);
    indices[i] = index;
    auto handle = avatar.Frame(index);
    if (!handle.ok()) {
      errors[i] = handle.status();
      return;
    }
    VisualInputBuilder& builder = Scratch().visual;
    if constexpr (std::is_same_v<T, float>) {
      errors[i] = builder.Build(**handle, avatar.rect(index), out + i * kVisualInputFloats);
    } else {
      errors[i] = builder.BuildU8(**handle, avatar.rect(index), out + i * kVisualInputFloats);
    }
  });
  for (int i = 0; i < batch; ++i) {
    if (!errors[i].ok()) {
      return errors[i].WithContext("avatar '" + avatar.id() + "' frame " + std::to_string(i));
    }
  }
  if (background_indices) *background_indices = std::move(indices);
  return Status::Ok();
}

}  // namespace lipsync::compositing
