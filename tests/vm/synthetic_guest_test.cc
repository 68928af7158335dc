#include "vm/synthetic_guest.h"

#include <gtest/gtest.h>
#include <xxhash.h>
#include <zstd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace dwcp::vm {
namespace {

using std::chrono::milliseconds;
using Steady = std::chrono::steady_clock;

constexpr uint64_t kMiB = uint64_t{1} << 20;

GuestSpec Spec(uint64_t bytes, uint64_t rate = 0, uint64_t seed = 1) {
  GuestSpec s;
  s.id = "vm-test";
  s.memory_bytes = bytes;
  s.dirty_rate = rate;
  s.seed = seed;
  return s;
}

std::unique_ptr<SyntheticGuest> MustBoot(const GuestSpec& spec,
                                         Clock& clock = RealClock::Instance()) {
  auto g = SyntheticGuest::Boot(spec, clock);
  EXPECT_TRUE(g.ok()) << g.status().ToString();
  return std::move(g).value();
}

std::unique_ptr<SyntheticGuest> MustCreateIncoming(const GuestSpec& spec) {
  auto g = SyntheticGuest::CreateIncoming(spec);
  EXPECT_TRUE(g.ok()) << g.status().ToString();
  return std::move(g).value();
}

bool IsZero(const uint8_t* p) {
  static const std::array<uint8_t, kPageSize> kZeroes{};
  return std::memcmp(p, kZeroes.data(), kPageSize) == 0;
}

// Polls `pred` every millisecond for up to `limit`.
template <typename Pred>
bool WaitFor(Pred pred, milliseconds limit = milliseconds(3000)) {
  const auto deadline = Steady::now() + limit;
  while (!pred()) {
    if (Steady::now() > deadline) return false;
    std::this_thread::sleep_for(milliseconds(1));
  }
  return true;
}

// Compressed size / original size of the pages of class `c`, each compressed on its own
// (the unit a migration sends) with zstd level 1.
double ZstdRatio(const SyntheticGuest& g, PageClass c) {
  std::vector<uint8_t> out(ZSTD_compressBound(kPageSize));
  uint64_t in_bytes = 0, out_bytes = 0;
  for (uint64_t i = 0; i < g.page_count(); ++i) {
    if (ClassOfPage(g.spec().seed, i) != c) continue;
    size_t n = ZSTD_compress(out.data(), out.size(), g.PageData(i), kPageSize, 1);
    EXPECT_FALSE(ZSTD_isError(n));
    in_bytes += kPageSize;
    out_bytes += n;
  }
  EXPECT_GT(in_bytes, 0u);
  return static_cast<double>(out_bytes) / static_cast<double>(in_bytes);
}

TEST(ClassOfPageTest, DistributionMatchesTargets) {
  const uint64_t pages = 64 * kMiB / kPageSize;
  std::array<uint64_t, 5> counts{};
  for (uint64_t i = 0; i < pages; ++i) ++counts[static_cast<int>(ClassOfPage(7, i))];
  const std::array<double, 5> targets = {0.25, 0.15, 0.25, 0.20, 0.15};
  for (int c = 0; c < 5; ++c) {
    double share = static_cast<double>(counts[c]) / pages;
    EXPECT_NEAR(share, targets[c], 0.02) << PageClassName(static_cast<PageClass>(c));
  }
}

TEST(ClassOfPageTest, DeterministicPerSeed) {
  uint64_t differ = 0;
  for (uint64_t i = 0; i < 10000; ++i) {
    ASSERT_EQ(ClassOfPage(3, i), ClassOfPage(3, i));
    differ += ClassOfPage(3, i) != ClassOfPage(4, i);
  }
  // Independent seeds agree on a page's class with probability ~0.22.
  EXPECT_GT(differ, 7000u);
}

TEST(SyntheticGuestTest, InvalidSpecIsRejected) {
  for (uint64_t bytes : {uint64_t{0}, uint64_t{4097}, uint64_t{4095}, 3 * kMiB + 1}) {
    auto g = SyntheticGuest::Boot(Spec(bytes));
    ASSERT_FALSE(g.ok()) << bytes;
    EXPECT_EQ(g.status().code(), StatusCode::kInvalidArgument) << g.status().ToString();
    auto in = SyntheticGuest::CreateIncoming(Spec(bytes));
    ASSERT_FALSE(in.ok());
    EXPECT_EQ(in.status().code(), StatusCode::kInvalidArgument);
  }
}

TEST(SyntheticGuestTest, UnmappableMemoryIsAnError) {
  auto g = SyntheticGuest::CreateIncoming(Spec(uint64_t{1} << 60));
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(g.status().message().find("cannot map"), std::string::npos);
}

TEST(SyntheticGuestTest, BootedContentFollowsTheModel) {
  auto g = MustBoot(Spec(64 * kMiB, 0, 11));
  EXPECT_TRUE(g->running());
  EXPECT_EQ(g->page_count(), 16384u);
  std::set<std::string> duplicates;
  uint64_t zero_class = 0;
  for (uint64_t i = 0; i < g->page_count(); ++i) {
    const uint8_t* p = g->PageData(i);
    PageClass c = ClassOfPage(11, i);
    if (c == PageClass::kZero) {
      ++zero_class;
      ASSERT_TRUE(IsZero(p)) << i;
    } else {
      ASSERT_FALSE(IsZero(p)) << i << " " << PageClassName(c);
    }
    if (c == PageClass::kDuplicate) duplicates.emplace(reinterpret_cast<const char*>(p), kPageSize);
    if (c == PageClass::kText) {
      for (size_t b = 0; b < kPageSize; ++b) {
        ASSERT_TRUE(p[b] == '\n' || (p[b] >= 0x20 && p[b] < 0x7f)) << i << "@" << b;
      }
    }
  }
  EXPECT_NEAR(static_cast<double>(zero_class) / g->page_count(), 0.25, 0.02);
  EXPECT_LE(duplicates.size(), SyntheticGuest::kTemplatePages);
  EXPECT_GE(duplicates.size(), SyntheticGuest::kTemplatePages - 4);
}

TEST(SyntheticGuestTest, CompressibilityPerClass) {
  auto g = MustBoot(Spec(64 * kMiB, 0, 5));
  const double random = ZstdRatio(*g, PageClass::kRandom);
  const double text = ZstdRatio(*g, PageClass::kText);
  const double binary = ZstdRatio(*g, PageClass::kBinary);
  std::printf("zstd-1 per page: random %.3f, text %.2fx, binary %.2fx\n", random, 1 / text,
              1 / binary);
  EXPECT_GT(random, 0.95);
  EXPECT_GT(1 / text, 2.0);
  EXPECT_GT(1 / binary, 2.0);
  EXPECT_LT(1 / binary, 3.5);
}

TEST(SyntheticGuestTest, DigestIsDeterministicAndSeedDependent) {
  auto a = MustBoot(Spec(16 * kMiB, 0, 1));
  auto b = MustBoot(Spec(16 * kMiB, 0, 1));
  auto c = MustBoot(Spec(16 * kMiB, 0, 2));
  const std::string da = a->Digest();
  ASSERT_EQ(da.size(), 32u);
  EXPECT_EQ(da.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(da, b->Digest());
  EXPECT_NE(da, c->Digest());
  // An all-zero guest of the same size differs too.
  EXPECT_NE(da, MustCreateIncoming(Spec(16 * kMiB))->Digest());
}

// Pins the digest definition the destination computes independently.
TEST(SyntheticGuestTest, DigestMatchesItsDefinition) {
  const uint64_t bytes = 3 * kMiB + 5 * kPageSize;
  auto g = MustBoot(Spec(bytes, 0, 9));
  std::vector<uint8_t> concat;
  for (uint64_t off = 0; off < bytes; off += kPageSize) {
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(g->PageData(0) + off, kPageSize));
    concat.insert(concat.end(), c.digest, c.digest + 16);
  }
  ASSERT_EQ(concat.size(), (bytes / kPageSize) * 16);
  XXH128_hash_t h = XXH3_128bits(concat.data(), concat.size());
  char want[33];
  std::snprintf(want, sizeof(want), "%016llx%016llx", static_cast<unsigned long long>(h.high64),
                static_cast<unsigned long long>(h.low64));
  EXPECT_EQ(g->Digest(), want);
  EXPECT_EQ(MemoryDigest(g->PageData(0), bytes), want);
}

TEST(SyntheticGuestTest, IncomingGuestIsZeroAndPaused) {
  auto g = MustCreateIncoming(Spec(8 * kMiB, 40 * kMiB, 3));
  EXPECT_FALSE(g->running());
  for (uint64_t i = 0; i < g->page_count(); ++i) ASSERT_TRUE(IsZero(g->PageData(i)));
  std::this_thread::sleep_for(milliseconds(30));
  EXPECT_EQ(g->pages_written(), 0u);

  std::vector<uint8_t> page(kPageSize, 0xab);
  g->WritePage(5, page.data());
  EXPECT_EQ(std::memcmp(g->PageData(5), page.data(), kPageSize), 0);
  g->ZeroPage(5);
  g->ZeroPage(6);
  EXPECT_TRUE(IsZero(g->PageData(5)));
  EXPECT_TRUE(IsZero(g->PageData(6)));
  EXPECT_EQ(g->DirtyPageCount(), 0u);  // destination writes are not guest writes

  g->Resume();
  EXPECT_TRUE(g->running());
  ASSERT_TRUE(WaitFor([&] { return g->pages_written() >= 100; }));
  g->Pause();
  EXPECT_FALSE(g->running());
}

// With a fake clock the token bucket grants exactly rate * elapsed writes.
TEST(SyntheticGuestTest, DirtierPacesByTheClock) {
  FakeClock clock;
  auto g = MustBoot(Spec(4 * kMiB, 100 * kPageSize, 2), clock);
  std::this_thread::sleep_for(milliseconds(40));
  EXPECT_EQ(g->pages_written(), 0u);
  clock.Advance(milliseconds(500));
  ASSERT_TRUE(WaitFor([&] { return g->pages_written() >= 50; }));
  std::this_thread::sleep_for(milliseconds(40));
  EXPECT_EQ(g->pages_written(), 50u);
  g->SetDirtyRate(1000 * kPageSize);
  clock.Advance(milliseconds(20));
  ASSERT_TRUE(WaitFor([&] { return g->pages_written() >= 70; }));
  std::this_thread::sleep_for(milliseconds(40));
  EXPECT_EQ(g->pages_written(), 70u);
  g->SetDirtyRate(0);
  clock.Advance(milliseconds(1000));
  std::this_thread::sleep_for(milliseconds(40));
  EXPECT_EQ(g->pages_written(), 70u);
}

TEST(SyntheticGuestTest, DirtyRateIsAccurateOverOneSecond) {
  constexpr uint64_t kRate = 8'000'000;
  auto g = MustBoot(Spec(64 * kMiB, kRate, 4));
  g->StartDirtyLog();
  const uint64_t w0 = g->pages_written();
  const auto t0 = Steady::now();
  std::this_thread::sleep_for(milliseconds(1000));
  const uint64_t written = (g->pages_written() - w0) * kPageSize;
  const double secs = std::chrono::duration<double>(Steady::now() - t0).count();
  std::printf("dirtied %llu bytes in %.3f s (target %.0f)\n",
              static_cast<unsigned long long>(written), secs, kRate * secs);
  EXPECT_NEAR(static_cast<double>(written), kRate * secs, 0.25 * kRate * secs);
  const uint64_t dirty = g->DirtyPageCount();
  EXPECT_GT(dirty, 0u);
  EXPECT_LE(dirty, written / kPageSize + 1);  // the hot set repeats pages
}

TEST(SyntheticGuestTest, WritesConcentrateOnAHotSet) {
  auto g = MustBoot(Spec(64 * kMiB, 64'000'000, 6));
  g->StartDirtyLog();
  std::vector<uint32_t> intervals(g->page_count());
  std::vector<uint64_t> dirty;
  for (int round = 0; round < 25; ++round) {
    std::this_thread::sleep_for(milliseconds(20));
    dirty.clear();
    g->CollectDirtyPages(&dirty);
    for (uint64_t p : dirty) ++intervals[p];
  }
  uint64_t total = 0;
  for (uint32_t n : intervals) total += n;
  std::sort(intervals.begin(), intervals.end(), std::greater<>());
  uint64_t top = 0;
  for (size_t i = 0; i < intervals.size() / 10; ++i) top += intervals[i];
  const double share = static_cast<double>(top) / static_cast<double>(total);
  std::printf("top 10%% of pages: %.2f of %llu page-interval writes\n", share,
              static_cast<unsigned long long>(total));
  ASSERT_GT(total, 2000u);
  EXPECT_GT(share, 0.6);  // uniform writes would give ~0.25 here
}

TEST(SyntheticGuestTest, CollectReturnsAscendingUniqueAndClears) {
  auto g = MustBoot(Spec(16 * kMiB, 40'000'000, 8));
  EXPECT_EQ(g->DirtyPageCount(), 0u);  // log not started: writes set no bits
  ASSERT_TRUE(WaitFor([&] { return g->pages_written() >= 100; }));
  EXPECT_EQ(g->DirtyPageCount(), 0u);
  std::vector<uint64_t> dirty;
  g->CollectDirtyPages(&dirty);
  EXPECT_TRUE(dirty.empty());

  g->StartDirtyLog();
  ASSERT_TRUE(WaitFor([&] { return g->DirtyPageCount() >= 200; }));
  g->Pause();
  const uint64_t count = g->DirtyPageCount();
  dirty = {123456789};  // appends, keeps what was there
  g->CollectDirtyPages(&dirty);
  ASSERT_EQ(dirty.size(), count + 1);
  EXPECT_EQ(dirty[0], 123456789u);
  EXPECT_TRUE(std::is_sorted(dirty.begin() + 1, dirty.end()));
  EXPECT_EQ(std::adjacent_find(dirty.begin() + 1, dirty.end()), dirty.end());
  EXPECT_LT(dirty.back(), g->page_count());
  EXPECT_EQ(g->DirtyPageCount(), 0u);
  dirty.clear();
  g->CollectDirtyPages(&dirty);
  EXPECT_TRUE(dirty.empty());

  g->Resume();
  ASSERT_TRUE(WaitFor([&] { return g->DirtyPageCount() >= 10; }));
  g->StopDirtyLog();
  const uint64_t at_stop = g->DirtyPageCount();
  const uint64_t w = g->pages_written();
  ASSERT_TRUE(WaitFor([&] { return g->pages_written() >= w + 100; }));
  dirty.clear();
  g->CollectDirtyPages(&dirty);
  // Only writes from before StopDirtyLog: a write already under way when the log stopped
  // may still set its bit, the next 100 may not. (How many came before the stop depends on
  // scheduling, so it is read, not assumed.)
  EXPECT_LE(dirty.size(), at_stop + 8);
  dirty.clear();
  ASSERT_TRUE(WaitFor([&] { return g->pages_written() >= w + 200; }));
  g->CollectDirtyPages(&dirty);
  EXPECT_TRUE(dirty.empty());
}

TEST(SyntheticGuestTest, PauseFreezesMemory) {
  auto g = MustBoot(Spec(16 * kMiB, 40'000'000, 12));
  g->StartDirtyLog();
  ASSERT_TRUE(WaitFor([&] { return g->pages_written() >= 50; }));
  g->Pause();
  EXPECT_FALSE(g->running());
  std::vector<uint64_t> dirty;
  g->CollectDirtyPages(&dirty);
  EXPECT_FALSE(dirty.empty());
  const uint64_t written = g->pages_written();
  const std::string digest = g->Digest();
  std::this_thread::sleep_for(milliseconds(60));
  dirty.clear();
  g->CollectDirtyPages(&dirty);
  EXPECT_TRUE(dirty.empty());
  EXPECT_EQ(g->pages_written(), written);
  EXPECT_EQ(g->Digest(), digest);
  g->Pause();  // idempotent

  g->Resume();
  g->Resume();  // idempotent
  EXPECT_TRUE(g->running());
  ASSERT_TRUE(WaitFor([&] { return g->pages_written() >= written + 50; }));
  g->Pause();
  EXPECT_NE(g->Digest(), digest);
  dirty.clear();
  g->CollectDirtyPages(&dirty);
  EXPECT_FALSE(dirty.empty());
}

// Most guest writes change a small range of a page with content of the page's class, so
// successive versions of a page are similar (what delta encoding exploits).
TEST(SyntheticGuestTest, WritesAreSmallAndKeepThePageClass) {
  auto g = MustBoot(Spec(16 * kMiB, 4'000'000, 13));
  g->Pause();
  std::vector<uint8_t> before(g->PageData(0), g->PageData(0) + g->spec().memory_bytes);
  g->StartDirtyLog();
  const uint64_t w0 = g->pages_written();
  g->Resume();
  ASSERT_TRUE(WaitFor([&] { return g->pages_written() >= w0 + 200; }));
  g->Pause();
  std::vector<uint64_t> dirty;
  g->CollectDirtyPages(&dirty);
  ASSERT_GT(dirty.size(), 100u);
  uint64_t small = 0, changed = 0;
  for (uint64_t p : dirty) {
    const uint8_t* now = g->PageData(p);
    const uint8_t* old = before.data() + p * kPageSize;
    size_t diff = 0;
    for (size_t b = 0; b < kPageSize; ++b) diff += now[b] != old[b];
    small += diff <= 1024;
    changed += diff > 0;
    if (ClassOfPage(13, p) == PageClass::kText) {
      for (size_t b = 0; b < kPageSize; ++b) {
        ASSERT_TRUE(now[b] == '\n' || (now[b] >= 0x20 && now[b] < 0x7f)) << p << "@" << b;
      }
    }
  }
  EXPECT_GT(static_cast<double>(small) / dirty.size(), 0.75);
  EXPECT_GT(static_cast<double>(changed) / dirty.size(), 0.9);
}

// Copies `pages` of src into dst the way a migration would (zero pages as ZeroPage).
void CopyPages(const SyntheticGuest& src, SyntheticGuest* dst, const std::vector<uint64_t>& pages) {
  std::array<uint8_t, kPageSize> buf;
  for (uint64_t p : pages) {
    // One snapshot per page, as a sender serializing it would take.
    std::memcpy(buf.data(), src.PageData(p), kPageSize);
    if (IsZero(buf.data())) {
      dst->ZeroPage(p);
    } else {
      dst->WritePage(p, buf.data());
    }
  }
}

// The key invariant: a page's bytes are written before it is marked dirty, so iterative
// pre-copy of a running guest converges to exactly its memory.
TEST(SyntheticGuestTest, PreCopyConvergesToTheSameDigest) {
  for (uint64_t seed : {1, 2, 3, 77}) {
    SCOPED_TRACE(seed);
    const GuestSpec spec = Spec(32 * kMiB, 160'000'000, seed);
    auto src = MustBoot(spec);
    auto dst = MustCreateIncoming(spec);
    src->StartDirtyLog();
    std::vector<uint64_t> pages(src->page_count());
    for (uint64_t i = 0; i < pages.size(); ++i) pages[i] = i;
    const uint64_t w0 = src->pages_written();
    CopyPages(*src, dst.get(), pages);
    // Rounds back to back for a while, so collection often races with guest writes.
    const auto until = Steady::now() + milliseconds(150);
    int rounds = 0;
    for (; Steady::now() < until; ++rounds) {
      pages.clear();
      src->CollectDirtyPages(&pages);
      CopyPages(*src, dst.get(), pages);
    }
    EXPECT_GT(rounds, 10);
    ASSERT_TRUE(WaitFor([&] { return src->DirtyPageCount() >= 50; }));
    src->Pause();
    pages.clear();
    src->CollectDirtyPages(&pages);
    ASSERT_GE(pages.size(), 50u);
    // Without the final round the copy is stale.
    uint64_t stale = 0;
    for (uint64_t p : pages)
      stale += std::memcmp(src->PageData(p), dst->PageData(p), kPageSize) != 0;
    EXPECT_GT(stale, 0u);
    CopyPages(*src, dst.get(), pages);
    EXPECT_EQ(src->Digest(), dst->Digest());
    EXPECT_GT(src->pages_written(), w0 + 250);
  }
}

// Boots a 1 GiB guest and prints how long it took (no time is asserted: speed belongs to
// benchmarks, and the machine is shared).
TEST(SyntheticGuestTest, BootsOneGiB) {
  const auto t0 = Steady::now();
  auto g = SyntheticGuest::Boot(Spec(1024 * kMiB, 0, 21));
  const double secs = std::chrono::duration<double>(Steady::now() - t0).count();
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  std::printf("booted a 1 GiB guest in %.3f s (%u hardware threads)\n", secs,
              std::thread::hardware_concurrency());
  EXPECT_TRUE((*g)->running());
  EXPECT_EQ((*g)->page_count(), 1024 * kMiB / kPageSize);
  EXPECT_TRUE(IsZero((*g)->PageData(0)) == (ClassOfPage(21, 0) == PageClass::kZero));
}

}  // namespace
}  // namespace dwcp::vm

namespace dwcp::vm {
namespace {

// The cached digest must track every kind of write: guest writes, WritePage and ZeroPage,
// including writes that race with a Digest() call.
TEST(SyntheticGuestTest, CachedDigestTracksEveryWrite) {
  auto g = SyntheticGuest::Boot({"cache", 16ull << 20, 64ull << 20, 5});
  ASSERT_TRUE(g.ok());
  SyntheticGuest& guest = **g;
  for (int i = 0; i < 5; ++i) {
    (void)guest.Digest();  // runs while the guest writes
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  guest.Pause();
  EXPECT_EQ(guest.Digest(), MemoryDigest(guest.PageData(0), guest.spec().memory_bytes));
  std::vector<uint8_t> page(kPageSize, 0xab);
  guest.WritePage(7, page.data());
  EXPECT_EQ(guest.Digest(), MemoryDigest(guest.PageData(0), guest.spec().memory_bytes));
  guest.ZeroPage(7);
  EXPECT_EQ(guest.Digest(), MemoryDigest(guest.PageData(0), guest.spec().memory_bytes));
}

}  // namespace
}  // namespace dwcp::vm
