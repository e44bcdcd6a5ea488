// The audit log's file I/O: write errors returned, counted and visible in healthy()
// (a full disk is /dev/full), recovery by Reopen or by the next successful write, no
// half line after a short write (a file size limit set with setrlimit in a child
// process), rename-and-reopen (logrotate), and every line of concurrent writers
// parsing as one JSON object.
#include "rpc/audit_log.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>
#include <vector>

namespace lipsync::rpc {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

fs::path TempDir(const std::string& name) {
  const fs::path dir =
      fs::temp_directory_path() / ("audit_log_test_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

AuditRecord Record(const std::string& method, const std::string& error = "") {
  AuditRecord record;
  record.time = std::chrono::system_clock::now();
  record.server = "inference";
  record.peer = "ipv4:127.0.0.1:5000";
  record.credential = "key:test";
  record.method = method;
  record.model_id = "identity";
  record.code = error.empty() ? "OK" : "INVALID_ARGUMENT";
  record.error = error;
  return record;
}

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Every line of the file parsed; fails the test on a line that is not one JSON object
// or a file that does not end with a newline.
std::vector<nlohmann::json> ParseLines(const fs::path& path) {
  const std::string text = ReadAll(path);
  std::vector<nlohmann::json> lines;
  if (text.empty()) return lines;
  EXPECT_EQ(text.back(), '\n') << "the file ends in the middle of a line";
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    auto json = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    EXPECT_TRUE(json.is_object()) << "not a JSON object: " << line.substr(0, 200);
    lines.push_back(std::move(json));
  }
  return lines;
}

TEST(AuditLogIoTest, FullDiskIsAnErrorCountedAndUnhealthy) {
  auto log = AuditLog::Open("/dev/full");
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  EXPECT_TRUE((*log)->healthy());
  Status status = (*log)->Write(Record("InferBatch"));
  EXPECT_EQ(status.code(), StatusCode::kUnavailable);
  EXPECT_THAT(status.message(), HasSubstr("'/dev/full'"));
  EXPECT_THAT(status.message(), HasSubstr(std::strerror(ENOSPC)));
  EXPECT_FALSE((*log)->healthy());
  EXPECT_EQ((*log)->write_failures(), 1);
  EXPECT_FALSE((*log)->Write(Record("InferBatch")).ok());
  EXPECT_EQ((*log)->write_failures(), 2);
  EXPECT_FALSE((*log)->healthy());
}

TEST(AuditLogIoTest, ReopenOntoAWritableFileMakesItHealthyAgain) {
  const fs::path dir = TempDir("reopen_full");
  const fs::path link = dir / "audit.jsonl";
  fs::create_symlink("/dev/full", link);
  auto log = AuditLog::Open(link.string());
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  EXPECT_FALSE((*log)->Write(Record("Lost")).ok());
  EXPECT_FALSE((*log)->healthy());

  // The operator frees the disk (here: points the path at a real file) and sends SIGHUP.
  fs::remove(link);
  std::ofstream(dir / "real.jsonl").close();
  fs::create_symlink(dir / "real.jsonl", link);
  ASSERT_TRUE((*log)->Reopen().ok());
  EXPECT_TRUE((*log)->healthy());
  EXPECT_TRUE((*log)->Write(Record("Kept")).ok());
  EXPECT_EQ((*log)->write_failures(), 1);
  const auto lines = ParseLines(dir / "real.jsonl");
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["method"], "Kept");
}

TEST(AuditLogIoTest, FailedReopenKeepsTheOpenFile) {
  const fs::path dir = TempDir("reopen_fail");
  const fs::path path = dir / "audit.jsonl";
  auto log = AuditLog::Open(path.string());
  ASSERT_TRUE(log.ok());
  fs::remove_all(dir);  // the directory is gone: the path cannot be opened
  Status status = (*log)->Reopen();
  EXPECT_EQ(status.code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr(path.string()));
  EXPECT_TRUE((*log)->Write(Record("StillWritten")).ok());  // to the unlinked file
}

TEST(AuditLogIoTest, RenameAndReopenStartsANewFile) {
  const fs::path dir = TempDir("rotate");
  const fs::path path = dir / "audit.jsonl";
  auto log = AuditLog::Open(path.string());
  ASSERT_TRUE(log.ok());
  ASSERT_TRUE((*log)->Write(Record("A")).ok());
  fs::rename(path, dir / "audit.jsonl.1");       // logrotate
  ASSERT_TRUE((*log)->Write(Record("B")).ok());  // still the renamed file
  ASSERT_TRUE((*log)->Reopen().ok());            // SIGHUP
  ASSERT_TRUE((*log)->Write(Record("C")).ok());
  const auto old_lines = ParseLines(dir / "audit.jsonl.1");
  const auto new_lines = ParseLines(path);
  ASSERT_EQ(old_lines.size(), 2u);
  EXPECT_EQ(old_lines[0]["method"], "A");
  EXPECT_EQ(old_lines[1]["method"], "B");
  ASSERT_EQ(new_lines.size(), 1u);
  EXPECT_EQ(new_lines[0]["method"], "C");
  EXPECT_EQ(new_lines[0]["credential"], "key:test");
}

// In a child process with a 1000-byte file size limit: lines are written until one
// does not fit; its fragment must be taken back, the log unhealthy, and after the
// file is emptied (logrotate copytruncate) the next write succeeds and heals it.
// Exit code 0 when all that held; the parent then checks the file.
int ShortWriteChild(const fs::path& path) {
  ::signal(SIGXFSZ, SIG_IGN);  // EFBIG instead of a signal past the limit
  struct rlimit limit {};
  limit.rlim_cur = limit.rlim_max = 1000;
  if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) return 10;
  auto log = AuditLog::Open(path.string());
  if (!log.ok()) return 11;
  int written = 0;
  Status status = Status::Ok();
  for (int i = 0; i < 100 && status.ok(); ++i) {
    status = (*log)->Write(Record("Line" + std::to_string(i)));
    if (status.ok()) ++written;
  }
  if (status.ok() || written == 0) return 12;
  if (status.message().find("short write") == std::string::npos) return 13;
  if (status.message().find("taken back") == std::string::npos) return 14;
  if ((*log)->healthy() || (*log)->write_failures() != 1) return 15;
  if ((*log)->Write(Record("NoRoom")).ok()) return 16;  // EFBIG or short again
  if (fs::file_size(path) > 1000) return 17;
  std::ofstream(path, std::ios::trunc).close();  // copytruncate
  if (!(*log)->Write(Record("AfterTruncate")).ok()) return 18;
  if (!(*log)->healthy()) return 19;
  return 0;
}

