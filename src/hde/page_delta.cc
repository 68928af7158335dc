#include "hde/page_delta.h"

#include <bit>
#include <cstdint>
#include <cstring>

#include "hde/hde_format.h"
#include "vm/guest.h"

namespace dwcp::hde {
namespace {

constexpr size_t kWords = vm::kPageSize / 8;

inline uint64_t XorWord(const uint8_t* a, const uint8_t* b, size_t w) {
  uint64_t x, y;
  std::memcpy(&x, a + 8 * w, 8);
  std::memcpy(&y, b + 8 * w, 8);
  return x ^ y;
}

inline size_t VarintSize(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) v >>= 7, ++n;
  return n;
}

}  // namespace

size_t EncodeDelta(const uint8_t* cur, const uint8_t* base, uint8_t* out, size_t limit,
                   uint32_t* runs) {
  size_t n = 0;
  uint32_t count = 0;
  size_t pos = 0;  // page offset just past the previous run
  size_t w = 0;
  while (w < kWords) {
    // Skip equal 32-byte blocks quickly.
    if (w % 4 == 0) {
      while (w + 4 <= kWords && (XorWord(cur, base, w) | XorWord(cur, base, w + 1) |
                                 XorWord(cur, base, w + 2) | XorWord(cur, base, w + 3)) == 0) {
        w += 4;
      }
      if (w >= kWords) break;
    }
    uint64_t x = XorWord(cur, base, w);
    if (x == 0) {
      ++w;
      continue;
    }
    const size_t start = 8 * w + std::countr_zero(x) / 8;
    size_t e = w;
    while (e + 1 < kWords && XorWord(cur, base, e + 1) != 0) ++e;
    const size_t end = 8 * e + (63 - std::countl_zero(XorWord(cur, base, e))) / 8 + 1;
    const size_t len = end - start;
    if (n + VarintSize(start - pos) + VarintSize(len) + len > limit) return SIZE_MAX;
    n += PutVarint(out + n, start - pos);
    n += PutVarint(out + n, len);
    std::memcpy(out + n, cur + start, len);
    n += len;
    pos = end;
    ++count;
    w = e + 1;
  }
  *runs = count;
  return n;
}

bool ReadDelta(const uint8_t** p, const uint8_t* end, uint8_t* page) {
  const uint8_t* q = *p;
  uint64_t runs;
  if (!GetVarint(&q, end, &runs) || runs > vm::kPageSize) return false;
  size_t pos = 0;
  for (uint64_t r = 0; r < runs; ++r) {
    uint64_t skip, len;
    if (!GetVarint(&q, end, &skip) || !GetVarint(&q, end, &len)) return false;
    if (len == 0 || skip > vm::kPageSize - pos || len > vm::kPageSize - pos - skip) return false;
    if (static_cast<uint64_t>(end - q) < len) return false;
    pos += skip;
    if (page != nullptr) std::memcpy(page + pos, q, len);
    q += len;
    pos += len;
  }
  *p = q;
  return true;
}

}  // namespace dwcp::hde
