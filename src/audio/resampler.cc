#include "audio/resampler.h"

#include <soxr.h>

#include <string>

namespace lipsync::audio {

Status CheckSupportedSampleRate(int sample_rate) {
  for (int rate : kSupportedSampleRates) {
    if (rate == sample_rate) return Status::Ok();
  }
  std::string list;
  for (int rate : kSupportedSampleRates) {
    if (!list.empty()) list += ", ";
    list += std::to_string(rate);
  }
  return Status::InvalidArgument("unsupported sample rate " + std::to_string(sample_rate) +
                                 " Hz; expected one of " + list + " Hz");
}

Expected<std::vector<float>> ResampleTo16k(const float* samples, size_t count, int sample_rate) {
  LIPSYNC_RETURN_IF_ERROR(CheckSupportedSampleRate(sample_rate));
  if (sample_rate == kModelSampleRate) return std::vector<float>(samples, samples + count);
  const size_t out_count = size_t((uint64_t(count) * kModelSampleRate + uint64_t(sample_rate) / 2) /
                                  uint64_t(sample_rate));
  std::vector<float> out(out_count, 0.0f);
  if (count == 0) return out;
  const soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
  const soxr_quality_spec_t quality = soxr_quality_spec(SOXR_HQ, 0);
  const soxr_runtime_spec_t runtime = soxr_runtime_spec(1);  // callers parallelise, not soxr
  size_t consumed = 0;
  size_t produced = 0;
  const soxr_error_t error =
      soxr_oneshot(double(sample_rate), double(kModelSampleRate), 1, samples, count, &consumed,
                   out.data(), out_count, &produced, &io, &quality, &runtime);
  if (error) {
    return Status::Internal(std::string("resampling ") + std::to_string(sample_rate) +
                            " Hz -> 16000 Hz failed: " + error);
  }
  // soxr may stop a sample short of the rounded length; the tail stays silent.
  return out;
}

}  // namespace lipsync::audio
