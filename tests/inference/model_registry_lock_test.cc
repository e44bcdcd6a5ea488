// The registry's lock is never held during the slow parts: destroying an evicted,
// unloaded, idle or replaced session, stat calls on a new tenant's files, and the
// model_root scan of List. Each test stops the registry inside the slow part (a
// session's deleter, RegistryOptions::on_file_access) and, from there, has another
// thread call the registry: it must answer while the first call is still stopped. If
// the lock were held, the probe could not return and the test fails at a generous
// bound (a latch, not a timing assertion). Also: the running byte totals agree with
// the per-model figures through loads, evictions and reloads; Prefetch queues a
// background load without waiting, bounded, and leaves unknown or failed ids alone.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <thread>

#include "inference/fake_clock.h"
#include "inference/model_registry.h"
#include "inference/ort_runtime.h"
#include "inference/test_models.h"

namespace lipsync::inference {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

constexpr int kSize = 16;

// Calls the registry from another thread while the caller is stopped in a hook.
class Prober {
 public:
  ~Prober() {
    for (auto& t : threads_) t.join();
  }
  // True when `call` returned on its own thread: the lock was free meanwhile. Waits
  // at most 30 s (only a held lock makes it wait at all).
  void Probe(std::function<void()> call) {
    auto done = std::make_shared<std::promise<void>>();
    auto answered = done->get_future();
    {
      std::lock_guard<std::mutex> lock(mu_);
      threads_.emplace_back([call = std::move(call), done] {
        call();
        done->set_value();
      });
    }
    ++probes_;
    if (answered.wait_for(std::chrono::seconds(30)) == std::future_status::ready) ++answered_;
  }
  int probes() const { return probes_; }
  int answered() const { return answered_; }

 private:
  std::mutex mu_;
  std::vector<std::thread> threads_;
  std::atomic<int> probes_{0}, answered_{0};
};

using testing::FakeClock;

class ModelRegistryLockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(OrtRuntime::Initialize().ok());
    root_ = fs::temp_directory_path() /
            ("model_registry_lock_test_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(root_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  void AddRootModel(const std::string& id, float scale = 1.f) {
    fs::create_directories(root_ / id / "checkpoint");
    ASSERT_TRUE(testing::WriteScaledModel((root_ / id / "checkpoint" / "model_best.onnx").string(),
                                          kSize, scale)
                    .ok());
  }

  // Options whose loader hands out sessions that, when destroyed, probe `registry_`
  // (the registry under test) from another thread.
  RegistryOptions ProbingOptions() {
    RegistryOptions o;
    o.model_root = root_.string();
    o.policy = config::EvictionPolicy::kLru;
    o.loader = [this](const ModelFiles& files, int device) -> Expected<std::shared_ptr<OnnxModel>> {
      auto real = OnnxModel::Load(files, device);
      if (!real.ok()) return real.status();
      std::shared_ptr<OnnxModel> keep = *real;
      OnnxModel* raw = keep.get();
      return std::shared_ptr<OnnxModel>(raw, [this, keep](OnnxModel*) mutable {
        ModelRegistry* registry = registry_.load();
        if (registry) {
          prober_.Probe([registry] { (void)registry->loaded_count(); });
        }
        keep.reset();
      });
    };
    return o;
  }

  void ExpectAllAnswered(int at_least) {
    EXPECT_GE(prober_.probes(), at_least);
    EXPECT_EQ(prober_.answered(), prober_.probes())
        << "the registry did not answer while a session was being destroyed or a file "
           "probed: its lock was held during the slow part";
  }

  fs::path root_;
  Prober prober_;
  std::atomic<ModelRegistry*> registry_{nullptr};
};

TEST_F(ModelRegistryLockTest, EvictedSessionIsDestroyedAfterUnlock) {
  AddRootModel("a");
  AddRootModel("b");
  RegistryOptions o = ProbingOptions();
  o.max_models = 1;
  ModelRegistry registry(o);
  registry_ = &registry;
  { ASSERT_TRUE(registry.Acquire("a").ok()); }
  {
    auto b = registry.Acquire("b");  // evicts a (count cap)
    ASSERT_TRUE(b.ok()) << b.status().ToString();
  }
  ExpectAllAnswered(1);
  EXPECT_EQ(registry.loaded_count(), 1);
  registry_ = nullptr;
}

