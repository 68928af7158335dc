// The v3 HDE batch: the wire layout shared by PageEncoder and PageDecoder (docs/protocol.md,
// "v3 HDE batch"). Everything here is pure and thread-safe; tests use it to craft batches.
//
//   header (kHeaderSize bytes) | stored section | stream section
//
// The stored section holds stored_pages × kPageSize bytes of pages sent without compression
// (incompressible content). The stream section is the entry stream, compressed with the
// header's codec; decoded it is stream_size bytes of entries:
//
//   entry := kind:u8 | index:varint(zigzag(index - expected)) | body
//   expected is 0 for the first entry, else the previous entry's index + 1.
//   kRaw:    kPageSize bytes of content
//   kZero:   nothing; the page is all zeroes
//   kCopy:   varint j; the content of page j as the destination holds it at this entry
//   kDelta:  varint runs, then runs × (varint skip | varint len | len bytes): the page is the
//            destination's content of it at this entry with each run's bytes written at skip
//            bytes past the end of the previous run (page offset 0 for the first)
//   kStored: nothing here; the content is the next page of the stored section
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "common/status.h"
#include "vm/guest.h"

namespace dwcp::hde {

// The codec of a batch's stream section.
enum class Codec : uint8_t { kNone = 0, kLz4 = 1, kZstd = 2 };
inline constexpr int kCodecCount = 3;
// "none", "lz4", "zstd": also the `algorithm` label values of dwcp_v3_compression_ratio.
const char* CodecName(Codec codec);

enum class EntryKind : uint8_t { kRaw = 0, kZero = 1, kCopy = 2, kDelta = 3, kStored = 4 };
inline constexpr uint8_t kEntryKindCount = 5;

inline constexpr uint8_t kMagic[4] = {'H', 'D', 'E', '3'};
inline constexpr uint8_t kFormatVersion = 1;
inline constexpr size_t kHeaderSize = 64;
// Offset of the checksum field; the checksum covers header bytes [0, kChecksumOffset).
inline constexpr size_t kChecksumOffset = 56;
// Upper bound of one entry in the decoded stream, used to cap stream_size: a kRaw entry is
// 1 + at most 10 + kPageSize bytes; the encoder keeps every other entry smaller.
inline constexpr size_t kMaxEntryBytes = 1 + 10 + vm::kPageSize + 5;
// Decoders refuse batches announcing more entries than this, whatever their configuration.
inline constexpr uint32_t kMaxBatchPagesLimit = 16384;

struct BatchHeader {
  uint8_t version = kFormatVersion;
  Codec codec = Codec::kNone;
  uint32_t round = 0;
  uint32_t count = 0;                      // entries
  uint64_t seq = 0;                        // batch sequence number per encoder: 0, 1, 2, ...
  uint32_t stream_size = 0;                // decoded stream section bytes
  uint32_t stream_wire_size = 0;           // stream section bytes as sent
  uint32_t stored_pages = 0;               // pages in the stored section
  std::array<uint8_t, 16> content_hash{};  // see ContentHash
  uint64_t checksum = 0;
};

// Writes the kHeaderSize header bytes (checksum included as given).
void WriteHeader(const BatchHeader& h, uint8_t* out);
// Reads a header without validating it beyond the magic and its size: Protocol error when
// `payload` is shorter than kHeaderSize or does not start with kMagic.
Result<BatchHeader> ReadHeader(std::span<const uint8_t> payload);

// XXH3-64 of the payload past the header, seeded with XXH3-64 of header bytes
// [0, kChecksumOffset). `payload` holds at least kHeaderSize bytes.
uint64_t BatchChecksum(std::span<const uint8_t> payload);
// Stores BatchChecksum(payload) in the header's checksum field.
void SealBatch(std::span<uint8_t> payload);

// The content hash accumulates one record per entry, in entry order:
//   u64 little-endian page index | 16-byte canonical XXH3-128 of the page's content
// and is the canonical XXH3-128 of the concatenated records.
inline constexpr size_t kContentRecordSize = 24;
// Appends the record of one page to `out` (kContentRecordSize bytes).
void PutContentRecord(uint8_t* out, uint64_t index, const uint8_t page_hash[16]);
// Canonical XXH3-128 of kPageSize bytes.
void PageHash(const uint8_t* page, uint8_t out[16]);
// Canonical XXH3-128 of the all-zero page (computed once).
const uint8_t* ZeroPageHash();
std::array<uint8_t, 16> ContentHash(std::span<const uint8_t> records);

// LEB128 unsigned varints (at most 10 bytes).
inline constexpr size_t kMaxVarintBytes = 10;
inline size_t PutVarint(uint8_t* out, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    out[n++] = static_cast<uint8_t>(v) | 0x80;
    v >>= 7;
  }
  out[n++] = static_cast<uint8_t>(v);
  return n;
}
// Reads a varint from [*p, end); false when truncated or longer than 10 bytes or overflowing.
inline bool GetVarint(const uint8_t** p, const uint8_t* end, uint64_t* v) {
  uint64_t result = 0;
  const uint8_t* q = *p;
  for (int shift = 0; shift < 64; shift += 7) {
    if (q == end) return false;
    uint8_t b = *q++;
    if (shift == 63 && b > 1) return false;
    result |= uint64_t{b & 0x7fu} << shift;
    if ((b & 0x80) == 0) {
      *p = q;
      *v = result;
      return true;
    }
  }
  return false;
}
inline uint64_t ZigZag(int64_t v) {
  return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63);
}
inline int64_t UnZigZag(uint64_t v) {
  return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1);
}

}  // namespace dwcp::hde
