#include "hde/destination_model.h"

#include <algorithm>
#include <bit>
#include <cstdlib>

namespace dwcp::hde {

DestinationModel::DestinationModel(uint64_t pages, uint64_t index_bytes) : state_(pages, 0) {
  // Never more than two entries per guest page: the rest could not be used.
  uint64_t sets = std::min<uint64_t>(index_bytes / (sizeof(Entry) * kWays),
                                     std::bit_ceil(std::max<uint64_t>(pages, 2)) / 2);
  if (sets > 0) {
    sets_ = std::bit_floor(sets);
    table_.reset(static_cast<Entry*>(std::calloc(sets_ * kWays, sizeof(Entry))));
    if (table_ == nullptr) sets_ = 0;  // no memory: no index, dedup finds nothing
  }
}

void DestinationModel::Free::operator()(Entry* p) const { std::free(p); }

uint32_t DestinationModel::NextGen(uint64_t page, bool zero) {
  uint32_t gen = ((state_[page] & kGenMask) + 1) & kGenMask;
  if (gen == 0) gen = 1;
  state_[page] = gen | (zero ? kZeroFlag : 0);
  return gen;
}

std::optional<uint64_t> DestinationModel::FindHolder(const ContentKey& key) {
  if (sets_ == 0) return std::nullopt;
  Entry* set = Set(key);
  for (int w = 0; w < kWays; ++w) {
    Entry& e = set[w];
    if (e.lo == key.lo && e.hi == key.hi && Valid(e)) {
      if (e.hits < 255) ++e.hits;
      return e.page;
    }
  }
  return std::nullopt;
}

void DestinationModel::RecordZero(uint64_t page) { NextGen(page, /*zero=*/true); }

void DestinationModel::RecordContent(uint64_t page, const ContentKey& key) {
  const uint32_t gen = NextGen(page, /*zero=*/false);
  if (sets_ == 0) return;
  Entry* set = Set(key);
  Entry* victim = nullptr;
  for (int w = 0; w < kWays; ++w) {
    Entry& e = set[w];
    if (e.lo == key.lo && e.hi == key.hi) {
      victim = &e;  // point it at the page just sent: surely valid, unlike an older holder
      break;
    }
  }
  if (victim == nullptr) {
    for (int w = 0; w < kWays && victim == nullptr; ++w) {
      if (!Valid(set[w])) victim = &set[w];
    }
  }
  if (victim == nullptr) {
    // Evict the least hit entry; age the others so old popularity fades.
    victim = &set[0];
    for (int w = 0; w < kWays; ++w) {
      if (set[w].hits < victim->hits) victim = &set[w];
    }
    for (int w = 0; w < kWays; ++w) set[w].hits >>= 1;
    ++evictions_;
  }
  uint8_t hits = victim->lo == key.lo && victim->hi == key.hi ? victim->hits : 0;
  *victim = Entry{key.lo, key.hi, page, gen, hits};
}

}  // namespace dwcp::hde
