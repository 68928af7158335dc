#include "hde/page_codec.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "hde_test_util.h"
#include "vm/synthetic_guest.h"

namespace dwcp::hde {
namespace {

using vm::kPageSize;

using FakeGuest = testing::MemoryGuest;  // counts page writes and zeroings apart

std::vector<uint8_t> PatternPage(uint8_t seed) {
  std::vector<uint8_t> p(kPageSize);
  for (size_t i = 0; i < kPageSize; ++i) p[i] = static_cast<uint8_t>(seed + i * 13 + 1);
  p[0] = seed | 1;  // never all zero
  return p;
}

void FillGuest(FakeGuest& g) {
  for (uint64_t i = 0; i < g.page_count(); ++i) {
    auto p = PatternPage(static_cast<uint8_t>(0x40 + i));
    std::memcpy(g.MutablePage(i), p.data(), kPageSize);
  }
}

uint32_t ReadLe32(std::span<const uint8_t> b, size_t at) {
  return b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (uint32_t{b[at + 3]} << 24);
}
uint64_t ReadLe64(std::span<const uint8_t> b, size_t at) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | b[at + i];
  return v;
}

std::vector<uint8_t> Copy(std::span<const uint8_t> s) { return {s.begin(), s.end()}; }

const std::vector<uint8_t> kZeroPage(kPageSize, 0);

TEST(PageCodecTest, IsZeroPage) {
  EXPECT_TRUE(IsZeroPage(kZeroPage.data()));
  for (size_t at : {size_t{0}, size_t{1}, size_t{2047}, kPageSize - 1}) {
    auto p = kZeroPage;
    p[at] = 0x80;
    EXPECT_FALSE(IsZeroPage(p.data())) << at;
  }
  // An unaligned page is fine too.
  std::vector<uint8_t> buf(kPageSize + 1, 0);
  EXPECT_TRUE(IsZeroPage(buf.data() + 1));
  buf[kPageSize] = 1;
  EXPECT_FALSE(IsZeroPage(buf.data() + 1));
}

TEST(PageCodecTest, EmptyBatchIsJustTheHeader) {
  PageBatchEncoder enc(true);
  enc.Reset(77);
  auto b = enc.Finish();
  ASSERT_EQ(b.size(), kBatchHeaderSize);
  EXPECT_EQ(ReadLe32(b, 0), 77u);
  EXPECT_EQ(ReadLe32(b, 4), 0u);
  FakeGuest g(2);
  FillGuest(g);
  auto before = g.bytes();
  uint32_t round = 0;
  BatchStats stats;
  ASSERT_TRUE(ApplyPageBatch(b, g, &round, &stats).ok());
  EXPECT_EQ(round, 77u);
  EXPECT_EQ(stats.pages, 0u);
  EXPECT_EQ(g.bytes(), before);
}

TEST(PageCodecTest, FreshEncoderWithoutResetIsAnEmptyRoundZeroBatch) {
  PageBatchEncoder enc(true);
  auto b = Copy(enc.Finish());
  ASSERT_EQ(b.size(), kBatchHeaderSize);
  EXPECT_EQ(ReadLe32(b, 0), 0u);
  EXPECT_EQ(ReadLe32(b, 4), 0u);

  PageBatchEncoder enc2(false);
  auto page = PatternPage(5);
  enc2.Add(3, page.data());
  auto b2 = enc2.Finish();
  ASSERT_EQ(b2.size(), kBatchHeaderSize + kEntryHeaderSize + kPageSize);
  EXPECT_EQ(ReadLe32(b2, 4), 1u);
  EXPECT_EQ(ReadLe64(b2, kBatchHeaderSize), 3u);
}

TEST(PageCodecTest, EncoderWithZeroDetection) {
  PageBatchEncoder enc(true);
  enc.Reset(5);
  auto page = PatternPage(9);
  enc.Add(0, kZeroPage.data());
  EXPECT_EQ(enc.size(), kBatchHeaderSize + 9);
  enc.Add(0x0102030405060708, page.data());
  EXPECT_EQ(enc.size(), kBatchHeaderSize + 9 + 9 + 4096);
  enc.Add(2, kZeroPage.data());
  EXPECT_EQ(enc.count(), 3u);
  EXPECT_EQ(enc.stats().pages, 3u);
  EXPECT_EQ(enc.stats().zero_pages, 2u);

  auto b = enc.Finish();
  ASSERT_EQ(b.size(), kBatchHeaderSize + 3 * kEntryHeaderSize + kPageSize);
  EXPECT_EQ(ReadLe32(b, 0), 5u);
  EXPECT_EQ(ReadLe32(b, 4), 3u);
  size_t at = kBatchHeaderSize;
  EXPECT_EQ(ReadLe64(b, at), 0u);
  EXPECT_EQ(b[at + 8], static_cast<uint8_t>(PageEncoding::kZero));
  at += kEntryHeaderSize;
  EXPECT_EQ(ReadLe64(b, at), 0x0102030405060708u);
  EXPECT_EQ(b[at + 8], static_cast<uint8_t>(PageEncoding::kRaw));
  EXPECT_EQ(std::memcmp(&b[at + kEntryHeaderSize], page.data(), kPageSize), 0);
  at += kEntryHeaderSize + kPageSize;
  EXPECT_EQ(ReadLe64(b, at), 2u);
  EXPECT_EQ(b[at + 8], static_cast<uint8_t>(PageEncoding::kZero));
}

TEST(PageCodecTest, EncoderWithoutZeroDetectionSendsRaw) {
  PageBatchEncoder enc(false);
  enc.Reset(1);
  enc.Add(0, kZeroPage.data());
  enc.Add(1, kZeroPage.data());
  EXPECT_EQ(enc.stats().pages, 2u);
  EXPECT_EQ(enc.stats().zero_pages, 0u);
  auto b = enc.Finish();
  ASSERT_EQ(b.size(), kBatchHeaderSize + 2 * (kEntryHeaderSize + kPageSize));
  EXPECT_EQ(b[kBatchHeaderSize + 8], static_cast<uint8_t>(PageEncoding::kRaw));
  EXPECT_EQ(std::memcmp(&b[kBatchHeaderSize + kEntryHeaderSize], kZeroPage.data(), kPageSize), 0);
}

TEST(PageCodecTest, EncoderCopiesPageAtAddTime) {
  PageBatchEncoder enc(true);
  enc.Reset(1);
  auto page = PatternPage(3);
  auto original = page;
  enc.Add(0, page.data());
  page[100] ^= 0xff;  // later changes to the source do not reach the batch
  auto b = enc.Finish();
  EXPECT_EQ(std::memcmp(&b[kBatchHeaderSize + kEntryHeaderSize], original.data(), kPageSize), 0);
}

TEST(PageCodecTest, ResetStartsANewBatch) {
  PageBatchEncoder enc(true);
  enc.Reset(1);
  auto page = PatternPage(1);
  enc.Add(0, page.data());
  enc.Add(1, kZeroPage.data());
  (void)enc.Finish();
  enc.Reset(2);
  EXPECT_EQ(enc.count(), 0u);
  EXPECT_EQ(enc.size(), kBatchHeaderSize);
  EXPECT_EQ(enc.stats().pages, 0u);
  EXPECT_EQ(enc.stats().zero_pages, 0u);
  enc.Add(4, kZeroPage.data());
  auto b = enc.Finish();
  ASSERT_EQ(b.size(), kBatchHeaderSize + kEntryHeaderSize);
  EXPECT_EQ(ReadLe32(b, 0), 2u);
  EXPECT_EQ(ReadLe32(b, 4), 1u);
  // Finish is idempotent.
  EXPECT_EQ(Copy(enc.Finish()), Copy(b));
}

TEST(PageCodecTest, ApplyWritesExactlyTheBatchPages) {
  FakeGuest src(8);
  FillGuest(src);
  std::memset(src.MutablePage(5), 0, kPageSize);
  FakeGuest dst(8);
  FillGuest(dst);
  for (uint64_t i = 0; i < 8; ++i) dst.MutablePage(i)[17] ^= 0x5a;  // differs from src
  auto dst_before = dst.bytes();

  PageBatchEncoder enc(true);
  enc.Reset(12);
  for (uint64_t i : {1, 5, 6}) enc.Add(i, src.PageData(i));
  uint32_t round = 0;
  BatchStats stats;
  Status st = ApplyPageBatch(enc.Finish(), dst, &round, &stats);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(round, 12u);
  EXPECT_EQ(stats.pages, 3u);
  EXPECT_EQ(stats.zero_pages, 1u);
  EXPECT_EQ(dst.page_writes(), 2);
  EXPECT_EQ(dst.zeroes(), 1);
  for (uint64_t i = 0; i < 8; ++i) {
    bool sent = i == 1 || i == 5 || i == 6;
    const uint8_t* expect = sent ? src.PageData(i) : &dst_before[i * kPageSize];
    EXPECT_EQ(std::memcmp(dst.PageData(i), expect, kPageSize), 0) << "page " << i;
  }
}

TEST(PageCodecTest, ApplyAccumulatesStats) {
  FakeGuest g(4);
  BatchStats stats;
  uint32_t round = 0;
  for (uint32_t r = 1; r <= 2; ++r) {
    PageBatchEncoder enc(true);
    enc.Reset(r);
    auto page = PatternPage(static_cast<uint8_t>(r));
    enc.Add(0, page.data());
    enc.Add(1, kZeroPage.data());
    ASSERT_TRUE(ApplyPageBatch(enc.Finish(), g, &round, &stats).ok());
    EXPECT_EQ(round, r);
  }
  EXPECT_EQ(stats.pages, 4u);
  EXPECT_EQ(stats.zero_pages, 2u);
  // Stats are optional.
  PageBatchEncoder enc(true);
  enc.Reset(3);
  EXPECT_TRUE(ApplyPageBatch(enc.Finish(), g, &round, nullptr).ok());
  EXPECT_EQ(round, 3u);
}

TEST(PageCodecTest, ZeroEntryClearsANonZeroPage) {
  FakeGuest g(3);
  FillGuest(g);
  auto before = g.bytes();
  PageBatchEncoder enc(true);
  enc.Reset(4);
  enc.Add(1, kZeroPage.data());
  uint32_t round = 0;
  ASSERT_TRUE(ApplyPageBatch(enc.Finish(), g, &round, nullptr).ok());
  EXPECT_EQ(round, 4u);
  EXPECT_TRUE(IsZeroPage(g.PageData(1)));
  EXPECT_EQ(std::memcmp(g.PageData(0), &before[0], kPageSize), 0);
  EXPECT_EQ(std::memcmp(g.PageData(2), &before[2 * kPageSize], kPageSize), 0);
}

TEST(PageCodecTest, RoundTripIntoSyntheticGuestMatchesDigest) {
  constexpr uint64_t kPages = 64;
  FakeGuest src(kPages);
  FillGuest(src);
  for (uint64_t i = 0; i < kPages; i += 3) std::memset(src.MutablePage(i), 0, kPageSize);

  vm::GuestSpec spec;
  spec.id = "vm-dst";
  spec.memory_bytes = kPages * kPageSize;
  auto dst = vm::SyntheticGuest::CreateIncoming(spec);
  ASSERT_TRUE(dst.ok()) << dst.status().ToString();
  // Dirty the destination first so kZero entries must really clear pages.
  auto junk = PatternPage(0xee);
  for (uint64_t i = 0; i < kPages; ++i) (*dst)->WritePage(i, junk.data());

  PageBatchEncoder enc(true);
  BatchStats stats;
  uint32_t round = 0;
  for (uint64_t first = 0; first < kPages; first += 16) {
    enc.Reset(static_cast<uint32_t>(first / 16));
    for (uint64_t i = first; i < first + 16; ++i) enc.Add(i, src.PageData(i));
    Status st = ApplyPageBatch(enc.Finish(), **dst, &round, &stats);
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
  EXPECT_EQ(round, 3u);
  EXPECT_EQ(stats.pages, kPages);
  EXPECT_EQ(stats.zero_pages, (kPages + 2) / 3);
  EXPECT_EQ((*dst)->Digest(), src.Digest());
}

// Malformed batches: each must be a Protocol error and leave the guest byte-for-byte as it was.
class PageCodecMalformedTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kPages = 4;

  void SetUp() override {
    FillGuest(guest_);
    before_ = guest_.bytes();
    digest_before_ = guest_.Digest();
  }

  // A valid batch: page 0 raw, page 1 zero, page 2 raw.
  std::vector<uint8_t> ValidBatch() {
    PageBatchEncoder enc(true);
    enc.Reset(9);
    auto a = PatternPage(0xa0), c = PatternPage(0xc0);
    enc.Add(0, a.data());
    enc.Add(1, kZeroPage.data());
    enc.Add(2, c.data());
    return Copy(enc.Finish());
  }

  void ExpectRejected(const std::vector<uint8_t>& batch, const std::string& needle) {
    uint32_t round = 12345;
    BatchStats stats;
    Status st = ApplyPageBatch(batch, guest_, &round, &stats);
    EXPECT_EQ(st.code(), StatusCode::kProtocol) << st.ToString();
    EXPECT_NE(st.message().find(needle), std::string::npos)
        << "'" << st.message() << "' lacks '" << needle << "'";
    EXPECT_EQ(round, 12345u) << "round written on failure";
    EXPECT_EQ(stats.pages, 0u);
    EXPECT_EQ(stats.zero_pages, 0u);
    EXPECT_EQ(guest_.page_writes(), 0);
    EXPECT_EQ(guest_.zeroes(), 0);
    EXPECT_TRUE(guest_.bytes() == before_) << "guest memory changed";
    EXPECT_EQ(guest_.Digest(), digest_before_);
  }

  FakeGuest guest_{kPages};
  std::vector<uint8_t> before_;
  std::string digest_before_;
};

TEST_F(PageCodecMalformedTest, ValidBatchIsAccepted) {
  uint32_t round = 0;
  ASSERT_TRUE(ApplyPageBatch(ValidBatch(), guest_, &round, nullptr).ok());
  EXPECT_EQ(round, 9u);
  EXPECT_EQ(guest_.page_writes(), 2);
  EXPECT_EQ(guest_.zeroes(), 1);
}

TEST_F(PageCodecMalformedTest, TruncatedHeader) {
  auto b = ValidBatch();
  for (size_t n : {0, 1, 4, 7}) {
    ExpectRejected(std::vector<uint8_t>(b.begin(), b.begin() + n), "header");
  }
}

TEST_F(PageCodecMalformedTest, TruncatedEntry) {
  auto b = ValidBatch();
  // Cut inside the first entry header, inside the first body, inside the last entry's body,
  // and one byte short of the end.
  for (size_t n : {kBatchHeaderSize + 1, kBatchHeaderSize + kEntryHeaderSize + 100,
                   kBatchHeaderSize + 2 * kEntryHeaderSize + kPageSize + 4, b.size() - 1}) {
    ExpectRejected(std::vector<uint8_t>(b.begin(), b.begin() + n), "truncated");
  }
}

TEST_F(PageCodecMalformedTest, CountLargerThanEntries) {
  auto b = ValidBatch();
  b[4] = 4;  // claims four entries, carries three
  ExpectRejected(b, "truncated");
  b[4] = 0xff, b[5] = 0xff, b[6] = 0xff, b[7] = 0xff;
  ExpectRejected(b, "truncated");
}

TEST_F(PageCodecMalformedTest, TrailingBytes) {
  auto b = ValidBatch();
  b.push_back(0);
  ExpectRejected(b, "trailing");
  auto fewer = ValidBatch();
  fewer[4] = 2;  // claims two entries, carries three
  ExpectRejected(fewer, "trailing");
}

TEST_F(PageCodecMalformedTest, UnknownEncoding) {
  auto b = ValidBatch();
  // The last entry's encoding byte: earlier valid entries must not be applied either.
  b[kBatchHeaderSize + 2 * kEntryHeaderSize + kPageSize + 8] = 7;
  ExpectRejected(b, "encoding 7");
}

TEST_F(PageCodecMalformedTest, IndexBeyondGuest) {
  auto b = ValidBatch();
  size_t last = kBatchHeaderSize + 2 * kEntryHeaderSize + kPageSize;
  b[last] = kPages;  // index 4 in a 4-page guest
  ExpectRejected(b, "page index 4");
  for (int i = 0; i < 8; ++i) b[last + i] = 0xff;
  ExpectRejected(b, "beyond guest");
}

}  // namespace
}  // namespace dwcp::hde
