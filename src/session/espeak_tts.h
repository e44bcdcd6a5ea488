// Server-side speech for the demo page (SessionInput.speak): text spoken by espeak-ng,
// run as a separate program (it is GPL-3; never linked), returned as mono s16le PCM at
// the session's rate, ready for LiveSession::PushAudio.
//
// Safety: the text goes to the program's stdin (never a shell, never an argument, so
// it cannot be read as an option), at most kMaxTextChars characters of UTF-8 without
// control characters other than tab/newline; the voice name is checked against
// [A-Za-z0-9_+./-] (at most 64 characters, not starting with '-'); the program is
// killed when it runs longer than `timeout` or writes more than `max_output_bytes`.
// The WAV it writes on stdout is parsed here (espeak-ng streams it with placeholder
// sizes) and resampled with libsoxr (high quality) to the requested rate.
//
// Thread-safe: each call spawns its own process; no shared state.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>

#include "common/status.h"

namespace lipsync::session {

inline constexpr size_t kMaxTextChars = 2000;

struct TtsOptions {
  std::string program = "espeak-ng";  // found on PATH
  std::chrono::milliseconds timeout{15000};
  size_t max_output_bytes = size_t(64) << 20;  // the WAV (2000 chars ~ 3 min ~ 8 MB)
  int words_per_minute = 0;                    // 0: espeak-ng's default (175)
};

struct TtsResult {
  std::string pcm_s16le;  // mono at the requested rate
  int sample_rate = 0;
  double seconds = 0;   // length of the speech
  double synth_ms = 0;  // wall time of the program and the resampling
};

// INVALID_ARGUMENT: empty or too long text, control characters, invalid UTF-8, a bad
// voice name or rate (kSupportedSampleRates); NOT_FOUND / INVALID_ARGUMENT when
// espeak-ng is missing or rejects the voice (it writes nothing); DEADLINE_EXCEEDED
// on the timeout; RESOURCE_EXHAUSTED when the output passes max_output_bytes;
// INTERNAL for a malformed WAV.
Expected<TtsResult> SpeakText(std::string_view text, std::string_view voice, int sample_rate,
                              const TtsOptions& options = {});

// Parses a PCM 16-bit WAV (any channel count, averaged to mono) held in memory;
// tolerates the placeholder sizes of a streamed header (data to the end).
// INVALID_ARGUMENT naming what is wrong.
struct PcmAudio {
  std::string pcm_s16le;  // mono
  int sample_rate = 0;
};
Expected<PcmAudio> ParseWavS16(std::string_view wav);

// Mono s16le from `from_rate` to `to_rate` (libsoxr HQ; same rate: copied).
Expected<std::string> ResampleS16(std::string_view pcm_s16le, int from_rate, int to_rate);

}  // namespace lipsync::session
