// The source's model of what a migration destination holds (internal to PageEncoder; public
// for tests). Not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

namespace dwcp::hde {

// A 128-bit content hash (XXH3-128's two halves).
struct ContentKey {
  uint64_t lo = 0, hi = 0;
  bool operator==(const ContentKey&) const = default;
};

// Per guest page: a send generation (0 = never sent) and whether the last version sent was
// all zeroes — 4 bytes per page. Plus a bounded, 4-way set-associative index from content
// hash to a page whose last sent version had that content (32 bytes per entry). An index
// entry is valid only while its page's generation is the one recorded with it, so a page
// sent again with other content invalidates its entries without a lookup.
class DestinationModel {
 public:
  // `index_bytes` bounds the content index (and so does the guest: at most about two entries
  // per page); below one set (128 bytes) there is no index.
  DestinationModel(uint64_t pages, uint64_t index_bytes);

  uint64_t pages() const { return state_.size(); }
  bool WasSent(uint64_t page) const { return (state_[page] & kGenMask) != 0; }
  bool HoldsZero(uint64_t page) const { return (state_[page] & kZeroFlag) != 0; }

  // A page the destination holds with content `key`, if the index remembers a valid one.
  std::optional<uint64_t> FindHolder(const ContentKey& key);
  // `page` was sent as all zeroes.
  void RecordZero(uint64_t page);
  // `page` was sent with content `key`; it becomes the indexed holder of `key` (the most
  // recent sender is the one surely still holding it).
  void RecordContent(uint64_t page, const ContentKey& key);

  uint64_t index_entries() const { return sets_ * kWays; }
  uint64_t index_evictions() const { return evictions_; }

 private:
  static constexpr uint32_t kZeroFlag = 0x8000'0000u;
  static constexpr uint32_t kGenMask = 0x7fff'ffffu;
  static constexpr int kWays = 4;
  // All-zero bytes are an empty entry, so the table comes from calloc: pages the index never
  // uses cost no resident memory.
  struct Entry {
    uint64_t lo, hi;
    uint64_t page;
    uint32_t gen;  // 0: empty
    uint8_t hits;
  };
  struct Free {
    void operator()(Entry* p) const;
  };

  // Bumps the page's generation (never to 0) and returns it.
  uint32_t NextGen(uint64_t page, bool zero);
  bool Valid(const Entry& e) const {
    return e.gen != 0 && e.page < state_.size() && (state_[e.page] & kGenMask) == e.gen &&
           !(state_[e.page] & kZeroFlag);
  }
  Entry* Set(const ContentKey& key) { return &table_[(key.lo & (sets_ - 1)) * kWays]; }

  std::vector<uint32_t> state_;
  uint64_t sets_ = 0;
  std::unique_ptr<Entry[], Free> table_;
  uint64_t evictions_ = 0;
};

}  // namespace dwcp::hde
