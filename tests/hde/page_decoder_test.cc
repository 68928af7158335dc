// PageDecoder against corrupt and hostile input: every failure is a Protocol or DataLoss
// error and leaves the guest exactly as it was.
#include "hde/page_decoder.h"

#include <gtest/gtest.h>
#include <zstd.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/little_endian.h"
#include "hde/page_encoder.h"
#include "hde_test_util.h"

namespace dwcp::hde {
namespace {

using testing::ContentModel;
using testing::MemoryGuest;
using testing::Range;
using testing::Scribble;
using vm::kPageSize;
using vm::PageClass;

constexpr uint64_t kPages = 48;

std::vector<uint8_t> Copy(std::span<const uint8_t> s) { return {s.begin(), s.end()}; }

// Header field offsets (docs/protocol.md).
constexpr size_t kVersionAt = 4, kCodecAt = 5, kFlagsAt = 6, kCountAt = 12, kSeqAt = 16,
                 kStreamSizeAt = 24, kWireSizeAt = 28, kStoredAt = 32, kReservedAt = 36,
                 kContentHashAt = 40;

// Builds a batch from raw parts and seals it (a well-formed envelope around any stream).
std::vector<uint8_t> Craft(uint32_t count, uint64_t seq, const std::vector<uint8_t>& stream,
                           const std::vector<uint8_t>& stored = {}, Codec codec = Codec::kNone,
                           uint32_t stream_size = UINT32_MAX) {
  BatchHeader h;
  h.codec = codec;
  h.round = 2;
  h.count = count;
  h.seq = seq;
  h.stream_size = stream_size == UINT32_MAX ? static_cast<uint32_t>(stream.size()) : stream_size;
  h.stream_wire_size = static_cast<uint32_t>(stream.size());
  h.stored_pages = static_cast<uint32_t>(stored.size() / kPageSize);
  std::vector<uint8_t> out(kHeaderSize);
  WriteHeader(h, out.data());
  out.insert(out.end(), stored.begin(), stored.end());
  out.insert(out.end(), stream.begin(), stream.end());
  SealBatch(out);
  return out;
}

// Stream helpers.
void Entry(std::vector<uint8_t>& s, EntryKind kind, int64_t index_delta) {
  s.push_back(static_cast<uint8_t>(kind));
  uint8_t v[kMaxVarintBytes];
  s.insert(s.end(), v, v + PutVarint(v, ZigZag(index_delta)));
}
void Varint(std::vector<uint8_t>& s, uint64_t x) {
  uint8_t v[kMaxVarintBytes];
  s.insert(s.end(), v, v + PutVarint(v, x));
}

// A source and destination after one round, plus a round-2 batch (seq 1) using every entry
// kind, for each codec.
class HdeDecoderTest : public ::testing::TestWithParam<Codec> {
 protected:
  void SetUp() override {
    ContentModel model(256, 11);
    for (uint64_t i = 0; i < kPages; ++i) {
      static const PageClass kMix[] = {PageClass::kText, PageClass::kBinary, PageClass::kRandom,
                                       PageClass::kZero, PageClass::kDuplicate};
      src_.Set(i, model.Page(kMix[i % 5], i));
    }
    EncoderConfig c;
    c.codec = GetParam() == Codec::kNone  ? CodecPolicy::kNone
              : GetParam() == Codec::kLz4 ? CodecPolicy::kLz4
                                          : CodecPolicy::kZstd;
    c.zstd_level = 3;
    encoder_ = std::make_unique<PageEncoder>(c, kPages);
    auto first = encoder_->Encode(1, Range(0, kPages), src_, 0);
    ASSERT_TRUE(first.ok());
    round1_ = Copy(first->payload());
    ASSERT_TRUE(decoder_.Apply(round1_, dst_).ok());

    // Round 2: deltas, a copy, a zero, a raw text page and a stored random page.
    for (uint64_t p : {0, 1, 5, 6}) Scribble(src_.MutablePage(p), 100 + p, 200, p);
    std::memcpy(src_.MutablePage(10), src_.PageData(0), kPageSize);
    std::memset(src_.MutablePage(11), 0, kPageSize);
    src_.Set(12, model.Page(PageClass::kText, 200));
    src_.Set(13, model.Page(PageClass::kRandom, 200));
    auto second = encoder_->Encode(2, std::vector<uint64_t>{0, 1, 5, 6, 10, 11, 12, 13}, src_, 0);
    ASSERT_TRUE(second.ok());
    const auto& s = second->stats();
    ASSERT_GE(s.delta_pages, 3u);
    ASSERT_EQ(s.dedup_pages, 1u);
    ASSERT_EQ(s.zero_pages, 1u);
    ASSERT_GE(s.stored_bytes, kPageSize);
    if (GetParam() != Codec::kNone) {
      ASSERT_EQ(s.codec, GetParam());
    }
    batch_ = Copy(second->payload());

    before_ = dst_.bytes();
    writes_before_ = dst_.writes();
  }

