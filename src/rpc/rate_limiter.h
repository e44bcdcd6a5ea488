// Per-tenant rate limiting: one token bucket per key (the model id), counted in frames.
// A bucket refills at `frames_per_second` up to `burst_frames`; a request takes as many
// tokens as it has frames. A bucket that has been idle long enough to be full again is
// indistinguishable from a new one, so it is dropped: memory stays proportional to the
// tenants active in the last burst/rate seconds, not to all 11,000 configured ones.
//
// Thread-safe (one mutex; a check is a hash lookup and a few multiplications).
// The clock is injectable so tests are deterministic.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>

#include "common/status.h"

namespace lipsync::rpc {

struct RateLimitOptions {
  double frames_per_second = 0;  // 0: no limit (Admit always succeeds)
  double burst_frames = 0;       // 0: one second's worth (at least 1)
};

class RateLimiter {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;

  // `what` names the key in messages ("model", "credential").
  explicit RateLimiter(RateLimitOptions options, Clock clock = &std::chrono::steady_clock::now,
                       std::string what = "model");

  bool enabled() const { return rate_ > 0; }
  double burst_frames() const { return burst_; }

  // Takes `frames` tokens from `key`'s bucket. RESOURCE_EXHAUSTED when it holds too few,
  // saying the limit and how long to wait before retrying; nothing is taken then.
  // A request larger than the whole burst is admitted when the bucket is full (it
  // could never fit otherwise) and leaves the bucket in debt.
  Status Admit(const std::string& key, int64_t frames);
  // Gives back tokens taken by a successful Admit (another limit refused the call).
  void Refund(const std::string& key, int64_t frames);

  // Buckets currently held (for tests and metrics).
  size_t bucket_count() const;

 private:
  struct Bucket {
    double tokens;
    std::chrono::steady_clock::time_point updated;
  };
  // Refills `bucket` up to now.
  void Refill(Bucket& bucket, std::chrono::steady_clock::time_point now) const;
  // Drops every bucket that is full again. Called at most once per refill period.
  void DropFullBuckets(std::chrono::steady_clock::time_point now);

  const double rate_;
  const double burst_;
  const std::chrono::steady_clock::duration refill_period_;  // empty -> full
  const Clock clock_;
  const std::string what_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Bucket> buckets_;
  std::chrono::steady_clock::time_point last_sweep_;
};

}  // namespace lipsync::rpc
