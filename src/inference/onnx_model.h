// One loaded lip-sync network (plus its optional audio encoder) as ONNX Runtime
// sessions on one device (CPU or one CUDA GPU).
//
// Thread-safe: Run and EncodeAudio may be called concurrently from any number of
// threads (ORT Session::Run is thread-safe). Immutable after Load. Shared through
// shared_ptr so a model being replaced or unloaded lives until its last user is done.
//
// Footprint (memory_bytes), measured around session creation plus one warm-up Run at
// batch 1 (no warm-up for CPU sessions on the runtime's shared arena, see
// ort_runtime.h: their activations live in that arena, not in the model): on CPU, the delta of heap
// bytes in use (glibc mallinfo2: what ORT holds after load, not blurred by freed memory that malloc
// keeps or reuses, which made the RSS delta vary 2-3x between loads of one model); if that is <= 0,
// the RSS delta
// (/proc/self/statm). On a GPU, the NVML used-memory delta on that device. When the
// delta is still <= 0, the ONNX file sizes x 1.2. Loads or frees running concurrently
// in one process blur each other's deltas.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "inference/api.h"

namespace lipsync::inference {

struct TensorShape {
  std::vector<int64_t> dims;     // -1 for a symbolic dimension
  std::string ToString() const;  // "[-1,6,320,320]"
};

class ModelCache;

struct ModelFiles {
  std::string model_path;
  std::string audio_encoder_path;  // "" = none
};

// Mel window the audio encoder takes: [n,1,80,16] -> [n,512].
inline constexpr int kMelBands = 80;
inline constexpr int kMelWindowSteps = 16;
inline constexpr int kAudioEmbeddingSize = 512;

class OnnxModel {
 public:
  // Requires OrtRuntime::Initialize() to have succeeded. device_id -1 = CPU,
  // otherwise the CUDA provider on that GPU ordinal. Errors: NOT_FOUND (missing file),
  // FAILED_PRECONDITION (not a valid ONNX model, with the file and ORT's message;
  // inputs other than "input" [B,C,H,W] and "audio" [B,32,16,16] or outputs other than
  // "output" [B,3,OH,OW], or declared sizes over the bounds in onnx_model.cc: 8192 per
  // dimension, 2^24 values per frame, fixed batch 1024), UNAVAILABLE (the device could
  // not take the session), RESOURCE_EXHAUSTED (out of memory). Never throws: ORT and
  // allocation exceptions become a Status; text from the file (ORT's message, tensor
  // names) is quoted bounded.
  //
  // With `cache` (may be null), sessions go through the optimized-graph cache
  // (inference/model_cache.h): a hit skips graph optimization; a miss optimizes, loads
  // and saves the entry; a corrupt entry is reported and rebuilt; a cache that cannot
  // be written only costs the saving (the load itself succeeds).
  //
  // With `uint8_io` (the default) the network is wrapped at load time
  // (inference/graph_wrap.h) so that the uint8 visual input and the uint8 output are
  // converted by ONNX Runtime on the session's device: on a GPU only uint8 crosses
  // PCIe. A model WrapUint8Io refuses (logged at INFO) loads as it is and its uint8
  // forms are converted on the CPU (uint8_io() false). false: never wrapped (benches).
  static Expected<std::shared_ptr<OnnxModel>> Load(const ModelFiles& files, int device_id,
                                                   ModelCache* cache = nullptr,
                                                   bool uint8_io = true);

  ~OnnxModel();
  OnnxModel(const OnnxModel&) = delete;
  OnnxModel& operator=(const OnnxModel&) = delete;

  // One batched Run. `visual` holds batch*C*H*W floats, `audio` batch*32*16*16 floats.
  // Writes batch*3*OH*OW values in `format` (kFloat32: float32 LE bytes; kUint8:
  // round(clamp(x,0,1)*255)) into *out, resized to fit and written in place.
  // INVALID_ARGUMENT for batch < 1 or a null pointer; INTERNAL with ORT's message if
  // Run fails.
  Status Run(int batch, const float* visual, const float* audio, OutputFormat format,
             std::string* out) const;
  // The same with batch*C*H*W uint8 visual values (VISUAL_UINT8: the model sees
  // v / 255.0f). On a wrapped model the graph converts both ways; otherwise the
  // conversion runs here.
  Status Run(int batch, const uint8_t* visual, const float* audio, OutputFormat format,
             std::string* out) const;
  // Byte-count check for a request (INVALID_ARGUMENT naming expected vs. got bytes).
  Status CheckInputSizes(int batch, size_t visual_bytes, size_t audio_bytes) const;
  // [n,1,80,16] mel windows -> n*512 floats. FAILED_PRECONDITION without an encoder.
  Expected<std::vector<float>> EncodeAudio(const float* mel_windows, int n) const;

  int visual_channels() const { return visual_channels_; }
  int input_height() const { return input_height_; }
  int input_width() const { return input_width_; }
  int output_height() const { return output_height_; }
  int output_width() const { return output_width_; }
  int device_id() const { return device_id_; }
  bool has_audio_encoder() const { return encoder_ != nullptr; }
  // The session runs the wrapped graph (uint8 converted by ONNX Runtime).
  bool uint8_io() const { return uint8_io_; }
  int64_t memory_bytes() const { return memory_bytes_; }
  // Where Load's time went: creating the sessions (encoder included; through the
  // cache when one was given) and the warm-up Run.
  double session_create_ms() const { return session_create_ms_; }
  double warm_up_ms() const { return warm_up_ms_; }
  const ModelFiles& files() const { return files_; }
  // Floats per frame of each input, and values per frame of the output.
  size_t visual_floats_per_frame() const;
  size_t audio_floats_per_frame() const { return kAudioFeatureFloats; }
  size_t output_values_per_frame() const;
  // Declared shapes as read from the ONNX file.
  const TensorShape& visual_shape() const { return visual_shape_; }
  const TensorShape& audio_shape() const { return audio_shape_; }
  const TensorShape& output_shape() const { return output_shape_; }

 private:
  struct Sessions;
  OnnxModel() = default;
  // Load without the exception guard (Load catches what this throws).
  static Expected<std::shared_ptr<OnnxModel>> LoadUnguarded(const ModelFiles& files, int device_id,
                                                            ModelCache* cache, bool uint8_io);
  // One Run with exactly one of visual / visual_u8.
  Status RunVisual(int batch, const float* visual, const uint8_t* visual_u8, const float* audio,
                   OutputFormat format, std::string* out) const;

  ModelFiles files_;
  int device_id_ = -1;
  bool uint8_io_ = false;
  int visual_channels_ = 0;
  int input_height_ = 0;
  int input_width_ = 0;
  int output_height_ = 0;
  int output_width_ = 0;
  int64_t memory_bytes_ = 0;
  double session_create_ms_ = 0;
  double warm_up_ms_ = 0;
  TensorShape visual_shape_, audio_shape_, output_shape_;
  std::unique_ptr<Sessions> sessions_;
  std::unique_ptr<Sessions> encoder_;
};

}  // namespace lipsync::inference
