// HDE page batches: the payload of a PAGES frame.
//
//   u32 round | u32 count | count × entry
//   entry: u64 page index | u8 encoding | body (kRaw: kPageSize bytes; kZero: nothing)
// Integers are little-endian. v1 sends every page kRaw; v3 marks all-zero pages kZero.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/status.h"
#include "vm/guest.h"

namespace dwcp::hde {

enum class PageEncoding : uint8_t { kRaw = 0, kZero = 1 };

inline constexpr size_t kBatchHeaderSize = 8;
inline constexpr size_t kEntryHeaderSize = 9;

// True iff the kPageSize bytes at `page` are all zero. `page` need not be aligned.
bool IsZeroPage(const uint8_t* page);

struct BatchStats {
  uint64_t pages = 0;
  uint64_t zero_pages = 0;
};

// Builds one batch. Not thread-safe; reuse across batches to keep one buffer.
class PageBatchEncoder {
 public:
  // Starts out as Reset(0) had been called.
  explicit PageBatchEncoder(bool detect_zero_pages) : detect_zero_(detect_zero_pages) { Reset(0); }

  // Starts a new, empty batch for `round`.
  void Reset(uint32_t round);
  // Appends a page, copying its current content.
  void Add(uint64_t index, const uint8_t* page);
  uint32_t count() const { return count_; }
  size_t size() const { return buf_.size(); }
  const BatchStats& stats() const { return stats_; }
  // The encoded batch; valid until the next Reset.
  std::span<const uint8_t> Finish();

 private:
  bool detect_zero_;
  uint32_t count_ = 0;
  BatchStats stats_;
  std::vector<uint8_t> buf_;
};

// Validates a batch completely, then writes its pages into `guest`. A malformed batch (short,
// trailing bytes, unknown encoding, index beyond the guest) is a Protocol error and leaves
// the guest untouched. `round` receives the batch's round.
Status ApplyPageBatch(std::span<const uint8_t> payload, vm::Guest& guest, uint32_t* round,
                      BatchStats* stats);

}  // namespace dwcp::hde
