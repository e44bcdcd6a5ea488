#include "inference/onnx_model.h"

#include <malloc.h>
#include <onnxruntime_cxx_api.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <new>
#include <optional>
#include <string_view>

#include "common/bounded_text.h"
#include "common/log.h"
#include "inference/execution_provider.h"
#include "inference/gpu_info.h"
#include "inference/graph_wrap.h"
#include "inference/model_cache.h"
#include "inference/ort_runtime.h"

namespace lipsync::inference {
namespace {

constexpr const char* kVisualName = "input";
constexpr const char* kAudioName = "audio";
constexpr const char* kOutputName = "output";

// Bounds on what a model file may declare, checked before anything is allocated from
// its shapes (the warm-up run and every request are sized by them).
constexpr int64_t kMaxDim = 8192;                         // C, H, W, OH, OW
constexpr int64_t kMaxFixedBatch = 1024;                  // a fixed batch dimension
constexpr int64_t kMaxFloatsPerFrame = int64_t{1} << 24;  // 64 MiB of float32 per frame
constexpr int64_t kMaxWarmUpFloats = int64_t{1} << 26;    // 256 MiB for the warm-up inputs

int64_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t size_pages = 0, resident_pages = 0;
  if (!(statm >> size_pages >> resident_pages)) return 0;
  return resident_pages * static_cast<int64_t>(sysconf(_SC_PAGESIZE));
}

// Heap bytes the process holds (malloc'ed and not freed, mmapped chunks included).
// Unlike RSS it is not blurred by freed memory the allocator keeps or reuses. Under
// AddressSanitizer malloc is ASan's (glibc's mallinfo2 then sees nothing): ask ASan's
// allocator for the same figure, user bytes in use (no redzones, no quarantine).
#if defined(__SANITIZE_ADDRESS__)
extern "C" size_t __sanitizer_get_current_allocated_bytes();
int64_t HeapBytesInUse() { return static_cast<int64_t>(__sanitizer_get_current_allocated_bytes()); }
#else
int64_t HeapBytesInUse() {
  struct mallinfo2 info = mallinfo2();
  return static_cast<int64_t>(info.uordblks + info.hblkhd);
}
#endif

struct MemorySample {
  int64_t heap = 0;
  int64_t resident = 0;
  int64_t gpu = 0;
};

MemorySample SampleMemory(int device_id) {
  MemorySample m;
  if (device_id < 0) {
    m.heap = HeapBytesInUse();
    m.resident = ResidentBytes();
  } else {
    m.gpu = GpuMemoryUsedBytes(device_id).value_or(0);
  }
  return m;
}

// Footprint from two samples: on CPU the heap delta, else the RSS delta; on a GPU
// the device-memory delta. <= 0 when nothing measurable changed.
int64_t Footprint(const MemorySample& before, const MemorySample& after, int device_id) {
  if (device_id >= 0) return after.gpu - before.gpu;
  int64_t heap = after.heap - before.heap;
  return heap > 0 ? heap : after.resident - before.resident;
}

int64_t FileSize(const std::string& path) {
  std::error_code ec;
  auto size = std::filesystem::file_size(path, ec);
  return ec ? 0 : static_cast<int64_t>(size);
}

bool Matches(const TensorShape& shape, const std::vector<int64_t>& expected) {
  if (shape.dims.size() != expected.size()) return false;
  for (size_t i = 0; i < expected.size(); ++i) {
    // expected -1: any (symbolic or fixed); expected 0: any fixed positive size.
    if (expected[i] == -1) continue;
    if (expected[i] == 0) {
      if (shape.dims[i] <= 0) return false;
      continue;
    }
    if (shape.dims[i] != expected[i]) return false;
  }
  return true;
}

struct TensorInfo {
  std::string name;
  TensorShape shape;
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
};

TensorInfo Describe(Ort::TypeInfo type_info, std::string name) {
  TensorInfo info;
  info.name = std::move(name);
  if (type_info.GetONNXType() != ONNX_TYPE_TENSOR) return info;
  auto tensor = type_info.GetTensorTypeAndShapeInfo();
  info.type = tensor.GetElementType();
  info.shape.dims = tensor.GetShape();
  for (auto& d : info.shape.dims)
    if (d < 0) d = -1;
  return info;
}

// With `overridable`, the inputs that have a default (ORT lists them apart): the
// wrapped graph's `input` and `input_u8` (graph_wrap.h).
std::vector<TensorInfo> Inputs(Ort::Session& session, bool overridable = false) {
  Ort::AllocatorWithDefaultOptions alloc;
  std::vector<TensorInfo> out;
  for (size_t i = 0; i < session.GetInputCount(); ++i) {
    out.push_back(
        Describe(session.GetInputTypeInfo(i), session.GetInputNameAllocated(i, alloc).get()));
  }
  for (size_t i = 0; overridable && i < session.GetOverridableInitializerCount(); ++i) {
    out.push_back(Describe(session.GetOverridableInitializerTypeInfo(i),
                           session.GetOverridableInitializerNameAllocated(i, alloc).get()));
  }
  return out;
}

std::vector<TensorInfo> Outputs(Ort::Session& session) {
  Ort::AllocatorWithDefaultOptions alloc;
  std::vector<TensorInfo> out;
  for (size_t i = 0; i < session.GetOutputCount(); ++i) {
    out.push_back(
        Describe(session.GetOutputTypeInfo(i), session.GetOutputNameAllocated(i, alloc).get()));
  }
  return out;
}

// Names and shapes come from the file: at most 8 tensors, names cut at 64 bytes.
std::string Signature(const std::vector<TensorInfo>& tensors) {
  constexpr size_t kMaxListed = 8;
  std::string s;
  for (size_t i = 0; i < tensors.size() && i < kMaxListed; ++i) {
    const TensorInfo& t = tensors[i];
    s += (s.empty() ? "" : ", ") + Bounded(t.name, 64) + " " +
         (t.shape.dims.size() > 8 ? std::to_string(t.shape.dims.size()) + " dims"
                                  : t.shape.ToString()) +
         (t.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT ? "" : " (not float32)");
  }
  if (tensors.size() > kMaxListed) {
    s += " and " + std::to_string(tensors.size() - kMaxListed) + " more";
  }
  return s.empty() ? "none" : s;
}

// Declared sizes within the bounds above; FAILED_PRECONDITION naming the file if not.
Status CheckDeclaredSizes(const std::string& path, const TensorShape& visual,
                          const TensorShape& output) {
  const int64_t batch = visual.dims[0] > 0 ? visual.dims[0] : output.dims[0];
  bool ok = batch <= kMaxFixedBatch;
  for (size_t i = 1; i < 4; ++i) ok = ok && visual.dims[i] <= kMaxDim && output.dims[i] <= kMaxDim;
  int64_t visual_floats = 0, output_floats = 0;
  if (ok) {
    visual_floats = visual.dims[1] * visual.dims[2] * visual.dims[3];
    output_floats = 3 * output.dims[2] * output.dims[3];
    ok = visual_floats <= kMaxFloatsPerFrame && output_floats <= kMaxFloatsPerFrame &&
         std::max<int64_t>(batch, 1) * (visual_floats + 8192) <= kMaxWarmUpFloats;
  }
  if (ok) return Status::Ok();
  return Status::FailedPrecondition(
      "model '" + path + "' declares input " + visual.ToString() + " and output " +
      output.ToString() + "; expected each of C,H,W,OH,OW <= " + std::to_string(kMaxDim) +
      ", at most " + std::to_string(kMaxFloatsPerFrame) +
      " values per frame and a fixed batch <= " + std::to_string(kMaxFixedBatch) +
      " (refused before allocating anything for it)");
}

// The options every session of `device_id` gets (the CUDA provider appended for a GPU).
Expected<Ort::SessionOptions> BaseOptions(const OrtRuntime& runtime, int device_id) {
  Ort::SessionOptions options = runtime.MakeSessionOptions();
  if (device_id >= 0) LIPSYNC_RETURN_IF_ERROR(AppendCudaProvider(options, device_id));
  return options;
}

Status OrtLoadError(const Ort::Exception& e, const std::string& path, int device_id) {
  StatusCode code = e.GetOrtErrorCode() == ORT_FAIL && device_id >= 0
                        ? StatusCode::kUnavailable
                        : StatusCode::kFailedPrecondition;
  return Status(code, "cannot load ONNX model '" + path + "': " + Bounded(e.what()) +
                          " (expected a valid ONNX file)");
}

// The file's bytes wrapped for uint8 I/O (graph_wrap.h), or why not. The file is
// read whole (bounded by protobuf's 2 GiB message limit, which a model beyond needs
// external data, which WrapUint8Io refuses anyway).
Expected<std::string> WrappedModel(const std::string& path) {
  constexpr int64_t kMaxWrapBytes = (int64_t{1} << 31) - 1;
  const int64_t size = FileSize(path);
  if (size <= 0 || size >= kMaxWrapBytes) {
    return Status::FailedPrecondition("model '" + path + "' is " + std::to_string(size) +
                                      " bytes; wrapping for uint8 I/O needs 1 byte to 2 GiB");
  }
  std::string bytes(static_cast<size_t>(size), '\0');
  std::ifstream in(path, std::ios::binary);
  if (!in.read(bytes.data(), size)) {
    return Status::FailedPrecondition("cannot read model '" + path + "' to wrap it");
  }
  return WrapUint8Io(bytes, path);
}

// A session from the file, or from `wrapped` (its uint8-I/O bytes) when not null.
std::unique_ptr<Ort::Session> NewSession(Ort::Env& env, const std::string& path,
                                         const std::string* wrapped,
                                         const Ort::SessionOptions& options) {
  if (wrapped)
    return std::make_unique<Ort::Session>(env, wrapped->data(), wrapped->size(), options);
  return std::make_unique<Ort::Session>(env, path.c_str(), options);
}

// The provider part of a cache key (an optimized graph is only valid for it), plus
// the form of the graph: wrapped for uint8 I/O or not.
std::string CacheLabel(int device_id, bool uint8_io) {
  std::string label = device_id < 0 ? "CPUExecutionProvider" : "CUDAExecutionProvider";
  if (device_id >= 0) {
    for (const GpuStatus& gpu : QueryGpus()) {
      if (gpu.device_id == device_id) label += " " + gpu.name;
    }
  }
  return uint8_io ? label + " uint8-io" : label;
}

struct CreatedSession {
  std::unique_ptr<Ort::Session> session;  // null: the cache could not be used
  bool uint8_io = false;                  // the graph has input_u8 / output_u8
};

// Through the optimized-graph cache: a verified entry is loaded with optimizations
// off; no entry (or one ORT refuses) builds the session from the source (the file, or
// `wrapped`) and saves its optimized graph as the entry, unless `lookup_only`. A null
// session (no error) when there is no usable entry and lookup_only, or the cache cannot
// be used at all (the caller loads plainly).
Expected<std::unique_ptr<Ort::Session>> CreateCachedSession(OrtRuntime& runtime,
                                                            const std::string& path,
                                                            const std::string* wrapped,
                                                            bool uint8_io, bool lookup_only,
                                                            int device_id, ModelCache& cache) {
  auto key = cache.KeyFor(path, CacheLabel(device_id, uint8_io));
  if (!key.ok()) return key.status();  // the source itself is unreadable: same error
  auto entry = cache.Read(*key);
  if (entry.ok()) {
    LIPSYNC_ASSIGN_OR_RETURN(Ort::SessionOptions options, BaseOptions(runtime, device_id));
    options.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_DISABLE_ALL);
    if (uint8_io) options.SetLogSeverityLevel(ORT_LOGGING_LEVEL_ERROR);
    try {
      return std::make_unique<Ort::Session>(runtime.env(), entry->data(), entry->size(), options);
    } catch (const Ort::Exception& e) {
      // Verified but refused (e.g. a provider change the key does not see): rebuild.
      LOG_WARN("model cache entry '%s' for '%s' was refused by ONNX Runtime (%s); rebuilding it",
               cache.EntryPath(*key).c_str(), path.c_str(), Bounded(e.what()).c_str());
      cache.Discard(*key);
    }
  } else if (entry.status().code() != StatusCode::kNotFound) {
    LOG_WARN("%s", entry.status().message().c_str());
  }
  if (lookup_only) return std::unique_ptr<Ort::Session>();
  entry = ModelCache::Entry();  // unmapped before the build
  auto temp = cache.TempPath();
  if (!temp.ok()) {
    LOG_WARN("%s; loading '%s' without the model cache", temp.status().message().c_str(),
             path.c_str());
    return std::unique_ptr<Ort::Session>();
  }
  LIPSYNC_ASSIGN_OR_RETURN(Ort::SessionOptions options, BaseOptions(runtime, device_id));
  options.SetOptimizedModelFilePath(temp->c_str());
  // ORT warns that an NCHWc graph is hardware specific (the key says which hardware)
  // and that the wrapped graph's two defaults are not constant (intended).
  options.SetLogSeverityLevel(ORT_LOGGING_LEVEL_ERROR);
  std::unique_ptr<Ort::Session> session;
  try {
    session = NewSession(runtime.env(), path, wrapped, options);
  } catch (const Ort::Exception& e) {
    std::error_code ec;
    std::filesystem::remove(*temp, ec);
    return OrtLoadError(e, path, device_id);
  }
  if (Status st = cache.Commit(*key, *temp); !st.ok()) {
    LOG_WARN("model cache: %s (the model is loaded; the next load optimizes it again)",
             st.message().c_str());
  }
  return session;
}

