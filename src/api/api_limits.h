// The HTTP API's per-client limits (docs/security.md): a request rate per client address
// and a cap on open connections, per client address and in total. Pure bookkeeping: the
// caller passes the time and says when a connection closes; nothing here touches a socket.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

namespace dwcp::api {

// A token bucket per client address: `rate_per_second` requests per second on average, up
// to `burst` at once. Rate 0 admits everything. Thread-safe. Remembers at most
// `max_clients` addresses; beyond that it forgets the ones whose bucket has refilled, then
// the longest idle, so memory stays bounded whatever the number of clients.
class ClientRateLimiter {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  ClientRateLimiter(double rate_per_second, uint32_t burst, size_t max_clients = 10000);

  struct Decision {
    bool allowed = true;
    int retry_after_seconds = 0;  // when refused: when one request will be admitted again
  };
  // Takes one request of `client` at `now`.
  Decision Admit(const std::string& client, TimePoint now);

  size_t tracked_clients() const;

 private:
  struct Bucket {
    double tokens = 0;
    TimePoint last{};
  };
  void ForgetSomeLocked(TimePoint now);

  const double rate_;
  const double burst_;
  const size_t max_clients_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Bucket> buckets_;
};

// Counts open connections per client address and in total. Thread-safe.
class ConnectionLimiter {
 public:
  ConnectionLimiter(uint32_t max_total, uint32_t max_per_client);

  enum class Admission { kAdmitted, kClientFull, kTotalFull };
  // Admits one more connection of `client`, unless it would exceed a cap. Every kAdmitted
  // must be paired with one Release(client).
  Admission Acquire(const std::string& client);
  void Release(const std::string& client);

  uint32_t open() const;
  uint32_t open(const std::string& client) const;

 private:
  const uint32_t max_total_;
  const uint32_t max_per_client_;
  mutable std::mutex mu_;
  uint32_t total_ = 0;
  std::unordered_map<std::string, uint32_t> per_client_;
};

}  // namespace dwcp::api