TEST(AuditLogIoTest, ShortWriteLeavesNoHalfLine) {
  const fs::path dir = TempDir("short");
  const fs::path path = dir / "audit.jsonl";
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) ::_exit(ShortWriteChild(path));
  int wstatus = 0;
  ASSERT_EQ(::waitpid(child, &wstatus, 0), child);
  ASSERT_TRUE(WIFEXITED(wstatus));
  ASSERT_EQ(WEXITSTATUS(wstatus), 0) << "ShortWriteChild failed check " << WEXITSTATUS(wstatus);
  const auto lines = ParseLines(path);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["method"], "AfterTruncate");
}

TEST(AuditLogIoTest, ConcurrentLinesAreEachOneJsonObject) {
  const fs::path dir = TempDir("concurrent");
  const fs::path path = dir / "audit.jsonl";
  auto log = AuditLog::Open(path.string());
  ASSERT_TRUE(log.ok());
  const std::string hostile =
      std::string("quote\" newline\n tab\t bad utf8 \xff\xfe ") + std::string(10000, 'x');
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      const std::string method(1, static_cast<char>('0' + t));
      for (int i = 0; i < 200; ++i) {
        AuditRecord record = Record(method, i % 2 ? hostile : "");
        record.frames = i;
        EXPECT_TRUE((*log)->Write(record).ok());
      }
    });
  }
  for (auto& thread : threads) thread.join();
  const auto lines = ParseLines(path);
  ASSERT_EQ(lines.size(), 8u * 200u);
  std::vector<int> per_thread(8, 0);
  for (const auto& line : lines) {
    const std::string method = line["method"];
    ++per_thread[method.at(0) - '0'];
  }
  for (int count : per_thread) EXPECT_EQ(count, 200);
  EXPECT_TRUE((*log)->healthy());
  EXPECT_EQ((*log)->write_failures(), 0);
}

}  // namespace
}  // namespace lipsync::rpc