// One session of `path`: wrapped for uint8 I/O when `want_uint8_io` and WrapUint8Io
// takes the model (a refusal is logged and the plain graph loaded: the uint8 forms are
// then converted on the CPU), through `cache` when given.
Expected<CreatedSession> CreateSession(const std::string& path, int device_id, ModelCache* cache,
                                       bool want_uint8_io) {
  OrtRuntime* runtime = OrtRuntime::Get();
  if (!runtime) {
    return Status::Internal(
        "ONNX Runtime is not initialised (OrtRuntime::Initialize must run "
        "before models are loaded)");
  }
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return Status::NotFound("model file '" + path + "' does not exist (expected an .onnx file)");
  }
  if (cache && want_uint8_io) {
    // A cached wrapped graph needs no wrapping (nor the file's bytes).
    LIPSYNC_ASSIGN_OR_RETURN(
        auto hit, CreateCachedSession(*runtime, path, nullptr, true, true, device_id, *cache));
    if (hit) return CreatedSession{std::move(hit), true};
  }
  std::optional<std::string> wrapped;
  if (want_uint8_io) {
    auto bytes = WrappedModel(path);
    if (bytes.ok()) {
      wrapped = std::move(*bytes);
    } else {
      LOG_INFO("%s; its uint8 requests are converted on the CPU", bytes.status().message().c_str());
    }
  }
  if (cache) {
    auto session = CreateCachedSession(*runtime, path, wrapped ? &*wrapped : nullptr,
                                       wrapped.has_value(), false, device_id, *cache);
    if (session.ok() && *session) return CreatedSession{std::move(*session), wrapped.has_value()};
    if (!session.ok() && !wrapped) return session.status();
    if (!session.ok()) {
      LOG_WARN("the uint8-I/O graph of '%s' did not load (%s); loading it unwrapped", path.c_str(),
               session.status().message().c_str());
      return CreateSession(path, device_id, cache, false);
    }
  }
  try {
    LIPSYNC_ASSIGN_OR_RETURN(Ort::SessionOptions options, BaseOptions(*runtime, device_id));
    if (wrapped) options.SetLogSeverityLevel(ORT_LOGGING_LEVEL_ERROR);
    return CreatedSession{NewSession(runtime->env(), path, wrapped ? &*wrapped : nullptr, options),
                          wrapped.has_value()};
  } catch (const Ort::Exception& e) {
    if (!wrapped) return OrtLoadError(e, path, device_id);
    LOG_WARN("the uint8-I/O graph of '%s' did not load (%s); loading it unwrapped", path.c_str(),
             Bounded(e.what()).c_str());
    return CreateSession(path, device_id, cache, false);
  }
}

}  // namespace

