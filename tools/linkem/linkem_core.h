// The pure parts of linkem, the user-space WAN link emulator: per-direction link settings,
// the packet scheduler (loss, rate, delay, jitter), the delay line that holds packets until
// they are due, and the per-direction counters. No clock, no sockets: every function takes
// the time as an argument, so tests drive it with synthetic timestamps.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace dwcp::linkem {

inline constexpr int64_t kNanosPerSecond = 1'000'000'000;
inline constexpr int64_t kNanosPerMilli = 1'000'000;

// One direction of the emulated link.
struct LinkConfig {
  int64_t delay_ns = 0;           // one-way propagation delay added to every packet
  int64_t jitter_ns = 0;          // each delay is uniform in [delay - jitter, delay + jitter], >= 0
  uint64_t rate_bytes_per_s = 0;  // bottleneck rate in IP bytes/s; 0 = unlimited
  double loss = 0;                // independent per-packet drop probability in [0, 1]
  // Drop-tail limit of the bottleneck queue in bytes (packets waiting for or in
  // serialization). Ignored when the rate is unlimited. 0 = DefaultQueueLimit(rate).
  uint64_t queue_limit_bytes = 0;
  // With jitter, a later packet may draw a smaller delay. false (default): it is held back
  // so delivery order equals arrival order (like one FIFO path); true: it overtakes.
  bool allow_reorder = false;
};

// 100 ms worth of `rate_bytes_per_s`, but at least 16 full 1500-byte packets.
uint64_t DefaultQueueLimit(uint64_t rate_bytes_per_s);

// "25ms", "1.5ms", "500us", "2s", "0"; a bare number means milliseconds. Nanosecond
// precision (unlike ParseDurationMillis). InvalidArgument for negatives, unknown units
// (ns, us, ms, s, m, min, h) and values above one hour.
Result<int64_t> ParseDelayNanos(std::string_view text);

// A percentage with the "%" sign ("0.1%", "5%", "0%") as a probability in [0, 1]. A bare
// number is rejected so that "--loss 1" cannot silently mean 100 %.
Result<double> ParseLossPercent(std::string_view text);

// A bottleneck queue limit: a size ("256KiB", "1MB", "64000") or a time at the link rate
// ("50ms", "0.2s", which needs a unit). Returns bytes; InvalidArgument otherwise, or for a
// time limit with an unlimited rate.
Result<uint64_t> ParseQueueLimit(std::string_view text, uint64_t rate_bytes_per_s);

// "25.000 ms", "1.000 Gbit/s", "0.100 %": for the startup banner.
std::string DescribeConfig(const LinkConfig& config);

// Splits the text of a --link-file into command-line words: any whitespace (newlines
// included) separates words, and '#' starts a comment that runs to the end of its line.
// There is no quoting: no link setting contains a space.
std::vector<std::string> SplitLinkFileWords(std::string_view text);

// A small deterministic generator (xoshiro256**, seeded by splitmix64) whose sequence is the
// same on every platform and standard library, so a seed reproduces a run exactly.
class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t Next();
  // Uniform in [0, 1) with 53 random bits.
  double NextDouble();
  // Uniform integer in [0, n); n > 0.
  uint64_t Below(uint64_t n);

 private:
  uint64_t s_[4];
};

// Counters of one direction. Plain integers: a direction is served by one thread.
struct DirectionStats {
  uint64_t rx_packets = 0;  // read from the source TUN
  uint64_t rx_bytes = 0;
  uint64_t tx_packets = 0;  // written to the destination TUN
  uint64_t tx_bytes = 0;
  uint64_t drop_loss = 0;          // dropped by random loss
  uint64_t drop_queue = 0;         // dropped because the bottleneck queue was full (drop-tail)
  uint64_t drop_overflow = 0;      // dropped because the delay line held max_packets already
  uint64_t tx_errors = 0;          // the destination TUN refused the write
  uint64_t max_queue_bytes = 0;    // high-water mark of the bottleneck queue
  uint64_t in_flight_at_exit = 0;  // still in the delay line when linkem stopped (discarded)

  // {"rx_packets":1,...} on one line.
  std::string ToJson() const;
};

