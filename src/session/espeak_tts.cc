#include "session/espeak_tts.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <soxr.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <vector>

#include "audio/resampler.h"

extern char** environ;

namespace lipsync::session {
namespace {

using SteadyClock = std::chrono::steady_clock;

// Closes a descriptor on scope exit.
struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Reset(); }
  void Reset() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

// Checks UTF-8 and control characters; returns the text with tabs/newlines as spaces
// and the number of characters (code points).
Expected<std::string> CleanText(std::string_view text) {
  if (text.empty()) return Status::InvalidArgument("text is empty (expected 1 to 2000 characters)");
  std::string out;
  out.reserve(text.size());
  size_t chars = 0;
  for (size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    size_t len = 0;
    if (c < 0x80) {
      len = 1;
    } else if ((c & 0xE0) == 0xC0 && c >= 0xC2) {
      len = 2;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
    } else if ((c & 0xF8) == 0xF0 && c <= 0xF4) {
      len = 4;
    } else {
      return Status::InvalidArgument("text is not valid UTF-8 (byte " + std::to_string(i) + ")");
    }
    if (i + len > text.size()) {
      return Status::InvalidArgument("text is not valid UTF-8 (truncated at byte " +
                                     std::to_string(i) + ")");
    }
    for (size_t k = 1; k < len; ++k) {
      if ((static_cast<unsigned char>(text[i + k]) & 0xC0) != 0x80) {
        return Status::InvalidArgument("text is not valid UTF-8 (byte " + std::to_string(i + k) +
                                       ")");
      }
    }
    if (len == 1) {
      if (c == '\t' || c == '\n' || c == '\r') {
        out.push_back(' ');
      } else if (c < 0x20 || c == 0x7F) {
        return Status::InvalidArgument("text has a control character at byte " + std::to_string(i) +
                                       " (expected printable text)");
      } else {
        out.push_back(char(c));
      }
    } else {
      out.append(text.substr(i, len));
    }
    i += len;
    if (++chars > kMaxTextChars) {
      return Status::InvalidArgument("text is longer than " + std::to_string(kMaxTextChars) +
                                     " characters");
    }
  }
  out.push_back('\n');
  return out;
}

Status CheckVoice(std::string_view voice) {
  if (voice.size() > 64) {
    return Status::InvalidArgument("voice name is longer than 64 characters");
  }
  if (!voice.empty() && voice[0] == '-') {
    return Status::InvalidArgument("voice name must not start with '-'");
  }
  for (char c : voice) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '+' || c == '.' || c == '/' || c == '-';
    if (!ok) {
      return Status::InvalidArgument(
          "voice name has a character outside [A-Za-z0-9_+./-] (e.g. 'en-us', 'de', "
          "'en-us+f3')");
    }
  }
  return Status::Ok();
}

uint32_t Le32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return uint32_t(u[0]) | uint32_t(u[1]) << 8 | uint32_t(u[2]) << 16 | uint32_t(u[3]) << 24;
}
uint16_t Le16(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return uint16_t(u[0] | u[1] << 8);
}

double MsSince(SteadyClock::time_point t0) {
  return std::chrono::duration<double, std::milli>(SteadyClock::now() - t0).count();
}

}  // namespace

