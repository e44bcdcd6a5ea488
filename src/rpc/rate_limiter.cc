#include "rpc/rate_limiter.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace lipsync::rpc {
namespace {

std::string FormatNumber(double value) {
  char text[32];
  std::snprintf(text, sizeof(text), "%g", value);
  return text;
}

}  // namespace

RateLimiter::RateLimiter(RateLimitOptions options, Clock clock, std::string what)
    : rate_(std::max(0.0, options.frames_per_second)),
      burst_(options.burst_frames > 0 ? options.burst_frames
                                      : std::max(1.0, options.frames_per_second)),
      refill_period_(rate_ > 0 ? std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                     std::chrono::duration<double>(burst_ / rate_))
                               : std::chrono::steady_clock::duration::zero()),
      clock_(std::move(clock)),
      what_(std::move(what)),
      last_sweep_(clock_()) {}

void RateLimiter::Refill(Bucket& bucket, std::chrono::steady_clock::time_point now) const {
  const double elapsed = std::chrono::duration<double>(now - bucket.updated).count();
  if (elapsed > 0) {
    bucket.tokens = std::min(burst_, bucket.tokens + elapsed * rate_);
    bucket.updated = now;
  }
}

void RateLimiter::DropFullBuckets(std::chrono::steady_clock::time_point now) {
  if (now - last_sweep_ < refill_period_) return;
  last_sweep_ = now;
  for (auto it = buckets_.begin(); it != buckets_.end();) {
    Refill(it->second, now);
    it = it->second.tokens >= burst_ ? buckets_.erase(it) : std::next(it);
  }
}

Status RateLimiter::Admit(const std::string& key, int64_t frames) {
  if (rate_ <= 0) return Status::Ok();
  const auto now = clock_();
  std::lock_guard<std::mutex> lock(mu_);
  DropFullBuckets(now);
  auto [it, inserted] = buckets_.try_emplace(key, Bucket{burst_, now});
  Bucket& bucket = it->second;
  if (!inserted) Refill(bucket, now);
  const double wanted = static_cast<double>(std::max<int64_t>(frames, 0));
  // Oversized requests wait for a full bucket instead of never fitting.
  const double needed = std::min(wanted, burst_);
  if (bucket.tokens >= needed) {
    bucket.tokens -= wanted;
    return Status::Ok();
  }
  const double wait_seconds = (needed - bucket.tokens) / rate_;
  // Round up to the millisecond so that retrying after the hint always succeeds.
  const double wait_ms = std::ceil(wait_seconds * 1000.0);
  return Status::ResourceExhausted(
      "rate limit exceeded for " + what_ + " '" + key + "': " + std::to_string(frames) +
      " frames requested, limit is " + FormatNumber(rate_) + " frames/s per " + what_ + " (burst " +
      FormatNumber(burst_) + " frames); retry after " + FormatNumber(wait_ms / 1000.0) + " s");
}

void RateLimiter::Refund(const std::string& key, int64_t frames) {
  if (rate_ <= 0 || frames <= 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = buckets_.find(key);
  if (it == buckets_.end()) return;  // dropped as full: nothing to give back
  it->second.tokens = std::min(burst_, it->second.tokens + static_cast<double>(frames));
}

size_t RateLimiter::bucket_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return buckets_.size();
}

}  // namespace lipsync::rpc