// The same when the load runs on a loader thread (a call with a deadline): the session
// evicted for the count cap (by the caller) and those evicted for the byte cap (by the
// loader) are destroyed with the lock released.
TEST_F(ModelRegistryLockTest, SessionsEvictedForADeadlineLoadAreDestroyedAfterUnlock) {
  // Footprints dominated by a 16 MB resident weight, so the byte cap below holds one.
  for (const char* id : {"a", "b", "c"}) {
    fs::create_directories(root_ / id / "checkpoint");
    ASSERT_TRUE(testing::WriteHeavyIdentityModel(
                    (root_ / id / "checkpoint" / "model_best.onnx").string(), kSize, 4 << 20)
                    .ok());
  }
  RegistryOptions o = ProbingOptions();
  o.max_models = 1;
  ModelRegistry registry(o);
  registry_ = &registry;
  const auto deadline = [] { return Clock::now() + std::chrono::seconds(60); };
  { ASSERT_TRUE(registry.Acquire("a", deadline()).ok()); }
  {
    auto b = registry.Acquire("b", deadline());  // evicts a (count cap), on this thread
    ASSERT_TRUE(b.ok()) << b.status().ToString();
  }
  ExpectAllAnswered(1);
  const int64_t one = registry.loaded_bytes(-1);
  ASSERT_GE(one, (16 << 20) * 9 / 10) << "the resident weight is not in the footprint";
  RegistryOptions capped = ProbingOptions();
  capped.max_bytes = one * 3 / 2;
  ModelRegistry by_bytes(capped);
  registry_ = &by_bytes;
  { ASSERT_TRUE(by_bytes.Acquire("a", deadline()).ok()); }
  {
    auto c = by_bytes.Acquire("c", deadline());  // evicts a (byte cap), on a loader thread
    ASSERT_TRUE(c.ok()) << c.status().ToString();
  }
  ExpectAllAnswered(2);
  EXPECT_EQ(by_bytes.loaded_count(), 1);
  registry_ = nullptr;
}

TEST_F(ModelRegistryLockTest, UnloadedIdleAndReplacedSessionsAreDestroyedAfterUnlock) {
  AddRootModel("u");
  AddRootModel("idle");
  AddRootModel("r", 0.5f);
  FakeClock clock;
  RegistryOptions o = ProbingOptions();
  o.now = clock.Fn();
  o.idle_timeout = std::chrono::hours(1);  // the sweeper thread never gets there itself
  ModelRegistry registry(o);
  registry_ = &registry;
  ASSERT_TRUE(registry.Load("u", false).ok());
  ASSERT_TRUE(registry.Load("r", false).ok());
  ASSERT_TRUE(*registry.Unload("u"));
  ExpectAllAnswered(1);

  AddRootModel("r", 1.f);
  ASSERT_TRUE(registry.Load("r", /*force_reload=*/true).ok());  // the old copy is dropped
  ExpectAllAnswered(2);

  ASSERT_TRUE(registry.Load("idle", false).ok());
  clock.Advance(std::chrono::hours(2));
  registry.SweepIdleNow();  // unloads r and idle
  ExpectAllAnswered(4);
  EXPECT_EQ(registry.loaded_count(), 0);
  registry_ = nullptr;
}

TEST_F(ModelRegistryLockTest, NewTenantFilesAreProbedWithTheLockReleased) {
  AddRootModel("warm");
  AddRootModel("cold");
  RegistryOptions o;
  o.model_root = root_.string();
  std::atomic<ModelRegistry*> self{nullptr};
  std::atomic<int> cold_probes{0};
  o.on_file_access = [&](const std::string& path) {
    ModelRegistry* registry = self.load();
    if (!registry || path.find("cold") == std::string::npos) return;
    ++cold_probes;
    prober_.Probe([registry] { (void)registry->Stats("warm"); });
  };
  ModelRegistry registry(o);
  ASSERT_TRUE(registry.Load("warm", false).ok());
  self = &registry;
  auto cold = registry.Acquire("cold");  // stat of a new tenant, then its size estimate
  ASSERT_TRUE(cold.ok()) << cold.status().ToString();
  EXPECT_GE(cold_probes.load(), 2);
  ExpectAllAnswered(2);
  self = nullptr;
}

