// Round trips through PageEncoder and PageDecoder: every page pattern with every codec,
// dedup and delta semantics, the plan/compress split, and the codec choice.
#include "hde/page_encoder.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <future>
#include <string>
#include <vector>

#include "common/clock.h"
#include "hde/page_decoder.h"
#include "hde_test_util.h"

namespace dwcp::hde {
namespace {

using testing::ContentModel;
using testing::MemoryGuest;
using testing::Range;
using testing::Scribble;
using vm::kPageSize;
using vm::PageClass;

constexpr double kGbit = 1e9 / 8;
constexpr double kMbit = 1e6 / 8;

const ContentModel& Model() {
  static const ContentModel* model = new ContentModel(1024, 7);
  return *model;
}

// Encodes `indices` of `src` in batches of `batch` pages and applies them to `dst`.
// Returns the summed stats.
EncodeStats Transfer(PageEncoder& enc, PageDecoder& dec, const MemoryGuest& src, MemoryGuest& dst,
                     const std::vector<uint64_t>& indices, uint32_t round, size_t batch = 100,
                     double link = 1 * kGbit) {
  EncodeStats sum;
  for (size_t at = 0; at < indices.size(); at += batch) {
    size_t n = std::min(batch, indices.size() - at);
    auto e = enc.Encode(round, std::span(indices).subspan(at, n), src, link);
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    if (!e.ok()) return sum;
    const EncodeStats& s = e->stats();
    EXPECT_EQ(s.zero_pages + s.dedup_pages + s.delta_pages + s.raw_pages, s.pages);
    uint64_t by_pattern = 0;
    for (auto p : s.pattern_pages) by_pattern += p;
    EXPECT_EQ(by_pattern, s.pages);
    EXPECT_EQ(s.output_bytes, e->payload().size());
    EXPECT_EQ(s.input_bytes, n * kPageSize);
    DecodeStats ds;
    Status st = dec.Apply(e->payload(), dst, &ds);
    EXPECT_TRUE(st.ok()) << st.ToString();
    EXPECT_EQ(ds.pages, n);
    EXPECT_EQ(ds.round, round);
    EXPECT_EQ(ds.zero_pages, s.zero_pages);
    EXPECT_EQ(ds.dedup_pages, s.dedup_pages);
    EXPECT_EQ(ds.delta_pages, s.delta_pages);
    EXPECT_EQ(ds.raw_pages, s.raw_pages);
    sum.pages += s.pages;
    sum.zero_pages += s.zero_pages;
    sum.dedup_pages += s.dedup_pages;
    sum.delta_pages += s.delta_pages;
    sum.raw_pages += s.raw_pages;
    sum.stored_bytes += s.stored_bytes;
    sum.input_bytes += s.input_bytes;
    sum.output_bytes += s.output_bytes;
    sum.delta_base_hits += s.delta_base_hits;
    sum.delta_base_misses += s.delta_base_misses;
    for (int p = 0; p < kPatternCount; ++p) sum.pattern_pages[p] += s.pattern_pages[p];
    if (s.codec != Codec::kNone) sum.codec = s.codec;
  }
  return sum;
}

void ExpectSameMemory(const MemoryGuest& a, const MemoryGuest& b) {
  ASSERT_EQ(a.page_count(), b.page_count());
  for (uint64_t i = 0; i < a.page_count(); ++i) {
    ASSERT_EQ(std::memcmp(a.PageData(i), b.PageData(i), kPageSize), 0) << "page " << i;
  }
  EXPECT_EQ(a.Digest(), b.Digest());
}

struct CodecCase {
  std::string name;
  CodecPolicy policy;
  int level;
};

class HdeRoundTripTest : public ::testing::TestWithParam<CodecCase> {
 protected:
  EncoderConfig Config() const {
    EncoderConfig c;
    c.codec = GetParam().policy;
    c.zstd_level = GetParam().level;
    c.delta_cache_bytes = 16 << 20;
    return c;
  }
  // The codec the batches should use when compression pays.
  void ExpectCodec(Codec seen) const {
    switch (GetParam().policy) {
      case CodecPolicy::kNone:
        EXPECT_EQ(seen, Codec::kNone);
        break;
      case CodecPolicy::kLz4:
        EXPECT_EQ(seen, Codec::kLz4);
        break;
      case CodecPolicy::kZstd:
        EXPECT_EQ(seen, Codec::kZstd);
        break;
      case CodecPolicy::kAuto:
        break;
    }
  }
};

TEST_P(HdeRoundTripTest, AllPatterns) {
  constexpr uint64_t kPages = 600;
  MemoryGuest src(kPages), dst(kPages);
  Model().FillPrefix(src);
  for (uint64_t i = 0; i < kPages; ++i) std::memset(dst.MutablePage(i), 0xee, kPageSize);
  PageEncoder enc(Config(), kPages);
  PageDecoder dec(kPages);
  EncodeStats s = Transfer(enc, dec, src, dst, Range(0, kPages), 1);
  ExpectSameMemory(src, dst);
  EXPECT_GT(s.zero_pages, kPages / 8);
  EXPECT_GT(s.dedup_pages, kPages / 20) << "duplicate-class pages share 64 templates";
  EXPECT_GT(s.stored_bytes, 0u) << "random pages are stored";
  EXPECT_EQ(s.delta_pages, 0u) << "nothing was sent before";
  EXPECT_GT(s.pattern_pages[static_cast<int>(Pattern::kText)], 0u);
  EXPECT_GT(s.pattern_pages[static_cast<int>(Pattern::kBinary)], 0u);
  EXPECT_GT(s.pattern_pages[static_cast<int>(Pattern::kRandom)], 0u);
  ExpectCodec(s.codec);
  // Zero pages and references alone give ~1.4x on this mix; a codec doubles that.
  const double ratio = static_cast<double>(s.input_bytes) / s.output_bytes;
  EXPECT_GT(ratio, GetParam().policy == CodecPolicy::kNone ? 1.3 : 2.0);
}

TEST_P(HdeRoundTripTest, EachPatternAlone) {
  for (PageClass c : {PageClass::kZero, PageClass::kDuplicate, PageClass::kText, PageClass::kBinary,
                      PageClass::kRandom}) {
    constexpr uint64_t kPages = 64;
    MemoryGuest src(kPages), dst(kPages);
    for (uint64_t i = 0; i < kPages; ++i) src.Set(i, Model().Page(c, i));
    PageEncoder enc(Config(), kPages);
    PageDecoder dec(kPages);
    Transfer(enc, dec, src, dst, Range(0, kPages), 1, 64);
    ExpectSameMemory(src, dst);
  }
}

TEST_P(HdeRoundTripTest, DirtyRoundsUseDeltaAndDedup) {
  constexpr uint64_t kPages = 400;
  MemoryGuest src(kPages), dst(kPages);
  Model().FillPrefix(src);
  PageEncoder enc(Config(), kPages);
  PageDecoder dec(kPages);
  Transfer(enc, dec, src, dst, Range(0, kPages), 1);
  ExpectSameMemory(src, dst);

  // Guest activity: small writes, whole-page rewrites, pages freed, pages copied, pages
  // written with what they already held.
  std::vector<uint64_t> dirty;
  for (uint64_t i = 0; i < 80; ++i) {
    uint64_t p = i * 5;
    Scribble(src.MutablePage(p), (i * 97) % 3500, 64 + i * 5, i);
    dirty.push_back(p);
  }
  for (uint64_t p = 1; p < 100; p += 10) {
    Scribble(src.MutablePage(p), 0, kPageSize, p + 1000);
    dirty.push_back(p);
  }
  for (uint64_t p = 2; p < 100; p += 10) {
    std::memset(src.MutablePage(p), 0, kPageSize);
    dirty.push_back(p);
  }
  for (uint64_t p = 303; p < 400; p += 10) {
    std::memcpy(src.MutablePage(p), src.PageData(p - 300), kPageSize);
    dirty.push_back(p);
  }
  for (uint64_t p = 204; p < 300; p += 10) dirty.push_back(p);  // unchanged
  std::sort(dirty.begin(), dirty.end());
  dirty.erase(std::unique(dirty.begin(), dirty.end()), dirty.end());

  EncodeStats s = Transfer(enc, dec, src, dst, dirty, 2, 64);
  ExpectSameMemory(src, dst);
  EXPECT_GE(s.delta_pages, 60u);
  EXPECT_GE(s.dedup_pages, 15u);
  EXPECT_GT(s.delta_base_hits, 60u);
  // The scribbles are ~128 bytes: the round costs far less than its pages.
  EXPECT_LT(s.output_bytes * 4, s.input_bytes);
}

INSTANTIATE_TEST_SUITE_P(HdeCodecs, HdeRoundTripTest,
                         ::testing::Values(CodecCase{"none", CodecPolicy::kNone, 0},
                                           CodecCase{"lz4", CodecPolicy::kLz4, 0},
                                           CodecCase{"zstd1", CodecPolicy::kZstd, 1},
                                           CodecCase{"zstd9", CodecPolicy::kZstd, 9},
                                           CodecCase{"zstd_auto", CodecPolicy::kZstd, 0},
                                           CodecCase{"auto", CodecPolicy::kAuto, 0}),
                         [](const auto& info) { return info.param.name; });

// A page whose content is new (never sent).
std::vector<uint8_t> Fresh(uint64_t salt) {
  std::vector<uint8_t> p(kPageSize);
  Scribble(p.data(), 0, kPageSize, salt);
  return p;
}

class HdeEncoderTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kPages = 32;
  void SetUp() override {
    for (uint64_t i = 0; i < kPages; ++i) src_.Set(i, Fresh(i));
  }
  // Encodes `indices` as one batch, applies it, checks dst == src, returns the stats.
  EncodeStats Batch(PageEncoder& enc, PageDecoder& dec, std::vector<uint64_t> indices) {
    auto e = enc.Encode(1, indices, src_, 0);
    EXPECT_TRUE(e.ok());
    Status st = dec.Apply(e->payload(), dst_);
    EXPECT_TRUE(st.ok()) << st.ToString();
    ExpectSameMemory(src_, dst_);
    return e->stats();
  }
  MemoryGuest src_{kPages}, dst_{kPages};
};

TEST_F(HdeEncoderTest, ReferencesResolveInEntryOrder) {
  PageEncoder enc(EncoderConfig{}, kPages);
  PageDecoder dec(kPages);
  Batch(enc, dec, Range(0, kPages));
  const auto x = Fresh(100), y = Fresh(101), z = Fresh(102);

  // Page 7 refers to page 3, which changed earlier in the same batch.
  src_.Set(3, x);
  src_.Set(7, x);
  EncodeStats s = Batch(enc, dec, {3, 7});
  EXPECT_EQ(s.raw_pages, 1u);
  EXPECT_EQ(s.dedup_pages, 1u);

  // Page 9 refers to page 7 (the last page sent with x), which changes later in the same
  // batch: 9 gets what 7 held before the batch, then 7 gets y.
  src_.Set(7, y);
  src_.Set(9, x);
  src_.Set(3, z);
  s = Batch(enc, dec, {9, 3, 7});
  EXPECT_EQ(s.dedup_pages, 1u);
  EXPECT_EQ(s.raw_pages, 2u);

  // Unchanged pages sent again refer to themselves; page 11 refers to 3's new content.
  src_.Set(11, z);
  s = Batch(enc, dec, {3, 11, 9});
  EXPECT_EQ(s.dedup_pages, 3u);

  // The same page twice in one batch: the second entry refers to the first.
  Scribble(src_.MutablePage(20), 100, 50, 7);
  s = Batch(enc, dec, {20, 20});
  EXPECT_EQ(s.delta_pages, 1u);
  EXPECT_EQ(s.dedup_pages, 1u);
}

TEST_F(HdeEncoderTest, CopyOfACopyWhoseSourceChangesLaterInTheBatch) {
  PageEncoder enc(EncoderConfig{}, kPages);
  PageDecoder dec(kPages);
  Batch(enc, dec, Range(0, kPages));
  // The destination holds a = page 2. In one batch: page 5 gets a (a copy of 2), page 2
  // gets new content, page 9 gets a (a copy of 5, whose content came from 2 before 2
  // changed). The decoder must not let page 9 see page 2's new content.
  const auto a = src_.Page(2);
  src_.Set(5, a);
  src_.Set(2, Fresh(200));
  src_.Set(9, a);
  EncodeStats s = Batch(enc, dec, {5, 2, 9});
  EXPECT_EQ(s.dedup_pages, 2u);
  EXPECT_EQ(s.raw_pages, 1u);
}

TEST_F(HdeEncoderTest, DeltaOntoAPageChangedEarlierInTheBatch) {
  EncoderConfig c;
  c.dedup = false;
  PageEncoder enc(c, kPages);
  PageDecoder dec(kPages);
  Batch(enc, dec, Range(0, kPages));
  Scribble(src_.MutablePage(4), 10, 100, 1);
  // Without dedup the second entry is a delta (no change) against the first entry's result.
  EncodeStats s = Batch(enc, dec, {4, 4, 5});
  EXPECT_EQ(s.delta_pages, 3u);
  EXPECT_EQ(s.dedup_pages, 0u);
}

TEST_F(HdeEncoderTest, DeltaNeedsItsBase) {
  EncoderConfig c;
  c.delta_cache_bytes = 0;
  PageEncoder enc(c, kPages);
  PageDecoder dec(kPages);
  std::memset(src_.MutablePage(1), 0, kPageSize);
  Batch(enc, dec, Range(0, kPages));
  Scribble(src_.MutablePage(0), 10, 100, 1);
  // Page 1 was sent as zeroes: its base is known without a cache.
  Scribble(src_.MutablePage(1), 500, 64, 2);
  EncodeStats s = Batch(enc, dec, {0, 1});
  EXPECT_EQ(s.raw_pages, 1u);
  EXPECT_EQ(s.delta_pages, 1u);
  EXPECT_EQ(s.delta_base_hits, 1u);
  EXPECT_EQ(s.delta_base_misses, 1u);
  EXPECT_EQ(enc.delta_cache().size(), 0u);

  // With delta off, nothing is a delta.
  c.delta = false;
  c.delta_cache_bytes = 1 << 20;
  PageEncoder off(c, kPages);
  PageDecoder off_dec(kPages);
  MemoryGuest other(kPages);
  auto e = off.Encode(1, Range(0, kPages), src_, 0);
  ASSERT_TRUE(off_dec.Apply(e->payload(), other).ok());
  Scribble(src_.MutablePage(0), 10, 100, 3);
  e = off.Encode(1, std::vector<uint64_t>{0}, src_, 0);
  EXPECT_EQ(e->stats().delta_pages, 0u);
  ASSERT_TRUE(off_dec.Apply(e->payload(), other).ok());
  EXPECT_EQ(std::memcmp(other.PageData(0), src_.PageData(0), kPageSize), 0);
}

TEST_F(HdeEncoderTest, SmallCacheEvictsButKeepsHotPages) {
  EncoderConfig c;
  c.delta_cache_bytes = 4 * kPageSize;
  PageEncoder enc(c, kPages);
  PageDecoder dec(kPages);
  Batch(enc, dec, Range(0, kPages));
  EXPECT_EQ(enc.delta_cache().size(), 4u) << "first sends fill free slots only";
  // Pages 8 and 9 are written every round; two others each round once.
  uint64_t deltas = 0, hot_deltas = 0;
  for (int round = 0; round < 6; ++round) {
    std::vector<uint64_t> dirty = {8, 9, uint64_t(16 + 2 * round), uint64_t(17 + 2 * round)};
    for (uint64_t p : dirty) Scribble(src_.MutablePage(p), 64 * round, 80, p * 10 + round);
    auto e = enc.Encode(1, dirty, src_, 0);
    ASSERT_TRUE(e.ok());
    ASSERT_TRUE(dec.Apply(e->payload(), dst_).ok());
    ExpectSameMemory(src_, dst_);
    deltas += e->stats().delta_pages;
    if (round > 0) hot_deltas += e->stats().delta_pages;
  }
  EXPECT_GT(enc.delta_cache().evictions(), 0u);
  EXPECT_EQ(enc.delta_cache().size(), 4u);
  EXPECT_GE(hot_deltas, 2u * 5) << "pages 8 and 9 stay cached";
  EXPECT_LT(deltas, 4u * 6);
}

TEST_F(HdeEncoderTest, PlanRejectsBadInputWithoutSideEffects) {
  EncoderConfig c;
  c.max_batch_pages = 4;
  PageEncoder enc(c, kPages);
  MemoryGuest wrong(kPages + 1);
  EXPECT_EQ(enc.Plan(1, Range(0, 2), wrong, 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(enc.Plan(1, std::vector<uint64_t>{0, kPages}, src_, 0).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(enc.Plan(1, Range(0, 5), src_, 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(enc.next_seq(), 0u);
  EXPECT_FALSE(enc.model().WasSent(0));
  // An empty batch is fine.
  auto e = enc.Encode(1, {}, src_, 0);
  ASSERT_TRUE(e.ok());
  PageDecoder dec(kPages);
  EXPECT_TRUE(dec.Apply(e->payload(), dst_).ok());
  EXPECT_EQ(dst_.writes(), 0);
}

TEST_F(HdeEncoderTest, ConfigValidation) {
  EXPECT_TRUE(EncoderConfig{}.Validate().ok());
  EncoderConfig c;
  c.zstd_level = 99;
  EXPECT_EQ(c.Validate().code(), StatusCode::kInvalidArgument);
  c = {};
  c.delta_cache_bytes = 1000;
  EXPECT_EQ(c.Validate().code(), StatusCode::kInvalidArgument);
  c = {};
  c.max_batch_pages = 0;
  EXPECT_EQ(c.Validate().code(), StatusCode::kInvalidArgument);
  c = {};
  c.compress_threads = 0;
  EXPECT_EQ(c.Validate().code(), StatusCode::kInvalidArgument);
  c = {};
  c.zstd_level = -3;  // fast levels are fine
  EXPECT_TRUE(c.Validate().ok());
}

TEST(HdeEncoderParallelTest, CompressOnThreadsApplyInOrder) {
  constexpr uint64_t kPages = 1024;
  MemoryGuest src(kPages), dst(kPages);
  Model().FillPrefix(src);
  EncoderConfig c;
  c.codec = CodecPolicy::kZstd;
  c.zstd_level = 3;
  c.compress_threads = 4;
  PageEncoder enc(c, kPages);
  PageDecoder dec(kPages);
  std::vector<PlannedBatch> planned;
  for (uint64_t at = 0; at < kPages; at += 128) {
    auto p = enc.Plan(1, Range(at, 128), src, 0);
    ASSERT_TRUE(p.ok());
    planned.push_back(std::move(p).value());
  }
  std::vector<std::future<EncodedBatch>> futures;
  for (auto& p : planned) {
    futures.push_back(std::async(std::launch::async, [&enc, b = std::move(p)]() mutable {
      return enc.Compress(std::move(b));
    }));
  }
  std::vector<EncodedBatch> done;
  for (auto& f : futures) done.push_back(f.get());
  // Parse in parallel too, then apply in sequence order.
  std::vector<std::future<Result<ParsedBatch>>> parsed;
  for (auto& e : done) {
    enc.Observe(e.stats());
    parsed.push_back(std::async(std::launch::async, [&dec, &e] { return dec.Parse(e.payload()); }));
  }
  for (auto& f : parsed) {
    auto p = f.get();
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    ASSERT_TRUE(dec.Apply(*p, dst).ok());
  }
  ExpectSameMemory(src, dst);
  EXPECT_GT(enc.selector().estimate({Codec::kZstd, 3})->samples, 0u);
}

TEST(HdeCodecChoiceTest, FastLinkSendsFastSlowLinkSqueezes) {
  // A fake clock keeps measured times at zero: the choice rests on the injected estimates.
  FakeClock clock;
  constexpr uint64_t kPages = 256;
  MemoryGuest src(kPages), dst(kPages);
  Model().FillPrefix(src);
  EncoderConfig c;
  c.explore_every = 0;
  auto seed = [](CodecSelector& s) {
    s.SetEstimate({Codec::kNone, 0}, 8e9, 1.0);
    s.SetEstimate({Codec::kLz4, 0}, 800e6, 2.2);
    s.SetEstimate({Codec::kZstd, 1}, 400e6, 3.0);
    s.SetEstimate({Codec::kZstd, 3}, 200e6, 3.2);
    s.SetEstimate({Codec::kZstd, 6}, 80e6, 3.35);
    s.SetEstimate({Codec::kZstd, 9}, 50e6, 3.45);
    s.SetEstimate({Codec::kZstd, 12}, 25e6, 3.5);
    s.SetEstimate({Codec::kZstd, 15}, 10e6, 3.55);
    s.SetEstimate({Codec::kZstd, 19}, 3e6, 3.8);
  };
  PageEncoder fast(c, kPages, clock), slow(c, kPages, clock);
  seed(fast.selector());
  seed(slow.selector());
  auto f = fast.Plan(1, Range(0, kPages), src, 10 * 1000 * kMbit);
  auto s = slow.Plan(1, Range(0, kPages), src, 100 * kMbit);
  ASSERT_TRUE(f.ok() && s.ok());
  EXPECT_TRUE(f->setting().codec == Codec::kNone || f->setting().codec == Codec::kLz4)
      << SettingName(f->setting());
  EXPECT_EQ(s->setting().codec, Codec::kZstd);
  EXPECT_GE(s->setting().level, 6) << SettingName(s->setting());
  EXPECT_EQ(s->stats().selected, s->setting());
  // Both decode.
  EncodedBatch fe = fast.Compress(std::move(f).value());
  EncodedBatch se = slow.Compress(std::move(s).value());
  EXPECT_LT(se.payload().size(), fe.payload().size());
  EXPECT_EQ(fe.stats().compress_seconds, 0);
  PageDecoder d1(kPages), d2(kPages);
  MemoryGuest dst2(kPages);
  ASSERT_TRUE(d1.Apply(fe.payload(), dst).ok());
  ASSERT_TRUE(d2.Apply(se.payload(), dst2).ok());
  ExpectSameMemory(src, dst);
  ExpectSameMemory(src, dst2);
}

TEST(HdePageClassifierTest, ClassifiesTheContentModel) {
  const ContentModel& m = Model();
  auto share = [&](PageClass c, Pattern want) {
    const auto& idx = m.Indices(c);
    int hit = 0;
    for (uint64_t i : idx) hit += ClassifyContent(m.guest().PageData(i)) == want;
    return static_cast<double>(hit) / static_cast<double>(idx.size());
  };
  EXPECT_GE(share(PageClass::kText, Pattern::kText), 0.95);
  EXPECT_GE(share(PageClass::kBinary, Pattern::kBinary), 0.95);
  EXPECT_GE(share(PageClass::kRandom, Pattern::kRandom), 0.97);
  EXPECT_EQ(share(PageClass::kDuplicate, Pattern::kRandom), 0.0);
  EXPECT_STREQ(PatternName(Pattern::kDuplicate), "duplicate");
}

}  // namespace
}  // namespace dwcp::hde
