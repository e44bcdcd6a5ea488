#include "avatar/avatar_registry.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "avatar/avatar_fixture.h"

namespace lipsync::avatar {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

constexpr int kW = 160, kH = 120, kFrames = 4;
const CropRect kRect{40, 30, 120, 110};
constexpr int64_t kAvatarPixelBytes = int64_t(kFrames) * kW * kH * 3;

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* id : {"a", "b", "c", "d"}) {
      testing::WriteAvatar(tmp_.path(), id, kFrames, kW, kH, kRect);
    }
  }
  AvatarRegistryOptions Options() {
    AvatarRegistryOptions o;
    o.model_root = tmp_.str();
    o.start_sweeper = false;
    o.now = [this] { return now_; };
    return o;
  }
  void Advance(std::chrono::milliseconds d) { now_ += d; }
  // Acquire and release at once: one use.
  void Use(AvatarRegistry& r, const std::string& id) {
    auto h = r.Acquire(id);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    Advance(1s);
  }
  bool Loaded(AvatarRegistry& r, const std::string& id) {
    return r.Stats(id)->state == AvatarState::kLoaded;
  }

  testing::TempDir tmp_;
  Clock::time_point now_ = Clock::time_point() + 1000h;
};

TEST_F(RegistryTest, CountCapLruEvictsLeastRecentlyUsed) {
  auto o = Options();
  o.max_models = 2;
  o.eviction_policy = config::EvictionPolicy::kLru;
  AvatarRegistry r(o);
  Use(r, "a");
  Use(r, "a");
  Use(r, "a");  // a: 3 uses, older
  Use(r, "b");  // b: 1 use, most recent
  Use(r, "c");
  EXPECT_EQ(r.loaded_count(), 2);
  EXPECT_FALSE(Loaded(r, "a"));
  EXPECT_TRUE(Loaded(r, "b"));
  EXPECT_TRUE(Loaded(r, "c"));
}

TEST_F(RegistryTest, CountCapLfuEvictsLeastFrequentlyUsed) {
  auto o = Options();
  o.max_models = 2;
  o.eviction_policy = config::EvictionPolicy::kLfu;
  AvatarRegistry r(o);
  Use(r, "a");
  Use(r, "a");
  Use(r, "a");
  Use(r, "b");
  Use(r, "c");
  EXPECT_EQ(r.loaded_count(), 2);
  EXPECT_TRUE(Loaded(r, "a"));
  EXPECT_FALSE(Loaded(r, "b"));
  EXPECT_TRUE(Loaded(r, "c"));
}

TEST_F(RegistryTest, ByteCapEvicts) {
  auto o = Options();
  o.eviction_policy = config::EvictionPolicy::kLru;
  o.memory_limit_bytes = kAvatarPixelBytes * 5 / 2;  // room for two avatars
  AvatarRegistry r(o);
  Use(r, "a");
  Use(r, "b");
  EXPECT_EQ(r.loaded_count(), 2);
  Use(r, "c");
  EXPECT_EQ(r.loaded_count(), 2);
  EXPECT_FALSE(Loaded(r, "a"));
  EXPECT_LE(r.memory_bytes(), o.memory_limit_bytes);
  EXPECT_GE(r.memory_bytes(), 2 * kAvatarPixelBytes);
}

TEST_F(RegistryTest, HandlesPinAgainstEviction) {
  auto o = Options();
  o.max_models = 2;
  AvatarRegistry r(o);
  auto a = r.Acquire("a");
  auto b = r.Acquire("b");
  ASSERT_TRUE(a.ok() && b.ok());
  auto c = r.Acquire("c");
  EXPECT_EQ(c.status().code(), StatusCode::kResourceExhausted);
  EXPECT_THAT(c.status().message(), HasSubstr("max_models"));
  b = Status::Cancelled("released");  // drop the handle to b
  ASSERT_TRUE(r.Acquire("c").ok());
  EXPECT_FALSE(Loaded(r, "b"));
  // The pinned avatar is still usable.
  EXPECT_TRUE((*a)->Frame(0).ok());
}

TEST_F(RegistryTest, IdleAvatarsAreUnloaded) {
  auto o = Options();
  o.idle_timeout = 60s;
  AvatarRegistry r(o);
  Use(r, "a");
  auto pinned = r.Acquire("b");
  Advance(30s);
  EXPECT_EQ(r.SweepIdle(), 0);
  Advance(40s);
  EXPECT_EQ(r.SweepIdle(), 1);
  EXPECT_FALSE(Loaded(r, "a"));
  EXPECT_TRUE(Loaded(r, "b"));  // in use
  // Loads again on demand.
  bool loaded_now = false;
  ASSERT_TRUE(r.Acquire("a", &loaded_now).ok());
  EXPECT_TRUE(loaded_now);
}