std::string TensorShape::ToString() const {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(dims[i]);
  }
  return s + "]";
}

struct OnnxModel::Sessions {
  std::unique_ptr<Ort::Session> session;
  std::string input_name;   // encoder only: its single input
  std::string output_name;  // encoder only: its single output
  Ort::MemoryInfo cpu_memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
};

OnnxModel::~OnnxModel() = default;

size_t OnnxModel::visual_floats_per_frame() const {
  return static_cast<size_t>(visual_channels_) * input_height_ * input_width_;
}

size_t OnnxModel::output_values_per_frame() const {
  return 3u * static_cast<size_t>(output_height_) * output_width_;
}

Expected<std::shared_ptr<OnnxModel>> OnnxModel::Load(const ModelFiles& files, int device_id,
                                                     ModelCache* cache, bool uint8_io) {
  // The library boundary: nothing ORT or an allocation throws leaves this function.
  try {
    return LoadUnguarded(files, device_id, cache, uint8_io);
  } catch (const Ort::Exception& e) {
    return Status::FailedPrecondition("ONNX Runtime failed loading '" + files.model_path +
                                      "': " + Bounded(e.what()) + " (expected a valid ONNX model)");
  } catch (const std::bad_alloc&) {
    return Status::ResourceExhausted("out of memory while loading '" + files.model_path +
                                     "' (the model needs more memory than is free)");
  } catch (const std::exception& e) {
    return Status::Internal("loading '" + files.model_path +
                            "' failed with an exception: " + Bounded(e.what()));
  }
}

