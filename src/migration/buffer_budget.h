// The node-wide budget for page batches in flight on the data plane (config
// max_buffer_memory, docs/security.md#limits): batches a source has planned but not yet
// written, and batches a destination has received but not yet applied, of every migration
// together. Takers that do not fit wait (backpressure, which TCP carries back to the
// sender) and count dwcp_v3_limit_rejections_total{limit="buffer_memory"} once per wait.
#pragma once

#include <asio.hpp>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <utility>

#include "common/status.h"
#include "obs/metrics.h"

namespace dwcp::migration {

// Thread-safe. Outlives every charge taken from it.
class BufferBudget {
 public:
  // Bytes taken from a budget, given back on destruction. Move-only.
  class Charge {
   public:
    Charge() = default;
    Charge(BufferBudget* budget, uint64_t bytes) : budget_(budget), bytes_(bytes) {}
    Charge(Charge&& o) noexcept
        : budget_(std::exchange(o.budget_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
    Charge& operator=(Charge&& o) noexcept {
      if (this != &o) {
        Release();
        budget_ = std::exchange(o.budget_, nullptr);
        bytes_ = std::exchange(o.bytes_, 0);
      }
      return *this;
    }
    Charge(const Charge&) = delete;
    Charge& operator=(const Charge&) = delete;
    ~Charge() { Release(); }
    uint64_t bytes() const { return bytes_; }
    void Release() {
      if (budget_ != nullptr) budget_->Give(bytes_);
      budget_ = nullptr;
      bytes_ = 0;
    }

   private:
    BufferBudget* budget_ = nullptr;
    uint64_t bytes_ = 0;
  };

  // `limit_bytes` 0: unlimited. `metrics` may be null (tests).
  BufferBudget(uint64_t limit_bytes, obs::Metrics* metrics)
      : limit_(limit_bytes), metrics_(metrics) {}
  BufferBudget(const BufferBudget&) = delete;
  BufferBudget& operator=(const BufferBudget&) = delete;

  // Takes `bytes` if they fit under the limit; an empty charge (bytes() == 0, nothing taken)
  // otherwise. Zero bytes always fit.
  bool TryTake(uint64_t bytes, Charge* out);
  // Takes `bytes` even past the limit: for the one batch a migration needs to make
  // progress (what keeps waiting takers from deadlocking each other).
  Charge Force(uint64_t bytes);
  // Waits until `bytes` fit, `force()` says to take them anyway, `stop()` returns an error,
  // or `deadline` passes. Returns the charge, stop()'s error, or DeadlineExceeded naming
  // the limit. Polls every millisecond while waiting; counts buffer_memory once if it
  // had to wait. `force` and `stop` may be empty.
  asio::awaitable<Result<Charge>> Take(uint64_t bytes, std::function<bool()> force,
                                       std::function<Status()> stop,
                                       std::chrono::milliseconds deadline);

  uint64_t used() const { return used_.load(); }
  uint64_t limit() const { return limit_; }
  // Times a taker had to wait.
  uint64_t waits() const { return waits_.load(); }

 private:
  void Give(uint64_t bytes) { used_ -= bytes; }

  const uint64_t limit_;
  obs::Metrics* metrics_;
  std::atomic<uint64_t> used_{0};
  std::atomic<uint64_t> waits_{0};
};

}  // namespace dwcp::migration
