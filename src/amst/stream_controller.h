// How many parallel TCP streams a migration uses (AMST). docs/amst.md, "Stream count".
//
// The first guess comes from the bandwidth-delay product: one stream per socket window's
// worth of BDP, so that a long fat pipe is not limited by one stream's window. Then the
// controller probes: it measures delivered bytes per second over an interval, adds a stream,
// measures again (skipping the interval right after a change, while the new stream ramps
// up), and keeps adding while each stream adds at least `min_gain`. A stream that does not
// pay is removed again and the count holds for `hold` before the next probe (the link or the
// load may have changed). Bounded by [min_streams, max_streams]. Pure: time comes from the
// caller, so tests drive it with made-up measurements.
#pragma once

#include <chrono>
#include <cstdint>

namespace dwcp::amst {

struct StreamControllerConfig {
  uint32_t min_streams = 1;
  uint32_t max_streams = 8;
  uint32_t fixed_streams = 0;  // > 0: always this many, no probing
  // The share of a TCP window one stream keeps busy; BDP / window gives the first guess.
  uint64_t stream_window_bytes = 4ull << 20;
  std::chrono::milliseconds interval{1000};  // one measurement
  double min_gain = 0.10;                    // a stream must add 10% to stay
  std::chrono::milliseconds hold{10000};     // after a failed probe
};

class StreamController {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  // The first stream count for a link with this RTT and bandwidth (0 when unknown).
  static uint32_t InitialStreams(const StreamControllerConfig& config, double rtt_ms,
                                 double bandwidth_bytes_per_second);

  StreamController(const StreamControllerConfig& config, uint32_t initial);

  // Feeds the total bytes delivered so far at `now` and the streams open now; returns the
  // count wanted. Intervals in which `open` differs from the target (a stream is still being
  // opened or closed) are not measured.
  uint32_t Observe(TimePoint now, uint64_t total_bytes, uint32_t open);

  uint32_t target() const { return target_; }
  // The rate measured at the settled count, bytes per second (0 before one was measured).
  double settled_rate() const { return base_rate_; }

 private:
  enum class Phase { kBaseline, kProbeUp, kHold };

  StreamControllerConfig config_;
  uint32_t target_;
  Phase phase_ = Phase::kBaseline;
  bool started_ = false;
  bool skip_next_ = false;  // the interval after a change: the new stream ramps up
  TimePoint interval_start_{};
  uint64_t interval_bytes_ = 0;
  TimePoint hold_until_{};
  double base_rate_ = 0;
  uint32_t base_count_ = 0;
};

}  // namespace dwcp::amst
