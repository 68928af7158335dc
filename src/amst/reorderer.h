// In-order delivery of items that arrive out of order over several streams (AMST striping).
//
// Items carry a sequence number 0, 1, 2, ... Offer() takes them in any order; Pop() hands
// them out strictly in sequence, never past a gap. At most `max_pending` items wait: a
// sender that runs further ahead than that, or repeats a number, is a protocol violation.
// A lost stream shows up as a gap that never fills; the owner decides when to give up
// (pending() > 0 with nothing deliverable). Not thread-safe: the owner locks.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "common/status.h"

namespace dwcp::amst {

template <typename T>
class Reorderer {
 public:
  explicit Reorderer(size_t max_pending) : max_pending_(max_pending) {}

  Status Offer(uint64_t seq, T item) {
    if (seq < next_) {
      return ProtocolError("batch " + std::to_string(seq) + " arrived twice");
    }
    if (seq - next_ >= max_pending_) {
      return ProtocolError("batch " + std::to_string(seq) + " is too far ahead of " +
                           std::to_string(next_) + " (at most " + std::to_string(max_pending_) +
                           " may wait)");
    }
    if (!pending_.emplace(seq, std::move(item)).second) {
      return ProtocolError("batch " + std::to_string(seq) + " arrived twice");
    }
    return Status::Ok();
  }

  // The next item in sequence, if it has arrived.
  std::optional<T> Pop() {
    auto it = pending_.find(next_);
    if (it == pending_.end()) return std::nullopt;
    T item = std::move(it->second);
    pending_.erase(it);
    ++next_;
    return item;
  }

  uint64_t next_seq() const { return next_; }
  size_t pending() const { return pending_.size(); }

 private:
  size_t max_pending_;
  uint64_t next_ = 0;
  std::map<uint64_t, T> pending_;
};

}  // namespace dwcp::amst