Expected<std::shared_ptr<OnnxModel>> OnnxModel::LoadUnguarded(const ModelFiles& files,
                                                              int device_id, ModelCache* cache,
                                                              bool uint8_io) {
  std::shared_ptr<OnnxModel> model(new OnnxModel());
  model->files_ = files;
  model->device_id_ = device_id;
  const MemorySample memory_before = SampleMemory(device_id);
  const auto create_start = std::chrono::steady_clock::now();

  LIPSYNC_ASSIGN_OR_RETURN(CreatedSession created,
                           CreateSession(files.model_path, device_id, cache, uint8_io));
  std::unique_ptr<Ort::Session> session = std::move(created.session);
  model->uint8_io_ = created.uint8_io;
  try {
    auto inputs = Inputs(*session, model->uint8_io_);
    auto outputs = Outputs(*session);
    if (model->uint8_io_) {
      // The wrapper's own tensors (graph_wrap.h) are not part of the model's signature.
      std::erase_if(inputs, [](const TensorInfo& t) { return t.name == kVisualU8Name; });
      std::erase_if(outputs, [](const TensorInfo& t) { return t.name == kOutputU8Name; });
    }
    const std::string expected =
        " (expected inputs input [B,C,H,W] and audio [B,32,16,16], output output [B,3,OH,OW], "
        "all float32)";
    const TensorInfo* visual = nullptr;
    const TensorInfo* audio = nullptr;
    for (const auto& t : inputs) {
      if (t.name == kVisualName)
        visual = &t;
      else if (t.name == kAudioName)
        audio = &t;
    }
    bool ok = inputs.size() == 2 && visual && audio && outputs.size() == 1 &&
              outputs[0].name == kOutputName;
    for (const TensorInfo* t : std::initializer_list<const TensorInfo*>{
             visual, audio, outputs.empty() ? nullptr : &outputs[0]}) {
      ok = ok && t->type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    }
    ok = ok && Matches(visual->shape, {-1, 0, 0, 0}) && Matches(audio->shape, {-1, 32, 16, 16}) &&
         Matches(outputs[0].shape, {-1, 3, 0, 0});
    if (ok) {
      // The batch dimension must be shared (or symbolic) across all three tensors.
      int64_t b = visual->shape.dims[0];
      for (int64_t other : {audio->shape.dims[0], outputs[0].shape.dims[0]}) {
        if (b == -1)
          b = other;
        else if (other != -1 && other != b)
          ok = false;
      }
    }
    if (!ok) {
      return Status::FailedPrecondition("model '" + files.model_path + "' has inputs " +
                                        Signature(inputs) + " and outputs " + Signature(outputs) +
                                        expected);
    }
    LIPSYNC_RETURN_IF_ERROR(CheckDeclaredSizes(files.model_path, visual->shape, outputs[0].shape));
    model->visual_shape_ = visual->shape;
    model->audio_shape_ = audio->shape;
    model->output_shape_ = outputs[0].shape;
    model->visual_channels_ = static_cast<int>(visual->shape.dims[1]);
    model->input_height_ = static_cast<int>(visual->shape.dims[2]);
    model->input_width_ = static_cast<int>(visual->shape.dims[3]);
    model->output_height_ = static_cast<int>(outputs[0].shape.dims[2]);
    model->output_width_ = static_cast<int>(outputs[0].shape.dims[3]);
  } catch (const Ort::Exception& e) {
    return Status::FailedPrecondition("reading the signature of '" + files.model_path +
                                      "' failed: " + Bounded(e.what()));
  }
  model->sessions_ = std::make_unique<Sessions>();
  model->sessions_->session = std::move(session);

  if (!files.audio_encoder_path.empty()) {
    LIPSYNC_ASSIGN_OR_RETURN(CreatedSession created_encoder,
                             CreateSession(files.audio_encoder_path, device_id, cache, false));
    std::unique_ptr<Ort::Session> encoder = std::move(created_encoder.session);
    try {
      auto inputs = Inputs(*encoder);
      auto outputs = Outputs(*encoder);
      if (inputs.size() != 1 || outputs.size() != 1 ||
          !Matches(inputs[0].shape, {-1, 1, kMelBands, kMelWindowSteps}) ||
          !Matches(outputs[0].shape, {-1, kAudioEmbeddingSize}) ||
          inputs[0].type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT ||
          outputs[0].type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) {
        return Status::FailedPrecondition(
            "audio encoder '" + files.audio_encoder_path + "' has inputs " + Signature(inputs) +
            " and outputs " + Signature(outputs) +
            " (expected one float32 input [N,1,80,16] and one float32 output [N,512])");
      }
      model->encoder_ = std::make_unique<Sessions>();
      model->encoder_->session = std::move(encoder);
      model->encoder_->input_name = inputs[0].name;
      model->encoder_->output_name = outputs[0].name;
    } catch (const Ort::Exception& e) {
      return Status::FailedPrecondition("reading the signature of '" + files.audio_encoder_path +
                                        "' failed: " + Bounded(e.what()));
    }
  }

  // Warm-up: the first Run allocates a per-session arena and plans memory, which is
  // part of what the model costs and should not be paid by the first request. CPU
  // sessions on the runtime's shared arena skip it: their activations come from that
  // arena (grown once per process), their first Run is no slower than the next, and
  // it would cost a cold tenant one full frame (~400 ms for the bench model).
  const auto warm_start = std::chrono::steady_clock::now();
  model->session_create_ms_ =
      std::chrono::duration<double, std::milli>(warm_start - create_start).count();
  const OrtRuntime* runtime = OrtRuntime::Get();
  if (device_id >= 0 || !runtime || !runtime->shared_cpu_arena()) {
    int warm_batch =
        model->visual_shape_.dims[0] > 0 ? static_cast<int>(model->visual_shape_.dims[0]) : 1;
    // The form requests will use: uint8 both ways on a wrapped graph.
    const size_t visual_values = model->visual_floats_per_frame() * warm_batch;
    std::vector<float> audio(kAudioFeatureFloats * static_cast<size_t>(warm_batch), 0.f);
    std::string out;
    Status st = model->uint8_io_
                    ? model->Run(warm_batch, std::vector<uint8_t>(visual_values, 0).data(),
                                 audio.data(), OutputFormat::kUint8, &out)
                    : model->Run(warm_batch, std::vector<float>(visual_values, 0.f).data(),
                                 audio.data(), OutputFormat::kFloat32, &out);
    if (!st.ok()) {
      return Status(device_id >= 0 ? StatusCode::kUnavailable : StatusCode::kFailedPrecondition,
                    "warm-up run of '" + files.model_path + "' failed: " + st.message());
    }
  }

  model->warm_up_ms_ =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - warm_start)
          .count();
  const int64_t delta = Footprint(memory_before, SampleMemory(device_id), device_id);
  if (delta > 0) {
    model->memory_bytes_ = delta;
  } else {
    int64_t files_size =
        FileSize(files.model_path) +
        (files.audio_encoder_path.empty() ? 0 : FileSize(files.audio_encoder_path));
    model->memory_bytes_ = static_cast<int64_t>(static_cast<double>(files_size) * 1.2);
  }
  return model;
}

