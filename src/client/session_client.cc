#include "client/session_client.h"

#include <fcntl.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>
#include <vector>

#include "client/stream_saver.h"
#include "client/utterance.h"
#include "compositing.grpc.pb.h"
#include "rpc/grpc_status.h"


namespace lipsync::client {
namespace {

namespace fs = std::filesystem;
namespace pb = ::compositing;
using SteadyClock = std::chrono::steady_clock;

double Ms(SteadyClock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

void PutLe(std::string& out, uint32_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(char((v >> (8 * i)) & 0xFF));
}

// A mono s16le WAV file.
std::string WavFile(const std::string& pcm, int rate) {
  std::string out = "RIFF";
  PutLe(out, uint32_t(36 + pcm.size()), 4);
  out += "WAVEfmt ";
  PutLe(out, 16, 4);
  PutLe(out, 1, 2);  // PCM
  PutLe(out, 1, 2);  // mono
  PutLe(out, uint32_t(rate), 4);
  PutLe(out, uint32_t(rate * 2), 4);
  PutLe(out, 2, 2);
  PutLe(out, 16, 2);
  out += "data";
  PutLe(out, uint32_t(pcm.size()), 4);
  return out + pcm;
}

Status WriteFile(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  if (!out) return Status::FailedPrecondition("cannot write '" + path.string() + "'");
  return Status::Ok();
}

}  // namespace

Expected<StreamReport> RunStreamSession(const StreamOptions& o) {
  LIPSYNC_ASSIGN_OR_RETURN(auto utterance, LoadUtterance(o.audio_path));
  StreamReport report;
  report.audio_seconds = utterance->seconds;

  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  auto channel = grpc::CreateCustomChannel(o.server, grpc::InsecureChannelCredentials(), args);
  auto stub = pb::CompositingService::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(int64_t(o.timeout_seconds * 1000)));
  if (!o.api_key.empty()) context.AddMetadata("authorization", "Bearer " + o.api_key);
  auto stream = stub->StreamSession(&context);

  // Received media, kept for saving.
  std::mutex mu;
  std::string video, audio;
  bool opened = false, reader_done = false;
  std::condition_variable opened_cv;
  SteadyClock::time_point first_arrival{}, last_arrival{}, first_speaking{};
  int64_t last_index = -1, audio_samples = 0;
  std::vector<double> offsets_ms;  // arrival - pts of each frame (from the first arrival)
  pb::SessionStats last_stats;

  std::thread reader([&] {
    pb::SessionOutput out;
    while (stream->Read(&out)) {
      const auto now = SteadyClock::now();
      std::lock_guard<std::mutex> lock(mu);
      if (out.has_opened()) {
        const auto& op = out.opened();
        report.session_id = op.session_id();
        report.width = op.width();
        report.height = op.height();
        report.fps = op.fps();
        report.sample_rate = op.audio_sample_rate();
        opened = true;
        opened_cv.notify_all();
      } else if (out.has_frame()) {
        const pb::MediaFrame& f = out.frame();
        if (report.frames == 0) first_arrival = now;
        last_arrival = now;
        offsets_ms.push_back(Ms(now - first_arrival) - double(f.pts_us()) / 1000.0);
        if (last_index >= 0 && f.frame_index() > last_index + 1) {
          report.missing_indices += f.frame_index() - last_index - 1;
        }
        last_index = f.frame_index();
        ++report.frames;
        if (f.speaking()) {
          if (report.speaking_frames == 0) first_speaking = now;
          ++report.speaking_frames;
        }
        report.video_bytes += int64_t(f.video().size());
        audio_samples += int64_t(f.audio().size() / 2);
        if (!o.save_dir.empty()) {
          video += f.video();
          audio += f.audio();
        }
      } else if (out.has_event()) {
        if (out.event().kind() == pb::SessionEvent::ERROR) {
          ++report.errors;
          report.last_error = out.event().message().substr(0, 200);
        }
      } else if (out.has_stats()) {
        last_stats = out.stats();
      }
    }
    std::lock_guard<std::mutex> lock(mu);
    reader_done = true;
    opened_cv.notify_all();
  });

  const auto run_start = SteadyClock::now();
  pb::SessionInput in;
  pb::SessionOpen* open = in.mutable_open();
  open->set_model_id(o.model);
  open->set_sample_rate(utterance->sample_rate);
  open->set_channels(1);
  open->set_codec(o.h264 ? pb::H264 : pb::MJPEG);
  open->set_bitrate_kbps(o.bitrate_kbps);
  open->set_lookahead_frames(o.lookahead_frames);
  bool sending = stream->Write(in);
  {
    std::unique_lock<std::mutex> lock(mu);
    opened_cv.wait_for(lock, std::chrono::seconds(60), [&] { return opened || reader_done; });
    sending = sending && opened;
  }
  // A little idle video first, then the speech from the first chunk on.
  if (sending) {
    std::this_thread::sleep_for(std::chrono::milliseconds(int64_t(o.idle_seconds * 1000)));
  }
  const std::string& pcm = utterance->pcm_s16le;
  const int rate = utterance->sample_rate;
  const size_t chunk = size_t(o.realtime ? rate / 50 : rate) * 2;  // 20 ms or 1 s
  SteadyClock::time_point first_sent{};
  for (size_t off = 0; sending && off < pcm.size(); off += chunk) {
    const size_t n = std::min(chunk, pcm.size() - off);
    pb::SessionInput a;
    a.mutable_audio()->set_pcm(pcm.substr(off, n));
    if (off == 0) first_sent = SteadyClock::now();
    if (!stream->Write(a)) sending = false;
    if (o.realtime) {
      std::this_thread::sleep_until(
          first_sent + std::chrono::microseconds(int64_t((off + n) / 2) * 1000000 / rate));
    }
  }
  for (auto kind : {pb::SessionControl::END_OF_SPEECH, pb::SessionControl::CLOSE}) {
    pb::SessionInput c;
    c.mutable_control()->set_kind(kind);
    if (sending && !stream->Write(c)) sending = false;
  }
  stream->WritesDone();
  reader.join();
  grpc::Status status = stream->Finish();
  report.wall_seconds = Ms(SteadyClock::now() - run_start) / 1000;
  if (!status.ok()) return rpc::FromGrpc(status).WithContext("live session");

