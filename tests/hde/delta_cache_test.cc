#include "hde/delta_cache.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "vm/guest.h"

namespace dwcp::hde {
namespace {

using vm::kPageSize;

std::vector<uint8_t> Page(uint8_t v) { return std::vector<uint8_t>(kPageSize, v); }

TEST(HdeDeltaCacheTest, DisabledCacheHoldsNothing) {
  DeltaCache c(0);
  EXPECT_EQ(c.capacity_pages(), 0u);
  auto p = Page(1);
  EXPECT_FALSE(c.Put(1, p.data(), true));
  EXPECT_EQ(c.Find(1), nullptr);
  c.Erase(1);
}

TEST(HdeDeltaCacheTest, StoresCopiesAndUpdatesInPlace) {
  DeltaCache c(4 * kPageSize);
  EXPECT_EQ(c.capacity_pages(), 4u);
  auto p = Page(1);
  ASSERT_TRUE(c.Put(10, p.data(), false));
  p[0] = 9;  // the cache holds a copy
  ASSERT_NE(c.Find(10), nullptr);
  EXPECT_EQ(c.Find(10)[0], 1);
  ASSERT_TRUE(c.Put(10, p.data(), false));  // present: updated even when cold
  EXPECT_EQ(c.Find(10)[0], 9);
  EXPECT_EQ(c.size(), 1u);
  c.Erase(10);
  EXPECT_EQ(c.Find(10), nullptr);
  EXPECT_EQ(c.size(), 0u);
}

TEST(HdeDeltaCacheTest, ColdPagesOnlyTakeFreeSlots) {
  DeltaCache c(3 * kPageSize);
  for (uint64_t i = 0; i < 3; ++i) ASSERT_TRUE(c.Put(i, Page(uint8_t(i)).data(), false));
  EXPECT_FALSE(c.Put(3, Page(3).data(), false));
  EXPECT_EQ(c.Find(3), nullptr);
  EXPECT_EQ(c.evictions(), 0u);
  for (uint64_t i = 0; i < 3; ++i) EXPECT_NE(c.Find(i), nullptr);
}

TEST(HdeDeltaCacheTest, HotPagesEvictWithSecondChance) {
  DeltaCache c(3 * kPageSize);
  for (uint64_t i = 0; i < 3; ++i) ASSERT_TRUE(c.Put(i, Page(uint8_t(i)).data(), false));
  // New pages start unreferenced: the hand evicts slot 0 (page 0) at once.
  ASSERT_TRUE(c.Put(100, Page(100).data(), true));
  EXPECT_EQ(c.evictions(), 1u);
  EXPECT_EQ(c.size(), 3u);
  EXPECT_NE(c.Find(100), nullptr);
  // Page 1 is used again (referenced); page 2 is not: page 2 goes next.
  EXPECT_NE(c.Find(1), nullptr);
  ASSERT_TRUE(c.Put(101, Page(101).data(), true));
  EXPECT_EQ(c.Find(2), nullptr);
  EXPECT_NE(c.Find(1), nullptr);
  EXPECT_EQ(c.Find(101)[0], 101);
  EXPECT_EQ(c.Find(100)[0], 100);
  EXPECT_EQ(c.evictions(), 2u);
}

TEST(HdeDeltaCacheTest, ChurnKeepsMapConsistent) {
  // Many pages through a small cache: whatever it still holds must be the latest content.
  DeltaCache c(64 * kPageSize);
  std::vector<int> latest(5000, -1);
  uint64_t s = 1;
  for (int step = 0; step < 50000; ++step) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    uint64_t page = (s >> 33) % 5000;
    if ((s >> 20) % 7 == 0) {
      c.Erase(page);
      latest[page] = -1;
      continue;
    }
    uint8_t v = static_cast<uint8_t>(step);
    if (c.Put(page, Page(v).data(), (s >> 24) % 3 != 0)) latest[page] = v;
  }
  size_t held = 0;
  for (uint64_t page = 0; page < 5000; ++page) {
    const uint8_t* p = c.Find(page);
    if (p == nullptr) continue;
    ++held;
    ASSERT_GE(latest[page], 0) << page;
    EXPECT_EQ(p[0], latest[page]);
    EXPECT_EQ(p[kPageSize - 1], latest[page]);
  }
  EXPECT_EQ(held, c.size());
  EXPECT_LE(held, 64u);
}

}  // namespace
}  // namespace dwcp::hde