Status OnnxModel::CheckInputSizes(int batch, size_t visual_bytes, size_t audio_bytes) const {
  if (batch < 1) {
    return Status::InvalidArgument("batch_size is " + std::to_string(batch) +
                                   " (expected at least 1)");
  }
  if (visual_shape_.dims[0] > 0 && batch != visual_shape_.dims[0]) {
    return Status::InvalidArgument("batch_size is " + std::to_string(batch) + " but model '" +
                                   files_.model_path + "' takes a fixed batch of " +
                                   std::to_string(visual_shape_.dims[0]));
  }
  const size_t b = static_cast<size_t>(batch);
  const size_t want_visual = b * visual_floats_per_frame() * sizeof(float);
  if (visual_bytes != want_visual) {
    return Status::InvalidArgument(
        "visual_frames has " + std::to_string(visual_bytes) + " bytes; expected " +
        std::to_string(want_visual) + " (" + std::to_string(batch) + " x " +
        std::to_string(visual_channels_) + "x" + std::to_string(input_height_) + "x" +
        std::to_string(input_width_) + " float32)");
  }
  const size_t want_audio = b * audio_floats_per_frame() * sizeof(float);
  if (audio_bytes != want_audio) {
    return Status::InvalidArgument("audio_features has " + std::to_string(audio_bytes) +
                                   " bytes; expected " + std::to_string(want_audio) + " (" +
                                   std::to_string(batch) + " x 32x16x16 float32)");
  }
  return Status::Ok();
}

