// The avatar registry never stalls requests behind slow work: the disk (stat, scans,
// reads), decoding and freeing evicted avatars all happen outside the mutex every
// request takes, a load ends for its caller at the caller's deadline, and the loaded
// count and bytes are running totals that match the avatars held.
//
// Each test blocks the slow part on a latch (an injected hook) and shows that another
// tenant's request completes meanwhile. A registry that held its mutex over the slow
// part would block that request; the test then fails at a generous bound instead of
// hanging (no timing is asserted).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <string>
#include <thread>

#include "avatar/avatar_fixture.h"
#include "avatar/avatar_registry.h"

namespace lipsync::avatar {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

constexpr int kW = 160, kH = 120, kFrames = 4;
const CropRect kRect{40, 30, 120, 110};
// Bound on "completes meanwhile": only reached when the registry is stalled.
constexpr auto kStalled = 60s;

// A gate the slow hook waits on: Enter() marks it reached and blocks until Open().
class Gate {
 public:
  void Enter() {
    std::unique_lock<std::mutex> lock(mu_);
    entered_ = true;
    cv_.notify_all();
    cv_.wait(lock, [&] { return open_; });
  }
  void WaitEntered() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return entered_; });
  }
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool entered_ = false, open_ = false;
};

class RegistryStallTest : public ::testing::Test {
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
    return o;
  }
  // Runs `f` on another thread; true if it finished (the registry was not stalled).
  template <typename F>
  static bool CompletesMeanwhile(F&& f) {
    auto done = std::async(std::launch::async, std::forward<F>(f));
    if (done.wait_for(kStalled) != std::future_status::ready) {
      ADD_FAILURE() << "the call did not complete while the slow part was blocked";
      return false;
    }
    done.get();
    return true;
  }
  testing::TempDir tmp_;
};

TEST_F(RegistryStallTest, SlowDiskLookupHoldsNoLock) {
  auto o = Options();
  Gate gate;
  o.before_disk_lookup = [&](const std::string& id) {
    if (id == "a") gate.Enter();
  };
  AvatarRegistry r(o);
  ASSERT_TRUE(r.Acquire("b").ok());
  // A load of "a" stuck on the file system (its stat of frames/).
  auto load_a = std::async(std::launch::async, [&] { return r.Acquire("a").status(); });
  gate.WaitEntered();
  EXPECT_TRUE(CompletesMeanwhile([&] {
    EXPECT_TRUE(r.Acquire("b").ok());
    EXPECT_TRUE(r.Acquire("c").ok());  // another load, with its own disk lookup
    EXPECT_EQ(r.loaded_count(), 2);
    EXPECT_GT(r.memory_bytes(), 0);
    EXPECT_EQ(r.LoadedStats().size(), 3u);  // "a" is listed as LOADING
    EXPECT_EQ(r.Stats("a")->state, AvatarState::kLoading);
    EXPECT_EQ(r.KnownIds().size(), 4u);  // the model_root scan runs unlocked too
  }));
  gate.Open();
  EXPECT_TRUE(load_a.get().ok());
  EXPECT_EQ(r.loaded_count(), 3);
}

TEST_F(RegistryStallTest, StatsOfAnUnloadedAvatarStatsTheDiskUnlocked) {
  auto o = Options();
  Gate gate;
  o.before_disk_lookup = [&](const std::string& id) {
    if (id == "d") gate.Enter();
  };
  AvatarRegistry r(o);
  auto stats_d = std::async(std::launch::async, [&] { return r.Stats("d").ok(); });
  gate.WaitEntered();
  EXPECT_TRUE(CompletesMeanwhile([&] { EXPECT_TRUE(r.Acquire("a").ok()); }));
  gate.Open();
  EXPECT_TRUE(stats_d.get());
}

TEST_F(RegistryStallTest, EvictedAvatarIsFreedAfterTheLockIsDropped) {
  auto o = Options();
  o.max_models = 1;
  Gate gate;
  std::mutex released_mu;
  std::vector<std::string> released;
  o.before_release = [&](const std::string& id) {
    {
      std::lock_guard<std::mutex> lock(released_mu);
      released.push_back(id);
    }
    if (id == "a") gate.Enter();
  };
  AvatarRegistry r(o);
  ASSERT_TRUE(r.Acquire("a").ok());
  // Loading "b" evicts "a"; freeing "a" is slow.
  auto load_b = std::async(std::launch::async, [&] { return r.Acquire("b").status(); });
  gate.WaitEntered();
  EXPECT_TRUE(CompletesMeanwhile([&] {
    EXPECT_TRUE(r.Acquire("b").ok());  // "b" is already served while "a" is being freed
    EXPECT_EQ(r.loaded_count(), 1);
    EXPECT_EQ(r.Stats("a")->state, AvatarState::kUnloaded);
  }));
  gate.Open();
  EXPECT_TRUE(load_b.get().ok());
  std::lock_guard<std::mutex> lock(released_mu);
  EXPECT_EQ(released, std::vector<std::string>{"a"});
}