TEST_F(ModelRegistryLockTest, ListScansModelRootWithTheLockReleased) {
  AddRootModel("loaded");
  for (const char* id : {"t0", "t1", "t2", "t3", "t4"}) AddRootModel(id);
  RegistryOptions o;
  o.model_root = root_.string();
  std::atomic<ModelRegistry*> self{nullptr};
  o.on_file_access = [&](const std::string& path) {
    ModelRegistry* registry = self.load();
    if (!registry || path != root_.string()) return;
    prober_.Probe([registry] { (void)registry->Acquire("loaded"); });
  };
  ModelRegistry registry(o);
  ASSERT_TRUE(registry.Load("loaded", false).ok());
  self = &registry;
  auto list = registry.List(/*include_available=*/true, 0);
  self = nullptr;
  ExpectAllAnswered(1);
  ASSERT_EQ(list.size(), 6u);
  EXPECT_EQ(list[0].model_id, "loaded");
  EXPECT_EQ(list[0].state, ModelState::kReady);
  EXPECT_EQ(list[1].model_id, "t0");
  EXPECT_EQ(list[1].state, ModelState::kAvailable);
}

TEST_F(ModelRegistryLockTest, RunningTotalsMatchThePerModelFigures) {
  for (const char* id : {"a", "b", "c", "d"}) AddRootModel(id);
  RegistryOptions o;
  o.model_root = root_.string();
  o.policy = config::EvictionPolicy::kLru;
  o.max_models = 3;
  ModelRegistry registry(o);
  auto check = [&] {
    int64_t sum = 0;
    int count = 0;
    for (const auto& s : registry.AllLoadedStats()) {
      sum += s.memory_bytes;
      ++count;
    }
    EXPECT_EQ(registry.loaded_bytes(-1), sum);
    EXPECT_EQ(registry.loaded_count(-1), count);
    EXPECT_EQ(registry.loaded_count(), count);
  };
  for (const char* id : {"a", "b", "c", "d", "a"}) {
    ASSERT_TRUE(registry.Acquire(id).ok());
    check();
  }
  EXPECT_EQ(registry.loaded_count(), 3);
  ASSERT_TRUE(registry.Load("a", /*force_reload=*/true).ok());
  check();
  ASSERT_TRUE(registry.Unload("a").ok());
  check();
  EXPECT_EQ(registry.loaded_count(), 2);
}

// Prefetch: a hint queues a background load and returns at once.

// Waits (bounded, polling) until `id` reaches `state`.
bool WaitForState(ModelRegistry& registry, const std::string& id, ModelState state) {
  for (int i = 0; i < 30000; ++i) {
    auto stats = registry.Stats(id);
    if (stats.ok() && stats->state == state) return true;
    std::this_thread::sleep_for(milliseconds(1));
  }
  return false;
}

// A loader that stops every load until the gate opens, and tells when one is inside.
struct GatedLoader {
  std::promise<void> open;
  std::shared_future<void> opened = open.get_future().share();
  std::promise<void> inside;
  std::atomic<bool> told{false};
  std::function<Expected<std::shared_ptr<OnnxModel>>(const ModelFiles&, int)> Fn() {
    return [this](const ModelFiles& files, int device) -> Expected<std::shared_ptr<OnnxModel>> {
      if (!told.exchange(true)) inside.set_value();
      opened.wait();
      return OnnxModel::Load(files, device);
    };
  }
};