Status OnnxModel::Run(int batch, const float* visual, const float* audio, OutputFormat format,
                      std::string* out) const {
  if (!visual) return Status::InvalidArgument("OnnxModel::Run needs visual (got a null)");
  return RunVisual(batch, visual, nullptr, audio, format, out);
}

Status OnnxModel::Run(int batch, const uint8_t* visual, const float* audio, OutputFormat format,
                      std::string* out) const {
  if (!visual) return Status::InvalidArgument("OnnxModel::Run needs visual (got a null)");
  if (uint8_io_) return RunVisual(batch, nullptr, visual, audio, format, out);
  // Not wrapped (WrapUint8Io refused the model): v / 255.0f here, bit-identical to
  // the graph's Cast and Div.
  if (batch < 1) return CheckInputSizes(batch, 0, 0);
  static const auto kTable = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; ++i) t[i] = static_cast<float>(i) / 255.0f;
    return t;
  }();
  std::vector<float> floats(visual_floats_per_frame() * static_cast<size_t>(batch));
  for (size_t i = 0; i < floats.size(); ++i) floats[i] = kTable[visual[i]];
  return RunVisual(batch, floats.data(), nullptr, audio, format, out);
}

Status OnnxModel::RunVisual(int batch, const float* visual, const uint8_t* visual_u8,
                            const float* audio, OutputFormat format, std::string* out) const {
  if (!audio || !out) {
    return Status::InvalidArgument("OnnxModel::Run needs visual, audio and out (got a null)");
  }
  LIPSYNC_RETURN_IF_ERROR(CheckInputSizes(batch, visual_floats_per_frame() * batch * sizeof(float),
                                          audio_floats_per_frame() * batch * sizeof(float)));
  const int64_t b = batch;
  const std::array<int64_t, 4> visual_dims{b, visual_channels_, input_height_, input_width_};
  const std::array<int64_t, 4> audio_dims{b, 32, 16, 16};
  const std::array<int64_t, 4> output_dims{b, 3, output_height_, output_width_};
  const size_t visual_values = visual_floats_per_frame() * static_cast<size_t>(batch);
  const size_t out_values = output_values_per_frame() * static_cast<size_t>(batch);
  try {
    const Ort::MemoryInfo& mem = sessions_->cpu_memory;
    // ORT never writes to inputs; the API just lacks a const overload.
    std::array<Ort::Value, 2> inputs{
        visual_u8
            ? Ort::Value::CreateTensor<uint8_t>(mem, const_cast<uint8_t*>(visual_u8), visual_values,
                                                visual_dims.data(), visual_dims.size())
            : Ort::Value::CreateTensor<float>(mem, const_cast<float*>(visual), visual_values,
                                              visual_dims.data(), visual_dims.size()),
        Ort::Value::CreateTensor<float>(mem, const_cast<float*>(audio),
                                        audio_floats_per_frame() * batch, audio_dims.data(),
                                        audio_dims.size())};
    const char* input_names[] = {visual_u8 ? kVisualU8Name : kVisualName, kAudioName};
    if (format == OutputFormat::kFloat32 || uint8_io_) {
      // Run straight into the caller's buffer: no copy of the output (on a wrapped graph
      // the uint8 output comes out of the graph already converted).
      const bool u8 = format == OutputFormat::kUint8;
      const char* output_names[] = {u8 ? kOutputU8Name : kOutputName};
      out->resize(out_values * (u8 ? 1 : sizeof(float)));
      Ort::Value output =
          u8 ? Ort::Value::CreateTensor<uint8_t>(mem, reinterpret_cast<uint8_t*>(out->data()),
                                                 out_values, output_dims.data(), output_dims.size())
             : Ort::Value::CreateTensor<float>(mem, reinterpret_cast<float*>(out->data()),
                                               out_values, output_dims.data(), output_dims.size());
      sessions_->session->Run(Ort::RunOptions{nullptr}, input_names, inputs.data(), inputs.size(),
                              output_names, &output, 1);
      return Status::Ok();
    }
    const char* output_names[] = {kOutputName};
    auto outputs = sessions_->session->Run(Ort::RunOptions{nullptr}, input_names, inputs.data(),
                                           inputs.size(), output_names, 1);
    auto info = outputs[0].GetTensorTypeAndShapeInfo();
    if (info.GetElementCount() != out_values) {
      return Status::Internal("model '" + files_.model_path + "' produced " +
                              std::to_string(info.GetElementCount()) + " output values; expected " +
                              std::to_string(out_values));
    }
    const float* src = outputs[0].GetTensorData<float>();
    out->resize(out_values);
    auto* dst = reinterpret_cast<uint8_t*>(out->data());
    for (size_t i = 0; i < out_values; ++i) {
      float x = src[i];
      float v = x > 0.f ? (x < 1.f ? x : 1.f) : 0.f;  // NaN -> 0
      dst[i] = static_cast<uint8_t>(std::round(v * 255.f));
    }
    return Status::Ok();
  } catch (const Ort::Exception& e) {
    return Status::Internal("running model '" + files_.model_path + "' at batch " +
                            std::to_string(batch) + " failed: " + Bounded(e.what()));
  }
}

