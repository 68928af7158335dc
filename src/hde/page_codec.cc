#include "hde/page_codec.h"

#include <cstring>
#include <string>

#include "common/little_endian.h"

namespace dwcp::hde {
namespace {

void Put32(std::vector<uint8_t>& b, size_t at, uint32_t v) { le::Put32(&b[at], v); }
using le::Get32;
using le::Get64;

}  // namespace

bool IsZeroPage(const uint8_t* page) {
  // 64 bytes per step with eight independent loads; most non-zero pages stop at the first
  // step. memcpy keeps unaligned pages and aliasing well-defined and compiles to plain loads.
  for (size_t i = 0; i < vm::kPageSize; i += 64) {
    uint64_t w[8];
    std::memcpy(w, page + i, 64);
    if (((w[0] | w[1]) | (w[2] | w[3]) | (w[4] | w[5]) | (w[6] | w[7])) != 0) return false;
  }
  return true;
}

void PageBatchEncoder::Reset(uint32_t round) {
  buf_.assign(kBatchHeaderSize, 0);
  Put32(buf_, 0, round);
  count_ = 0;
  stats_ = {};
}

void PageBatchEncoder::Add(uint64_t index, const uint8_t* page) {
  bool zero = detect_zero_ && IsZeroPage(page);
  size_t at = buf_.size();
  buf_.resize(at + kEntryHeaderSize + (zero ? 0 : vm::kPageSize));
  for (int i = 0; i < 8; ++i) buf_[at + i] = (index >> (8 * i)) & 0xff;
  buf_[at + 8] = static_cast<uint8_t>(zero ? PageEncoding::kZero : PageEncoding::kRaw);
  if (!zero) std::memcpy(&buf_[at + kEntryHeaderSize], page, vm::kPageSize);
  ++count_;
  ++stats_.pages;
  if (zero) ++stats_.zero_pages;
}

std::span<const uint8_t> PageBatchEncoder::Finish() {
  Put32(buf_, 4, count_);
  return buf_;
}

Status ApplyPageBatch(std::span<const uint8_t> p, vm::Guest& guest, uint32_t* round,
                      BatchStats* stats) {
  if (p.size() < kBatchHeaderSize) return ProtocolError("page batch shorter than its header");
  uint32_t count = Get32(&p[4]);
  const uint64_t pages = guest.page_count();
  // Pass 1: validate everything before touching guest memory.
  size_t at = kBatchHeaderSize;
  for (uint32_t i = 0; i < count; ++i) {
    if (p.size() - at < kEntryHeaderSize) return ProtocolError("page batch truncated");
    uint64_t index = Get64(&p[at]);
    uint8_t enc = p[at + 8];
    if (index >= pages) {
      return ProtocolError("page index " + std::to_string(index) + " beyond guest of " +
                           std::to_string(pages) + " pages");
    }
    at += kEntryHeaderSize;
    if (enc == static_cast<uint8_t>(PageEncoding::kRaw)) {
      if (p.size() - at < vm::kPageSize) return ProtocolError("page batch truncated");
      at += vm::kPageSize;
    } else if (enc != static_cast<uint8_t>(PageEncoding::kZero)) {
      return ProtocolError("unknown page encoding " + std::to_string(enc));
    }
  }
  if (at != p.size()) return ProtocolError("trailing bytes after page batch");
  // Pass 2: apply.
  at = kBatchHeaderSize;
  for (uint32_t i = 0; i < count; ++i) {
    uint64_t index = Get64(&p[at]);
    uint8_t enc = p[at + 8];
    at += kEntryHeaderSize;
    if (enc == static_cast<uint8_t>(PageEncoding::kRaw)) {
      guest.WritePage(index, &p[at]);
      at += vm::kPageSize;
    } else {
      guest.ZeroPage(index);
      if (stats) ++stats->zero_pages;
    }
  }
  if (stats) stats->pages += count;
  *round = Get32(&p[0]);
  return Status::Ok();
}

}  // namespace dwcp::hde