Expected<PcmAudio> ParseWavS16(std::string_view wav) {
  if (wav.size() < 12 || wav.substr(0, 4) != "RIFF" || wav.substr(8, 4) != "WAVE") {
    return Status::InvalidArgument("not a WAV file (expected a RIFF/WAVE header)");
  }
  size_t pos = 12;
  int channels = 0, rate = 0, bits = 0;
  while (pos + 8 <= wav.size()) {
    const std::string_view id = wav.substr(pos, 4);
    const uint64_t size = Le32(wav.data() + pos + 4);
    pos += 8;
    if (id == "fmt ") {
      if (size < 16 || pos + 16 > wav.size())
        return Status::InvalidArgument("WAV fmt chunk is short");
      const uint16_t format = Le16(wav.data() + pos);
      channels = Le16(wav.data() + pos + 2);
      rate = int(Le32(wav.data() + pos + 4));
      bits = Le16(wav.data() + pos + 14);
      if (format != 1 || bits != 16) {
        return Status::InvalidArgument("WAV is not 16-bit PCM (format " + std::to_string(format) +
                                       ", " + std::to_string(bits) + " bits)");
      }
      if (channels < 1 || channels > 8 || rate < 1000 || rate > 384000) {
        return Status::InvalidArgument("WAV has " + std::to_string(channels) + " channels at " +
                                       std::to_string(rate) + " Hz (expected 1..8, 1000..384000)");
      }
    } else if (id == "data") {
      if (channels == 0) return Status::InvalidArgument("WAV data chunk before its fmt chunk");
      // A streamed header carries a placeholder size: take what is there.
      const size_t available = wav.size() - pos;
      size_t bytes = size_t(std::min<uint64_t>(size, available));
      const size_t frame_bytes = size_t(channels) * 2;
      bytes -= bytes % frame_bytes;
      PcmAudio out;
      out.sample_rate = rate;
      const size_t frames = bytes / frame_bytes;
      out.pcm_s16le.resize(frames * 2);
      for (size_t f = 0; f < frames; ++f) {
        int sum = 0;
        for (int c = 0; c < channels; ++c) {
          sum += int16_t(Le16(wav.data() + pos + f * frame_bytes + size_t(c) * 2));
        }
        const int v = channels == 1 ? sum : int(std::lround(double(sum) / channels));
        const auto s = static_cast<uint16_t>(int16_t(std::clamp(v, -32768, 32767)));
        out.pcm_s16le[2 * f] = char(s & 0xFF);
        out.pcm_s16le[2 * f + 1] = char(s >> 8);
      }
      return out;
    }
    if (size > wav.size() - std::min(pos, wav.size())) break;
    pos += size_t(size) + (size & 1);
  }
  return Status::InvalidArgument("WAV has no data chunk");
}

Expected<std::string> ResampleS16(std::string_view pcm_s16le, int from_rate, int to_rate) {
  if (pcm_s16le.size() % 2 != 0) return Status::InvalidArgument("odd byte count for s16le");
  if (from_rate <= 0 || to_rate <= 0) return Status::InvalidArgument("sample rates must be > 0");
  if (from_rate == to_rate || pcm_s16le.empty()) return std::string(pcm_s16le);
  const size_t in_count = pcm_s16le.size() / 2;
  const size_t out_count = size_t(std::llround(double(in_count) * to_rate / from_rate));
  std::string out(out_count * 2, '\0');
  size_t done = 0;
  const soxr_io_spec_t io = soxr_io_spec(SOXR_INT16_I, SOXR_INT16_I);
  const soxr_quality_spec_t quality = soxr_quality_spec(SOXR_HQ, 0);
  const soxr_error_t error =
      soxr_oneshot(double(from_rate), double(to_rate), 1, pcm_s16le.data(), in_count, nullptr,
                   out.data(), out_count, &done, &io, &quality, nullptr);
  if (error != nullptr) return Status::Internal(std::string("libsoxr: ") + error);
  out.resize(done * 2);
  out.resize(out_count * 2, '\0');  // soxr may return a few samples short: pad silence
  return out;
}

