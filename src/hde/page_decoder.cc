#include "hde/page_decoder.h"

#include <bit>
#include <chrono>
#include <cstring>
#include <string>

#include "acp/round_commitment.h"
#include "hde/page_delta.h"
#include "hde/stream_codec.h"

namespace dwcp::hde {
namespace {

using vm::kPageSize;

alignas(64) constexpr uint8_t kZeroPage[kPageSize] = {};
constexpr uint64_t kNoPage = ~uint64_t{0};

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

inline size_t HashPage(uint64_t page) { return (page * 0x9e3779b97f4a7c15ULL) >> 20; }

}  // namespace

PageDecoder::PageDecoder(uint64_t guest_pages, DecoderConfig config, Clock& clock)
    : guest_pages_(guest_pages), config_(config), clock_(clock) {
  if (config_.max_batch_pages > kMaxBatchPagesLimit) config_.max_batch_pages = kMaxBatchPagesLimit;
}

Result<ParsedBatch> PageDecoder::Parse(std::span<const uint8_t> payload) const {
  const auto t0 = clock_.Now();
  auto header = ReadHeader(payload);
  if (!header.ok()) return header.status();
  const BatchHeader& h = *header;
  if (h.version != kFormatVersion) {
    return Status(ProtocolError("unsupported hde batch version " + std::to_string(h.version)));
  }
  if (static_cast<uint8_t>(h.codec) >= kCodecCount) {
    return Status(ProtocolError("unknown hde codec " + std::to_string(static_cast<int>(h.codec))));
  }
  if (h.count > config_.max_batch_pages) {
    return Status(ProtocolError("hde batch of " + std::to_string(h.count) +
                                " pages exceeds the limit of " +
                                std::to_string(config_.max_batch_pages)));
  }
  if (h.stored_pages > h.count) {
    return Status(ProtocolError("hde batch stores more pages than it has entries"));
  }
  const uint64_t expected_size =
      kHeaderSize + uint64_t{h.stored_pages} * kPageSize + uint64_t{h.stream_wire_size};
  if (expected_size != payload.size()) {
    return Status(ProtocolError("hde batch is " + std::to_string(payload.size()) +
                                " bytes, its header announces " + std::to_string(expected_size)));
  }
  if (uint64_t{h.stream_size} > uint64_t{h.count} * kMaxEntryBytes) {
    return Status(ProtocolError("hde stream of " + std::to_string(h.stream_size) +
                                " bytes is too large for " + std::to_string(h.count) + " entries"));
  }
  if (h.codec == Codec::kNone && h.stream_wire_size != h.stream_size) {
    return Status(ProtocolError("hde uncompressed stream size mismatch"));
  }
  if (BatchChecksum(payload) != h.checksum) {
    return Status(DataLoss("hde batch checksum mismatch"));
  }

  ParsedBatch b;
  b.header_ = h;
  b.payload_ = payload;
  const uint8_t* wire = payload.data() + kHeaderSize + size_t{h.stored_pages} * kPageSize;
  if (h.codec == Codec::kNone) {
    b.stream_ = wire;
  } else {
    b.owned_stream_.Resize(h.stream_size);
    if (!DecompressStream(h.codec, wire, h.stream_wire_size, b.owned_stream_.data(),
                          h.stream_size)) {
      return Status(ProtocolError(std::string("hde stream does not decode with ") +
                                  CodecName(h.codec) + " to the announced " +
                                  std::to_string(h.stream_size) + " bytes"));
    }
    b.stream_ = b.owned_stream_.data();
  }

  DecodeStats& st = b.stats_;
  const uint8_t* const begin = b.stream_;
  const uint8_t* const end = begin + h.stream_size;
  const uint8_t* p = begin;
  b.entries_.resize(h.count);
  uint64_t expected = 0;
  uint32_t stored = 0;
  auto truncated = [] { return Status(ProtocolError("hde stream truncated")); };
  for (uint32_t k = 0; k < h.count; ++k) {
    ParsedBatch::Entry& e = b.entries_[k];
    if (p == end) return truncated();
    const uint8_t kind = *p++;
    if (kind >= kEntryKindCount) {
      return Status(ProtocolError("unknown hde entry kind " + std::to_string(kind)));
    }
    e.kind = static_cast<EntryKind>(kind);
    uint64_t zz;
    if (!GetVarint(&p, end, &zz)) return truncated();
    e.index = expected + static_cast<uint64_t>(UnZigZag(zz));
    if (e.index >= guest_pages_) {
      return Status(ProtocolError("hde page index " + std::to_string(e.index) +
                                  " beyond guest of " + std::to_string(guest_pages_) + " pages"));
    }
    expected = e.index + 1;
    switch (e.kind) {
      case EntryKind::kRaw:
        if (static_cast<size_t>(end - p) < kPageSize) return truncated();
        e.offset = static_cast<size_t>(p - begin);
        p += kPageSize;
        ++st.raw_pages;
        break;
      case EntryKind::kZero:
        ++st.zero_pages;
        break;
      case EntryKind::kCopy:
        if (!GetVarint(&p, end, &e.source)) return truncated();
        if (e.source >= guest_pages_) {
          return Status(ProtocolError("hde copy source " + std::to_string(e.source) +
                                      " beyond guest of " + std::to_string(guest_pages_) +
                                      " pages"));
        }
        ++st.dedup_pages;
        break;
      case EntryKind::kDelta:
        e.offset = static_cast<size_t>(p - begin);
        if (!ReadDelta(&p, end, nullptr)) {
          return Status(ProtocolError("malformed hde delta for page " + std::to_string(e.index)));
        }
        ++st.delta_pages;
        break;
      case EntryKind::kStored:
        if (stored == h.stored_pages) {
          return Status(ProtocolError("hde entries use more stored pages than the batch has"));
        }
        e.offset = kHeaderSize + size_t{stored++} * kPageSize;
        ++st.raw_pages;
        break;
    }
  }
  if (p != end) return Status(ProtocolError("trailing bytes after the hde entries"));
  if (stored != h.stored_pages) {
    return Status(ProtocolError("hde batch has stored pages no entry uses"));
  }
  st.round = h.round;
  st.seq = h.seq;
  st.pages = h.count;
  st.input_bytes = payload.size();
  st.output_bytes = uint64_t{h.count} * kPageSize;
  st.codec = h.codec;
  st.parse_seconds = Seconds(clock_.Now() - t0);
  return b;
}

const uint8_t* PageDecoder::Lookup(uint64_t page) const {
  for (size_t i = HashPage(page) & overlay_mask_;; i = (i + 1) & overlay_mask_) {
    if (overlay_[i].page == page) return overlay_[i].content;
    if (overlay_[i].page == kNoPage) return nullptr;
  }
}

void PageDecoder::Remember(uint64_t page, const uint8_t* content) {
  for (size_t i = HashPage(page) & overlay_mask_;; i = (i + 1) & overlay_mask_) {
    if (overlay_[i].page == page || overlay_[i].page == kNoPage) {
      overlay_[i] = Slot{page, content};
      return;
    }
  }
}

Status PageDecoder::Apply(const ParsedBatch& b, vm::Guest& guest, DecodeStats* stats,
                          std::array<uint8_t, 32>* leaf) {
  const auto t0 = clock_.Now();
  if (guest.page_count() != guest_pages_) {
    return FailedPrecondition("hde decoder for " + std::to_string(guest_pages_) +
                              " pages given a guest of " + std::to_string(guest.page_count()));
  }
  if (b.header_.seq != next_seq_) {
    return ProtocolError("hde batch " + std::to_string(b.header_.seq) + " out of order: expected " +
                         std::to_string(next_seq_));
  }
  const size_t n = b.entries_.size();
  const uint8_t* const stream = b.stream_;
  const uint8_t* const stream_end = stream + b.header_.stream_size;
  // Every rebuilt page lives in the stream, the payload, the zero page or scratch_: never in
  // guest memory, which the write phase below changes as it goes.
  scratch_.Resize((b.stats_.delta_pages + b.stats_.dedup_pages) * kPageSize);
  records_.resize(n * kContentRecordSize);
  contents_.assign(n, nullptr);
  const size_t table = std::bit_ceil(std::max<size_t>(2 * n, 16));
  overlay_.assign(table, Slot{kNoPage, nullptr});
  overlay_mask_ = table - 1;

  // Rebuild every page in entry order, against the destination as earlier entries leave it.
  size_t used = 0;  // scratch pages
  for (size_t k = 0; k < n; ++k) {
    const ParsedBatch::Entry& e = b.entries_[k];
    const uint8_t* c = nullptr;
    switch (e.kind) {
      case EntryKind::kRaw:
        c = stream + e.offset;
        break;
      case EntryKind::kStored:
        c = b.payload_.data() + e.offset;
        break;
      case EntryKind::kZero:
        c = kZeroPage;
        break;
      case EntryKind::kCopy:
        c = Lookup(e.source);
        if (c == nullptr) {
          uint8_t* page = scratch_.data() + used++ * kPageSize;
          std::memcpy(page, guest.PageData(e.source), kPageSize);
          c = page;
        }
        break;
      case EntryKind::kDelta: {
        const uint8_t* base = Lookup(e.index);
        if (base == nullptr) base = guest.PageData(e.index);
        uint8_t* page = scratch_.data() + used++ * kPageSize;
        std::memcpy(page, base, kPageSize);
        const uint8_t* q = stream + e.offset;
        bool ok = ReadDelta(&q, stream_end, page);  // validated by Parse
        (void)ok;
        c = page;
        break;
      }
    }
    Remember(e.index, c);
    contents_[k] = c;
    uint8_t hash[16];
    if (c == kZeroPage) {
      std::memcpy(hash, ZeroPageHash(), 16);
    } else {
      PageHash(c, hash);
    }
    PutContentRecord(&records_[k * kContentRecordSize], e.index, hash);
  }
  if (ContentHash(records_) != b.header_.content_hash) {
    return DataLoss("hde batch " + std::to_string(b.header_.seq) +
                    " content hash mismatch: the rebuilt pages differ from the source's");
  }

  if (leaf != nullptr) {
    acp::BatchLeafHasher hasher(b.header_.round, b.header_.seq);
    for (size_t k = 0; k < n; ++k) hasher.AddPage(b.entries_[k].index, contents_[k]);
    *leaf = hasher.Finish();
  }

  // Verified: write in entry order (a page named twice ends with its last entry).
  for (size_t k = 0; k < n; ++k) {
    const ParsedBatch::Entry& e = b.entries_[k];
    if (e.kind == EntryKind::kZero) {
      guest.ZeroPage(e.index);
    } else {
      guest.WritePage(e.index, contents_[k]);
    }
  }
  ++next_seq_;
  if (stats != nullptr) {
    *stats = b.stats_;
    stats->apply_seconds = Seconds(clock_.Now() - t0);
  }
  return Status::Ok();
}

Status PageDecoder::Apply(std::span<const uint8_t> payload, vm::Guest& guest, DecodeStats* stats) {
  auto parsed = Parse(payload);
  if (!parsed.ok()) return parsed.status();
  return Apply(*parsed, guest, stats);
}

}  // namespace dwcp::hde
