#include "hde/hde_format.h"

#include <xxhash.h>

#include <cstring>

#include "common/little_endian.h"

namespace dwcp::hde {

const char* CodecName(Codec codec) {
  switch (codec) {
    case Codec::kNone:
      return "none";
    case Codec::kLz4:
      return "lz4";
    case Codec::kZstd:
      return "zstd";
  }
  return "unknown";
}

void WriteHeader(const BatchHeader& h, uint8_t* out) {
  std::memcpy(out, kMagic, 4);
  out[4] = h.version;
  out[5] = static_cast<uint8_t>(h.codec);
  le::Put16(out + 6, 0);
  le::Put32(out + 8, h.round);
  le::Put32(out + 12, h.count);
  le::Put64(out + 16, h.seq);
  le::Put32(out + 24, h.stream_size);
  le::Put32(out + 28, h.stream_wire_size);
  le::Put32(out + 32, h.stored_pages);
  le::Put32(out + 36, 0);
  std::memcpy(out + 40, h.content_hash.data(), 16);
  le::Put64(out + kChecksumOffset, h.checksum);
}

Result<BatchHeader> ReadHeader(std::span<const uint8_t> p) {
  if (p.size() < kHeaderSize) return ProtocolError("hde batch shorter than its header");
  if (std::memcmp(p.data(), kMagic, 4) != 0) return ProtocolError("hde batch has a bad magic");
  const uint8_t* in = p.data();
  BatchHeader h;
  h.version = in[4];
  h.codec = static_cast<Codec>(in[5]);
  if (le::Get16(in + 6) != 0 || le::Get32(in + 36) != 0) {
    return ProtocolError("hde batch has non-zero reserved header bits");
  }
  h.round = le::Get32(in + 8);
  h.count = le::Get32(in + 12);
  h.seq = le::Get64(in + 16);
  h.stream_size = le::Get32(in + 24);
  h.stream_wire_size = le::Get32(in + 28);
  h.stored_pages = le::Get32(in + 32);
  std::memcpy(h.content_hash.data(), in + 40, 16);
  h.checksum = le::Get64(in + kChecksumOffset);
  return h;
}

uint64_t BatchChecksum(std::span<const uint8_t> payload) {
  uint64_t seed = XXH3_64bits(payload.data(), kChecksumOffset);
  return XXH3_64bits_withSeed(payload.data() + kHeaderSize, payload.size() - kHeaderSize, seed);
}

void SealBatch(std::span<uint8_t> payload) {
  le::Put64(payload.data() + kChecksumOffset, BatchChecksum(payload));
}

void PutContentRecord(uint8_t* out, uint64_t index, const uint8_t page_hash[16]) {
  le::Put64(out, index);
  std::memcpy(out + 8, page_hash, 16);
}

void PageHash(const uint8_t* page, uint8_t out[16]) {
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH3_128bits(page, vm::kPageSize));
  std::memcpy(out, c.digest, 16);
}

const uint8_t* ZeroPageHash() {
  static const std::array<uint8_t, 16> kHash = [] {
    alignas(64) static const uint8_t kZeroes[vm::kPageSize] = {};
    std::array<uint8_t, 16> h;
    PageHash(kZeroes, h.data());
    return h;
  }();
  return kHash.data();
}

std::array<uint8_t, 16> ContentHash(std::span<const uint8_t> records) {
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH3_128bits(records.data(), records.size()));
  std::array<uint8_t, 16> out;
  std::memcpy(out.data(), c.digest, 16);
  return out;
}

}  // namespace dwcp::hde
