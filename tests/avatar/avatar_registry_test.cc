#include "avatar/avatar_registry.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <unistd.h>

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

// KnownIds lists model_root's directories from one readdir pass, without looking inside
// them: a directory without frames/ is listed and NOT_FOUND at load; a symlinked tenant
// directory, a file and a name that is not a valid id are not listed; configured models
// are, sorted with the rest.
TEST_F(RegistryTest, KnownIdsListsDirectoriesByNameAndChecksFramesAtLoad) {
  namespace fs = std::filesystem;
  const fs::path root = tmp_.path();
  fs::create_directory(root / "e");  // no frames/
  fs::create_directory_symlink(root / "a", root / "linked");
  ASSERT_TRUE(image::WriteFileBytes((root / "file").string(), "x").ok());
  fs::create_directory(root / ".hidden");
  auto o = Options();
  config::CompositingModelEntry entry;
  entry.background_dir = tmp_.str() + "/a/frames";
  entry.crop_rects_path = tmp_.str() + "/a/crop_rects.json";
  o.models["configured"] = entry;
  AvatarRegistry r(o);
  EXPECT_EQ(r.KnownIds(), (std::vector<std::string>{"a", "b", "c", "configured", "d", "e"}));
  EXPECT_EQ(r.Acquire("e").status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(r.Exists("e"));
  EXPECT_TRUE(r.Acquire("a").ok());
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

// A tenant whose crop_rects.json is valid JSON built to hurt (a million levels deep).
TEST_F(RegistryTest, FailedLoadIsRememberedAndRetriedWithBackoff) {
  auto bad = testing::WriteAvatar(tmp_.path(), "bad", kFrames, kW, kH, kRect);
  const std::string rects = bad + "/crop_rects.json";
  ASSERT_TRUE(image::WriteFileBytes(rects, testing::DeeplyNestedJson(1'000'000)).ok());
  auto o = Options();
  o.failed_load_retry_seconds = 30;
  o.failed_load_retry_max_seconds = 100;
  AvatarRegistry r(o);
  auto e1 = r.Acquire("bad");
  ASSERT_EQ(e1.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(e1.status().message(), HasSubstr(rects));
  EXPECT_THAT(e1.status().message(), HasSubstr("entry 0"));
  EXPECT_THAT(e1.status().message(), HasSubstr("nested array"));
  auto stats = [&] { return *r.Stats("bad"); };
  EXPECT_EQ(stats().state, AvatarState::kFailed);
  EXPECT_EQ(stats().load_attempts, 1);
  EXPECT_EQ(stats().consecutive_failures, 1);
  EXPECT_DOUBLE_EQ(stats().retry_in_seconds, 30);
  // Answered from memory: the files are not read again (attempts unchanged).
  for (int i = 0; i < 5; ++i) {
    auto again = r.Acquire("bad");
    EXPECT_EQ(again.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(again.status().message(), e1.status().message());
  }
  EXPECT_EQ(stats().load_attempts, 1);
  // Other tenants are unaffected.
  EXPECT_TRUE(r.Acquire("a").ok());
  // Backoff: 30 s, then 60 s, then capped at 100 s.
  Advance(29s);
  EXPECT_FALSE(r.Acquire("bad").ok());
  EXPECT_EQ(stats().load_attempts, 1);
  Advance(1s);
  EXPECT_FALSE(r.Acquire("bad").ok());
  EXPECT_EQ(stats().load_attempts, 2);
  EXPECT_EQ(stats().consecutive_failures, 2);
  EXPECT_DOUBLE_EQ(stats().retry_in_seconds, 60);
  Advance(59s);
  EXPECT_FALSE(r.Acquire("bad").ok());
  EXPECT_EQ(stats().load_attempts, 2);
  Advance(1s);
  EXPECT_FALSE(r.Acquire("bad").ok());
  EXPECT_EQ(stats().load_attempts, 3);
  EXPECT_DOUBLE_EQ(stats().retry_in_seconds, 100);
  Advance(100s);
  EXPECT_FALSE(r.Acquire("bad").ok());
  EXPECT_EQ(stats().load_attempts, 4);
  EXPECT_DOUBLE_EQ(stats().retry_in_seconds, 100);
  // Fixed: the next retry loads it and the backoff is reset.
  ASSERT_TRUE(
      image::WriteFileBytes(rects, testing::RectsJson(std::vector<CropRect>(kFrames, kRect))).ok());
  Advance(100s);
  auto fixed = r.Acquire("bad");
  ASSERT_TRUE(fixed.ok()) << fixed.status().ToString();
  EXPECT_EQ(stats().consecutive_failures, 0);
  EXPECT_EQ(stats().load_attempts, 5);
}

TEST_F(RegistryTest, LoadThatThrowsLeavesTheAvatarFailedNotLoading) {
  auto o = Options();
  o.failed_load_retry_seconds = 10;
  std::atomic<int> calls{0};
  std::atomic<bool> throw_bad_alloc{false}, fine{false};
  o.before_decode = [&](const std::string& id) {
    if (id != "a" || fine) return;
    calls++;
    if (throw_bad_alloc) throw std::bad_alloc();
    throw std::runtime_error("decoder exploded");
  };
  AvatarRegistry r(o);
  auto e1 = r.Acquire("a");
  ASSERT_EQ(e1.status().code(), StatusCode::kInternal);
  EXPECT_THAT(e1.status().message(), HasSubstr("decoder exploded"));
  EXPECT_EQ(r.Stats("a")->state, AvatarState::kFailed);  // not LOADING forever
  // Remembered: the loader is not run again before the retry time.
  EXPECT_EQ(r.Acquire("a").status().message(), e1.status().message());
  EXPECT_EQ(calls.load(), 1);
  EXPECT_TRUE(r.Acquire("b").ok());
  // Retried after the backoff; an allocation failure is RESOURCE_EXHAUSTED.
  throw_bad_alloc = true;
  Advance(10s);
  auto e2 = r.Acquire("a");
  EXPECT_EQ(e2.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(calls.load(), 2);
  EXPECT_EQ(r.Stats("a")->state, AvatarState::kFailed);
  fine = true;
  Advance(20s);
  EXPECT_TRUE(r.Acquire("a").ok());
  EXPECT_EQ(r.Stats("a")->state, AvatarState::kLoaded);
}

TEST_F(RegistryTest, WaiterGivesUpAtItsOwnDeadlineWhileAnotherLoadIsInFlight) {
  auto o = Options();
  std::mutex mu;
  std::condition_variable cv;
  bool entered = false, release = false;
  o.before_decode = [&](const std::string& id) {
    if (id != "a") return;
    std::unique_lock<std::mutex> lock(mu);
    entered = true;
    cv.notify_all();
    cv.wait(lock, [&] { return release; });
  };
  AvatarRegistry r(o);
  Status first_status;
  std::thread loader([&] { first_status = r.Acquire("a").status(); });
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return entered; });
  }
  EXPECT_EQ(r.Stats("a")->state, AvatarState::kLoading);
  // The load in flight counts its estimate (4 full frames + rects) in the budget.
  EXPECT_EQ(r.memory_bytes(), kAvatarPixelBytes + int64_t(kFrames * sizeof(CropRect)));
  // A deadline already passed, and one that passes while it waits.
  EXPECT_EQ(r.Acquire("a", nullptr, nullptr, Clock::now()).status().code(),
            StatusCode::kDeadlineExceeded);
  auto waited = r.Acquire("a", nullptr, nullptr, Clock::now() + 50ms);
  EXPECT_EQ(waited.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_THAT(waited.status().message(), HasSubstr("still being loaded"));
  // The slow load holds no registry lock: other tenants load and answer meanwhile.
  EXPECT_TRUE(r.Acquire("b", nullptr, nullptr, Clock::now() + 10s).ok());
  EXPECT_EQ(r.memory_bytes(), 2 * (kAvatarPixelBytes + int64_t(kFrames * sizeof(CropRect))));
  EXPECT_TRUE(r.Stats("c").ok());
  {
    std::lock_guard<std::mutex> lock(mu);
    release = true;
  }
  cv.notify_all();
  loader.join();
  EXPECT_TRUE(first_status.ok()) << first_status.ToString();
  EXPECT_TRUE(r.Acquire("a", nullptr, nullptr, Clock::now() + 10s).ok());
  EXPECT_EQ(r.Stats("a")->load_attempts, 1);
}

TEST_F(RegistryTest, MemoryBudgetIsCheckedBeforeDecoding) {
  // frame 2 is corrupt: decoding would fail with INVALID_ARGUMENT naming it, so
  // RESOURCE_EXHAUSTED shows the budget was checked first, from the headers alone.
  auto big = testing::WriteAvatar(tmp_.path(), "big", kFrames, kW, kH, kRect);
  ASSERT_TRUE(image::WriteFileBytes(big + "/frames/frame_0002.png", "garbage").ok());
  auto o = Options();
  o.memory_limit_bytes = kAvatarPixelBytes - 1;
  AvatarRegistry r(o);
  auto st = r.Acquire("big");
  EXPECT_EQ(st.status().code(), StatusCode::kResourceExhausted);
  EXPECT_THAT(st.status().message(), HasSubstr("capacity.memory_limit_mb"));
  EXPECT_EQ(r.Stats("big")->state, AvatarState::kFailed);  // can never fit: remembered
  EXPECT_EQ(r.memory_bytes(), 0);
}

TEST_F(RegistryTest, AvatarLargerThanTheMachineIsRefusedWithoutABudget) {
  // Frames that each claim 7680x4320 (70 bytes on disk, ~100 MB decoded), more of them
  // than physical memory could hold. Decoding would fail with INVALID_ARGUMENT (no
  // pixel data); RESOURCE_EXHAUSTED shows the estimate refused it first.
  const int64_t physical = int64_t(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGE_SIZE);
  const int64_t per_frame = int64_t(7680) * 4320 * 3;
  const int frames = int(physical / per_frame) + 2;
  ASSERT_LT(frames, 100000) << "a machine this large needs another test";
  const auto dir = tmp_.path() / "vast";
  std::filesystem::create_directories(dir / "frames");
  const std::string png = testing::PngClaiming(7680, 4320);
  for (int i = 0; i < frames; ++i) {
    char name[32];
    std::snprintf(name, sizeof(name), "frame_%04d.png", i);
    ASSERT_TRUE(image::WriteFileBytes((dir / "frames" / name).string(), png).ok());
  }
  ASSERT_TRUE(image::WriteFileBytes((dir / "crop_rects.json").string(),
                                    testing::RectsJson(std::vector<CropRect>(frames, kRect)))
                  .ok());
  AvatarRegistry r(Options());  // memory_limit_bytes = 0: no configured budget
  auto st = r.Acquire("vast");
  EXPECT_EQ(st.status().code(), StatusCode::kResourceExhausted);
  EXPECT_THAT(st.status().message(), HasSubstr("this machine has"));
  EXPECT_EQ(r.Stats("vast")->state, AvatarState::kFailed);
  EXPECT_TRUE(r.Acquire("a").ok());
}

TEST_F(RegistryTest, HostileHeadersFailTheirTenantOnly) {
  auto huge = testing::WriteAvatar(tmp_.path(), "huge", kFrames, kW, kH, kRect);
  ASSERT_TRUE(
      image::WriteFileBytes(huge + "/frames/frame_0000.png", testing::PngClaiming(60000, 60000))
          .ok());
  auto o = Options();
  o.image_limits.max_width = 1920;
  o.image_limits.max_height = 1080;
  AvatarRegistry r(o);
  auto st = r.Acquire("huge");
  EXPECT_EQ(st.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(st.status().message(), HasSubstr("frame_0000.png"));
  EXPECT_THAT(st.status().message(), HasSubstr("at most 1920x1080"));
  EXPECT_EQ(r.Stats("huge")->state, AvatarState::kFailed);
  EXPECT_TRUE(r.Acquire("a").ok());
}

TEST_F(RegistryTest, TenantSymlinkedOutsideModelRootIsPermissionDenied) {
  testing::TempDir outside;
  testing::WriteAvatar(outside.path(), "victim", kFrames, kW, kH, kRect);
  std::filesystem::create_directory_symlink(outside.path() / "victim", tmp_.path() / "escape");
  // Inside model_root, a symlink to another tenant's directory is fine.
  std::filesystem::create_directory_symlink(tmp_.path() / "a", tmp_.path() / "alias");
  AvatarRegistry r(Options());
  auto st = r.Acquire("escape");
  EXPECT_EQ(st.status().code(), StatusCode::kPermissionDenied);
  EXPECT_THAT(st.status().message(), HasSubstr("leaves model_root"));
  EXPECT_EQ(r.Stats("escape")->state, AvatarState::kFailed);
  EXPECT_TRUE(r.Acquire("alias").ok());
  EXPECT_TRUE(r.Acquire("a").ok());
  // Configured models (the operator's paths) are not confined to model_root.
  auto o = Options();
  config::CompositingModelEntry e;
  e.background_dir = (outside.path() / "victim" / "frames").string();
  e.crop_rects_path = (outside.path() / "victim" / "crop_rects.json").string();
  o.models["configured"] = e;
  AvatarRegistry configured(o);
  EXPECT_TRUE(configured.Acquire("configured").ok());
}

TEST(RegistryOptionsTest, FromConfigWiresLimitsAndBackoff) {
  config::CompositingConfig c;
  c.capacity.failed_load_retry_seconds = 7;
  c.capacity.failed_load_retry_max_seconds = 70;
  c.limits.max_image_width = 111;
  c.limits.max_image_height = 222;
  c.limits.max_image_file_mb = 3;
  c.limits.max_crop_rects_file_mb = 2;
  c.limits.max_json_depth = 5;
  c.limits.max_frames = 44;
  auto o = AvatarRegistryOptions::FromConfig(c);
  EXPECT_EQ(o.failed_load_retry_seconds, 7);
  EXPECT_EQ(o.failed_load_retry_max_seconds, 70);
  EXPECT_EQ(o.image_limits.max_width, 111);
  EXPECT_EQ(o.image_limits.max_height, 222);
  EXPECT_EQ(o.image_limits.max_file_bytes, 3 << 20);
  EXPECT_EQ(o.crop_rects_limits.max_file_bytes, 2 << 20);
  EXPECT_EQ(o.crop_rects_limits.max_json_depth, 5);
  EXPECT_EQ(o.crop_rects_limits.max_rects, 44);
  EXPECT_EQ(o.max_frames, 44);
}

}  // namespace
}  // namespace lipsync::avatar