  // The batch must be refused with one of `codes` and leave dst_ untouched.
  void ExpectRejected(const std::vector<uint8_t>& b, const std::string& what,
                      std::initializer_list<StatusCode> codes = {StatusCode::kProtocol,
                                                                 StatusCode::kDataLoss}) {
    Status st = decoder_.Apply(b, dst_);
    bool expected = false;
    for (auto c : codes) expected = expected || st.code() == c;
    EXPECT_TRUE(expected) << what << ": " << st.ToString();
    EXPECT_EQ(dst_.writes(), writes_before_) << what << ": guest written";
    EXPECT_EQ(decoder_.next_seq(), 1u) << what;
  }
  void ExpectUntouched() { EXPECT_TRUE(dst_.bytes() == before_); }

  MemoryGuest src_{kPages}, dst_{kPages};
  std::unique_ptr<PageEncoder> encoder_;
  PageDecoder decoder_{kPages};
  std::vector<uint8_t> round1_, batch_, before_;
  int writes_before_ = 0;
};

TEST_P(HdeDecoderTest, ValidBatchApplies) {
  DecodeStats s;
  ASSERT_TRUE(decoder_.Apply(batch_, dst_, &s).ok());
  EXPECT_EQ(s.seq, 1u);
  EXPECT_EQ(s.round, 2u);
  EXPECT_EQ(s.pages, 8u);
  EXPECT_EQ(decoder_.next_seq(), 2u);
  EXPECT_EQ(dst_.bytes(), src_.bytes());
}

TEST_P(HdeDecoderTest, EveryBitFlipIsRejected) {
  for (size_t i = 0; i < batch_.size(); ++i) {
    // Every bit of the header, one bit (varying) of every other byte.
    for (int bit = 0; bit < 8; ++bit) {
      if (i >= kHeaderSize && bit != static_cast<int>(i % 8)) continue;
      auto b = batch_;
      b[i] ^= static_cast<uint8_t>(1u << bit);
      Status st = decoder_.Apply(b, dst_);
      ASSERT_TRUE(st.code() == StatusCode::kProtocol || st.code() == StatusCode::kDataLoss)
          << "byte " << i << " bit " << bit << ": " << st.ToString();
      ASSERT_EQ(dst_.writes(), writes_before_) << "byte " << i;
    }
  }
  ExpectUntouched();
  EXPECT_TRUE(decoder_.Apply(batch_, dst_).ok()) << "the decoder still takes the real batch";
}

TEST_P(HdeDecoderTest, EveryTruncationIsRejected) {
  for (size_t n = 0; n < batch_.size(); ++n) {
    ExpectRejected(std::vector<uint8_t>(batch_.begin(), batch_.begin() + n),
                   "truncated to " + std::to_string(n));
  }
  auto longer = batch_;
  longer.push_back(0);
  ExpectRejected(longer, "one byte longer");
  ExpectUntouched();
}

TEST_P(HdeDecoderTest, BogusSizesAreRejectedEvenWithAValidChecksum) {
  auto with = [&](size_t at, uint32_t v) {
    auto b = batch_;
    le::Put32(&b[at], v);
    SealBatch(b);
    return b;
  };
  const uint32_t count = le::Get32(&batch_[kCountAt]);
  const uint32_t stream = le::Get32(&batch_[kStreamSizeAt]);
  const uint32_t wire = le::Get32(&batch_[kWireSizeAt]);
  const uint32_t stored = le::Get32(&batch_[kStoredAt]);
  ExpectRejected(with(kStreamSizeAt, 0xffffffff), "huge stream", {StatusCode::kProtocol});
  ExpectRejected(with(kStreamSizeAt, stream + 1), "stream +1", {StatusCode::kProtocol});
  ExpectRejected(with(kStreamSizeAt, stream - 1), "stream -1", {StatusCode::kProtocol});
  ExpectRejected(with(kStreamSizeAt, 0), "stream 0", {StatusCode::kProtocol});
  ExpectRejected(with(kCountAt, 0xffffffff), "huge count", {StatusCode::kProtocol});
  ExpectRejected(with(kCountAt, count + 1), "count +1", {StatusCode::kProtocol});
  ExpectRejected(with(kCountAt, count - 1), "count -1", {StatusCode::kProtocol});
  ExpectRejected(with(kCountAt, 0), "count 0", {StatusCode::kProtocol});
  ExpectRejected(with(kWireSizeAt, wire + 1), "wire +1", {StatusCode::kProtocol});
  ExpectRejected(with(kWireSizeAt, 0xffffffff), "huge wire", {StatusCode::kProtocol});
  ExpectRejected(with(kStoredAt, stored + 1), "stored +1", {StatusCode::kProtocol});
  ExpectRejected(with(kStoredAt, 0xffffffff), "huge stored", {StatusCode::kProtocol});
  ExpectRejected(with(kReservedAt, 1), "reserved", {StatusCode::kProtocol});
  auto b = batch_;
  b[kVersionAt] = 2;
  SealBatch(b);
  ExpectRejected(b, "version", {StatusCode::kProtocol});
  b = batch_;
  b[kCodecAt] = 3;
  SealBatch(b);
  ExpectRejected(b, "codec", {StatusCode::kProtocol});
  b = batch_;
  b[kFlagsAt] = 1;
  SealBatch(b);
  ExpectRejected(b, "flags", {StatusCode::kProtocol});
  b = batch_;
  b[0] = 'X';
  ExpectRejected(b, "magic", {StatusCode::kProtocol});
  // A wrong content hash with a valid checksum: the rebuilt pages do not match.
  b = batch_;
  b[kContentHashAt] ^= 1;
  SealBatch(b);
  ExpectRejected(b, "content hash", {StatusCode::kDataLoss});
  ExpectUntouched();
}

TEST_P(HdeDecoderTest, ResealedRandomCorruptionNeverMisapplies) {
  // A fuzzer in miniature: random bytes anywhere, checksum recomputed, so the header checks,
  // the codecs, the entry parser and the content hash all see hostile input. A mutation may
  // pass only if it rebuilds exactly the right pages (e.g. in `round`, which the caller
  // checks, or in codec bytes that do not change the output).
  std::mt19937_64 rng(static_cast<uint64_t>(GetParam()) + 1);
  auto dec = std::make_unique<PageDecoder>(kPages);
  auto dst = std::make_unique<MemoryGuest>(kPages);
  auto reset = [&] {
    dec = std::make_unique<PageDecoder>(kPages);
    dst = std::make_unique<MemoryGuest>(kPages);
    ASSERT_TRUE(dec->Apply(round1_, *dst).ok());
  };
  reset();
  int accepted = 0;
  for (int i = 0; i < 3000; ++i) {
    auto b = batch_;
    for (int j = 0, n = 1 + static_cast<int>(rng() % 4); j < n; ++j) {
      b[rng() % b.size()] = static_cast<uint8_t>(rng());
    }
    SealBatch(b);
    const int writes = dst->writes();
    Status st = dec->Apply(b, *dst);
    if (st.ok()) {
      ++accepted;
      ASSERT_EQ(dst->bytes(), src_.bytes()) << "iteration " << i;
      reset();
      continue;
    }
    ASSERT_TRUE(st.code() == StatusCode::kProtocol || st.code() == StatusCode::kDataLoss)
        << st.ToString();
    ASSERT_EQ(dst->writes(), writes) << "iteration " << i;
    ASSERT_TRUE(dst->bytes() == before_) << "iteration " << i;
  }
  EXPECT_LT(accepted, 300);
}

TEST_P(HdeDecoderTest, BatchesApplyOnlyInSequence) {
  auto b = batch_;
  le::Put64(&b[kSeqAt], 2);
  SealBatch(b);
  ExpectRejected(b, "seq gap", {StatusCode::kProtocol});
  ExpectRejected(round1_, "replayed seq 0", {StatusCode::kProtocol});
  ExpectUntouched();
}

TEST_P(HdeDecoderTest, DivergedDestinationIsDataLoss) {
  // The destination's page 0 is not what the source believes it holds: the delta rebuilds
  // the wrong page and the content hash catches it.
  dst_.MutablePage(0)[7] ^= 0x40;
  before_ = dst_.bytes();
  ExpectRejected(batch_, "diverged base", {StatusCode::kDataLoss});
  ExpectUntouched();
}

INSTANTIATE_TEST_SUITE_P(HdeCodecs, HdeDecoderTest,
                         ::testing::Values(Codec::kNone, Codec::kLz4, Codec::kZstd),
                         [](const auto& info) { return std::string(CodecName(info.param)); });

// Crafted streams: structurally wrong entries inside a valid envelope.
class HdeCraftedBatchTest : public ::testing::Test {
 protected:
  void ExpectRejected(const std::vector<uint8_t>& b, const std::string& needle,
                      StatusCode code = StatusCode::kProtocol) {
    PageDecoder dec(kPages, DecoderConfig{16});
    Status st = dec.Apply(b, guest_);
    EXPECT_EQ(st.code(), code) << st.ToString();
    EXPECT_NE(st.message().find(needle), std::string::npos)
        << "'" << st.message() << "' lacks '" << needle << "'";
    EXPECT_EQ(guest_.writes(), 0);
  }
  MemoryGuest guest_{kPages};
};

TEST_F(HdeCraftedBatchTest, EntriesOutOfRange) {
  std::vector<uint8_t> s;
  Entry(s, EntryKind::kZero, kPages);  // index 48 of 48
  ExpectRejected(Craft(1, 0, s), "beyond guest");
  s.clear();
  Entry(s, EntryKind::kZero, 5);
  Entry(s, EntryKind::kZero, -7);  // index -1: wraps far beyond the guest
  ExpectRejected(Craft(2, 0, s), "beyond guest");
  s.clear();
  Entry(s, EntryKind::kCopy, 0);
  Varint(s, kPages);
  ExpectRejected(Craft(1, 0, s), "copy source");
  s.clear();
  Entry(s, EntryKind::kCopy, 0);
  Varint(s, ~uint64_t{0});
  ExpectRejected(Craft(1, 0, s), "copy source");
}

TEST_F(HdeCraftedBatchTest, MalformedEntries) {
  std::vector<uint8_t> s;
  Entry(s, static_cast<EntryKind>(9), 0);
  ExpectRejected(Craft(1, 0, s), "entry kind 9");
  s.clear();
  Entry(s, EntryKind::kDelta, 0);
  s.insert(s.end(), {1, 0xff, 0x1f, 2, 0xaa, 0xbb});  // one run of 2 bytes at offset 4095
  ExpectRejected(Craft(1, 0, s), "malformed hde delta");
  s.clear();
  Entry(s, EntryKind::kStored, 0);
  ExpectRejected(Craft(1, 0, s), "stored pages");
  s.clear();
  Entry(s, EntryKind::kZero, 0);
  ExpectRejected(Craft(1, 0, s, std::vector<uint8_t>(kPageSize, 1)), "stored pages no entry");
  s.clear();
  Entry(s, EntryKind::kZero, 0);
  s.push_back(0);
  ExpectRejected(Craft(1, 0, s), "trailing");
  s.clear();
  Entry(s, EntryKind::kRaw, 0);
  s.resize(s.size() + kPageSize - 1, 0x41);
  ExpectRejected(Craft(1, 0, s), "truncated");
  // More entries than the decoder's limit (16 here), refused before anything is decoded.
  s.clear();
  for (int i = 0; i < 17; ++i) Entry(s, EntryKind::kZero, 0);
  ExpectRejected(Craft(17, 0, s), "exceeds the limit");
  // A valid stream with a wrong content hash.
  s.clear();
  Entry(s, EntryKind::kZero, 0);
  ExpectRejected(Craft(1, 0, s), "content hash", StatusCode::kDataLoss);
}

TEST_F(HdeCraftedBatchTest, DecompressionIsBounded) {
  // A zstd frame of 8 MiB of zeroes announced as a one-entry stream: over the cap.
  std::vector<uint8_t> big(8 << 20, 0);
  std::vector<uint8_t> z(ZSTD_compressBound(big.size()));
  z.resize(ZSTD_compress(z.data(), z.size(), big.data(), big.size(), 1));
  ExpectRejected(Craft(1, 0, z, {}, Codec::kZstd, static_cast<uint32_t>(big.size())), "too large");
  // The same frame announced with a small size: the frame's own size disagrees.
  ExpectRejected(Craft(1, 0, z, {}, Codec::kZstd, 4000), "does not decode");
  // A frame that does not state its size (streaming mode) is refused too.
  std::vector<uint8_t> small(100, 0);
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 0);
  std::vector<uint8_t> z2(ZSTD_compressBound(small.size()));
  z2.resize(ZSTD_compress2(cctx, z2.data(), z2.size(), small.data(), small.size()));
  ZSTD_freeCCtx(cctx);
  ExpectRejected(Craft(1, 0, z2, {}, Codec::kZstd, 100), "does not decode");
  // lz4 output longer than announced.
  std::vector<uint8_t> garbage(64, 0x11);
  ExpectRejected(Craft(1, 0, garbage, {}, Codec::kLz4, 10), "does not decode");
}

}  // namespace
}  // namespace dwcp::hde
