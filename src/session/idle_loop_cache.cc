#include "session/idle_loop_cache.h"

#include <chrono>
#include <cstring>

#include "common/log.h"

namespace lipsync::session {

Expected<std::shared_ptr<const image::Image>> AvatarFrameRgb(avatar::Avatar& avatar, int index) {
  LIPSYNC_ASSIGN_OR_RETURN(avatar::FrameHandle bg, avatar.Frame(index));
  if (!bg->compact()) return std::shared_ptr<const image::Image>(bg, &bg->pixels);
  if (!bg->jpeg) return Status::Internal("compact background without its JPEG");
  LIPSYNC_ASSIGN_OR_RETURN(image::Image work, image::DecodeJpeg(bg->jpeg->background_jpeg()));
  const image::PixelRect& held = bg->pixels_rect;
  if (held.x < 0 || held.y < 0 || held.x + held.width > work.width ||
      held.y + held.height > work.height || work.channels != 3) {
    return Status::Internal("compact background region outside its decoded JPEG");
  }
  for (int y = 0; y < held.height; ++y) {
    std::memcpy(work.row(held.y + y) + size_t(held.x) * 3, bg->pixels.row(y),
                size_t(held.width) * 3);
  }
  return std::make_shared<const image::Image>(std::move(work));
}

int PingPongPeriod(int num_frames) { return num_frames <= 1 ? 1 : 2 * num_frames - 2; }

IdleLoopCache& IdleLoopCache::Global() {
  static IdleLoopCache* cache = new IdleLoopCache(size_t(256) << 20);  // never destroyed
  return *cache;
}

IdleLoopCache::~IdleLoopCache() {
  std::list<Builder> builders;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    builders.swap(builders_);
  }
  for (auto& b : builders) b.thread.join();
}

std::string IdleLoopCache::Key(const avatar::AvatarHandle& avatar, const media::EncoderOptions& o) {
  // The avatar object (its address and load time: a reload is another object) and its
  // shape.
  char buf[96];
  std::snprintf(buf, sizeof(buf), "%p/%a/%dx%dx%d", static_cast<const void*>(avatar.get()),
                avatar->load_ms(), avatar->width(), avatar->height(), avatar->num_frames());
  return avatar->id() + "@" + buf + "|" + media::CodecName(o.codec) + "|" +
         std::to_string(o.width) + "x" + std::to_string(o.height) + "|" + std::to_string(o.fps) +
         "|" + std::to_string(o.bitrate_kbps) + "|" + std::to_string(o.vbv_buffer_ms) + "|" +
         std::to_string(o.key_interval_frames) + "|" + o.preset + "|" + std::to_string(o.threads) +
         "|" + std::to_string(o.jpeg_quality);
}

std::shared_ptr<const IdleLoop> IdleLoopCache::Get(const avatar::AvatarHandle& avatar,
                                                   const media::EncoderOptions& options,
                                                   State* state) {
  const std::string key = Key(avatar, options);
  {
    std::list<Builder> finished;  // joined outside the lock
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto b = builders_.begin(); b != builders_.end();) {
        auto next = std::next(b);
        if (b->done) finished.splice(finished.end(), builders_, b);
        b = next;
      }
    }
    for (auto& b : finished) b.thread.join();
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    if (stopping_) {
      *state = State::kFailed;
      return nullptr;
    }
    Entry e;
    e.last_use = ++clock_;
    e.build = ++next_build_;
    const uint64_t id = e.build;
    entries_.emplace(key, std::move(e));
    builders_.emplace_back();
    builders_.back().id = id;
    builders_.back().thread =
        std::thread([this, id, key, avatar, options] { Build(id, key, avatar, options); });
    *state = State::kBuilding;
    return nullptr;
  }
  it->second.last_use = ++clock_;
  *state = it->second.state;
  return it->second.loop;
}

void IdleLoopCache::Build(uint64_t id, std::string key, avatar::AvatarHandle avatar,
                          media::EncoderOptions options) {
  const auto t0 = std::chrono::steady_clock::now();
  auto loop = std::make_shared<IdleLoop>();
  Status status;
  {
    auto encoder = media::CreateVideoEncoder(options);
    if (!encoder.ok()) status = encoder.status();
    const int period = PingPongPeriod(avatar->num_frames());
    for (int i = 0; status.ok() && i < period; ++i) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stopping_) status = Status::Cancelled("the idle loop cache is shutting down");
      }
      if (!status.ok()) break;
      const int index =
          avatar::BackgroundIndex(0, i, avatar->num_frames(), avatar::LoopMode::kPingPong);
      auto rgb = AvatarFrameRgb(*avatar, index);
      if (!rgb.ok()) {
        status = rgb.status();
        break;
      }
      // As media::EncodeSequence: frame 0 forced, then the encoder's key interval.
      auto f = (*encoder)->Encode((*rgb)->pixels.data(), (*rgb)->stride(), i == 0);
      if (!f.ok()) {
        status = f.status();
        break;
      }
      loop->bytes += f->data.size();
      loop->frames.push_back(std::move(*f));
      if (loop->bytes > max_bytes_) {
        status = Status::ResourceExhausted("the idle loop passes the cache's " +
                                           std::to_string(max_bytes_ >> 20) + " MB");
      }
    }
  }
  loop->build_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  avatar.reset();  // unpin before taking the lock

  std::lock_guard<std::mutex> lock(mu_);
  for (auto& b : builders_) {
    if (b.id == id) b.done = true;  // joined by a later Get or the destructor
  }
  auto it = entries_.find(key);
  if (it == entries_.end() || it->second.build != id) return;
  if (status.ok() && bytes_ + loop->bytes > max_bytes_) {
    // Evict unused ready loops, least recently asked first.
    while (bytes_ + loop->bytes > max_bytes_) {
      auto victim = entries_.end();
      for (auto e = entries_.begin(); e != entries_.end(); ++e) {
        if (e == it || e->second.state != State::kReady || e->second.loop.use_count() > 1) continue;
        if (victim == entries_.end() || e->second.last_use < victim->second.last_use) victim = e;
      }
      if (victim == entries_.end()) break;
      bytes_ -= victim->second.loop->bytes;
      entries_.erase(victim);
    }
    if (bytes_ + loop->bytes > max_bytes_) {
      status = Status::ResourceExhausted("the idle loop cache is full (" +
                                         std::to_string(max_bytes_ >> 20) + " MB in use)");
    }
  }
  if (!status.ok()) {
    LOG_WARN("idle loop for avatar %s not cached (idle frames are encoded live): %s",
             it->first.substr(0, it->first.find('@')).substr(0, 128).c_str(),
             status.ToString().c_str());
    it->second.state = State::kFailed;
    return;
  }
  bytes_ += loop->bytes;
  it->second.loop = std::move(loop);
  it->second.state = State::kReady;
}

size_t IdleLoopCache::bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_;
}

int IdleLoopCache::loops() const {
  std::lock_guard<std::mutex> lock(mu_);
  int n = 0;
  for (const auto& [k, e] : entries_) n += e.state == State::kReady;
  return n;
}

}  // namespace lipsync::session