TEST_F(ModelRegistryLockTest, PrefetchLoadsInTheBackgroundAndReturnsAtOnce) {
  AddRootModel("cold");
  GatedLoader gate;
  RegistryOptions o;
  o.model_root = root_.string();
  o.loader = gate.Fn();
  ModelRegistry registry(o);
  // Returns while the load it started is stopped in the loader: it never waits.
  auto hint = registry.Prefetch("cold");
  ASSERT_TRUE(hint.ok()) << hint.status().ToString();
  EXPECT_EQ(*hint, PrefetchOutcome::kQueued);
  gate.inside.get_future().wait();  // the background load has started
  EXPECT_EQ(registry.Stats("cold")->state, ModelState::kLoading);
  EXPECT_EQ(*registry.Prefetch("cold"), PrefetchOutcome::kLoading);
  gate.open.set_value();
  auto handle = registry.Acquire("cold");  // joins the prefetch's load
  ASSERT_TRUE(handle.ok()) << handle.status().ToString();
  EXPECT_EQ(handle->loaded_now(), handle->waited_for_load());  // waited at most, never loaded
  EXPECT_EQ(registry.load_attempts(), 1);
  EXPECT_EQ(registry.Stats("cold")->usage_count, 1);  // the hint was not use
  EXPECT_EQ(*registry.Prefetch("cold"), PrefetchOutcome::kAlreadyLoaded);
  EXPECT_EQ(registry.Prefetch("../etc").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.prefetches_queued(), 1);
}

TEST_F(ModelRegistryLockTest, PrefetchQueueIsBoundedAndUnknownOrFailedIdsAreLeftAlone) {
  for (const char* id : {"a", "b", "c", "d"}) AddRootModel(id);
  fs::create_directories(root_ / "broken" / "checkpoint");
  { std::ofstream(root_ / "broken" / "checkpoint" / "model_best.onnx") << "not onnx"; }
  GatedLoader gate;
  RegistryOptions o;
  o.model_root = root_.string();
  o.loader = gate.Fn();
  o.prefetch_workers = 1;
  o.prefetch_queue = 2;
  ModelRegistry registry(o);
  EXPECT_EQ(*registry.Prefetch("a"), PrefetchOutcome::kQueued);
  gate.inside.get_future().wait();  // the one worker is busy with a
  EXPECT_EQ(*registry.Prefetch("b"), PrefetchOutcome::kQueued);
  EXPECT_EQ(*registry.Prefetch("c"), PrefetchOutcome::kQueued);
  EXPECT_EQ(*registry.Prefetch("d"), PrefetchOutcome::kDropped);
  EXPECT_EQ(registry.prefetches_dropped(), 1);
  gate.open.set_value();
  EXPECT_TRUE(WaitForState(registry, "a", ModelState::kReady));
  EXPECT_TRUE(WaitForState(registry, "b", ModelState::kReady));
  EXPECT_TRUE(WaitForState(registry, "c", ModelState::kReady));
  EXPECT_EQ(registry.Stats("d")->state, ModelState::kAvailable);

  // A remembered failure is kept; an unknown tenant is found out in the background.
  EXPECT_FALSE(registry.Acquire("broken").ok());
  const int64_t attempts = registry.load_attempts();
  EXPECT_EQ(*registry.Prefetch("broken"), PrefetchOutcome::kQueued);
  EXPECT_EQ(*registry.Prefetch("d"), PrefetchOutcome::kQueued);  // one worker: after broken
  EXPECT_TRUE(WaitForState(registry, "d", ModelState::kReady));
  EXPECT_EQ(registry.load_attempts(), attempts + 1);  // d only: broken was not retried
  EXPECT_EQ(registry.Stats("broken")->state, ModelState::kFailed);
  EXPECT_EQ(*registry.Prefetch("nobody"), PrefetchOutcome::kQueued);
  EXPECT_EQ(*registry.Prefetch("a"), PrefetchOutcome::kAlreadyLoaded);
  EXPECT_EQ(registry.Stats("nobody").status().code(), StatusCode::kNotFound);
}

TEST_F(ModelRegistryLockTest, RegistryWithPendingPrefetchesShutsDown) {
  for (const char* id : {"a", "b", "c"}) AddRootModel(id);
  GatedLoader gate;
  RegistryOptions o;
  o.model_root = root_.string();
  o.loader = gate.Fn();
  o.prefetch_workers = 1;
  auto registry = std::make_unique<ModelRegistry>(o);
  for (const char* id : {"a", "b", "c"})
    EXPECT_EQ(*registry->Prefetch(id), PrefetchOutcome::kQueued);
  gate.inside.get_future().wait();
  gate.open.set_value();
  registry.reset();  // a's load finishes; b and c are dropped
  SUCCEED();
}

}  // namespace
}  // namespace lipsync::inference
