// A bandwidth cap: a token bucket in bytes, whose rate may change while senders use it.
//
// Senders call Take(bytes) before writing and wait for the returned delay. The bucket may go
// into debt (a batch larger than the burst is allowed through and paid for afterwards), so
// the long-run rate equals the configured rate exactly, whatever the batch sizes. Rate 0
// means unlimited. Thread-safe: one bucket is shared by every stream of a migration (the
// per-migration cap) or of a node (the per-node cap).
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>

namespace dwcp::amst {

class TokenBucket {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  // `bytes_per_second` 0: unlimited. The burst is 50 ms at the rate, at least 256 KiB.
  explicit TokenBucket(uint64_t bytes_per_second = 0);

  // Changes the rate from now on; tokens earned so far are kept (capped at the new burst)
  // and a debt (bytes already sent) is paid off at the new rate: a raised cap helps at once.
  void SetRate(uint64_t bytes_per_second, TimePoint now);
  uint64_t rate() const;

  // Takes `bytes` tokens at `now` and returns how long the caller must wait before sending
  // them (zero when the bucket had them, always zero when unlimited).
  std::chrono::nanoseconds Take(uint64_t bytes, TimePoint now);

 private:
  void RefillLocked(TimePoint now);
  double BurstLocked() const;

  mutable std::mutex mu_;
  uint64_t rate_;
  double tokens_ = 0;  // may be negative: debt
  TimePoint last_{};
  bool started_ = false;
};

}  // namespace dwcp::amst
