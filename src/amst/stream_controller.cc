#include "amst/stream_controller.h"

#include <algorithm>
#include <cmath>

namespace dwcp::amst {

uint32_t StreamController::InitialStreams(const StreamControllerConfig& config, double rtt_ms,
                                          double bandwidth_bytes_per_second) {
  if (config.fixed_streams > 0) return config.fixed_streams;
  double want = 1;
  if (rtt_ms > 0 && bandwidth_bytes_per_second > 0 && config.stream_window_bytes > 0) {
    const double bdp = bandwidth_bytes_per_second * rtt_ms / 1e3;
    want = std::ceil(bdp / static_cast<double>(config.stream_window_bytes));
  }
  return static_cast<uint32_t>(std::clamp<double>(want, config.min_streams, config.max_streams));
}

StreamController::StreamController(const StreamControllerConfig& config, uint32_t initial)
    : config_(config),
      target_(config.fixed_streams > 0
                  ? config.fixed_streams
                  : std::clamp(initial, config.min_streams, config.max_streams)) {}

uint32_t StreamController::Observe(TimePoint now, uint64_t total_bytes, uint32_t open) {
  if (config_.fixed_streams > 0) return target_;
  if (!started_ || open != target_) {
    // Start (or restart) an interval once the streams match the target.
    started_ = true;
    interval_start_ = now;
    interval_bytes_ = total_bytes;
    return target_;
  }
  if (now - interval_start_ < config_.interval) return target_;
  const double seconds = std::chrono::duration<double>(now - interval_start_).count();
  const double rate = static_cast<double>(total_bytes - interval_bytes_) / seconds;
  interval_start_ = now;
  interval_bytes_ = total_bytes;
  if (skip_next_) {
    skip_next_ = false;
    return target_;
  }
  auto probe_up = [&] {
    if (target_ < config_.max_streams) {
      ++target_;
      phase_ = Phase::kProbeUp;
      skip_next_ = true;
    } else {
      phase_ = Phase::kHold;
      hold_until_ = now + config_.hold;
    }
  };
  switch (phase_) {
    case Phase::kBaseline:
      base_rate_ = rate;
      base_count_ = target_;
      probe_up();
      break;
    case Phase::kProbeUp:
      if (rate >= base_rate_ * (1 + config_.min_gain)) {
        base_rate_ = rate;
        base_count_ = target_;
        probe_up();
      } else {
        // The last stream did not pay: go back and hold.
        target_ = std::max(base_count_, config_.min_streams);
        phase_ = Phase::kHold;
        hold_until_ = now + config_.hold;
        skip_next_ = true;
      }
      break;
    case Phase::kHold:
      if (now >= hold_until_) phase_ = Phase::kBaseline;
      break;
  }
  return target_;
}

}  // namespace dwcp::amst
