#include "client/utterance.h"

#include "audio/batch_audio.h"
#include "audio/resampler.h"
#include "audio/wav_reader.h"

namespace lipsync::client {

Expected<std::shared_ptr<const Utterance>> LoadUtterance(const std::string& path) {
  LIPSYNC_ASSIGN_OR_RETURN(audio::MonoAudio decoded, audio::ReadAudioFile(path));
  if (decoded.samples.empty()) {
    return Status::InvalidArgument("'" + path + "' holds no audio samples; expected speech");
  }
  auto utterance = std::make_shared<Utterance>();
  if (audio::CheckSupportedSampleRate(decoded.sample_rate).ok()) {
    utterance->sample_rate = decoded.sample_rate;
    utterance->pcm_s16le = audio::FloatToS16le(decoded.samples);
  } else {
    LIPSYNC_ASSIGN_OR_RETURN(
        auto resampled,
        audio::ResampleTo16k(decoded.samples.data(), decoded.samples.size(), decoded.sample_rate));
    utterance->sample_rate = audio::kModelSampleRate;
    utterance->pcm_s16le = audio::FloatToS16le(resampled);
  }
  const size_t samples = utterance->pcm_s16le.size() / 2;
  const size_t per_frame = size_t(audio::SamplesPerFrame(utterance->sample_rate));
  utterance->frames = int((samples + per_frame - 1) / per_frame);
  utterance->seconds = double(samples) / utterance->sample_rate;
  return std::shared_ptr<const Utterance>(std::move(utterance));
}

AudioSlicer MakeUtteranceSlicer(std::shared_ptr<const Utterance> utterance) {
  return [utterance](int start, int frames) -> Expected<BatchAudio> {
    audio::BatchAudioSpec spec;
    spec.start_frame = start;
    spec.batch_size = frames;
    spec.utterance_frames = utterance->frames;
    spec.end_of_utterance = start + frames >= utterance->frames;
    spec.sample_rate = utterance->sample_rate;
    LIPSYNC_ASSIGN_OR_RETURN(std::string pcm, audio::SliceBatchAudio(utterance->pcm_s16le, spec));
    BatchAudio out;
    out.pcm_s16le = std::move(pcm);
    out.sample_rate = utterance->sample_rate;
    out.utterance_frames = utterance->frames;
    out.end_of_utterance = spec.end_of_utterance;
    return out;
  };
}

}  // namespace lipsync::client
