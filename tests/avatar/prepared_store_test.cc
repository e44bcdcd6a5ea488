// Prepared avatar store (issue 11): round trip through the compositor, rebuild on
// source change and old version, corrupt and truncated files, two processes preparing
// at once, lazy frames and memory accounting, a tenant evicted while its frame is used.
#include "avatar/prepared_store.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "avatar/avatar_fixture.h"
#include "avatar/avatar_registry.h"
#include "compositing/compositing_test_util.h"
#include "compositing/compositor.h"

namespace lipsync::avatar {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

constexpr int kW = 320, kH = 240, kFrames = 12;
const CropRect kRect{100, 50, 220, 170};
constexpr auto kWait = 30s;  // background preparation of 12 small frames: well under 1 s

class PreparedStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::WriteAvatar(tmp_.path(), "a", kFrames, kW, kH, kRect);
    store_ = (tmp_.path() / "store").string();
    for (int i = 0; i < 5; ++i) {
      auto p = testing::MakePrediction(i);
      preds_.insert(preds_.end(), p.begin(), p.end());
    }
  }
  AvatarOptions Options(bool with_store, bool compact = true, bool region = true) {
    AvatarOptions o;
    o.id = "a";
    o.frames_dir = dir_ + "/frames";
    o.crop_rects_path = dir_ + "/crop_rects.json";
    o.region_jpeg = region;
    o.compact = compact;
    o.preload = !with_store;
    o.cache_frames = 4;
    if (with_store) o.prepared_dir = store_;
    return o;
  }
  std::string FilePath() const { return PreparedPath(store_, "a"); }
  std::shared_ptr<Avatar> MustOpen(const AvatarOptions& o) {
    auto a = Avatar::Open(o);
    EXPECT_TRUE(a.ok()) << a.status().ToString();
    return a.ok() ? *a : nullptr;
  }
  void Prepare(const AvatarOptions& o) {
    auto r = PrepareAvatar(o);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_TRUE(r->built);
  }
  compositing::ModelOutputView Output() const {
    return {preds_.data(), compositing::OutputType::kFloat32, 5};
  }
  // The same 5 frames composed from both avatars, in `format`: identical bytes.
  void ExpectSameOutput(Avatar& a, Avatar& b, config::OutputFormat format, int64_t start) {
    compositing::CompositeOptions opt;
    opt.format = format;
    auto x = compositor_.Compose(a, Output(), start, LoopMode::kPingPong, opt);
    auto y = compositor_.Compose(b, Output(), start, LoopMode::kPingPong, opt);
    ASSERT_TRUE(x.ok()) << x.status().ToString();
    ASSERT_TRUE(y.ok()) << y.status().ToString();
    ASSERT_EQ(x->frames.size(), y->frames.size());
    for (size_t i = 0; i < x->frames.size(); ++i) {
      EXPECT_TRUE(x->frames[i] == y->frames[i]) << "frame " << i << " differs";
    }
  }
  void FlipByte(uint64_t offset) {
    std::fstream f(FilePath(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(std::streamoff(offset));
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x5A);
    f.seekp(std::streamoff(offset));
    f.write(&c, 1);
  }

  testing::TempDir tmp_;
  std::string dir_;
  std::string store_;
  std::vector<float> preds_;
  compositing::Compositor compositor_{2};
};

TEST_F(PreparedStoreTest, RoundTripComposesByteIdenticalOutput) {
  for (auto [compact, region] : {std::pair{true, true}, {false, true}, {false, false}}) {
    SCOPED_TRACE("compact " + std::to_string(compact) + " region " + std::to_string(region));
    fs::remove_all(store_);
    auto today = MustOpen(Options(false, compact, region));
    Prepare(Options(true, compact, region));
    auto prepared = MustOpen(Options(true, compact, region));
    ASSERT_TRUE(today && prepared);
    EXPECT_TRUE(prepared->prepared());
    EXPECT_EQ(prepared->cached_frames(), 0);  // nothing touched yet
    for (int i = 0; i < kFrames; ++i) {
      EXPECT_EQ(prepared->rect(i).x1, today->rect(i).x1);
    }
    ExpectSameOutput(*today, *prepared, config::OutputFormat::kJpeg, 3);
    ExpectSameOutput(*today, *prepared, config::OutputFormat::kRaw, 9);
    EXPECT_LE(prepared->cached_frames(), 4);  // cache_frames
  }
}