// Decides, for each packet entering one direction, whether it is dropped and when it leaves
// the far end. The rate model is a serialization-time model: the bottleneck sends one
// packet at a time, taking bytes / rate seconds each; a packet waits until the previous one
// is fully sent (link_free_at), so throughput converges to the rate exactly (integer
// nanoseconds with the remainder carried). Packets that would find more than
// queue_limit_bytes waiting (including the one in service) are dropped (drop-tail); a
// packet arriving at an idle link is always accepted. Random loss is decided first, at the
// entrance, so a lost packet uses no capacity. Delivery time = end of serialization + delay
// + jitter, then clamped to be no earlier than the previous delivery unless allow_reorder.
// Not thread-safe; one instance per direction.
class LinkScheduler {
 public:
  enum class Verdict { kForward, kDropLoss, kDropQueue };
  struct Decision {
    Verdict verdict;
    int64_t deliver_at_ns;  // meaningful for kForward only
  };

  LinkScheduler(const LinkConfig& config, uint64_t seed);

  // A packet of `bytes` IP bytes arrives at `now_ns` (non-decreasing across calls). Updates
  // the drop counters and max_queue_bytes of `stats`.
  Decision Admit(int64_t now_ns, uint32_t bytes, DirectionStats& stats);

  // Bytes waiting for or in serialization at `now_ns` (0 with an unlimited rate).
  uint64_t BacklogBytes(int64_t now_ns) const;

  // Applies `config` to every packet admitted from now on (linkem's --link-file reload).
  // Packets already admitted keep their delivery times. The bottleneck's current backlog
  // is kept when both rates are limited: new packets start serializing, at the new rate,
  // once it has drained. Without allow_reorder, delivery order still equals arrival order,
  // so after a delay decrease new packets wait for those admitted under the longer delay.
  // The loss/jitter random sequence continues.
  void Reconfigure(const LinkConfig& config);

  const LinkConfig& config() const { return config_; }
  uint64_t queue_limit_bytes() const { return queue_limit_; }

 private:
  LinkConfig config_;
  uint64_t queue_limit_;
  Rng rng_;
  int64_t link_free_at_ns_ = 0;  // when the bottleneck finishes its current backlog
  uint64_t carry_ = 0;           // remainder of bytes * 1e9 / rate, carried to the next packet
  int64_t last_deliver_ns_ = 0;
};

// Packets in flight in one direction, released in order of their delivery time (ties in
// arrival order). Holds at most `max_packets`; buffers are pooled, so a warmed-up line does
// not allocate. Not thread-safe.
class DelayLine {
 public:
  explicit DelayLine(size_t max_packets);

  // Copies `packet` in to be released at `deliver_at_ns`. false (nothing stored) when full.
  bool Push(int64_t deliver_at_ns, std::span<const uint8_t> packet);

  size_t size() const { return heap_.size(); }
  bool empty() const { return heap_.empty(); }
  // Delivery time of the earliest packet; INT64_MAX when empty.
  int64_t NextDueNs() const;

  // Calls `deliver(std::span<const uint8_t>)` for each packet due at or before `now_ns`, in
  // order; returns how many. `deliver` must not call back into this line.
  template <typename F>
  size_t PopDue(int64_t now_ns, F&& deliver) {
    size_t n = 0;
    while (!heap_.empty() && slots_[heap_.front()].deliver_at_ns <= now_ns) {
      uint32_t index = PopFront();
      Slot& slot = slots_[index];
      deliver(std::span<const uint8_t>(slot.data.data(), slot.length));
      free_.push_back(index);
      ++n;
    }
    return n;
  }

 private:
  struct Slot {
    int64_t deliver_at_ns = 0;
    uint64_t seq = 0;
    uint32_t length = 0;
    std::vector<uint8_t> data;
  };
  bool Earlier(uint32_t a, uint32_t b) const;
  uint32_t PopFront();

  size_t max_packets_;
  uint64_t next_seq_ = 0;
  std::vector<Slot> slots_;
  std::vector<uint32_t> free_;
  std::vector<uint32_t> heap_;  // binary min-heap of slot indices
};

}  // namespace dwcp::linkem