TEST_F(RegistryTest, IdleSweeperThreadRuns) {
  auto o = Options();
  o.now = [] { return Clock::now(); };
  o.idle_timeout = 50ms;
  o.start_sweeper = true;
  AvatarRegistry r(o);
  ASSERT_TRUE(r.Acquire("a").ok());
  for (int i = 0; i < 100 && r.loaded_count() > 0; ++i) std::this_thread::sleep_for(20ms);
  EXPECT_EQ(r.loaded_count(), 0);
}

TEST_F(RegistryTest, BrokenAvatarIsIsolatedAndRemembered) {
  auto bad = testing::WriteAvatar(tmp_.path(), "bad", kFrames, kW, kH, kRect);
  ASSERT_TRUE(image::WriteFileBytes(bad + "/frames/frame_0002.png", "garbage").ok());
  auto o = Options();
  o.failed_load_retry_seconds = 30;
  AvatarRegistry r(o);
  auto e1 = r.Acquire("bad");
  ASSERT_FALSE(e1.ok());
  EXPECT_THAT(e1.status().message(), HasSubstr("frame_0002.png"));
  EXPECT_TRUE(r.Acquire("a").ok());
  // Remembered: fixing the file does not help until the retry time has passed.
  ASSERT_TRUE(image::WritePng(bad + "/frames/frame_0002.png", testing::MakeFrame(kW, kH, 2)).ok());
  auto e2 = r.Acquire("bad");
  EXPECT_EQ(e2.status().message(), e1.status().message());
  EXPECT_EQ(r.Stats("bad")->state, AvatarState::kFailed);
  EXPECT_THAT(r.Stats("bad")->error, HasSubstr("frame_0002.png"));
  Advance(31s);
  EXPECT_TRUE(r.Acquire("bad").ok());
}

TEST_F(RegistryTest, UnknownAndInvalidIds) {
  AvatarRegistry r(Options());
  EXPECT_EQ(r.Acquire("nobody").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(r.Acquire("../etc").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.Stats("nobody").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(r.KnownIds(), (std::vector<std::string>{"a", "b", "c", "d"}));
  EXPECT_EQ(r.Unload("a").code(), StatusCode::kNotFound);
}

TEST_F(RegistryTest, ConfiguredModelsAndStats) {
  auto o = Options();
  o.model_root.clear();
  config::CompositingModelEntry e;
  e.background_dir = tmp_.str() + "/a/frames";
  e.crop_rects_path = tmp_.str() + "/a/crop_rects.json";
  e.preload_backgrounds = false;
  o.models["sanders"] = e;
  o.background_cache_frames = 2;
  AvatarRegistry r(o);
  auto h = r.Acquire("sanders");
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_TRUE((*h)->Frame(3).ok());
  r.RecordComposite("sanders", 4);
  r.RecordComposite("sanders", 6);
  auto s = r.Stats("sanders");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->state, AvatarState::kLoaded);
  EXPECT_EQ(s->num_frames, kFrames);
  EXPECT_EQ(s->frame_width, kW);
  EXPECT_EQ(s->cached_frames, 2);
  EXPECT_EQ(s->usage_count, 1);
  EXPECT_GT(s->last_used_unix_ms, 0);
  EXPECT_DOUBLE_EQ(s->avg_composite_ms, 5);
  EXPECT_EQ(r.LoadedStats().size(), 1u);
  EXPECT_TRUE(r.Unload("sanders").ok());
  EXPECT_EQ(r.loaded_count(), 0);
  EXPECT_TRUE((*h)->Frame(0).ok());  // in-flight handle still works
}

TEST_F(RegistryTest, ConcurrentAcquireLoadsOnce) {
  AvatarRegistry r(Options());
  std::atomic<int> loads{0}, ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&] {
      bool loaded_now = false;
      if (r.Acquire("c", &loaded_now).ok()) ok++;
      if (loaded_now) loads++;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 6);
  EXPECT_EQ(loads.load(), 1);
  EXPECT_EQ(r.Stats("c")->usage_count, 6);
}

TEST_F(RegistryTest, ForceReloadKeepsOldOnFailure) {
  AvatarRegistry r(Options());
  auto old = r.Acquire("d");
  ASSERT_TRUE(old.ok());
  ASSERT_TRUE(image::WriteFileBytes(tmp_.str() + "/d/crop_rects.json", "[").ok());
  auto st = r.Load("d", /*force_reload=*/true);
  EXPECT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr("crop_rects.json"));
  EXPECT_TRUE(Loaded(r, "d"));
  auto again = r.Acquire("d");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->get(), old->get());
}

}  // namespace
}  // namespace lipsync::avatar
