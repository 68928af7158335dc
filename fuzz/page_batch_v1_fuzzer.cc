// Fuzzes the v1 PAGES payload (src/hde/page_codec.h, hde::ApplyPageBatch) on a 64-page guest:
// a batch is applied whole or not at all.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "fuzz/memory_guest.h"
#include "hde/page_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  constexpr uint64_t kGuestPages = 64;
  static const dwcp::fuzz::MemoryGuest kFilled = [] {
    dwcp::fuzz::MemoryGuest g(kGuestPages);
    g.Fill();
    return g;
  }();
  // One guest for the whole run (large allocations per input are slow under ASan), reset to
  // the filled content before each input.
  static dwcp::fuzz::MemoryGuest guest(kGuestPages);
  for (uint64_t i = 0; i < kGuestPages; ++i) guest.WritePage(i, kFilled.PageData(i));
  uint32_t round = 0;
  dwcp::hde::BatchStats stats;
  dwcp::Status st =
      dwcp::hde::ApplyPageBatch(std::span<const uint8_t>(data, size), guest, &round, &stats);
  if (!st.ok() &&
      std::memcmp(kFilled.PageData(0), guest.PageData(0), kGuestPages * dwcp::vm::kPageSize) != 0) {
    std::abort();  // a malformed batch changes nothing
  }
  return 0;
}
