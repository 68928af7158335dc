#include "hde/destination_model.h"

#include <gtest/gtest.h>

namespace dwcp::hde {
namespace {

constexpr ContentKey kA{1, 11}, kB{2, 22}, kC{3, 33};

TEST(HdeDestinationModelTest, HolderIsTheLastPageSentWithTheContent) {
  DestinationModel m(100, 1 << 20);
  EXPECT_FALSE(m.WasSent(5));
  EXPECT_FALSE(m.FindHolder(kA));
  m.RecordContent(5, kA);
  EXPECT_TRUE(m.WasSent(5));
  EXPECT_FALSE(m.HoldsZero(5));
  EXPECT_EQ(m.FindHolder(kA), 5u);
  // Another page sent with the same content becomes the holder.
  m.RecordContent(9, kA);
  EXPECT_EQ(m.FindHolder(kA), 9u);
  // Page 9 changes: page 5 still holds A, but the index remembers one holder per content
  // and forgets A until it is sent again.
  m.RecordContent(9, kB);
  EXPECT_FALSE(m.FindHolder(kA));
  EXPECT_EQ(m.FindHolder(kB), 9u);
  m.RecordContent(5, kA);
  EXPECT_EQ(m.FindHolder(kA), 5u);
}

TEST(HdeDestinationModelTest, ZeroingAPageInvalidatesItsContent) {
  DestinationModel m(10, 1 << 20);
  m.RecordContent(3, kC);
  m.RecordZero(3);
  EXPECT_TRUE(m.HoldsZero(3));
  EXPECT_TRUE(m.WasSent(3));
  EXPECT_FALSE(m.FindHolder(kC));
  m.RecordContent(3, kC);
  EXPECT_FALSE(m.HoldsZero(3));
  EXPECT_EQ(m.FindHolder(kC), 3u);
}

TEST(HdeDestinationModelTest, ResendingTheSameContentKeepsItFindable) {
  DestinationModel m(10, 1 << 20);
  m.RecordContent(4, kA);
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(m.FindHolder(kA), 4u);
    m.RecordContent(4, kA);  // sent again unchanged (a self reference)
  }
  EXPECT_EQ(m.FindHolder(kA), 4u);
}

TEST(HdeDestinationModelTest, IndexIsBoundedAndEvicts) {
  // 128 bytes: one set of four entries.
  DestinationModel m(1000, 128);
  EXPECT_EQ(m.index_entries(), 4u);
  for (uint64_t p = 0; p < 100; ++p) m.RecordContent(p, ContentKey{p * 2, p});
  EXPECT_GT(m.index_evictions(), 0u);
  int found = 0;
  for (uint64_t p = 0; p < 100; ++p) found += m.FindHolder(ContentKey{p * 2, p}).has_value();
  EXPECT_LE(found, 4);
  EXPECT_GE(found, 1);
  // Popular content survives churn: it is hit between inserts.
  DestinationModel pop(1000, 128);
  pop.RecordContent(999, kA);
  for (uint64_t p = 0; p < 100; ++p) {
    ASSERT_EQ(pop.FindHolder(kA), 999u) << p;
    pop.RecordContent(p, ContentKey{p * 2 + 100, p});
  }
  DestinationModel none(10, 0);
  none.RecordContent(1, kA);
  EXPECT_FALSE(none.FindHolder(kA));
  EXPECT_TRUE(none.WasSent(1));
}

}  // namespace
}  // namespace dwcp::hde
