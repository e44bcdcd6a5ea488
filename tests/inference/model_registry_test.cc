#include "inference/model_registry.h"

#include <gtest/gtest.h>

#include <onnxruntime_cxx_api.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <new>
#include <random>
#include <thread>

#include <sys/syscall.h>
#include <unistd.h>

#include "inference/fake_clock.h"
#include "inference/ort_runtime.h"
#include "inference/test_models.h"

namespace lipsync::inference {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

constexpr int kSize = 16;
constexpr size_t kPlane = kSize * kSize;

using testing::FakeClock;

// Blocks loads until opened; tells when a load is inside.
class LoadGate {
 public:
  void Enter() {
    std::unique_lock<std::mutex> lock(mu_);
    ++inside_;
    cv_.notify_all();
    cv_.wait(lock, [&] { return open_; });
  }
  void WaitInside() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return inside_ > 0; });
  }
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int inside_ = 0;
  bool open_ = false;
};

class ModelRegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(OrtRuntime::Initialize().ok());
    root_ = fs::temp_directory_path() /
            ("model_registry_test_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(root_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  // <root>/<id>/checkpoint/model_best.onnx, output = input[:,0:3] * scale.
  void AddRootModel(const std::string& id, float scale = 1.f) {
    fs::create_directories(root_ / id / "checkpoint");
    ASSERT_TRUE(testing::WriteScaledModel(ModelPath(id), kSize, scale).ok());
  }
  std::string ModelPath(const std::string& id) const {
    return (root_ / id / "checkpoint" / "model_best.onnx").string();
  }

  RegistryOptions Options() const {
    RegistryOptions o;
    o.model_root = root_.string();
    o.policy = config::EvictionPolicy::kLru;
    return o;
  }

  // Runs one frame through the handle; returns output[0] for the input value 0.5.
  static float RunOnce(ModelHandle& handle) {
    std::vector<float> visual(6 * kPlane, 0.5f), audio(8192, 0.f);
    std::string out;
    Status st = handle.model().Run(1, visual.data(), audio.data(), OutputFormat::kFloat32, &out);
    EXPECT_TRUE(st.ok()) << st.ToString();
    if (!st.ok()) return -1;
    handle.RecordRun(1, 0.1);
    float first;
    std::memcpy(&first, out.data(), 4);
    return first;
  }

  void Use(ModelRegistry& registry, const std::string& id, int times = 1) {
    for (int i = 0; i < times; ++i) {
      auto handle = registry.Acquire(id);
      ASSERT_TRUE(handle.ok()) << handle.status().ToString();
    }
  }

  static ModelState State(ModelRegistry& registry, const std::string& id) {
    auto stats = registry.Stats(id);
    EXPECT_TRUE(stats.ok()) << stats.status().ToString();
    return stats.ok() ? stats->state : ModelState::kFailed;
  }

  fs::path root_;
};

TEST_F(ModelRegistryTest, LazyLoadsFromModelRootAndServes) {
  AddRootModel("alice", 0.5f);
  ModelRegistry registry(Options());
  EXPECT_EQ(registry.loaded_count(), 0);
  EXPECT_EQ(State(registry, "alice"), ModelState::kAvailable);
  auto first = registry.Acquire("alice");
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_TRUE(first->loaded_now());
  EXPECT_GT(first->load_ms(), 0);
  EXPECT_EQ(first->id(), "alice");
  EXPECT_EQ(first->device_id(), -1);
  EXPECT_FLOAT_EQ(RunOnce(*first), 0.25f);
  auto second = registry.Acquire("alice");
  ASSERT_TRUE(second.ok());
  EXPECT_FALSE(second->loaded_now());
  EXPECT_EQ(registry.load_attempts(), 1);

  auto stats = registry.Stats("alice");
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->state, ModelState::kReady);
  EXPECT_EQ(stats->usage_count, 2);
  EXPECT_EQ(stats->in_flight, 2);
  EXPECT_EQ(stats->frames_processed, 1);
  EXPECT_GT(stats->memory_bytes, 0);
  EXPECT_EQ(stats->memory_bytes, registry.loaded_bytes(-1));
  EXPECT_EQ(stats->model_path, ModelPath("alice"));
}