  report.repeated_frames = last_stats.repeated_frames();
  report.dropped_frames = last_stats.dropped_frames();
  report.inference_batches = last_stats.inference_batches();
  if (report.speaking_frames > 0 && first_sent != SteadyClock::time_point{}) {
    report.first_speaking_ms = Ms(first_speaking - first_sent);
  }
  if (report.frames > 1) {
    const double span_ms = Ms(last_arrival - first_arrival);
    report.delivered_fps = span_ms > 0 ? (report.frames - 1) * 1000.0 / span_ms : 0;
  }
  // Drift: how the frames' arrival moved against their timestamps from the first second
  // to the last (the minimum of each window filters jitter and the start-up burst).
  if (offsets_ms.size() >= 50) {
    const auto first = std::min_element(offsets_ms.begin(), offsets_ms.begin() + 25);
    const auto last = std::min_element(offsets_ms.end() - 25, offsets_ms.end());
    report.drift_ms = *last - *first;
  }
  if (report.sample_rate > 0 && report.fps > 0) {
    report.av_offset_ms =
        (double(audio_samples) / report.sample_rate - double(report.frames) / report.fps) * 1000;
  }

  if (!o.save_dir.empty() && report.frames > 0) {
    std::error_code ec;
    fs::create_directories(o.save_dir, ec);
    const fs::path dir(o.save_dir);
    const fs::path video_path = dir / (o.h264 ? "session.h264" : "session.mjpeg");
    const fs::path wav_path = dir / "session.wav";
    const fs::path mp4 = dir / "session.mp4";
    Status s = WriteFile(video_path, video);
    if (s.ok()) s = WriteFile(wav_path, WavFile(audio, report.sample_rate));
    if (!s.ok()) {
      report.save_error = s.message();
    } else {
      std::vector<std::string> cmd = {"ffmpeg",
                                      "-nostdin",
                                      "-y",
                                      "-loglevel",
                                      "error",
                                      "-fflags",
                                      "+genpts",
                                      "-f",
                                      o.h264 ? "h264" : "mjpeg",
                                      "-framerate",
                                      std::to_string(report.fps),
                                      "-i",
                                      video_path.string(),
                                      "-i",
                                      wav_path.string()};
      if (o.h264) {
        for (const char* a : {"-c:v", "copy"}) cmd.emplace_back(a);
      } else {
        for (const char* a : {"-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264", "-preset",
                              "veryfast", "-crf", "20", "-pix_fmt", "yuv420p"}) {
          cmd.emplace_back(a);
        }
      }
      for (const char* a : {"-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart"}) {
        cmd.emplace_back(a);
      }
      cmd.push_back(mp4.string());
      const std::string log = (dir / "ffmpeg.log").string();
      const int rc = RunProgram(cmd, log);
      if (rc == 0 && fs::exists(mp4)) {
        report.video_path = mp4.string();
      } else {
        report.save_error = "ffmpeg failed (exit " + std::to_string(rc) + "), see " + log;
      }
    }
  }
  return report;
}

std::string FormatStreamReport(const StreamReport& r) {
  char buf[2048];
  std::snprintf(
      buf, sizeof buf,
      "Live session %s: %dx%d at %d fps, audio %d Hz, %.2f s of speech, %.1f s wall\n"
      "  first speaking frame: %s after the first chunk was sent\n"
      "  delivered:            %lld frames (%lld speaking) at %.2f fps, %.1f kbit/s video\n"
      "  repeated (late):      %lld\n"
      "  dropped:              %lld (server), %lld missing indices seen here\n"
      "  A/V offset:           %+.1f ms (audio samples received vs frames x rate / fps)\n"
      "  drift:                %+.1f ms (frame arrival vs timestamps, first to last second)\n"
      "  inference batches:    %lld, ERROR events: %d%s%s\n",
      r.session_id.c_str(), r.width, r.height, r.fps, r.sample_rate, r.audio_seconds,
      r.wall_seconds,
      r.first_speaking_ms >= 0
          ? (std::to_string(int64_t(r.first_speaking_ms + 0.5)) + " ms").c_str()
          : "none",
      static_cast<long long>(r.frames), static_cast<long long>(r.speaking_frames), r.delivered_fps,
      r.frames > 0 && r.fps > 0 ? r.video_bytes * 8.0 / 1000 / (double(r.frames) / r.fps) : 0.0,
      static_cast<long long>(r.repeated_frames), static_cast<long long>(r.dropped_frames),
      static_cast<long long>(r.missing_indices), r.av_offset_ms, r.drift_ms,
      static_cast<long long>(r.inference_batches), r.errors, r.errors ? ", last: " : "",
      r.last_error.c_str());
  std::string out = buf;
  if (!r.video_path.empty()) out += "  saved:                " + r.video_path + "\n";
  if (!r.save_error.empty()) out += "  not saved:            " + r.save_error + "\n";
  return out;
}

}  // namespace lipsync::client
