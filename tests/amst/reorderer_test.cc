#include "amst/reorderer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <random>
#include <vector>

namespace dwcp::amst {
namespace {

TEST(ReordererTest, DeliversInSequenceWhateverTheArrivalOrder) {
  std::vector<uint64_t> order(200);
  for (uint64_t i = 0; i < order.size(); ++i) order[i] = i;
  // Four streams, striped round robin, each delayed differently: a realistic shuffle.
  std::mt19937 rng(7);
  for (size_t i = 0; i + 8 <= order.size(); i += 8) {
    std::shuffle(order.begin() + i, order.begin() + i + 8, rng);
  }
  Reorderer<std::unique_ptr<uint64_t>> r(16);
  std::vector<uint64_t> out;
  for (uint64_t seq : order) {
    ASSERT_TRUE(r.Offer(seq, std::make_unique<uint64_t>(seq * 10)).ok());
    while (auto item = r.Pop()) out.push_back(**item);
  }
  ASSERT_EQ(out.size(), order.size());
  for (uint64_t i = 0; i < out.size(); ++i) EXPECT_EQ(out[i], i * 10);
  EXPECT_EQ(r.pending(), 0u);
}

TEST(ReordererTest, NeverDeliversPastAGap) {
  // A lost stream carried batch 2: 3, 4, 5 wait forever and nothing past 1 is delivered.
  Reorderer<int> r(8);
  for (uint64_t seq : {0, 1, 3, 4, 5}) ASSERT_TRUE(r.Offer(seq, int(seq)).ok());
  EXPECT_EQ(*r.Pop(), 0);
  EXPECT_EQ(*r.Pop(), 1);
  EXPECT_FALSE(r.Pop().has_value());
  EXPECT_EQ(r.next_seq(), 2u);
  EXPECT_EQ(r.pending(), 3u);
}

TEST(ReordererTest, RefusesDuplicatesAndRunaways) {
  Reorderer<int> r(4);
  ASSERT_TRUE(r.Offer(1, 1).ok());
  EXPECT_EQ(r.Offer(1, 1).code(), StatusCode::kProtocol);  // pending twice
  ASSERT_TRUE(r.Offer(0, 0).ok());
  ASSERT_TRUE(r.Pop() && r.Pop());
  EXPECT_EQ(r.Offer(0, 0).code(), StatusCode::kProtocol);  // delivered already
  EXPECT_EQ(r.Offer(6, 6).code(), StatusCode::kProtocol);  // 4 ahead of next (2): too far
  EXPECT_TRUE(r.Offer(5, 5).ok());
}

}  // namespace
}  // namespace dwcp::amst
