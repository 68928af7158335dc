#include "hde/page_classifier.h"

#include <array>
#include <cstring>

#include "vm/guest.h"

namespace dwcp::hde {
namespace {

constexpr int kSampleWords = 16;
constexpr int kSampleBytes = kSampleWords * 8;
constexpr size_t kBlockWords = vm::kPageSize / 8 / kSampleWords;
// Uniform bytes give sum(c^2) = n + n(n-1)/256, about 192 for n = 128 (sd ~ 20); text and
// structured binary give thousands.
constexpr uint32_t kRandomCollisionLimit = 270;
// At most 2 of 128 sampled bytes may be non-printable in text.
constexpr int kTextMinPrintable = kSampleBytes - 2;

constexpr bool IsTextByte(uint8_t b) {
  return (b >= 0x20 && b < 0x7f) || b == '\n' || b == '\t' || b == '\r';
}
constexpr auto kTextByte = [] {
  std::array<uint8_t, 256> t{};
  for (int b = 0; b < 256; ++b) t[b] = IsTextByte(static_cast<uint8_t>(b));
  return t;
}();

}  // namespace

const char* PatternName(Pattern p) {
  static const char* kNames[] = {"zero", "duplicate", "delta", "text", "binary", "random"};
  return kNames[static_cast<int>(p)];
}

Pattern ClassifyContent(const uint8_t* page) {
  // Four interleaved histograms keep consecutive increments independent (a byte that repeats
  // would otherwise wait on its own previous store); each sees 32 bytes, so u8 counts do.
  alignas(64) uint8_t counts[4][256];
  std::memset(counts, 0, sizeof(counts));
  int printable = 0;
  for (int w = 0; w < kSampleWords; ++w) {
    // One word per 256-byte block, at a varying word of the block, so that the sample does
    // not keep hitting the same field of arrays of 32-, 64- or 128-byte structs.
    const size_t word = kBlockWords * w + (7 * w) % kBlockWords;
    uint64_t v;
    std::memcpy(&v, page + 8 * word, 8);
    for (int i = 0; i < 8; ++i, v >>= 8) {
      const uint8_t b = static_cast<uint8_t>(v);
      ++counts[i & 3][b];
      printable += kTextByte[b];
    }
  }
  if (printable >= kTextMinPrintable) return Pattern::kText;
  uint32_t collisions = 0;
  for (int b = 0; b < 256; ++b) {
    const uint32_t c = uint32_t{counts[0][b]} + counts[1][b] + counts[2][b] + counts[3][b];
    collisions += c * c;
  }
  return collisions <= kRandomCollisionLimit ? Pattern::kRandom : Pattern::kBinary;
}

}  // namespace dwcp::hde
