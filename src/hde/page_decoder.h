// HDE, destination side: validates v3 HDE batches and applies them to the incoming guest
// (docs/hde.md, docs/protocol.md "v3 HDE batch").
//
// Decoding a batch has two steps:
//   Parse  pure and thread-safe: checks the header, sizes and checksum, decompresses the
//          entry stream (never more than the announced size, itself capped by the entry count)
//          and validates every entry. May run on any thread, several batches at once.
//   Apply  sequential, in sequence order: rebuilds every page of the batch in scratch memory
//          (copies and deltas read the destination's pages as the earlier entries leave them),
//          verifies the content hash, and only then writes the pages into the guest.
// A batch that fails either step leaves the guest untouched and the decoder expecting the
// same sequence number.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "hde/byte_buffer.h"
#include "hde/hde_format.h"
#include "vm/guest.h"

namespace dwcp::hde {

struct DecoderConfig {
  // Batches announcing more entries are refused before anything is allocated. Memory per
  // batch is bounded by about max_batch_pages × 4 KiB × 2.
  uint32_t max_batch_pages = 1024;
};

struct DecodeStats {
  uint32_t round = 0;
  uint64_t seq = 0;
  uint64_t pages = 0;
  uint64_t zero_pages = 0;
  uint64_t dedup_pages = 0;
  uint64_t delta_pages = 0;
  uint64_t raw_pages = 0;     // kRaw and kStored
  uint64_t input_bytes = 0;   // payload bytes
  uint64_t output_bytes = 0;  // pages × kPageSize
  Codec codec = Codec::kNone;
  double parse_seconds = 0;
  double apply_seconds = 0;
};

// A validated batch, ready to apply. It borrows the payload it was parsed from, which must
// outlive it. Movable.
class ParsedBatch {
 public:
  ParsedBatch() = default;
  ParsedBatch(ParsedBatch&&) = default;
  ParsedBatch& operator=(ParsedBatch&&) = default;

  uint32_t round() const { return header_.round; }
  uint64_t seq() const { return header_.seq; }
  uint32_t pages() const { return header_.count; }
  const DecodeStats& stats() const { return stats_; }

 private:
  friend class PageDecoder;
  struct Entry {
    uint64_t index = 0;
    uint64_t source = 0;  // kCopy: the page copied from
    size_t offset = 0;    // kRaw, kDelta: into the stream; kStored: into the payload
    EntryKind kind = EntryKind::kZero;
  };
  BatchHeader header_;
  std::span<const uint8_t> payload_;
  ByteBuffer owned_stream_;          // the decompressed stream (empty for codec none)
  const uint8_t* stream_ = nullptr;  // the decoded stream, owned_stream_ or in payload_
  std::vector<Entry> entries_;
  DecodeStats stats_;
};

// One per incoming migration. Not thread-safe, except Parse.
class PageDecoder {
 public:
  // `guest_pages`: page count of the guest the batches are for. `clock` times the steps and
  // must outlive the decoder.
  explicit PageDecoder(uint64_t guest_pages, DecoderConfig config = {},
                       Clock& clock = RealClock::Instance());

  // Step 1 (thread-safe, const). Protocol error for a malformed batch (bad magic, version,
  // codec, sizes, entries, page indices beyond the guest), DataLoss for a checksum mismatch.
  Result<ParsedBatch> Parse(std::span<const uint8_t> payload) const;

  // Step 2 (sequential). Applies `batch` to `guest`, which must have guest_pages pages and be
  // the guest every earlier batch went to. Protocol error when batch.seq() is not next_seq();
  // DataLoss when the rebuilt pages do not match the content hash (the destination does not
  // hold what the source believes, or the batch is corrupt). The guest is untouched unless
  // it returns OK. `stats` (optional) receives the batch's stats; `leaf` (optional) the
  // round-commitment leaf of the rebuilt pages (acp::BatchLeafHasher, docs/consensus.md).
  Status Apply(const ParsedBatch& batch, vm::Guest& guest, DecodeStats* stats = nullptr,
               std::array<uint8_t, 32>* leaf = nullptr);

  // Parse + Apply.
  Status Apply(std::span<const uint8_t> payload, vm::Guest& guest, DecodeStats* stats = nullptr);

  // The sequence number of the next batch Apply accepts (0 first).
  uint64_t next_seq() const { return next_seq_; }

 private:
  const uint8_t* Lookup(uint64_t page) const;
  void Remember(uint64_t page, const uint8_t* content);

  const uint64_t guest_pages_;
  DecoderConfig config_;
  Clock& clock_;
  uint64_t next_seq_ = 0;
  // Apply scratch: rebuilt delta pages, content hash records, and a small open-addressing
  // map from page index to its content so far in the batch (the overlay).
  ByteBuffer scratch_;
  std::vector<uint8_t> records_;
  std::vector<const uint8_t*> contents_;
  struct Slot {
    uint64_t page;
    const uint8_t* content;
  };
  std::vector<Slot> overlay_;
  size_t overlay_mask_ = 0;
};

}  // namespace dwcp::hde
