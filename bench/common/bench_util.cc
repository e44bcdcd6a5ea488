#include "bench_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <numbers>

namespace lipsync::bench {

namespace fs = std::filesystem;

ProcMem ReadProcMem(int pid) {
  ProcMem m;
  m.pid = pid;
  if (pid <= 0) return m;
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    auto field = [&](const char* name, int64_t* out) {
      const size_t n = std::strlen(name);
      if (line.compare(0, n, name) == 0) *out = std::atoll(line.c_str() + n);
    };
    field("VmRSS:", &m.rss_kb);
    field("RssAnon:", &m.anon_kb);
    field("RssFile:", &m.file_kb);
  }
  return m;
}

int ReadPidFile(const std::string& path) {
  std::ifstream in(path);
  int pid = 0;
  in >> pid;
  return pid > 0 ? pid : 0;
}

std::string SyntheticSpeech(int frames) {
  const int n = std::max(frames, 0) * 640;
  std::string pcm(size_t(n) * 2, '\0');
  for (int i = 0; i < n; ++i) {
    const double t = double(i) / 16000.0;
    const double env = std::max(0.0, std::sin(2 * std::numbers::pi * 4.0 * t));
    double v = 0;
    for (int h = 1; h <= 4; ++h) v += std::sin(2 * std::numbers::pi * 180.0 * h * t) / h;
    const auto s = int16_t(std::clamp(env * v * 9000.0, -32767.0, 32767.0));
    std::memcpy(pcm.data() + size_t(i) * 2, &s, 2);
  }
  return pcm;
}

double Percentile(std::vector<double> values, double q) {
  if (values.empty()) return std::nan("");
  std::sort(values.begin(), values.end());
  const double rank = std::ceil(std::clamp(q, 0.0, 1.0) * double(values.size()));
  const size_t i = rank < 1 ? 0 : size_t(rank) - 1;
  return values[std::min(i, values.size() - 1)];
}

void DropCached(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

int DropCachedUnder(const fs::path& dir, const std::string& prefix) {
  std::error_code ec;
  int dropped = 0;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    if (!prefix.empty() && it->path().filename().string().compare(0, prefix.size(), prefix) != 0)
      continue;
    DropCached(it->path());
    ++dropped;
  }
  return dropped;
}

double LoadAverage1() {
  std::ifstream in("/proc/loadavg");
  double a = std::nan("");
  in >> a;
  return a;
}

std::string LoadAverageText() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

}  // namespace lipsync::bench