Expected<std::vector<float>> OnnxModel::EncodeAudio(const float* mel_windows, int n) const {
  if (!encoder_) {
    return Status::FailedPrecondition("model '" + files_.model_path +
                                      "' has no audio encoder (expected audio_encoder.onnx beside "
                                      "it or audio_encoder_path in the config)");
  }
  if (n < 1 || !mel_windows) {
    return Status::InvalidArgument("EncodeAudio got " + std::to_string(n) +
                                   " mel windows (expected at least 1)");
  }
  try {
    const std::array<int64_t, 4> dims{n, 1, kMelBands, kMelWindowSteps};
    Ort::Value input = Ort::Value::CreateTensor<float>(
        encoder_->cpu_memory, const_cast<float*>(mel_windows),
        static_cast<size_t>(n) * kMelBands * kMelWindowSteps, dims.data(), dims.size());
    std::vector<float> result(static_cast<size_t>(n) * kAudioEmbeddingSize);
    const std::array<int64_t, 2> out_dims{n, kAudioEmbeddingSize};
    Ort::Value output = Ort::Value::CreateTensor<float>(
        encoder_->cpu_memory, result.data(), result.size(), out_dims.data(), out_dims.size());
    const char* in_name = encoder_->input_name.c_str();
    const char* out_name = encoder_->output_name.c_str();
    encoder_->session->Run(Ort::RunOptions{nullptr}, &in_name, &input, 1, &out_name, &output, 1);
    return result;
  } catch (const Ort::Exception& e) {
    return Status::Internal("running audio encoder '" + files_.audio_encoder_path +
                            "' failed: " + Bounded(e.what()));
  }
}

}  // namespace lipsync::inference