TEST_F(RegistryStallTest, IdleSweepAndUnloadFreeAfterTheLockIsDropped) {
  auto o = Options();
  auto now = Clock::time_point() + 1000h;
  o.now = [&] { return now; };
  o.idle_timeout = 1min;
  Gate gate;
  o.before_release = [&](const std::string& id) {
    if (id == "a") gate.Enter();
  };
  AvatarRegistry r(o);
  ASSERT_TRUE(r.Acquire("a").ok());
  now += 2min;
  ASSERT_TRUE(r.Acquire("b").ok());
  auto sweep = std::async(std::launch::async, [&] { return r.SweepIdle(); });
  gate.WaitEntered();
  EXPECT_TRUE(CompletesMeanwhile([&] {
    EXPECT_TRUE(r.Acquire("b").ok());
    EXPECT_TRUE(r.Unload("b").ok());  // freed on this thread, unlocked, and not blocked
    EXPECT_EQ(r.loaded_count(), 0);
    EXPECT_EQ(r.memory_bytes(), 0);
  }));
  gate.Open();
  EXPECT_EQ(sweep.get(), 1);
}

TEST_F(RegistryStallTest, OwnLoadEndsAtTheCallersDeadlineAndGoesOn) {
  auto o = Options();
  Gate gate;
  o.before_decode = [&](const std::string& id) {
    if (id == "a") gate.Enter();
  };
  AvatarRegistry r(o);
  // This call starts the load itself; the decode is stuck, so its deadline passes.
  bool loaded_now = true;
  auto first = r.Acquire("a", &loaded_now, nullptr, Clock::now() + 20ms);
  ASSERT_EQ(first.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_THAT(first.status().message(), HasSubstr("still loading"));
  EXPECT_THAT(first.status().message(), HasSubstr("goes on in the background"));
  EXPECT_FALSE(loaded_now);
  gate.WaitEntered();  // the load did start, and is still running
  EXPECT_EQ(r.Stats("a")->state, AvatarState::kLoading);
  EXPECT_TRUE(CompletesMeanwhile([&] { EXPECT_TRUE(r.Acquire("b", nullptr, nullptr).ok()); }));
  gate.Open();
  // The background load serves the next request: the files are read once.
  auto next = r.Acquire("a");
  ASSERT_TRUE(next.ok()) << next.status().ToString();
  EXPECT_EQ(r.Stats("a")->load_attempts, 1);
  EXPECT_EQ(r.Stats("a")->state, AvatarState::kLoaded);
}

TEST_F(RegistryStallTest, CallWithADeadlineGetsItsOwnLoadsOutcome) {
  AvatarRegistry r(Options());
  bool loaded_now = false;
  double load_ms = -1;
  auto a = r.Acquire("a", &loaded_now, &load_ms, Clock::now() + 60s);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_TRUE(loaded_now);
  EXPECT_GE(load_ms, 0);
  // An unknown tenant is NOT_FOUND (and not retried in a loop), a hostile one fails.
  EXPECT_EQ(r.Acquire("nobody", nullptr, nullptr, Clock::now() + 60s).status().code(),
            StatusCode::kNotFound);
  ASSERT_TRUE(image::WriteFileBytes(tmp_.str() + "/d/crop_rects.json", "[").ok());
  EXPECT_EQ(r.Acquire("d", nullptr, nullptr, Clock::now() + 60s).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(r.Stats("d")->state, AvatarState::kFailed);
}

TEST_F(RegistryStallTest, DestroyingTheRegistryWaitsForABackgroundLoad) {
  auto o = Options();
  Gate gate;
  o.before_decode = [&](const std::string& id) {
    if (id == "a") gate.Enter();
  };
  auto r = std::make_unique<AvatarRegistry>(o);
  EXPECT_EQ(r->Acquire("a", nullptr, nullptr, Clock::now()).status().code(),
            StatusCode::kDeadlineExceeded);
  gate.WaitEntered();
  std::thread opener([&] { gate.Open(); });
  r.reset();  // returns once the load has ended; no use after free (ASan/TSan builds)
  opener.join();
}

TEST_F(RegistryStallTest, RunningTotalsMatchTheAvatarsHeld) {
  auto o = Options();
  o.max_models = 2;
  AvatarRegistry r(o);
  auto check = [&] {
    int64_t bytes = 0;
    int loaded = 0;
    for (const auto& s : r.LoadedStats()) {
      if (s.state != AvatarState::kLoaded) continue;
      bytes += s.memory_bytes;
      ++loaded;
    }
    EXPECT_EQ(r.loaded_count(), loaded);
    EXPECT_EQ(r.memory_bytes(), bytes);
  };
  for (const char* id : {"a", "b", "c", "a", "d", "b"}) {
    ASSERT_TRUE(r.Acquire(id).ok()) << id;
    check();
  }
  ASSERT_TRUE(r.Load("b", /*force_reload=*/true).ok());
  check();
  ASSERT_TRUE(r.Unload("b").ok());
  check();
  {
    auto held = r.Acquire("c");  // pinned: the memory cap cannot take it
    ASSERT_TRUE(held.ok());
    EXPECT_TRUE((*held)->Frame(1).ok());
    check();
  }
  r.SweepIdle();
  check();
  EXPECT_LE(r.loaded_count(), 2);
}

}  // namespace
}  // namespace lipsync::avatar
