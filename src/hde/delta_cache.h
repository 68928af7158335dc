// The source-side cache of previously sent page versions, the bases of delta entries
// (internal to PageEncoder; public for tests). Bounded by its byte capacity. Not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace dwcp::hde {

// Holds up to capacity_bytes / kPageSize page copies, keyed by page index.
//
// Admission: a page sent for the first time ("cold") is stored only while free slots remain;
// a page sent again ("hot": the guest dirtied it after it was sent) is always stored, evicting
// with CLOCK (second chance: a lookup or an update of a cached page sets its slot's reference
// bit, the hand clears bits until it finds a clear one; a new page starts with the bit clear).
// So under pressure the cache keeps the pages the guest writes again and again, and a burst of
// pages written once does not flush them.
class DeltaCache {
 public:
  // Memory is mapped up front but only touched as pages are stored. Without memory to map,
  // the cache holds nothing (deltas then use only bases known to be zero).
  explicit DeltaCache(uint64_t capacity_bytes);

  size_t capacity_pages() const { return slots_; }
  size_t size() const { return used_; }
  uint64_t evictions() const { return evictions_; }

  // The cached version of `page` (kPageSize bytes, valid until the next Put or Erase), or
  // null. Marks it referenced.
  const uint8_t* Find(uint64_t page);
  // Stores a copy of `content` as the cached version of `page` per the admission rule above.
  // Returns whether it is cached now.
  bool Put(uint64_t page, const uint8_t* content, bool hot);
  // Forgets `page`, freeing its slot.
  void Erase(uint64_t page);

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  struct Bucket {
    uint64_t page = kEmpty;
    uint32_t slot = 0;
  };
  // The bucket of `page`, or of the empty bucket where it would go.
  size_t Probe(uint64_t page) const;
  void EraseBucket(size_t b);
  uint32_t TakeSlot(bool hot);

  struct Unmap {
    size_t bytes;
    void operator()(uint8_t* p) const;
  };

  size_t slots_ = 0;
  std::unique_ptr<uint8_t, Unmap> data_;  // slots_ pages, mapped lazily (huge pages if possible)
  std::vector<uint64_t> slot_page_;       // page held by each slot (kEmpty when free)
  std::vector<uint8_t> referenced_;
  std::vector<uint32_t> free_;
  size_t used_ = 0;
  size_t hand_ = 0;
  uint64_t evictions_ = 0;
  std::vector<Bucket> map_;  // open addressing, linear probing, power-of-two size
  size_t mask_ = 0;
};

}  // namespace dwcp::hde