TEST_F(PreparedStoreTest, ServingNeverReadsTheSourcePngsOncePrepared) {
  auto today = MustOpen(Options(false));
  Prepare(Options(true));
  // Every frame file's bytes replaced by garbage of the same size, with the same inode
  // and mtime: the fingerprint still matches, so any decode of a PNG would fail.
  for (int i = 0; i < kFrames; ++i) {
    char name[32];
    std::snprintf(name, sizeof(name), "/frames/frame_%04d.png", i);
    const std::string path = dir_ + name;
    struct stat st;
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    std::string garbage(size_t(st.st_size), 'x');
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.write(garbage.data(), std::streamsize(garbage.size()));
    f.close();
    timespec times[2] = {st.st_atim, st.st_mtim};
    ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0);
  }
  auto prepared = MustOpen(Options(true));
  ASSERT_TRUE(prepared && prepared->prepared());
  ExpectSameOutput(*today, *prepared, config::OutputFormat::kJpeg, 0);
}

TEST_F(PreparedStoreTest, MemoryCountsOnlyTheFramesTouched) {
  Prepare(Options(true));
  auto a = MustOpen(Options(true));
  ASSERT_TRUE(a);
  const int64_t idle = a->memory_bytes();
  EXPECT_LT(idle, 8 * 1024);  // rects + table, not the file
  ASSERT_TRUE(a->Frame(5).ok());
  const int64_t one = a->memory_bytes() - idle;
  EXPECT_GT(one, 0);
  for (int i = 0; i < kFrames; ++i) ASSERT_TRUE(a->Frame(i).ok());
  EXPECT_EQ(a->cached_frames(), 4);
  EXPECT_LT(a->memory_bytes(), idle + 5 * one);
}

TEST_F(PreparedStoreTest, NeverPreparedTenantDecodesOnDemandAndSwitchesToTheFile) {
  auto a = MustOpen(Options(true));
  ASSERT_TRUE(a);
  EXPECT_EQ(a->cached_frames(), 1);  // frame 0 only; the rest when asked
  ASSERT_TRUE(a->Frame(7).ok());
  EXPECT_EQ(a->cached_frames(), 2);
  ASSERT_TRUE(a->WaitPrepared(kWait));
  EXPECT_TRUE(fs::exists(FilePath()));
  auto today = MustOpen(Options(false));
  ExpectSameOutput(*today, *a, config::OutputFormat::kJpeg, 5);
  // The next load finds it current.
  auto plan = Avatar::Plan(Options(true));
  ASSERT_TRUE(plan.ok());
  EXPECT_TRUE(plan->prepared != nullptr);
}

TEST_F(PreparedStoreTest, BrokenSourceFrameIsAnsweredFromMemory) {
  // Never prepared, frame 5 unreadable: the load succeeds (frame 0 is fine), the
  // request that needs frame 5 fails naming it, and so does the next one, even after
  // the file is fixed (no disk access for a known-broken frame while loaded).
  ASSERT_TRUE(image::WriteFileBytes(dir_ + "/frames/frame_0005.png", "garbage").ok());
  auto a = MustOpen(Options(true));
  ASSERT_TRUE(a);
  auto first = a->Frame(5);
  EXPECT_EQ(first.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(first.status().message(), HasSubstr("frame_0005.png"));
  ASSERT_TRUE(image::WritePng(dir_ + "/frames/frame_0005.png", testing::MakeFrame(kW, kH, 5)).ok());
  auto second = a->Frame(5);
  EXPECT_EQ(second.status().message(), first.status().message());
  EXPECT_TRUE(a->Frame(4).ok());
}

TEST_F(PreparedStoreTest, SourceChangeMakesTheFileStaleAndItIsRebuilt) {
  Prepare(Options(true));
  // Frame 3 replaced by another picture (new size and mtime).
  ASSERT_TRUE(
      image::WritePng(dir_ + "/frames/frame_0003.png", testing::MakeFrame(kW, kH, 40)).ok());
  auto plan = Avatar::Plan(Options(true));
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->prepared, nullptr);
  auto a = MustOpen(Options(true));
  ASSERT_TRUE(a && a->WaitPrepared(kWait));
  auto today = MustOpen(Options(false));
  ExpectSameOutput(*today, *a, config::OutputFormat::kJpeg, 1);  // frames 1..5
  auto again = PrepareAvatar(Options(true));
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->built);
}

TEST_F(PreparedStoreTest, OldFormatVersionIsRebuilt) {
  Prepare(Options(true));
  FlipByte(8);  // the version field
  auto file = PreparedFile::Open(FilePath());
  EXPECT_EQ(file.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(file.status().message(), HasSubstr(FilePath()));
  auto r = PrepareAvatar(Options(true));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->built);
  EXPECT_TRUE(PreparedFile::Open(FilePath()).ok());
}

