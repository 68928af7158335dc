// Time behind an interface so tests can hand in a fake clock (STYLE.md rule 3).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace dwcp {

class Clock {
 public:
  virtual ~Clock() = default;
  // Monotonic time for durations and deadlines.
  virtual std::chrono::steady_clock::time_point Now() const = 0;
  // Wall time in milliseconds since the Unix epoch, for records and logs.
  virtual int64_t WallMillis() const = 0;
};

// The real clocks. Thread-safe; the singleton lives for the whole process.
class RealClock final : public Clock {
 public:
  static RealClock& Instance();
  std::chrono::steady_clock::time_point Now() const override {
    return std::chrono::steady_clock::now();
  }
  int64_t WallMillis() const override;
};

// A clock that moves only when told. Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t wall_millis = 1'700'000'000'000) : wall_ms_(wall_millis) {}
  std::chrono::steady_clock::time_point Now() const override {
    return std::chrono::steady_clock::time_point(std::chrono::milliseconds(wall_ms_.load()));
  }
  int64_t WallMillis() const override { return wall_ms_.load(); }
  void Advance(std::chrono::milliseconds d) { wall_ms_ += d.count(); }

 private:
  std::atomic<int64_t> wall_ms_;
};

}  // namespace dwcp
