#include "api/api_limits.h"

#include <algorithm>
#include <cmath>

namespace dwcp::api {

ClientRateLimiter::ClientRateLimiter(double rate_per_second, uint32_t burst, size_t max_clients)
    : rate_(rate_per_second),
      burst_(std::max<double>(1, burst)),
      max_clients_(std::max<size_t>(1, max_clients)) {}

ClientRateLimiter::Decision ClientRateLimiter::Admit(const std::string& client, TimePoint now) {
  if (rate_ <= 0) return {};
  std::lock_guard lock(mu_);
  auto it = buckets_.find(client);
  if (it == buckets_.end()) {
    if (buckets_.size() >= max_clients_) ForgetSomeLocked(now);
    it = buckets_.emplace(client, Bucket{burst_, now}).first;
  }
  Bucket& b = it->second;
  const double elapsed = std::chrono::duration<double>(now - b.last).count();
  if (elapsed > 0) {
    b.tokens = std::min(burst_, b.tokens + elapsed * rate_);
    b.last = now;
  }
  if (b.tokens >= 1) {
    b.tokens -= 1;
    return {};
  }
  const double wait = (1 - b.tokens) / rate_;
  return {false, std::max(1, static_cast<int>(std::ceil(wait)))};
}

void ClientRateLimiter::ForgetSomeLocked(TimePoint now) {
  // A bucket that has refilled is the same as a new one: forgetting it changes nothing.
  const auto refill = std::chrono::duration<double>(burst_ / rate_);
  std::erase_if(buckets_, [&](const auto& e) { return now - e.second.last >= refill; });
  if (buckets_.size() < max_clients_) return;
  auto oldest =
      std::min_element(buckets_.begin(), buckets_.end(),
                       [](const auto& a, const auto& b) { return a.second.last < b.second.last; });
  buckets_.erase(oldest);
}

size_t ClientRateLimiter::tracked_clients() const {
  std::lock_guard lock(mu_);
  return buckets_.size();
}

ConnectionLimiter::ConnectionLimiter(uint32_t max_total, uint32_t max_per_client)
    : max_total_(max_total), max_per_client_(max_per_client) {}

ConnectionLimiter::Admission ConnectionLimiter::Acquire(const std::string& client) {
  std::lock_guard lock(mu_);
  uint32_t& mine = per_client_[client];
  if (mine >= max_per_client_) {
    if (mine == 0) per_client_.erase(client);
    return Admission::kClientFull;
  }
  if (total_ >= max_total_) {
    if (mine == 0) per_client_.erase(client);
    return Admission::kTotalFull;
  }
  ++mine;
  ++total_;
  return Admission::kAdmitted;
}

void ConnectionLimiter::Release(const std::string& client) {
  std::lock_guard lock(mu_);
  auto it = per_client_.find(client);
  if (it == per_client_.end() || it->second == 0) return;  // unpaired: ignore
  if (--it->second == 0) per_client_.erase(it);
  --total_;
}

uint32_t ConnectionLimiter::open() const {
  std::lock_guard lock(mu_);
  return total_;
}

uint32_t ConnectionLimiter::open(const std::string& client) const {
  std::lock_guard lock(mu_);
  auto it = per_client_.find(client);
  return it == per_client_.end() ? 0 : it->second;
}

}  // namespace dwcp::api
