// Encoded idle loops shared between live sessions (issue 10, docs/perf/live_sessions.md):
// an avatar's ping-pong frame loop (0,1,..,n-1,n-2,..,1; 2n-2 frames) encoded once
// per avatar + encoder options (media::EncodeSequence semantics: frame 0 an IDR, a key
// frame every key_interval_frames), so that an idle H.264 session replays access units
// instead of encoding (and, for compact avatars, JPEG-decoding) a frame every 40 ms.
//
// A loop is built in the background on first request (one thread per build, which pins
// the avatar while it runs); Get answers at once: the loop when it is ready, else null
// (the session encodes live meanwhile). Loops are immutable and shared by shared_ptr.
// Bounded: the loops held total at most max_bytes; a finished loop that does not fit
// once unused loops are evicted (least recently asked first) is dropped and remembered
// as failed (sessions of that avatar keep encoding live). A failed build is not retried
// for that avatar object. Entries are keyed by the avatar object (its address, load
// time and shape: a reload is a new object, hence a new loop) and every encoder option;
// a loop of an avatar that is gone stays until evicted for room.
//
// Thread-safe. The destructor waits for builds in flight.
#pragma once

#include <cstddef>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "avatar/avatar.h"
#include "avatar/avatar_registry.h"
#include "common/status.h"
#include "image/image.h"
#include "media/video_encoder.h"

namespace lipsync::session {

struct IdleLoop {
  std::vector<media::EncodedFrame> frames;  // frame i: ping-pong position i
  size_t bytes = 0;
  double build_ms = 0;  // wall time of the build
};

// The frame's full RGB picture (compact storage: the cached JPEG decoded with the
// exact held region on top).
Expected<std::shared_ptr<const image::Image>> AvatarFrameRgb(avatar::Avatar& avatar, int index);

// Frames in the avatar's ping-pong loop: 2n-2 (1 for a single frame).
int PingPongPeriod(int num_frames);

class IdleLoopCache {
 public:
  explicit IdleLoopCache(size_t max_bytes) : max_bytes_(max_bytes) {}
  ~IdleLoopCache();
  IdleLoopCache(const IdleLoopCache&) = delete;
  IdleLoopCache& operator=(const IdleLoopCache&) = delete;

  // The process-wide cache (256 MB).
  static IdleLoopCache& Global();

  enum class State { kBuilding, kReady, kFailed };
  // The loop for this avatar and options, or null with *state kBuilding (a build is
  // started if none runs) or kFailed.
  std::shared_ptr<const IdleLoop> Get(const avatar::AvatarHandle& avatar,
                                      const media::EncoderOptions& options, State* state);

  size_t bytes() const;
  int loops() const;

 private:
  struct Entry {
    State state = State::kBuilding;
    std::shared_ptr<const IdleLoop> loop;
    uint64_t last_use = 0;
    uint64_t build = 0;  // the build that fills it
  };
  struct Builder {
    uint64_t id = 0;
    bool done = false;
    std::thread thread;
  };
  static std::string Key(const avatar::AvatarHandle& avatar, const media::EncoderOptions& o);
  void Build(uint64_t id, std::string key, avatar::AvatarHandle avatar,
             media::EncoderOptions options);

  const size_t max_bytes_;
  mutable std::mutex mu_;
  std::map<std::string, Entry> entries_;
  size_t bytes_ = 0;
  uint64_t clock_ = 0;
  bool stopping_ = false;
  uint64_t next_build_ = 0;
  std::list<Builder> builders_;
};

}  // namespace lipsync::session
