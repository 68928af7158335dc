// Fuzzes HDE batch decoding on the destination (src/hde/page_decoder.h): PageDecoder::Parse,
// then Apply to a 64-page guest, for a sequence of v3 batches on one decoder.
//
// Input: one flags byte, then batches, each as a u32 little-endian length and that many
// payload bytes. Flag bit 0 seals each batch (rewrites its checksum field to the right
// value, hde::SealBatch) so mutations reach the checks behind the checksum. Properties
// checked besides the sanitizers: a batch that fails leaves the guest untouched, and the
// decoder expects the next sequence number only after a batch applied.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/little_endian.h"
#include "fuzz/memory_guest.h"
#include "hde/hde_format.h"
#include "hde/page_decoder.h"

namespace {

constexpr uint64_t kGuestPages = 64;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool seal = data[0] & 1;
  // One guest and one copy for the whole run (large allocations per input are slow under
  // ASan); every input starts from an all-zero guest, as an incoming migration does.
  static dwcp::fuzz::MemoryGuest guest(kGuestPages);
  static std::vector<uint8_t> before(kGuestPages * dwcp::vm::kPageSize);
  for (uint64_t i = 0; i < kGuestPages; ++i) guest.ZeroPage(i);
  dwcp::hde::PageDecoder decoder(kGuestPages, dwcp::hde::DecoderConfig{.max_batch_pages = 256});
  size_t at = 1;
  while (size - at >= 4) {
    uint32_t len = dwcp::le::Get32(data + at);
    at += 4;
    if (len > size - at) len = static_cast<uint32_t>(size - at);
    std::vector<uint8_t> payload(data + at, data + at + len);
    at += len;
    if (seal && payload.size() >= dwcp::hde::kHeaderSize) dwcp::hde::SealBatch(payload);
    const uint64_t seq = decoder.next_seq();
    std::memcpy(before.data(), guest.PageData(0), before.size());
    dwcp::hde::DecodeStats stats;
    dwcp::Status st = decoder.Apply(payload, guest, &stats);
    if (st.ok()) {
      if (decoder.next_seq() != seq + 1 || stats.pages > 256) std::abort();
    } else {
      if (decoder.next_seq() != seq) std::abort();
      if (std::memcmp(before.data(), guest.PageData(0), before.size()) != 0) std::abort();
    }
  }
  return 0;
}
