// HDE, source side: turns guest pages into v3 HDE batches (docs/hde.md, docs/protocol.md).
//
// Per page: zero detection; content dedup against what the destination already holds (the
// last version sent of each page, by XXH3-128); delta against the previous version of the
// same page while the bounded cache still has it (the runs where the two differ, with the new
// bytes; kept when smaller than the page);
// incompressible pages stored as they are; then the batch's entry stream compressed with
// zstd, lz4 or nothing, chosen per batch by a CodecSelector.
//
// Encoding a batch has two steps:
//   Plan     sequential, on the encoder's thread, in send order: snapshots the pages, decides
//            each page's encoding, updates the model of what the destination holds, picks
//            the codec. Cheap (no compression).
//   Compress pure and thread-safe: compresses and seals one planned batch. Batches planned
//            one after another may be compressed on several threads at once.
// Batches must reach PageDecoder::Apply in plan order (each carries its sequence number and
// the decoder refuses gaps), because entries refer to what earlier batches left there.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "hde/byte_buffer.h"
#include "hde/codec_selector.h"
#include "hde/delta_cache.h"
#include "hde/destination_model.h"
#include "hde/hde_format.h"
#include "hde/page_classifier.h"
#include "vm/guest.h"

namespace dwcp::hde {

struct EncoderConfig {
  // Batch codec: "auto" picks none, lz4 or a zstd level per batch; the others pin a codec.
  CodecPolicy codec = CodecPolicy::kAuto;
  // 0: the level is chosen per batch (policy auto or zstd); else the fixed zstd level.
  int zstd_level = 0;
  // Highest level the automatic choice may use.
  int max_zstd_level = 19;
  bool dedup = true;
  bool delta = true;
  // Previous versions of pages kept as delta bases (a multiple of 4 KiB; 0: none, though
  // pages last sent as zeroes still get deltas).
  uint64_t delta_cache_bytes = 256ull << 20;
  // Content index for dedup, 32 bytes per remembered page.
  uint64_t dedup_index_bytes = 32ull << 20;
  // Largest batch Plan accepts.
  uint32_t max_batch_pages = 1024;
  // Threads the caller runs Compress on (the codec model assumes that parallelism).
  unsigned compress_threads = 1;
  // Every Nth batch tries a neighbouring codec setting to keep estimates fresh (0: never).
  uint32_t explore_every = 16;
  // Link rate assumed when Plan is given none (<= 0).
  double default_link_bytes_per_second = 1.25e9;
  // Hash every batch's pages into a BLAKE2b leaf for round commitments (Byzantine detection,
  // docs/consensus.md): costs about a cryptographic hash of every page sent.
  bool commit_leaves = false;

  // InvalidArgument naming the offending field.
  Status Validate() const;
};

// What one batch did, for metrics, spans and the codec model. Page counts by encoding and by
// pattern each sum to `pages`.
struct EncodeStats {
  uint32_t round = 0;
  uint64_t seq = 0;
  uint64_t pages = 0;
  uint64_t zero_pages = 0;
  uint64_t dedup_pages = 0;
  uint64_t delta_pages = 0;
  uint64_t raw_pages = 0;  // compressed or stored
  std::array<uint64_t, kPatternCount> pattern_pages{};
  // Pages sent before whose previous version was (hit) or was not (miss) available as a
  // delta base, among those not sent as zero or dedup.
  uint64_t delta_base_hits = 0;
  uint64_t delta_base_misses = 0;
  uint64_t input_bytes = 0;        // pages × kPageSize
  uint64_t stream_bytes = 0;       // entry stream before the codec
  uint64_t stream_wire_bytes = 0;  // entry stream as sent
  uint64_t stored_bytes = 0;       // pages stored without compression
  uint64_t output_bytes = 0;       // the whole payload
  Codec codec = Codec::kNone;      // codec of the stream as sent
  CodecSetting selected;           // what the selector chose (codec differs when it did not pay)
  bool explored = false;           // the choice was an exploration
  double plan_seconds = 0;
  double compress_seconds = 0;

