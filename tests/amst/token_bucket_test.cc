#include "amst/token_bucket.h"

#include <gtest/gtest.h>

namespace dwcp::amst {
namespace {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using TimePoint = TokenBucket::TimePoint;

TimePoint At(int64_t ms) { return TimePoint(milliseconds(ms)); }

TEST(TokenBucketTest, UnlimitedNeverWaits) {
  TokenBucket b(0);
  EXPECT_EQ(b.Take(1ull << 40, At(0)), nanoseconds(0));
}

TEST(TokenBucketTest, LongRunRateEqualsTheCap) {
  // 10 MB/s; a sender that always waits as told sends 100 MB in about 10 s, whatever the
  // batch size (the burst only shifts the start).
  TokenBucket b(10'000'000);
  double t_ns = 0;
  for (int i = 0; i < 100; ++i) {
    t_ns += static_cast<double>(b.Take(1'000'000, TimePoint(nanoseconds(int64_t(t_ns)))).count());
  }
  EXPECT_NEAR(t_ns / 1e9, 10.0 - 0.5 / 10.0, 0.06);  // the 512 KB burst (50 ms) went free
}

TEST(TokenBucketTest, BatchLargerThanBurstGoesIntoDebt) {
  TokenBucket b(1'000'000);  // burst 256 KiB
  EXPECT_EQ(b.Take(4ull << 20, At(0)).count() / 1'000'000, (4194304 - 262144) / 1000);
}

TEST(TokenBucketTest, RaisingTheRateShortensTheDebt) {
  TokenBucket b(1'000'000);
  auto wait = b.Take(2'262'144, At(0));  // 2 MB of debt: 2 s
  EXPECT_EQ(wait.count() / 1'000'000, 2000);
  b.SetRate(4'000'000, At(0));
  EXPECT_EQ(b.rate(), 4'000'000u);
  // The same debt is now paid at 4 MB/s: a new 1-byte take waits about 0.5 s.
  EXPECT_NEAR(b.Take(1, At(0)).count() / 1e9, 0.5, 0.01);
}

TEST(TokenBucketTest, LiftingTheCapReleasesAtOnce) {
  TokenBucket b(1'000'000);
  EXPECT_GT(b.Take(10'000'000, At(0)).count(), 0);
  b.SetRate(0, At(1));
  EXPECT_EQ(b.Take(10'000'000, At(1)), nanoseconds(0));
  b.SetRate(1'000'000, At(2));  // capped again: starts with a fresh burst, not old debt
  EXPECT_EQ(b.Take(100'000, At(2)), nanoseconds(0));
}

}  // namespace
}  // namespace dwcp::amst
