#include "api/api_limits.h"

#include <gtest/gtest.h>

#include <string>

namespace dwcp::api {
namespace {

using std::chrono::milliseconds;
using TimePoint = ClientRateLimiter::TimePoint;

TEST(ClientRateLimiterTest, AdmitsTheBurstThenRefusesWithRetryAfter) {
  ClientRateLimiter limiter(10, 5);
  TimePoint t0{};
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(limiter.Admit("10.0.0.1", t0).allowed) << i;
  auto refused = limiter.Admit("10.0.0.1", t0);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.retry_after_seconds, 1);
}

TEST(ClientRateLimiterTest, RefillsAtTheRate) {
  ClientRateLimiter limiter(10, 5);
  TimePoint t0{};
  for (int i = 0; i < 5; ++i) limiter.Admit("a", t0);
  EXPECT_FALSE(limiter.Admit("a", t0 + milliseconds(50)).allowed);  // half a token
  EXPECT_TRUE(limiter.Admit("a", t0 + milliseconds(100)).allowed);
  EXPECT_FALSE(limiter.Admit("a", t0 + milliseconds(100)).allowed);
  // A long pause refills to the burst, not beyond.
  int admitted = 0;
  while (limiter.Admit("a", t0 + milliseconds(60000)).allowed) ++admitted;
  EXPECT_EQ(admitted, 5);
}

TEST(ClientRateLimiterTest, ClientsAreIndependent) {
  ClientRateLimiter limiter(1, 2);
  TimePoint t0{};
  EXPECT_TRUE(limiter.Admit("abuser", t0).allowed);
  EXPECT_TRUE(limiter.Admit("abuser", t0).allowed);
  EXPECT_FALSE(limiter.Admit("abuser", t0).allowed);
  EXPECT_TRUE(limiter.Admit("other", t0).allowed);
}

TEST(ClientRateLimiterTest, SlowRateGivesALongerRetryAfter) {
  ClientRateLimiter limiter(0.1, 1);  // 6/m
  TimePoint t0{};
  EXPECT_TRUE(limiter.Admit("a", t0).allowed);
  EXPECT_EQ(limiter.Admit("a", t0).retry_after_seconds, 10);
}

TEST(ClientRateLimiterTest, RateZeroAdmitsEverything) {
  ClientRateLimiter limiter(0, 1);
  for (int i = 0; i < 1000; ++i) EXPECT_TRUE(limiter.Admit("a", TimePoint{}).allowed);
  EXPECT_EQ(limiter.tracked_clients(), 0u);
}

TEST(ClientRateLimiterTest, MemoryStaysBoundedWithManyClients) {
  ClientRateLimiter limiter(10, 5, /*max_clients=*/100);
  TimePoint t0{};
  for (int i = 0; i < 1000; ++i) {
    limiter.Admit("10.0." + std::to_string(i / 256) + "." + std::to_string(i % 256), t0);
  }
  EXPECT_LE(limiter.tracked_clients(), 100u);
  // A client that is still throttled keeps its bucket while refilled ones are forgotten.
  ClientRateLimiter small(1, 1, 2);
  EXPECT_TRUE(small.Admit("busy", t0).allowed);
  small.Admit("idle", t0 - std::chrono::seconds(10));
  EXPECT_TRUE(small.Admit("new", t0).allowed);
  EXPECT_FALSE(small.Admit("busy", t0).allowed);
}

TEST(ConnectionLimiterTest, CapsPerClientAndInTotal) {
  ConnectionLimiter limiter(/*max_total=*/3, /*max_per_client=*/2);
  using A = ConnectionLimiter::Admission;
  EXPECT_EQ(limiter.Acquire("a"), A::kAdmitted);
  EXPECT_EQ(limiter.Acquire("a"), A::kAdmitted);
  EXPECT_EQ(limiter.Acquire("a"), A::kClientFull);
  EXPECT_EQ(limiter.Acquire("b"), A::kAdmitted);
  EXPECT_EQ(limiter.Acquire("c"), A::kTotalFull);
  EXPECT_EQ(limiter.open(), 3u);
  EXPECT_EQ(limiter.open("a"), 2u);
  EXPECT_EQ(limiter.open("c"), 0u);
  limiter.Release("a");
  EXPECT_EQ(limiter.Acquire("c"), A::kAdmitted);
  limiter.Release("zzz");  // unpaired: ignored
  EXPECT_EQ(limiter.open(), 3u);
}

}  // namespace
}  // namespace dwcp::api
