#include "hde/delta_cache.h"

#include <sys/mman.h>

#include <bit>
#include <cstring>

#include "vm/guest.h"

namespace dwcp::hde {
namespace {

inline size_t HashPage(uint64_t page) { return (page * 0x9e3779b97f4a7c15ULL) >> 17; }

}  // namespace

void DeltaCache::Unmap::operator()(uint8_t* p) const { munmap(p, bytes); }

DeltaCache::DeltaCache(uint64_t capacity_bytes) : slots_(capacity_bytes / vm::kPageSize) {
  if (slots_ == 0) return;
  // Anonymous memory: untouched slots cost nothing resident; huge pages (where the kernel
  // offers them) make filling the cache fault 512 times less often.
  const size_t bytes = slots_ * vm::kPageSize;
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    slots_ = 0;
    return;
  }
#ifdef MADV_HUGEPAGE
  madvise(p, bytes, MADV_HUGEPAGE);
#endif
  data_ = std::unique_ptr<uint8_t, Unmap>(static_cast<uint8_t*>(p), Unmap{bytes});
  slot_page_.assign(slots_, kEmpty);
  referenced_.assign(slots_, 0);
  free_.reserve(slots_);
  for (size_t s = slots_; s > 0; --s) free_.push_back(static_cast<uint32_t>(s - 1));
  map_.resize(std::bit_ceil(2 * slots_));
  mask_ = map_.size() - 1;
}

size_t DeltaCache::Probe(uint64_t page) const {
  size_t b = HashPage(page) & mask_;
  while (map_[b].page != kEmpty && map_[b].page != page) b = (b + 1) & mask_;
  return b;
}

void DeltaCache::EraseBucket(size_t b) {
  // Backward-shift deletion keeps every probe sequence unbroken.
  size_t hole = b;
  for (size_t i = (b + 1) & mask_; map_[i].page != kEmpty; i = (i + 1) & mask_) {
    size_t home = HashPage(map_[i].page) & mask_;
    // Move i into the hole unless its home lies cyclically in (hole, i].
    bool stays = hole <= i ? (home > hole && home <= i) : (home > hole || home <= i);
    if (!stays) {
      map_[hole] = map_[i];
      hole = i;
    }
  }
  map_[hole] = Bucket{};
}

const uint8_t* DeltaCache::Find(uint64_t page) {
  if (slots_ == 0) return nullptr;
  const Bucket& b = map_[Probe(page)];
  if (b.page == kEmpty) return nullptr;
  referenced_[b.slot] = 1;
  return &data_.get()[size_t{b.slot} * vm::kPageSize];
}

uint32_t DeltaCache::TakeSlot(bool hot) {
  if (!free_.empty()) {
    uint32_t s = free_.back();
    free_.pop_back();
    ++used_;
    return s;
  }
  if (!hot) return UINT32_MAX;
  for (;;) {
    size_t s = hand_;
    hand_ = hand_ + 1 == slots_ ? 0 : hand_ + 1;
    if (referenced_[s]) {
      referenced_[s] = 0;
      continue;
    }
    EraseBucket(Probe(slot_page_[s]));
    slot_page_[s] = kEmpty;
    ++evictions_;
    return static_cast<uint32_t>(s);
  }
}

bool DeltaCache::Put(uint64_t page, const uint8_t* content, bool hot) {
  if (slots_ == 0) return false;
  size_t b = Probe(page);
  uint32_t slot;
  if (map_[b].page == page) {
    slot = map_[b].slot;
    referenced_[slot] = 1;  // used again
  } else {
    slot = TakeSlot(hot);
    if (slot == UINT32_MAX) return false;
    b = Probe(page);  // an eviction may have shifted buckets
    map_[b] = Bucket{page, slot};
    slot_page_[slot] = page;
    referenced_[slot] = 0;  // earns its second chance by being used again
  }
  std::memcpy(&data_.get()[size_t{slot} * vm::kPageSize], content, vm::kPageSize);
  return true;
}

void DeltaCache::Erase(uint64_t page) {
  if (slots_ == 0) return;
  size_t b = Probe(page);
  if (map_[b].page == kEmpty) return;
  uint32_t slot = map_[b].slot;
  EraseBucket(b);
  slot_page_[slot] = kEmpty;
  referenced_[slot] = 0;
  free_.push_back(slot);
  --used_;
}

}  // namespace dwcp::hde