TEST_F(PreparedStoreTest, TruncatedFileIsReportedWithItsPathAndRebuilt) {
  Prepare(Options(true));
  const auto size = fs::file_size(FilePath());
  // A reader that opened the whole file, then the file truncated under it: an error
  // value (pread sees the short file), never SIGBUS.
  auto open = PreparedFile::Open(FilePath());
  ASSERT_TRUE(open.ok());
  fs::resize_file(FilePath(), size / 2);
  auto frame = (*open)->ReadFrame(kFrames - 1);
  EXPECT_EQ(frame.status().code(), StatusCode::kInternal);
  EXPECT_THAT(frame.status().message(), HasSubstr(FilePath()));
  // At open: the size is checked against the header.
  auto reopened = PreparedFile::Open(FilePath());
  EXPECT_THAT(reopened.status().message(), HasSubstr(FilePath()));
  EXPECT_THAT(reopened.status().message(), HasSubstr("truncated"));
  // A load serves from the sources and rebuilds it.
  auto a = MustOpen(Options(true));
  ASSERT_TRUE(a && a->WaitPrepared(kWait));
  EXPECT_EQ(fs::file_size(FilePath()), size);
  for (uint64_t cut : {uint64_t(0), uint64_t(7), uint64_t(kPreparedHeaderBytes), size - 1}) {
    fs::resize_file(FilePath(), cut);
    EXPECT_FALSE(PreparedFile::Open(FilePath()).ok()) << cut;
  }
}

TEST_F(PreparedStoreTest, CorruptFrameIsServedFromTheSourceReportedAndRebuilt) {
  Prepare(Options(true));
  const auto size = fs::file_size(FilePath());
  FlipByte(size - 100);  // inside the last frame's held pixels
  auto today = MustOpen(Options(false));
  auto a = MustOpen(Options(true));
  ASSERT_TRUE(a && today && a->prepared());  // header and table are fine
  auto direct = PreparedFile::Open(FilePath());
  ASSERT_TRUE(direct.ok());
  auto bad = (*direct)->ReadFrame(kFrames - 1);
  EXPECT_EQ(bad.status().code(), StatusCode::kInternal);
  EXPECT_THAT(bad.status().message(), HasSubstr(FilePath()));
  EXPECT_THAT(bad.status().message(), HasSubstr("checksum"));
  // The request still gets the right frames (the corrupt one from its source).
  ExpectSameOutput(*today, *a, config::OutputFormat::kJpeg, kFrames - 3);
  ASSERT_TRUE(a->WaitPrepared(kWait));
  auto rebuilt = PreparedFile::Open(FilePath());
  ASSERT_TRUE(rebuilt.ok());
  EXPECT_TRUE((*rebuilt)->ReadFrame(kFrames - 1).ok());
  // A corrupt header or table: reported at open.
  for (uint64_t offset : {uint64_t(20), uint64_t(kPreparedHeaderBytes + 3)}) {
    fs::remove(FilePath());
    Prepare(Options(true));
    FlipByte(offset);
    auto f = PreparedFile::Open(FilePath());
    EXPECT_EQ(f.status().code(), StatusCode::kInternal) << offset;
    EXPECT_THAT(f.status().message(), HasSubstr(FilePath()));
  }
}

TEST_F(PreparedStoreTest, TwoProcessesPreparingAtOnceBothSucceed) {
  // Each child prepares the same avatar: exit 10 if it built the file, 11 if it found
  // the other's current, 1 on error. The lock makes one of them wait for the other.
  const AvatarOptions o = Options(true);
  pid_t children[2];
  for (pid_t& child : children) {
    child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      auto r = PrepareAvatar(o);
      ::_exit(!r.ok() ? 1 : r->built ? 10 : 11);
    }
  }
  std::vector<int> codes;
  for (pid_t child : children) {
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status));
    codes.push_back(WEXITSTATUS(status));
  }
  std::sort(codes.begin(), codes.end());
  EXPECT_EQ(codes, (std::vector<int>{10, 11}));
  auto file = PreparedFile::Open(FilePath());
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  for (int i = 0; i < kFrames; ++i) EXPECT_TRUE((*file)->ReadFrame(i).ok());
  // No temporary file left behind.
  for (const auto& entry : fs::directory_iterator(store_)) {
    EXPECT_EQ(entry.path().string().find(".tmp."), std::string::npos) << entry.path();
  }
}

