#include "hde/page_encoder.h"

#include <xxhash.h>

#include <optional>

#include "acp/round_commitment.h"
#include <zstd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <optional>
#include <string>

#include "hde/page_codec.h"
#include "hde/page_delta.h"
#include "hde/stream_codec.h"

namespace dwcp::hde {
namespace {

using vm::kPageSize;

// A delta carries only the changed bytes (new content, which compresses like the page does),
// so it is sent whenever its body is smaller than the page, less a margin for the entry.
constexpr size_t kDeltaLimit = kPageSize - 64;

alignas(64) constexpr uint8_t kZeroPage[kPageSize] = {};

// GCC inlines a fixed-size memcpy as `rep movsq`, which profiles showed slow into the
// stream's unaligned destinations; the volatile pointer keeps the call to libc's (AVX) copy.
void* (*volatile const kLibcMemcpy)(void*, const void*, size_t) = std::memcpy;
inline void CopyPage(uint8_t* dst, const uint8_t* src) { kLibcMemcpy(dst, src, kPageSize); }

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

}  // namespace

Status EncoderConfig::Validate() const {
  if (zstd_level != 0 && (zstd_level < ZSTD_minCLevel() || zstd_level > ZSTD_maxCLevel())) {
    return InvalidArgument("hde zstd_level " + std::to_string(zstd_level) + " outside " +
                           std::to_string(ZSTD_minCLevel()) + ".." +
                           std::to_string(ZSTD_maxCLevel()) + " (0: automatic)");
  }
  if (max_zstd_level < 1 || max_zstd_level > ZSTD_maxCLevel()) {
    return InvalidArgument("hde max_zstd_level " + std::to_string(max_zstd_level) + " outside 1.." +
                           std::to_string(ZSTD_maxCLevel()));
  }
  if (delta_cache_bytes % kPageSize != 0) {
    return InvalidArgument("hde delta_cache_bytes must be a multiple of " +
                           std::to_string(kPageSize));
  }
  if (max_batch_pages == 0 || max_batch_pages > kMaxBatchPagesLimit) {
    return InvalidArgument("hde max_batch_pages must be between 1 and " +
                           std::to_string(kMaxBatchPagesLimit));
  }
  if (compress_threads == 0) return InvalidArgument("hde compress_threads must be at least 1");
  return Status::Ok();
}

PageEncoder::PageEncoder(const EncoderConfig& config, uint64_t guest_pages, Clock& clock)
    : config_(config),
      clock_(clock),
      model_(guest_pages, config.dedup ? config.dedup_index_bytes : 0),
      cache_(config.delta ? std::min(config.delta_cache_bytes, guest_pages * kPageSize) : 0),
      selector_(SelectorConfig{config.codec, config.zstd_level, config.max_zstd_level,
                               config.compress_threads, config.explore_every,
                               config.default_link_bytes_per_second}),
      delta_(new uint8_t[kDeltaLimit + 64]) {}

PageEncoder::~PageEncoder() = default;

Result<PlannedBatch> PageEncoder::Plan(uint32_t round, std::span<const uint64_t> indices,
                                       const vm::Guest& guest, double link_bytes_per_second) {
  const uint64_t pages = model_.pages();
  if (guest.page_count() != pages) {
    return Status(InvalidArgument("hde encoder for " + std::to_string(pages) +
                                  " pages given a guest of " + std::to_string(guest.page_count())));
  }
  if (indices.size() > config_.max_batch_pages) {
    return Status(InvalidArgument("hde batch of " + std::to_string(indices.size()) +
                                  " pages exceeds max_batch_pages " +
                                  std::to_string(config_.max_batch_pages)));
  }
  for (uint64_t index : indices) {
    if (index >= pages) {
      return Status(InvalidArgument("hde page index " + std::to_string(index) +
                                    " beyond guest of " + std::to_string(pages) + " pages"));
    }
  }
  const auto t0 = clock_.Now();
  const size_t n = indices.size();
  PlannedBatch b;
  EncodeStats& st = b.stats_;
  b.payload_.Reserve(kHeaderSize + n * kPageSize);
  b.payload_.Resize(kHeaderSize);
  b.stream_.Reserve(n * kMaxEntryBytes);
  records_.resize(n * kContentRecordSize);
  uint8_t* const out = b.stream_.data();
  size_t sp = 0;
  uint64_t expected = 0;
  uint32_t stored = 0;
  std::optional<acp::BatchLeafHasher> leaf;
  if (config_.commit_leaves) leaf.emplace(round, next_seq_);  // next_seq_ becomes h.seq

  for (size_t k = 0; k < n; ++k) {
    const uint64_t index = indices[k];
    // Entry header, then the page copied straight to where a raw body goes: a raw page is
    // copied once. Other kinds overwrite the copy with their (smaller) body at the end.
    const size_t hdr = 1 + PutVarint(out + sp + 1, ZigZag(static_cast<int64_t>(index - expected)));
    expected = index + 1;
    uint8_t* const page = out + sp + hdr;
    CopyPage(page, guest.PageData(index));
    if (leaf) leaf->AddPage(index, page);
    uint8_t hash[16];
    EntryKind kind = EntryKind::kRaw;
    Pattern pattern;
    size_t body = 0;
    if (IsZeroPage(page)) {
      kind = EntryKind::kZero;
      pattern = Pattern::kZero;
      std::memcpy(hash, ZeroPageHash(), 16);
      model_.RecordZero(index);
      cache_.Erase(index);
      ++st.zero_pages;
    } else {
      const XXH128_hash_t h = XXH3_128bits(page, kPageSize);
      XXH128_canonical_t canonical;
      XXH128_canonicalFromHash(&canonical, h);
      std::memcpy(hash, canonical.digest, 16);
      const ContentKey key{h.low64, h.high64};
      const bool sent_before = model_.WasSent(index);
      std::optional<uint64_t> holder;
      size_t delta_len = SIZE_MAX;
      uint32_t runs = 0;
      if (config_.dedup) holder = model_.FindHolder(key);
      if (holder) {
        kind = EntryKind::kCopy;
        pattern = Pattern::kDuplicate;
        ++st.dedup_pages;
      } else if (config_.delta && sent_before) {
        const uint8_t* base = model_.HoldsZero(index) ? kZeroPage : cache_.Find(index);
        if (base != nullptr) {
          ++st.delta_base_hits;
          delta_len = EncodeDelta(page, base, delta_.get(), kDeltaLimit, &runs);
        } else {
          ++st.delta_base_misses;
        }
      }
      if (kind != EntryKind::kCopy) {
        if (delta_len != SIZE_MAX) {
          kind = EntryKind::kDelta;
          pattern = Pattern::kDelta;
          ++st.delta_pages;
        } else {
          pattern = ClassifyContent(page);
          if (pattern == Pattern::kRandom) {
            kind = EntryKind::kStored;
            b.payload_.Append(page, kPageSize);
            ++stored;
          } else {
            body = kPageSize;  // already in place
          }
          ++st.raw_pages;
        }
      }
      model_.RecordContent(index, key);
      if (config_.delta) cache_.Put(index, page, /*hot=*/sent_before);
      // The copy is no longer needed: bodies of other kinds may overwrite it.
      if (kind == EntryKind::kCopy) {
        body = PutVarint(page, *holder);
      } else if (kind == EntryKind::kDelta) {
        body = PutVarint(page, runs);
        std::memcpy(page + body, delta_.get(), delta_len);
        body += delta_len;
      }
    }
    out[sp] = static_cast<uint8_t>(kind);
    sp += hdr + body;
    ++st.pattern_pages[static_cast<int>(pattern)];
    PutContentRecord(&records_[k * kContentRecordSize], index, hash);
  }
  b.stream_.Resize(sp);

  BatchHeader& h = b.header_;
  h.round = round;
  h.count = static_cast<uint32_t>(n);
  h.seq = next_seq_++;
  h.stream_size = static_cast<uint32_t>(sp);
  h.stored_pages = stored;
  h.content_hash = ContentHash(records_);
  if (leaf) b.leaf_ = leaf->Finish();

  st.round = round;
  st.seq = h.seq;
  st.pages = n;
  st.input_bytes = n * kPageSize;
  st.stream_bytes = sp;
  st.stored_bytes = uint64_t{stored} * kPageSize;
  st.plan_seconds = Seconds(clock_.Now() - t0);
  const auto choice = selector_.Choose(
      {st.input_bytes, st.stream_bytes, st.stored_bytes, st.plan_seconds}, link_bytes_per_second);
  b.setting_ = choice.setting;
  st.selected = choice.setting;
  st.explored = choice.explored;
  return b;
}

EncodedBatch PageEncoder::Compress(PlannedBatch b) const {
  const auto t0 = clock_.Now();
  EncodedBatch e;
  e.payload_ = std::move(b.payload_);
  e.stats_ = b.stats_;
  BatchHeader& h = b.header_;
  const size_t at = e.payload_.size();
  const size_t sp = b.stream_.size();
  size_t wire = 0;
  Codec codec = b.setting_.codec;
  if (codec != Codec::kNone && sp > 0) {
    const size_t bound = CompressBound(b.setting_, sp);
    e.payload_.Reserve(at + bound);
    wire = CompressStream(b.setting_, b.stream_.data(), sp, e.payload_.data() + at, bound);
    if (wire == 0 || wire >= sp) codec = Codec::kNone;  // did not pay: send it as it is
  } else {
    codec = Codec::kNone;
  }
  if (codec == Codec::kNone) {
    e.payload_.Reserve(at + sp);
    if (sp > 0) std::memcpy(e.payload_.data() + at, b.stream_.data(), sp);
    wire = sp;
  }
  e.payload_.Resize(at + wire);
  h.codec = codec;
  h.stream_wire_size = static_cast<uint32_t>(wire);
  WriteHeader(h, e.payload_.data());
  SealBatch({e.payload_.data(), e.payload_.size()});

  EncodeStats& st = e.stats_;
  st.codec = codec;
  st.stream_wire_bytes = wire;
  st.output_bytes = e.payload_.size();
  st.compress_seconds = Seconds(clock_.Now() - t0);
  return e;
}

void PageEncoder::Observe(const EncodeStats& stats) {
  selector_.Observe(stats.selected, stats.stream_bytes, stats.stream_wire_bytes,
                    stats.compress_seconds);
}

Result<EncodedBatch> PageEncoder::Encode(uint32_t round, std::span<const uint64_t> indices,
                                         const vm::Guest& guest, double link_bytes_per_second) {
  auto planned = Plan(round, indices, guest, link_bytes_per_second);
  if (!planned.ok()) return planned.status();
  EncodedBatch e = Compress(std::move(planned).value());
  Observe(e.stats());
  return e;
}

}  // namespace dwcp::hde
