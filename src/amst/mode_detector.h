// AMST link mode detection: datacenter / internet / hybrid from measured RTT, bandwidth and
// loss, with hysteresis so a noisy link does not flap (docs/amst.md).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace dwcp::amst {

enum class LinkMode { kDatacenter = 0, kHybrid, kInternet };
inline constexpr int kLinkModeCount = 3;
const char* LinkModeName(LinkMode mode);
std::optional<LinkMode> ParseLinkMode(std::string_view name);

// One measurement of a link, e.g. from TCP_INFO of a data connection.
struct LinkSample {
  double rtt_ms = 0;
  double bandwidth_bytes_per_second = 0;  // 0 = not measured
  double loss_ratio = 0;                  // retransmitted / sent segments
};

struct ModeDetectorConfig {
  // Datacenter: RTT below this and loss below datacenter_max_loss.
  double datacenter_max_rtt_ms = 2;
  double datacenter_max_loss = 0.001;
  // Internet: RTT above this, or loss above internet_min_loss, or measured bandwidth below
  // internet_max_bandwidth. Everything between is hybrid.
  double internet_min_rtt_ms = 30;
  double internet_min_loss = 0.01;
  double internet_max_bandwidth = 12.5e6;  // 100 Mbit/s
  // A new mode is adopted after this many consecutive samples point to it.
  int confirmations = 3;
  // A mode set here is never left (config `amst_mode`).
  std::optional<LinkMode> pinned;
};

// Not thread-safe; one per peer.
class ModeDetector {
 public:
  explicit ModeDetector(ModeDetectorConfig config = {});

  // The mode one sample points to, without hysteresis.
  LinkMode Classify(const LinkSample& sample) const;
  // Feeds a sample; returns true when the detector switched mode.
  bool Observe(const LinkSample& sample);

  // Until the first sample: the pinned mode, or datacenter.
  LinkMode mode() const { return mode_; }
  bool measured() const { return measured_; }
  uint64_t switches() const { return switches_; }

 private:
  ModeDetectorConfig config_;
  LinkMode mode_;
  bool measured_ = false;
  LinkMode candidate_ = LinkMode::kDatacenter;
  int streak_ = 0;
  uint64_t switches_ = 0;
};

}  // namespace dwcp::amst