TEST_F(PreparedStoreTest, TwoWritersWithoutTheLockStillLeaveAValidFile) {
  // WritePreparedFile alone (no flock): unique temp files + rename, last one wins.
  auto a = MustOpen(Options(false));
  ASSERT_TRUE(a);
  auto plan = Avatar::Plan(Options(true));
  ASSERT_TRUE(plan.ok());
  PreparedSettings s = SettingsFor(Options(true), kW, kH, kFrames);
  s.source_fingerprint = plan->source_fingerprint;
  std::vector<CropRect> rects;
  for (int i = 0; i < kFrames; ++i) rects.push_back(a->rect(i));
  fs::create_directories(store_);
  std::vector<std::thread> writers;
  std::vector<Status> results(2);
  for (int t = 0; t < 2; ++t) {
    writers.emplace_back([&, t] {
      results[size_t(t)] =
          WritePreparedFile(FilePath(), s, rects, [&](int i) { return a->Frame(i); });
    });
  }
  for (auto& w : writers) w.join();
  EXPECT_TRUE(results[0].ok() && results[1].ok());
  auto again = MustOpen(Options(true));
  ASSERT_TRUE(again && again->prepared());
  ExpectSameOutput(*a, *again, config::OutputFormat::kJpeg, 2);
}

TEST_F(PreparedStoreTest, TenantEvictedWhileItsFrameIsInUseKeepsTheFrame) {
  testing::WriteAvatar(tmp_.path(), "b", kFrames, kW, kH, kRect);
  auto b_options = Options(true);
  b_options.id = "b";
  b_options.frames_dir = tmp_.str() + "/b/frames";
  b_options.crop_rects_path = tmp_.str() + "/b/crop_rects.json";
  Prepare(Options(true));
  Prepare(b_options);
  AvatarRegistryOptions ro;
  ro.model_root = tmp_.str();
  ro.start_sweeper = false;
  ro.max_models = 1;
  ro.region_jpeg = true;
  ro.compact_backgrounds = true;
  ro.avatar_store_dir = store_;
  AvatarRegistry registry(ro);
  auto handle = registry.Acquire("a");
  ASSERT_TRUE(handle.ok()) << handle.status().ToString();
  ASSERT_TRUE((*handle)->prepared());
  auto frame = (*handle)->Frame(2);
  ASSERT_TRUE(frame.ok());
  std::weak_ptr<Avatar> weak = *handle;
  handle = Status::Cancelled("request done with the avatar, still using the frame");
  ASSERT_TRUE(registry.Acquire("b").ok());  // evicts a (max_models 1)
  EXPECT_EQ(registry.Stats("a")->state, AvatarState::kUnloaded);
  EXPECT_TRUE(weak.expired());  // the Avatar and its file are gone
  // The frame is still whole: its JPEG equals a fresh encode of the source.
  const BackgroundFrame& bg = **frame;
  image::Image source = testing::MakeFrame(kW, kH, 2);
  image::JpegSettings js{75, AvatarOptions{}.restart_interval_mcus};
  auto expected = image::EncodeJpegWithRestarts(source.pixels.data(), kW, kH, source.stride(), js);
  ASSERT_TRUE(expected.ok() && bg.jpeg);
  EXPECT_TRUE(bg.jpeg->background_jpeg() == *expected);
  EXPECT_TRUE(bg.compact());
}

// Writes the seed corpus of tests/fuzz/prepared_file_fuzz.cc when asked:
//   LIPSYNC_WRITE_PREPARED_CORPUS=tests/fuzz/corpus/prepared_file
//   build/tests/avatar/avatar_prepared_test --gtest_filter='*FuzzSeeds*'
TEST_F(PreparedStoreTest, FuzzSeedsWhenAsked) {
  const char* out = std::getenv("LIPSYNC_WRITE_PREPARED_CORPUS");
  if (out == nullptr) GTEST_SKIP() << "LIPSYNC_WRITE_PREPARED_CORPUS not set";
  const std::string small = testing::WriteAvatar(tmp_.path(), "s", 2, 96, 64, {40, 20, 72, 52});
  struct Seed {
    const char* name;
    bool compact, region;
  } seeds[] = {{"compact", true, true}, {"region", false, true}, {"raw", false, false}};
  for (const Seed& seed : seeds) {
    AvatarOptions o = Options(true, seed.compact, seed.region);
    o.id = "s";
    o.frames_dir = small + "/frames";
    o.crop_rects_path = small + "/crop_rects.json";
    o.restart_interval_mcus = 1;
    auto r = PrepareAvatar(o);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    fs::copy_file(r->path, fs::path(out) / (std::string(seed.name) + ".lsavatar"),
                  fs::copy_options::overwrite_existing);
    fs::remove(r->path);
  }
  fs::copy_file(fs::path(out) / "compact.lsavatar", fs::path(out) / "truncated.lsavatar",
                fs::copy_options::overwrite_existing);
  fs::resize_file(fs::path(out) / "truncated.lsavatar", kPreparedHeaderBytes + 40);
}

}  // namespace
}  // namespace lipsync::avatar