TEST_F(ModelRegistryTest, ConfiguredModelsAndUnknownAndBadIds) {
  AddRootModel("on_disk");
  RegistryOptions o = Options();
  o.configured["named"] = ModelFiles{ModelPath("on_disk"), ""};
  ModelRegistry registry(o);
  ASSERT_TRUE(registry.Acquire("named").ok());

  auto unknown = registry.Acquire("ghost");
  EXPECT_EQ(unknown.status().code(), StatusCode::kNotFound);
  EXPECT_NE(unknown.status().message().find("model 'ghost' not found"), std::string::npos);
  EXPECT_NE(unknown.status().message().find((root_ / "ghost").string()), std::string::npos)
      << unknown.status().message();

  for (const char* bad : {"../x", "a/b", "", ".hidden"}) {
    EXPECT_EQ(registry.Acquire(bad).status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(registry.Load(bad, false).status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(registry.Unload(bad).status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(registry.Stats(bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(registry.load_attempts(), 1);

  auto listed = registry.List(/*include_available=*/true, 0);
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed[0].model_id, "named");  // loaded first
  EXPECT_EQ(listed[0].state, ModelState::kReady);
  EXPECT_EQ(listed[1].model_id, "on_disk");
  EXPECT_EQ(listed[1].state, ModelState::kAvailable);
  EXPECT_EQ(registry.List(false, 0).size(), 1u);
  EXPECT_EQ(registry.List(true, 1).size(), 1u);
}

TEST_F(ModelRegistryTest, LruEvictsTheLeastRecentlyUsedUnderCountCap) {
  for (const char* id : {"a", "b", "c"}) AddRootModel(id);
  RegistryOptions o = Options();
  o.max_models = 2;
  o.policy = config::EvictionPolicy::kLru;
  ModelRegistry registry(o);
  Use(registry, "a", 3);
  Use(registry, "b");
  Use(registry, "a");  // a is now the most recent; b is the oldest
  Use(registry, "c");
  EXPECT_EQ(State(registry, "b"), ModelState::kAvailable);
  EXPECT_EQ(State(registry, "a"), ModelState::kReady);
  EXPECT_EQ(State(registry, "c"), ModelState::kReady);
  EXPECT_EQ(registry.loaded_count(-1), 2);
}

TEST_F(ModelRegistryTest, LfuEvictsTheLeastFrequentlyUsedUnderCountCap) {
  for (const char* id : {"a", "b", "c"}) AddRootModel(id);
  RegistryOptions o = Options();
  o.max_models = 2;
  o.policy = config::EvictionPolicy::kLfu;
  ModelRegistry registry(o);
  Use(registry, "a", 3);
  Use(registry, "b");  // b is the most recent but the least used: LFU drops it, LRU would drop a
  Use(registry, "c");
  EXPECT_EQ(State(registry, "b"), ModelState::kAvailable);
  EXPECT_EQ(State(registry, "a"), ModelState::kReady);
  EXPECT_EQ(State(registry, "c"), ModelState::kReady);
}

// Footprints are measured, so the cap is set from a measurement: room for two of
// three equal models whose size is dominated by a 16 MB resident weight.
class ByteCapTest : public ModelRegistryTest,
                    public ::testing::WithParamInterface<config::EvictionPolicy> {};

TEST_P(ByteCapTest, EvictsTheRightModelUnderTheByteCap) {
  const int64_t kWeights = 4 << 20;
  for (const char* id : {"probe", "a", "b", "c"}) {
    fs::create_directories(root_ / id / "checkpoint");
    ASSERT_TRUE(testing::WriteHeavyIdentityModel(ModelPath(id), kSize, kWeights).ok());
  }
  int64_t footprint = 0;
  {
    ModelRegistry probe(Options());
    Use(probe, "probe");
    footprint = probe.loaded_bytes(-1);
  }
  ASSERT_GE(footprint, kWeights * 4 * 9 / 10) << "the resident weight is not in the footprint";
  RegistryOptions o = Options();
  o.policy = GetParam();
  o.max_bytes = footprint * 5 / 2;
  ModelRegistry registry(o);
  Use(registry, "a", 3);
  Use(registry, "b");
  if (GetParam() == config::EvictionPolicy::kLru) Use(registry, "a");
  Use(registry, "c");
  EXPECT_EQ(State(registry, "b"), ModelState::kAvailable);
  EXPECT_EQ(State(registry, "a"), ModelState::kReady);
  EXPECT_EQ(State(registry, "c"), ModelState::kReady);
  EXPECT_LE(registry.loaded_bytes(-1), o.max_bytes);
}

INSTANTIATE_TEST_SUITE_P(Policies, ByteCapTest,
                         ::testing::Values(config::EvictionPolicy::kLru,
                                           config::EvictionPolicy::kLfu),
                         [](const auto& info) {
                           return info.param == config::EvictionPolicy::kLru ? "Lru" : "Lfu";
                         });

TEST_F(ModelRegistryTest, EvictionNeverHitsAPinnedModel) {
  for (const char* id : {"a", "b", "c"}) AddRootModel(id);
  RegistryOptions o = Options();
  o.max_models = 2;
  ModelRegistry registry(o);
  auto a = registry.Acquire("a");  // held: the LRU victim, but pinned
  ASSERT_TRUE(a.ok());
  Use(registry, "b");
  Use(registry, "c");
  EXPECT_EQ(State(registry, "a"), ModelState::kReady);
  EXPECT_EQ(State(registry, "b"), ModelState::kAvailable);
  EXPECT_FLOAT_EQ(RunOnce(*a), 0.5f);

  auto c = registry.Acquire("c");
  ASSERT_TRUE(c.ok());
  auto b = registry.Acquire("b");  // everything pinned
  EXPECT_EQ(b.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(b.status().message().find("in use"), std::string::npos) << b.status().message();
  a = ModelHandle();  // releasing a makes room
  EXPECT_TRUE(registry.Acquire("b").ok());
  EXPECT_EQ(State(registry, "a"), ModelState::kAvailable);
  EXPECT_EQ(State(registry, "c"), ModelState::kReady);
}

TEST_F(ModelRegistryTest, IdleModelsAreUnloadedButNotWhileHeld) {
  AddRootModel("idle");
  AddRootModel("busy");
  FakeClock clock;
  RegistryOptions o = Options();
  o.idle_timeout = milliseconds(100);
  o.now = clock.Fn();
  ModelRegistry registry(o);
  Use(registry, "idle");
  auto busy = registry.Acquire("busy");
  ASSERT_TRUE(busy.ok());
  clock.Advance(milliseconds(99));
  registry.SweepIdleNow();
  EXPECT_EQ(State(registry, "idle"), ModelState::kReady);  // not idle long enough yet
  clock.Advance(milliseconds(1));
  registry.SweepIdleNow();
  EXPECT_EQ(State(registry, "idle"), ModelState::kAvailable);
  EXPECT_EQ(State(registry, "busy"), ModelState::kReady);
  EXPECT_FLOAT_EQ(RunOnce(*busy), 0.5f);
  // The background sweeper does the same without being asked (polled, not timed).
  busy = ModelHandle();
  clock.Advance(milliseconds(100));
  for (int i = 0; i < 500 && registry.loaded_count() > 0; ++i)
    std::this_thread::sleep_for(milliseconds(10));
  EXPECT_EQ(registry.loaded_count(), 0);
}

TEST_F(ModelRegistryTest, ConcurrentFirstAcquiresLoadOnce) {
  AddRootModel("popular");
  ModelRegistry registry(Options());
  constexpr int kThreads = 8;
  std::atomic<int> ok{0}, loaded_now{0}, waited{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      auto handle = registry.Acquire("popular");
      if (handle.ok()) {
        ++ok;
        if (handle->loaded_now()) ++loaded_now;
        if (handle->waited_for_load()) ++waited;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kThreads);
  // One call loaded it; the others waited for that load (a miss each) or came after it.
  EXPECT_EQ(loaded_now.load() - waited.load(), 1);
  EXPECT_EQ(registry.counters().cache_misses, loaded_now.load());
  EXPECT_EQ(registry.counters().cache_hits, kThreads - loaded_now.load());
  EXPECT_EQ(registry.load_attempts(), 1);
  EXPECT_EQ(registry.Stats("popular")->usage_count, kThreads);
}

TEST_F(ModelRegistryTest, CorruptModelFailsOnlyItsTenantAndIsRemembered) {
  AddRootModel("good");
  fs::create_directories(root_ / "broken" / "checkpoint");
  ASSERT_TRUE(testing::WriteCorruptModel(ModelPath("broken")).ok());
  RegistryOptions o = Options();
  o.failed_retry = milliseconds(60000);
  ModelRegistry registry(o);

  auto first = registry.Acquire("broken");
  ASSERT_FALSE(first.ok());
  EXPECT_TRUE(first.status().code() == StatusCode::kFailedPrecondition ||
              first.status().code() == StatusCode::kUnavailable);
  EXPECT_NE(first.status().message().find(ModelPath("broken")), std::string::npos)
      << first.status().message();
  EXPECT_EQ(registry.load_attempts(), 1);

  auto again = registry.Acquire("broken");  // fails fast: no second load attempt
  EXPECT_EQ(again.status().code(), first.status().code());
  EXPECT_NE(again.status().message().find("remembered"), std::string::npos);
  EXPECT_EQ(registry.load_attempts(), 1);
  EXPECT_EQ(State(registry, "broken"), ModelState::kFailed);

  auto good = registry.Acquire("good");
  ASSERT_TRUE(good.ok());
  EXPECT_FLOAT_EQ(RunOnce(*good), 0.5f);

  // Fixed on disk + an explicit LoadModel retries at once.
  ASSERT_TRUE(testing::WriteScaledModel(ModelPath("broken"), kSize, 1.f).ok());
  auto load = registry.Load("broken", false);
  ASSERT_TRUE(load.ok()) << load.status().ToString();
  EXPECT_FALSE(load->already_loaded);
  EXPECT_TRUE(registry.Acquire("broken").ok());
}

TEST_F(ModelRegistryTest, FailedRetryWindowExpires) {
  fs::create_directories(root_ / "flaky" / "checkpoint");
  ASSERT_TRUE(testing::WriteCorruptModel(ModelPath("flaky")).ok());
  FakeClock clock;
  RegistryOptions o = Options();
  o.failed_retry = milliseconds(50);
  o.now = clock.Fn();
  ModelRegistry registry(o);
  EXPECT_FALSE(registry.Acquire("flaky").ok());
  ASSERT_TRUE(testing::WriteScaledModel(ModelPath("flaky"), kSize, 1.f).ok());
  clock.Advance(milliseconds(49));
  EXPECT_EQ(registry.Acquire("flaky").status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(registry.load_attempts(), 1);
  clock.Advance(milliseconds(1));
  EXPECT_TRUE(registry.Acquire("flaky").ok());
  EXPECT_EQ(registry.load_attempts(), 2);
}

// A garbage .onnx: FAILED with a message naming the file, answered from memory
// without reloading, retried after failed_retry, then 2x, 4x... up to the max, and
// loaded once the file is fixed.
TEST_F(ModelRegistryTest, GarbageModelBacksOffDoublingUpToTheMaxThenLoadsWhenFixed) {
  AddRootModel("good");
  fs::create_directories(root_ / "junk" / "checkpoint");
  ASSERT_TRUE(testing::WriteCorruptModel(ModelPath("junk")).ok());
  FakeClock clock;
  RegistryOptions o = Options();
  o.failed_retry = std::chrono::seconds(10);
  o.failed_retry_max = std::chrono::seconds(35);
  o.now = clock.Fn();
  ModelRegistry registry(o);

  auto first = registry.Acquire("junk");
  EXPECT_EQ(first.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(first.status().message().find(ModelPath("junk")), std::string::npos)
      << first.status().message();
  EXPECT_EQ(State(registry, "junk"), ModelState::kFailed);
  EXPECT_NE(registry.Stats("junk")->error.find(ModelPath("junk")), std::string::npos);
  EXPECT_EQ(registry.load_attempts(), 1);

  auto remembered = registry.Acquire("junk");
  EXPECT_EQ(remembered.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(remembered.status().message().find("remembered"), std::string::npos);
  EXPECT_NE(remembered.status().message().find("next retry in 10 s"), std::string::npos)
      << remembered.status().message();
  EXPECT_EQ(registry.load_attempts(), 1);
  EXPECT_TRUE(registry.Acquire("good").ok());  // other tenants unaffected

  // Each consecutive failure doubles the wait: 10 s, 20 s, then capped at 35 s.
  int attempts = 2;  // junk's first and good's
  for (auto wait : {std::chrono::seconds(10), std::chrono::seconds(20), std::chrono::seconds(35),
                    std::chrono::seconds(35)}) {
    clock.Advance(wait - milliseconds(1));
    EXPECT_EQ(registry.Acquire("junk").status().code(), StatusCode::kFailedPrecondition);
    EXPECT_EQ(registry.load_attempts(), attempts) << "retried before " << wait.count() << " s";
    clock.Advance(milliseconds(1));
    auto retried = registry.Acquire("junk");
    EXPECT_EQ(retried.status().code(), StatusCode::kFailedPrecondition);
    EXPECT_EQ(registry.load_attempts(), ++attempts) << "not retried after " << wait.count() << " s";
  }
  EXPECT_NE(registry.Acquire("junk").status().message().find("next retry in 35 s"),
            std::string::npos);

  // Fixed on disk: loads at the next retry, and the backoff starts over.
  ASSERT_TRUE(testing::WriteScaledModel(ModelPath("junk"), kSize, 1.f).ok());
  EXPECT_EQ(registry.Acquire("junk").status().code(), StatusCode::kFailedPrecondition);
  clock.Advance(std::chrono::seconds(35));
  auto fixed = registry.Acquire("junk");
  ASSERT_TRUE(fixed.ok()) << fixed.status().ToString();
  EXPECT_FLOAT_EQ(RunOnce(*fixed), 0.5f);
  EXPECT_EQ(State(registry, "junk"), ModelState::kReady);
}

// Whatever a loader throws ends as a FAILED model with a Status: never LOADING, no
// exception out of Acquire, and the next request gets the remembered error.
TEST_F(ModelRegistryTest, LoaderThatThrowsLeavesTheModelFailedAndRemembered) {
  for (const char* id : {"ort", "oom", "std", "other"}) AddRootModel(id);
  FakeClock clock;
  RegistryOptions o = Options();
  o.failed_retry = std::chrono::seconds(30);
  o.now = clock.Fn();
  std::atomic<bool> throwing{true};
  o.loader = [&](const ModelFiles& files, int device) -> Expected<std::shared_ptr<OnnxModel>> {
    if (throwing) {
      const std::string dir = fs::path(files.model_path).parent_path().parent_path().filename();
      if (dir == "ort") throw Ort::Exception("Protobuf parsing failed.", ORT_INVALID_PROTOBUF);
      if (dir == "oom") throw std::bad_alloc();
      if (dir == "std") throw std::runtime_error(std::string(10000, 'x'));
      throw 42;
    }
    return OnnxModel::Load(files, device);
  };
  ModelRegistry registry(o);
  const std::pair<const char*, StatusCode> cases[] = {{"ort", StatusCode::kFailedPrecondition},
                                                      {"oom", StatusCode::kResourceExhausted},
                                                      {"std", StatusCode::kInternal},
                                                      {"other", StatusCode::kInternal}};
  for (const auto& [id, code] : cases) {
    auto failed = registry.Acquire(id);
    EXPECT_EQ(failed.status().code(), code) << id;
    EXPECT_NE(failed.status().message().find(ModelPath(id)), std::string::npos)
        << failed.status().message();
    EXPECT_LT(failed.status().message().size(), 1000u) << "untrusted text quoted unbounded";
    EXPECT_EQ(State(registry, id), ModelState::kFailed) << id;
    auto again = registry.Acquire(id);
    EXPECT_EQ(again.status().code(), code) << id;
    EXPECT_NE(again.status().message().find("remembered"), std::string::npos);
  }
  EXPECT_EQ(registry.load_attempts(), 4);
  // After the backoff, a loader that behaves loads them.
  throwing = false;
  clock.Advance(std::chrono::seconds(30));
  for (const auto& [id, code] : cases) EXPECT_TRUE(registry.Acquire(id).ok()) << id;
  EXPECT_EQ(registry.load_attempts(), 8);
}

// A request waiting for another request's load gives up at its own deadline; the
// load goes on and serves the first caller.
TEST_F(ModelRegistryTest, WaiterGivesUpAtItsOwnDeadlineWhileAnotherLoadIsInFlight) {
  AddRootModel("slow");
  LoadGate gate;
  RegistryOptions o = Options();
  o.loader = [&](const ModelFiles& files, int device) {
    gate.Enter();
    return OnnxModel::Load(files, device);
  };
  ModelRegistry registry(o);
  auto loader = std::async(std::launch::async, [&] { return registry.Acquire("slow"); });
  gate.WaitInside();
  EXPECT_EQ(State(registry, "slow"), ModelState::kLoading);

  auto waiter = registry.Acquire("slow", Clock::now() + milliseconds(20));
  EXPECT_EQ(waiter.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(waiter.status().message().find("still being loaded by another request"),
            std::string::npos)
      << waiter.status().message();
  auto admin = registry.Load("slow", false, Clock::now() + milliseconds(20));
  EXPECT_EQ(admin.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(State(registry, "slow"), ModelState::kLoading);

  gate.Open();
  auto loaded = loader.get();
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_TRUE(loaded->loaded_now());
  EXPECT_TRUE(registry.Acquire("slow", Clock::now() + milliseconds(20)).ok());
  EXPECT_EQ(registry.load_attempts(), 1);
}

// Whether thread `tid` of this process is asleep (state S or D in /proc). A thread
// that sleeps right after announcing it calls Acquire, while the load it would wait
// for is held in a LoadGate and nobody else holds the registry's lock, is waiting for
// that load.
bool ThreadSleeps(pid_t tid) {
  std::ifstream in("/proc/self/task/" + std::to_string(tid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos || paren + 2 >= stat.size()) return false;
  return stat[paren + 2] == 'S' || stat[paren + 2] == 'D';
}

// A request that arrives while a prefetch loads its model waits for that load: it is
// told so (loaded_now, waited_for_load, the time it waited) and counted as a miss, not
// as a hit with a load time of 0.
TEST_F(ModelRegistryTest, AcquireWaitingForAPrefetchReportsTheWaitAndIsAMiss) {
  AddRootModel("cold");
  LoadGate gate;
  RegistryOptions o = Options();
  o.loader = [&](const ModelFiles& files, int device) {
    gate.Enter();
    return OnnxModel::Load(files, device);
  };
  ModelRegistry registry(o);
  auto hint = registry.Prefetch("cold");
  ASSERT_TRUE(hint.ok()) << hint.status().ToString();
  EXPECT_EQ(*hint, PrefetchOutcome::kQueued);
  gate.WaitInside();

  std::atomic<pid_t> tid{0};
  auto waiter = std::async(std::launch::async, [&] {
    tid = static_cast<pid_t>(::syscall(SYS_gettid));
    return registry.Acquire("cold");
  });
  while (tid.load() == 0 || !ThreadSleeps(tid.load())) std::this_thread::yield();
  // The waiter sleeps in Acquire; its wait lasts at least the load's ORT part.
  gate.Open();
  auto handle = waiter.get();
  ASSERT_TRUE(handle.ok()) << handle.status().ToString();
  EXPECT_TRUE(handle->loaded_now());
  EXPECT_TRUE(handle->waited_for_load());
  EXPECT_GT(handle->load_ms(), 0.0);
  ModelCounters counts = registry.counters();
  EXPECT_EQ(counts.cache_misses, 1);
  EXPECT_EQ(counts.cache_hits, 0);
  EXPECT_EQ(registry.load_attempts(), 1);

  // The next request finds it loaded: a hit, no load time.
  auto hit = registry.Acquire("cold");
  ASSERT_TRUE(hit.ok()) << hit.status().ToString();
  EXPECT_FALSE(hit->loaded_now());
  EXPECT_FALSE(hit->waited_for_load());
  EXPECT_EQ(hit->load_ms(), 0.0);
  counts = registry.counters();
  EXPECT_EQ(counts.cache_misses, 1);
  EXPECT_EQ(counts.cache_hits, 1);
}

// The call that starts a load with a deadline waits for it no longer than any other
// caller: it gets DEADLINE_EXCEEDED while the load, on a loader thread, goes on (the
// gate is shut: the call returned with its load still inside the loader) and serves
// the next call with one load counted.
TEST_F(ModelRegistryTest, FirstCallerGivesUpAtItsDeadlineWhileItsLoadGoesOn) {
  AddRootModel("slow");
  AddRootModel("fast");
  fs::create_directories(root_ / "broken" / "checkpoint");
  ASSERT_TRUE(testing::WriteCorruptModel(ModelPath("broken")).ok());
  LoadGate gate;
  RegistryOptions o = Options();
  o.loader = [&](const ModelFiles& files, int device) {
    if (files.model_path.find("slow") != std::string::npos) gate.Enter();
    return OnnxModel::Load(files, device);
  };
  ModelRegistry registry(o);
  auto first = std::async(std::launch::async, [&] {
    return registry.Acquire("slow", Clock::now() + milliseconds(20));
  });
  const bool returned = first.wait_for(std::chrono::seconds(30)) == std::future_status::ready;
  if (!returned) gate.Open();  // let the stuck call end rather than hang the test
  ASSERT_TRUE(returned) << "the call that started the load waited for the whole load";
  auto given_up = first.get();
  EXPECT_EQ(given_up.status().code(), StatusCode::kDeadlineExceeded);
  for (const char* part : {"model 'slow'", "ms so far", "load goes on"}) {
    EXPECT_NE(given_up.status().message().find(part), std::string::npos)
        << part << " in: " << given_up.status().message();
  }
  gate.WaitInside();  // the load is under way on a loader thread
  EXPECT_EQ(State(registry, "slow"), ModelState::kLoading);
  gate.Open();
  auto second = registry.Acquire("slow");  // waits for that load (if still under way)
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  // It did not load the model itself: a wait for the loader thread's load at most.
  EXPECT_EQ(second->loaded_now(), second->waited_for_load());
  EXPECT_FLOAT_EQ(RunOnce(*second), 0.5f);
  EXPECT_EQ(registry.load_attempts(), 1);
  EXPECT_EQ(registry.counters().loads, 1);
  EXPECT_EQ(registry.Stats("slow")->usage_count, 1);  // the call that gave up did not use it

  // A load that ends before the deadline answers its own caller: the model, or the error.
  auto fast = registry.Acquire("fast", Clock::now() + std::chrono::seconds(30));
  ASSERT_TRUE(fast.ok()) << fast.status().ToString();
  EXPECT_TRUE(fast->loaded_now());
  auto broken = registry.Acquire("broken", Clock::now() + std::chrono::seconds(30));
  EXPECT_EQ(broken.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(broken.status().message().find("remembered"), std::string::npos)
      << broken.status().message();
  // An explicit Load with a deadline runs the same way.
  auto loaded = registry.Load("fast", false, Clock::now() + std::chrono::seconds(30));
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_TRUE(loaded->already_loaded);
}

// A load that fails on a loader thread after its caller gave up is remembered: the
// next calls get the failure (with its backoff) without a new load.
TEST_F(ModelRegistryTest, LoadFailingInTheBackgroundIsRemembered) {
  AddRootModel("flaky");
  LoadGate gate;
  std::atomic<int> calls{0};
  FakeClock clock;
  RegistryOptions o = Options();
  o.now = clock.Fn();
  o.loader = [&](const ModelFiles&, int) -> Expected<std::shared_ptr<OnnxModel>> {
    if (++calls == 1) gate.Enter();
    return Status::FailedPrecondition("corrupt weights");
  };
  ModelRegistry registry(o);
  EXPECT_EQ(registry.Acquire("flaky", Clock::now() + milliseconds(20)).status().code(),
            StatusCode::kDeadlineExceeded);
  gate.WaitInside();
  gate.Open();
  auto second = registry.Acquire("flaky");  // waits for the load, then finds its failure
  EXPECT_EQ(second.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(second.status().message().find("corrupt weights"), std::string::npos)
      << second.status().message();
  EXPECT_NE(second.status().message().find("remembered"), std::string::npos)
      << second.status().message();
  EXPECT_EQ(State(registry, "flaky"), ModelState::kFailed);
  auto third = registry.Acquire("flaky", Clock::now() + std::chrono::seconds(30));
  EXPECT_EQ(third.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(registry.counters().load_failures, 1);
  clock.Advance(std::chrono::seconds(30));  // the retry time: the next call loads again
  EXPECT_EQ(registry.Acquire("flaky", Clock::now() + std::chrono::seconds(30)).status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(calls.load(), 2);
}

// The destructor joins a background load under way (its model is freed with the
// registry) and drops one still waiting for the one loader thread.
TEST_F(ModelRegistryTest, RegistryWithADeadlineLoadInFlightShutsDown) {
  AddRootModel("a");
  AddRootModel("b");
  LoadGate gate;
  std::atomic<int> calls{0}, alive{0};
  RegistryOptions o = Options();
  o.load_workers = 1;
  o.loader = [&](const ModelFiles& files, int device) -> Expected<std::shared_ptr<OnnxModel>> {
    if (++calls == 1) gate.Enter();
    auto real = OnnxModel::Load(files, device);
    if (!real.ok()) return real.status();
    ++alive;
    std::shared_ptr<OnnxModel> keep = *real;
    return std::shared_ptr<OnnxModel>(keep.get(), [&alive, keep](OnnxModel*) mutable {
      keep.reset();
      --alive;
    });
  };
  auto registry = std::make_unique<ModelRegistry>(o);
  EXPECT_EQ(registry->Acquire("a", Clock::now() + milliseconds(10)).status().code(),
            StatusCode::kDeadlineExceeded);
  gate.WaitInside();
  // The one loader is busy with a: b waits its turn, already LOADING.
  EXPECT_EQ(registry->Acquire("b", Clock::now() + milliseconds(10)).status().code(),
            StatusCode::kDeadlineExceeded);
  EXPECT_EQ(State(*registry, "b"), ModelState::kLoading);
  std::thread closer([&] { registry.reset(); });
  gate.Open();
  closer.join();
  EXPECT_GE(calls.load(), 1);  // b may have started before the destructor stopped the loader
  EXPECT_EQ(alive.load(), 0);  // whatever loaded was freed with the registry
}

// Many models, random use: each eviction drops exactly the model the policy names
// (recomputed here from the use history), held models never, and a model used by a
// long request counts from its release (the registry learns of it without its lock).
class ManyModelsEvictionTest : public ModelRegistryTest,
                               public ::testing::WithParamInterface<config::EvictionPolicy> {};

TEST_P(ManyModelsEvictionTest, EachEvictionDropsThePolicysVictim) {
  constexpr int kModels = 300;
  constexpr int kNewcomers = 40;
  AddRootModel("shared");
  auto shared = OnnxModel::Load(ModelFiles{ModelPath("shared"), ""}, -1);
  ASSERT_TRUE(shared.ok()) << shared.status().ToString();
  FakeClock clock;
  RegistryOptions o = Options();
  o.policy = GetParam();
  o.max_models = kModels;
  o.now = clock.Fn();
  // One session serves every id (a loader that hands it out): the test is about order.
  o.loader = [model = *shared](const ModelFiles&, int) -> Expected<std::shared_ptr<OnnxModel>> {
    return model;
  };
  auto id_of = [](const char* prefix, int i) {
    std::string id(prefix);
    id += std::to_string(i);  // (not prefix + ...: g++ 12's -Wrestrict false positive)
    return id;
  };
  for (int i = 0; i < kModels; ++i)
    o.configured[id_of("m", i)] = ModelFiles{ModelPath("shared"), ""};
  for (int i = 0; i < kNewcomers; ++i) {
    o.configured[id_of("n", i)] = ModelFiles{ModelPath("shared"), ""};
  }
  ModelRegistry registry(o);

  struct Use {
    int64_t uses = 0;
    int64_t last = 0;  // ms on the fake clock
  };
  std::map<std::string, Use> loaded;  // the reference
  std::map<std::string, ModelHandle> held;
  int64_t now_ms = 0;
  auto tick = [&] {
    clock.Advance(milliseconds(1));
    ++now_ms;
  };
  auto acquire = [&](const std::string& id, bool hold) {
    auto handle = registry.Acquire(id);
    ASSERT_TRUE(handle.ok()) << id << ": " << handle.status().ToString();
    Use& use = loaded[id];
    ++use.uses;
    use.last = now_ms;
    if (hold) held[id] = std::move(*handle);
  };
  auto expected_victim = [&] {
    const std::string* best = nullptr;
    for (const auto& [id, use] : loaded) {
      if (held.count(id)) continue;
      if (best == nullptr) {
        best = &id;
        continue;
      }
      const Use& b = loaded[*best];
      const bool lfu = GetParam() == config::EvictionPolicy::kLfu;
      const bool better = lfu ? (use.uses < b.uses || (use.uses == b.uses && use.last < b.last))
                              : use.last < b.last;
      if (better) best = &id;
    }
    return best ? *best : std::string();
  };

  for (int i = 0; i < kModels; ++i) {
    acquire(id_of("m", i), false);
    tick();
  }
  std::mt19937 random(11);
  int newcomer = 0;
  for (int step = 1; step <= 2000 && newcomer < kNewcomers; ++step) {
    const int pick = static_cast<int>(random() % loaded.size());
    const std::string id = std::next(loaded.begin(), pick)->first;
    if (auto it = held.find(id); it != held.end()) {
      held.erase(it);  // the release is its last use
      loaded[id].last = now_ms;
    } else {
      acquire(id, /*hold=*/random() % 8 == 0);
    }
    tick();
    if (step % 50 == 0) {
      const std::string victim = expected_victim();
      ASSERT_FALSE(victim.empty());
      const std::string fresh = id_of("n", newcomer++);
      acquire(fresh, false);
      ASSERT_EQ(State(registry, victim), ModelState::kAvailable)
          << "step " << step << ": expected " << victim << " to be the victim";
      loaded.erase(victim);
      ASSERT_EQ(registry.loaded_count(), kModels);
      tick();
    }
  }
  EXPECT_EQ(newcomer, kNewcomers);
  for (const auto& [id, use] : loaded) EXPECT_EQ(State(registry, id), ModelState::kReady) << id;
  EXPECT_EQ(registry.counters().evictions, kNewcomers);
}

INSTANTIATE_TEST_SUITE_P(Policies, ManyModelsEvictionTest,
                         ::testing::Values(config::EvictionPolicy::kLru,
                                           config::EvictionPolicy::kLfu),
                         [](const auto& info) {
                           return info.param == config::EvictionPolicy::kLru ? "Lru" : "Lfu";
                         });

TEST_F(ModelRegistryTest, OversizedModelFileIsRefusedWithoutBeingRead) {
  AddRootModel("huge");
  AddRootModel("small");
  const int64_t size = static_cast<int64_t>(fs::file_size(ModelPath("huge")));
  std::ofstream(ModelPath("huge"), std::ios::app) << std::string(4096, '\0');
  std::atomic<int> read{0};
  RegistryOptions o = Options();
  o.max_model_file_bytes = size + 100;
  o.loader = [&](const ModelFiles& files, int device) {
    ++read;
    return OnnxModel::Load(files, device);
  };
  ModelRegistry registry(o);
  auto huge = registry.Acquire("huge");
  EXPECT_EQ(huge.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(huge.status().message().find(ModelPath("huge")), std::string::npos)
      << huge.status().message();
  EXPECT_NE(huge.status().message().find("limits.max_model_file_mb"), std::string::npos)
      << huge.status().message();
  EXPECT_NE(huge.status().message().find("was not read"), std::string::npos);
  EXPECT_EQ(read.load(), 0);
  EXPECT_EQ(registry.load_attempts(), 0);
  EXPECT_EQ(State(registry, "huge"), ModelState::kFailed);
  EXPECT_TRUE(registry.Acquire("small").ok());
  EXPECT_EQ(read.load(), 1);
}

TEST_F(ModelRegistryTest, SymlinkLeavingModelRootIsPermissionDenied) {
  // A tenant directory symlinked to a model outside model_root, and a model file
  // symlinked out; a symlink that stays inside model_root is fine.
  const fs::path outside = root_.string() + "_outside";
  fs::create_directories(outside / "checkpoint");
  ASSERT_TRUE(
      testing::WriteScaledModel((outside / "checkpoint" / "model_best.onnx").string(), kSize, 1.f)
          .ok());
  fs::create_directory_symlink(outside, root_ / "escape");
  fs::create_directories(root_ / "filelink" / "checkpoint");
  fs::create_symlink(outside / "checkpoint" / "model_best.onnx", ModelPath("filelink"));
  AddRootModel("real");
  fs::create_directory_symlink(root_ / "real", root_ / "alias");

  RegistryOptions o = Options();
  ModelRegistry registry(o);
  for (const char* id : {"escape", "filelink"}) {
    auto denied = registry.Acquire(id);
    EXPECT_EQ(denied.status().code(), StatusCode::kPermissionDenied) << id;
    EXPECT_NE(denied.status().message().find("outside model_root"), std::string::npos)
        << denied.status().message();
    EXPECT_EQ(State(registry, id), ModelState::kFailed);
  }
  EXPECT_EQ(registry.load_attempts(), 0);
  // Listing looks at no tenant's files (one directory scan): a symlinked tenant
  // directory is not offered (its d_type says so), a real one is, and a model file
  // symlinked out of it is refused at load (above).
  ModelRegistry fresh(o);
  std::vector<std::string> ids;
  for (const ModelStats& listed : fresh.List(/*include_available=*/true, 0)) {
    ids.push_back(listed.model_id);
  }
  EXPECT_EQ(ids, (std::vector<std::string>{"filelink", "real"}));
  auto alias = registry.Acquire("alias");
  ASSERT_TRUE(alias.ok()) << alias.status().ToString();
  EXPECT_FLOAT_EQ(RunOnce(*alias), 0.5f);
  // A `models:` entry is the operator's own path: it may live anywhere.
  o.configured["configured"] =
      ModelFiles{(outside / "checkpoint" / "model_best.onnx").string(), ""};
  ModelRegistry operator_registry(o);
  EXPECT_TRUE(operator_registry.Acquire("configured").ok());
  std::error_code ec;
  fs::remove_all(outside, ec);
}

TEST_F(ModelRegistryTest, ForceReloadUnderConcurrentUseLosesNothing) {
  AddRootModel("live", 0.5f);  // v1 answers 0.25 for 0.5
  ModelRegistry registry(Options());
  ASSERT_TRUE(registry.Load("live", false).ok());
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0}, v1{0}, v2{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&] {
      std::vector<float> visual(6 * kPlane, 0.5f), audio(8192, 0.f);
      while (!stop) {
        auto handle = registry.Acquire("live");
        if (!handle.ok()) {
          ++failures;
          continue;
        }
        std::string out;
        if (!handle->model()
                 .Run(1, visual.data(), audio.data(), OutputFormat::kFloat32, &out)
                 .ok()) {
          ++failures;
          continue;
        }
        float x;
        std::memcpy(&x, out.data(), 4);
        if (x == 0.25f)
          ++v1;
        else if (x == 0.5f)
          ++v2;
        else
          ++failures;
      }
    });
  }
  // The clients are serving v1 (waited for, bounded) when the reload starts.
  for (int i = 0; i < 30000 && v1.load() == 0; ++i) std::this_thread::sleep_for(milliseconds(1));
  AddRootModel("live", 1.f);  // v2: identity
  auto reload = registry.Load("live", true);
  ASSERT_TRUE(reload.ok()) << reload.status().ToString();
  EXPECT_FALSE(reload->already_loaded);
  const int v2_before = v2.load();
  // ... and serve v2 after it (waited for, bounded; never timed).
  for (int i = 0; i < 30000 && v2.load() == v2_before; ++i)
    std::this_thread::sleep_for(milliseconds(1));
  stop = true;
  for (auto& t : clients) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GT(v1.load(), 0);
  EXPECT_GT(v2.load(), v2_before);
  auto after = registry.Acquire("live");
  ASSERT_TRUE(after.ok());
  EXPECT_FLOAT_EQ(RunOnce(*after), 0.5f);
  EXPECT_EQ(registry.loaded_count(), 1);
}

TEST_F(ModelRegistryTest, FailedReloadKeepsTheOldVersionServing) {
  AddRootModel("steady", 0.5f);
  ModelRegistry registry(Options());
  auto held = registry.Acquire("steady");
  ASSERT_TRUE(held.ok());
  ASSERT_TRUE(testing::WriteCorruptModel(ModelPath("steady")).ok());
  auto reload = registry.Load("steady", true);
  ASSERT_FALSE(reload.ok());
  EXPECT_NE(reload.status().message().find("previous version keeps serving"), std::string::npos)
      << reload.status().message();
  EXPECT_EQ(State(registry, "steady"), ModelState::kReady);
  auto fresh = registry.Acquire("steady");
  ASSERT_TRUE(fresh.ok()) << fresh.status().ToString();
  EXPECT_FLOAT_EQ(RunOnce(*fresh), 0.25f);
  EXPECT_FLOAT_EQ(RunOnce(*held), 0.25f);
}

TEST_F(ModelRegistryTest, UnloadLetsHeldHandlesFinish) {
  AddRootModel("gone", 0.5f);
  ModelRegistry registry(Options());
  auto held = registry.Acquire("gone");
  ASSERT_TRUE(held.ok());
  auto unloaded = registry.Unload("gone");
  ASSERT_TRUE(unloaded.ok());
  EXPECT_TRUE(*unloaded);
  EXPECT_EQ(registry.loaded_count(), 0);
  EXPECT_FLOAT_EQ(RunOnce(*held), 0.25f);  // the old object lives on in the handle
  EXPECT_FALSE(*registry.Unload("gone"));
  EXPECT_EQ(registry.Unload("ghost").status().code(), StatusCode::kNotFound);
  // Preload brings it back.
  EXPECT_TRUE(registry.Preload({"gone"}).ok());
  EXPECT_EQ(registry.loaded_count(), 1);
  EXPECT_EQ(registry.Preload({"ghost"}).code(), StatusCode::kNotFound);
}

TEST_F(ModelRegistryTest, OptionsFromConfigConvertUnitsAndFindTheEncoder) {
  AddRootModel("cfg");
  ASSERT_TRUE(testing::WriteScaledModel(
                  (root_ / "cfg" / "checkpoint" / "audio_encoder.onnx").string(), kSize, 1.f)
                  .ok());
  config::InferenceConfig cfg;
  cfg.capacity.max_models_per_gpu = 7;
  cfg.capacity.eviction_policy = config::EvictionPolicy::kLru;
  cfg.capacity.idle_timeout_minutes = 0.5;
  cfg.capacity.failed_load_retry_seconds = 2.5;
  cfg.capacity.failed_load_retry_max_seconds = 40;
  cfg.limits.max_model_file_mb = 3;
  cfg.gpus.memory_gb_per_gpu = 1.5;
  cfg.models["m"].model_path = ModelPath("cfg");
  cfg.models["n"].model_path = ModelPath("cfg");
  cfg.models["n"].audio_encoder_path = "/explicit/enc.onnx";
  cfg.model_root = root_.string();
  RegistryOptions o = RegistryOptionsFromConfig(cfg, {0, 1});
  EXPECT_EQ(o.max_models, 7);
  EXPECT_EQ(o.policy, config::EvictionPolicy::kLru);
  EXPECT_EQ(o.idle_timeout, milliseconds(30000));
  EXPECT_EQ(o.failed_retry, milliseconds(2500));
  EXPECT_EQ(o.failed_retry_max, milliseconds(40000));
  EXPECT_EQ(o.max_model_file_bytes, int64_t{3} << 20);
  EXPECT_EQ(o.max_bytes, int64_t{3} << 29);
  EXPECT_EQ(o.devices, (std::vector<int>{0, 1}));
  EXPECT_EQ(o.placement, config::AssignmentStrategy::kRoundRobin);
  cfg.gpus.assignment_strategy = config::AssignmentStrategy::kLeastLoaded;
  EXPECT_EQ(RegistryOptionsFromConfig(cfg, {0, 1}).placement,
            config::AssignmentStrategy::kLeastLoaded);
  EXPECT_EQ(o.configured["m"].audio_encoder_path,
            (root_ / "cfg" / "checkpoint" / "audio_encoder.onnx").string());
  EXPECT_EQ(o.configured["n"].audio_encoder_path, "/explicit/enc.onnx");
  EXPECT_EQ(o.model_root, root_.string());
  EXPECT_EQ(RegistryOptionsFromConfig(cfg, {}).devices, std::vector<int>{-1});
}

}  // namespace
}  // namespace lipsync::inference
