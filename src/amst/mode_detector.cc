#include "amst/mode_detector.h"

namespace dwcp::amst {

const char* LinkModeName(LinkMode mode) {
  static const char* kNames[] = {"datacenter", "hybrid", "internet"};
  return kNames[static_cast<int>(mode)];
}

std::optional<LinkMode> ParseLinkMode(std::string_view name) {
  for (int m = 0; m < kLinkModeCount; ++m) {
    if (name == LinkModeName(static_cast<LinkMode>(m))) return static_cast<LinkMode>(m);
  }
  return std::nullopt;
}

ModeDetector::ModeDetector(ModeDetectorConfig config)
    : config_(config), mode_(config.pinned.value_or(LinkMode::kDatacenter)) {}

LinkMode ModeDetector::Classify(const LinkSample& s) const {
  const bool slow = s.bandwidth_bytes_per_second > 0 &&
                    s.bandwidth_bytes_per_second < config_.internet_max_bandwidth;
  if (s.rtt_ms > config_.internet_min_rtt_ms || s.loss_ratio > config_.internet_min_loss || slow) {
    return LinkMode::kInternet;
  }
  if (s.rtt_ms < config_.datacenter_max_rtt_ms && s.loss_ratio < config_.datacenter_max_loss) {
    return LinkMode::kDatacenter;
  }
  return LinkMode::kHybrid;
}

bool ModeDetector::Observe(const LinkSample& sample) {
  if (config_.pinned) return false;
  const LinkMode seen = Classify(sample);
  if (!measured_) {
    // The first measurement decides at once: there is no earlier evidence to outweigh.
    measured_ = true;
    bool changed = seen != mode_;
    mode_ = seen;
    streak_ = 0;
    if (changed) ++switches_;
    return changed;
  }
  if (seen == mode_) {
    streak_ = 0;
    return false;
  }
  streak_ = seen == candidate_ ? streak_ + 1 : 1;
  candidate_ = seen;
  if (streak_ < config_.confirmations) return false;
  mode_ = seen;
  streak_ = 0;
  ++switches_;
  return true;
}

}  // namespace dwcp::amst