Expected<TtsResult> SpeakText(std::string_view text, std::string_view voice, int sample_rate,
                              const TtsOptions& options) {
  const auto t0 = SteadyClock::now();
  LIPSYNC_ASSIGN_OR_RETURN(std::string clean, CleanText(text));
  LIPSYNC_RETURN_IF_ERROR(CheckVoice(voice));
  LIPSYNC_RETURN_IF_ERROR(audio::CheckSupportedSampleRate(sample_rate));

  // The text travels through an anonymous in-memory file on stdin.
  Fd text_fd(::memfd_create("lipsync-tts-text", MFD_CLOEXEC));
  if (text_fd.fd < 0) return Status::Internal(std::string("memfd_create: ") + std::strerror(errno));
  for (size_t off = 0; off < clean.size();) {
    const ssize_t n = ::write(text_fd.fd, clean.data() + off, clean.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Status::Internal(std::string("writing the text: ") + std::strerror(errno));
    off += size_t(n);
  }
  if (::lseek(text_fd.fd, 0, SEEK_SET) != 0) return Status::Internal("lseek on the text file");

  int out_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) {
    return Status::Internal(std::string("pipe2: ") + std::strerror(errno));
  }
  Fd out_read(out_pipe[0]);
  Fd out_write(out_pipe[1]);
  int err_pipe[2];
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    return Status::Internal(std::string("pipe2: ") + std::strerror(errno));
  }
  Fd err_read(err_pipe[0]);
  Fd err_write(err_pipe[1]);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, text_fd.fd, 0);
  posix_spawn_file_actions_adddup2(&actions, out_write.fd, 1);
  posix_spawn_file_actions_adddup2(&actions, err_write.fd, 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t no_signals;
  sigemptyset(&no_signals);
  posix_spawnattr_setsigmask(&attr, &no_signals);
  sigset_t default_signals;
  sigemptyset(&default_signals);
  sigaddset(&default_signals, SIGPIPE);
  posix_spawnattr_setsigdefault(&attr, &default_signals);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<std::string> args = {options.program, "--stdout", "-f", "/dev/stdin"};
  if (!voice.empty()) {
    args.push_back("-v");
    args.emplace_back(voice);
  }
  if (options.words_per_minute > 0) {
    args.push_back("-s");
    args.push_back(std::to_string(std::clamp(options.words_per_minute, 80, 500)));
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  pid_t pid = -1;
  const int spawn_error =
      posix_spawnp(&pid, options.program.c_str(), &actions, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (spawn_error != 0) {
    return Status::NotFound("cannot run '" + options.program + "' (" + std::strerror(spawn_error) +
                            "): install espeak-ng (Debian package espeak-ng) for SpeakText");
  }
  out_write.Reset();
  err_write.Reset();
  text_fd.Reset();

  std::string wav;
  std::string errors;  // its stderr (bounded)
  Status failure;
  const auto deadline = t0 + options.timeout;
  char buffer[65536];
  while (true) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now())
            .count();
    if (left <= 0) {
      failure = Status::DeadlineExceeded("espeak-ng took longer than " +
                                         std::to_string(options.timeout.count()) + " ms");
      break;
    }
    pollfd p[2] = {{out_read.fd, POLLIN, 0}, {err_read.fd, POLLIN, 0}};
    const nfds_t count = err_read.fd >= 0 ? 2 : 1;
    const int ready = ::poll(p, count, int(std::min<int64_t>(left, 1000)));
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) {
      failure = Status::Internal(std::string("poll: ") + std::strerror(errno));
      break;
    }
    if (ready == 0) continue;
    if (count == 2 && p[1].revents != 0) {
      const ssize_t n = ::read(err_read.fd, buffer, sizeof buffer);
      if (n > 0) {
        if (errors.size() < 4096) errors.append(buffer, std::min<size_t>(size_t(n), 4096));
      } else if (n == 0 || errno != EINTR) {
        err_read.Reset();
      }
    }
    if (p[0].revents == 0) continue;
    const ssize_t n = ::read(out_read.fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      failure =
          Status::Internal(std::string("reading espeak-ng's output: ") + std::strerror(errno));
      break;
    }
    if (n == 0) break;  // the program closed its stdout
    if (wav.size() + size_t(n) > options.max_output_bytes) {
      failure = Status::ResourceExhausted("espeak-ng wrote more than " +
                                          std::to_string(options.max_output_bytes) + " bytes");
      break;
    }
    wav.append(buffer, size_t(n));
  }
  if (!failure.ok()) ::kill(pid, SIGKILL);
  out_read.Reset();
  int wstatus = 0;
  while (::waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
  }
  if (!failure.ok()) return failure;
  if (errors.find("voice does not exist") != std::string::npos) {
    return Status::InvalidArgument("espeak-ng has no voice '" + std::string(voice.substr(0, 64)) +
                                   "' (`espeak-ng --voices` lists them; empty: the default)");
  }
  if (wav.size() <= 44) {
    return Status::InvalidArgument("espeak-ng produced no speech (exit status " +
                                   std::to_string(WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1) +
                                   "): unknown voice '" + std::string(voice.substr(0, 64)) +
                                   "'? (`espeak-ng --voices`)");
  }
  auto parsed = ParseWavS16(wav);
  if (!parsed.ok()) return Status::Internal("espeak-ng's output: " + parsed.status().message());
  LIPSYNC_ASSIGN_OR_RETURN(std::string pcm,
                           ResampleS16(parsed->pcm_s16le, parsed->sample_rate, sample_rate));
  TtsResult result;
  result.seconds = double(pcm.size() / 2) / sample_rate;
  result.pcm_s16le = std::move(pcm);
  result.sample_rate = sample_rate;
  result.synth_ms = MsSince(t0);
  return result;
}

}  // namespace lipsync::session
