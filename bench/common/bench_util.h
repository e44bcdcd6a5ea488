// Small helpers shared by the benchmark drivers in bench/ (not part of the product, not
// run by ctest): a process's resident memory from /proc, a synthetic speech signal,
// percentiles, dropping a file from the page cache, the load average.
//
// Thread-safety: every function is reentrant (no shared state).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace lipsync::bench {

// A process's resident memory (/proc/<pid>/status, kB); -1 where unknown (pid <= 0, the
// process is gone, or the field is missing).
struct ProcMem {
  int pid = 0;
  int64_t rss_kb = -1, anon_kb = -1, file_kb = -1;
};
ProcMem ReadProcMem(int pid);

// The pid written in a pid file; 0 when unreadable.
int ReadPidFile(const std::string& path);

// A synthetic "speech" signal: a 180 Hz buzz with harmonics under a 4 Hz syllable
// envelope, s16le mono at 16 kHz, exactly `frames` video frames (640 samples each) long.
std::string SyntheticSpeech(int frames);

// Nearest-rank percentile: the smallest value with at least q (0..1) of the values at or
// below it (q = 0: the minimum). NaN for no values.
double Percentile(std::vector<double> values, double q);

// Drops a file's pages from the page cache (posix_fadvise DONTNEED; pages a process has
// mapped stay). Silent when the file cannot be opened.
void DropCached(const std::filesystem::path& path);
// DropCached on every regular file under `dir` (recursive); files whose name starts
// with `prefix` only, when it is not empty. Returns how many were dropped.
int DropCachedUnder(const std::filesystem::path& dir, const std::string& prefix = "");

// The 1-minute load average (/proc/loadavg); NaN when unreadable.
double LoadAverage1();
// The three load averages as "a b c" (for reports).
std::string LoadAverageText();

}  // namespace lipsync::bench
