// A steady clock a test moves by hand, for RegistryOptions::now (and anything else
// that takes a std::function<Clock::time_point()>): starts at 1000 h, moves only on
// Advance. Copies of Fn() share the one time. Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>

#include "inference/api.h"

namespace lipsync::inference::testing {

class FakeClock {
 public:
  std::function<Clock::time_point()> Fn() const {
    auto t = t_;
    return [t] { return Clock::time_point(std::chrono::nanoseconds(t->load())); };
  }
  void Advance(Clock::duration d) { *t_ += std::chrono::nanoseconds(d).count(); }

 private:
  std::shared_ptr<std::atomic<int64_t>> t_ = std::make_shared<std::atomic<int64_t>>(
      std::chrono::nanoseconds(std::chrono::hours(1000)).count());
};

}  // namespace lipsync::inference::testing