  double encode_seconds() const { return plan_seconds + compress_seconds; }
  // Guest bytes per payload byte; 0 for an empty result.
  double ratio() const {
    return output_bytes ? static_cast<double>(input_bytes) / static_cast<double>(output_bytes) : 0;
  }
};

// A batch whose pages are decided but not yet compressed. Movable; owns copies of the pages.
class PlannedBatch {
 public:
  PlannedBatch() = default;
  PlannedBatch(PlannedBatch&&) = default;
  PlannedBatch& operator=(PlannedBatch&&) = default;

  uint32_t round() const { return header_.round; }
  uint64_t seq() const { return header_.seq; }
  uint32_t pages() const { return header_.count; }
  CodecSetting setting() const { return setting_; }
  const EncodeStats& stats() const { return stats_; }
  // The batch's round-commitment leaf (acp::BatchLeafHasher over the snapshot it encoded);
  // all zero unless EncoderConfig::commit_leaves.
  const std::array<uint8_t, 32>& leaf() const { return leaf_; }

 private:
  friend class PageEncoder;
  std::array<uint8_t, 32> leaf_{};
  BatchHeader header_;
  CodecSetting setting_;
  EncodeStats stats_;
  ByteBuffer payload_;  // header placeholder + stored section
  ByteBuffer stream_;   // uncompressed entry stream
};

// A finished batch: the PAGES payload and its stats.
class EncodedBatch {
 public:
  EncodedBatch() = default;
  EncodedBatch(EncodedBatch&&) = default;
  EncodedBatch& operator=(EncodedBatch&&) = default;

  std::span<const uint8_t> payload() const { return payload_.span(); }
  const EncodeStats& stats() const { return stats_; }

 private:
  friend class PageEncoder;
  ByteBuffer payload_;
  EncodeStats stats_;
};

// One per migration (source side). Not thread-safe, except Compress (see above).
class PageEncoder {
 public:
  // `guest_pages`: page count of the guest being migrated. `clock` times the steps for the
  // codec model and must outlive the encoder. `config` must be valid (Validate()).
  PageEncoder(const EncoderConfig& config, uint64_t guest_pages,
              Clock& clock = RealClock::Instance());
  ~PageEncoder();

  // Step 1 (sequential). Snapshots pages `indices` of `guest` (in this order; repeats
  // allowed, the later entry wins) and plans batch number next_seq() of `round`, choosing the
  // codec for `link_bytes_per_second` (the predicted link rate; <= 0: the configured default).
  // InvalidArgument when the guest has another page count, an index is out of range, or
  // there are more than max_batch_pages indices. The guest may keep running: each page is
  // copied once and everything is derived from the copy.
  Result<PlannedBatch> Plan(uint32_t round, std::span<const uint64_t> indices,
                            const vm::Guest& guest, double link_bytes_per_second);

  // Step 2 (thread-safe, const). Compresses and seals `batch`. If the chosen codec does not
  // shrink the stream, the stream is sent uncompressed (stats().codec == kNone).
  EncodedBatch Compress(PlannedBatch batch) const;

  // Step 3 (sequential, any order). Feeds a compressed batch's measurements to the selector.
  void Observe(const EncodeStats& stats);

  // Plan + Compress + Observe on the calling thread.
  Result<EncodedBatch> Encode(uint32_t round, std::span<const uint64_t> indices,
                              const vm::Guest& guest, double link_bytes_per_second);

  // The sequence number the next planned batch gets (0 first).
  uint64_t next_seq() const { return next_seq_; }
  const EncoderConfig& config() const { return config_; }
  // The codec model; tests and callers with measurements from elsewhere may seed it.
  CodecSelector& selector() { return selector_; }
  const DeltaCache& delta_cache() const { return cache_; }
  const DestinationModel& model() const { return model_; }

 private:
  EncoderConfig config_;
  Clock& clock_;
  DestinationModel model_;
  DeltaCache cache_;
  CodecSelector selector_;
  uint64_t next_seq_ = 0;
  // Per-Plan scratch, kept to avoid reallocations.
  std::unique_ptr<uint8_t[]> delta_;  // one delta body
  std::vector<uint8_t> records_;      // content hash records
};

}  // namespace dwcp::hde
