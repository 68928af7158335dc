#include "amst/token_bucket.h"

#include <algorithm>

namespace dwcp::amst {

TokenBucket::TokenBucket(uint64_t bytes_per_second) : rate_(bytes_per_second) {}

double TokenBucket::BurstLocked() const {
  return std::max(256.0 * 1024, static_cast<double>(rate_) * 0.05);
}

void TokenBucket::RefillLocked(TimePoint now) {
  if (!started_) {
    started_ = true;
    last_ = now;
    tokens_ = BurstLocked();
    return;
  }
  if (now <= last_) return;
  const double dt = std::chrono::duration<double>(now - last_).count();
  last_ = now;
  tokens_ = std::min(BurstLocked(), tokens_ + dt * static_cast<double>(rate_));
}

void TokenBucket::SetRate(uint64_t bytes_per_second, TimePoint now) {
  std::lock_guard lock(mu_);
  if (rate_ > 0) RefillLocked(now);
  const bool was_unlimited = rate_ == 0;
  rate_ = bytes_per_second;
  if (rate_ == 0) {
    started_ = false;
  } else {
    started_ = true;
    last_ = now;
    tokens_ = was_unlimited ? BurstLocked() : std::min(tokens_, BurstLocked());
  }
}

uint64_t TokenBucket::rate() const {
  std::lock_guard lock(mu_);
  return rate_;
}

std::chrono::nanoseconds TokenBucket::Take(uint64_t bytes, TimePoint now) {
  std::lock_guard lock(mu_);
  if (rate_ == 0) return std::chrono::nanoseconds(0);
  RefillLocked(now);
  tokens_ -= static_cast<double>(bytes);
  if (tokens_ >= 0) return std::chrono::nanoseconds(0);
  return std::chrono::nanoseconds(
      static_cast<int64_t>(-tokens_ / static_cast<double>(rate_) * 1e9));
}

}  // namespace dwcp::amst
