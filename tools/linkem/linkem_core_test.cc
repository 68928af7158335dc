#include "linkem_core.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace dwcp::linkem {
namespace {

constexpr int64_t kMs = kNanosPerMilli;
constexpr int64_t kUs = 1000;
constexpr uint64_t k100Mbit = 12'500'000;  // bytes per second

// Offers `count` packets of `bytes`, one every `gap_ns` from t = 0, and returns the
// delivery time of each forwarded packet (in arrival order).
std::vector<int64_t> Offer(LinkScheduler& s, DirectionStats& stats, int count, uint32_t bytes,
                           int64_t gap_ns) {
  std::vector<int64_t> out;
  for (int i = 0; i < count; ++i) {
    auto d = s.Admit(i * gap_ns, bytes, stats);
    if (d.verdict == LinkScheduler::Verdict::kForward) out.push_back(d.deliver_at_ns);
  }
  return out;
}

TEST(LinkemParseTest, DelayNanos) {
  EXPECT_EQ(*ParseDelayNanos("25ms"), 25 * kMs);
  EXPECT_EQ(*ParseDelayNanos("1.5ms"), 1500 * kUs);
  EXPECT_EQ(*ParseDelayNanos("500us"), 500 * kUs);
  EXPECT_EQ(*ParseDelayNanos("2s"), 2000 * kMs);
  EXPECT_EQ(*ParseDelayNanos("10"), 10 * kMs);  // bare number: milliseconds
  EXPECT_EQ(*ParseDelayNanos(" 0 "), 0);
  EXPECT_EQ(*ParseDelayNanos("1h"), 3600 * kNanosPerSecond);
  for (const char* bad : {"", "-1ms", "5parsec", "ms", "1.2.3ms", "2h"}) {
    EXPECT_FALSE(ParseDelayNanos(bad).ok()) << bad;
  }
}

TEST(LinkemParseTest, LossPercent) {
  EXPECT_DOUBLE_EQ(*ParseLossPercent("0.1%"), 0.001);
  EXPECT_DOUBLE_EQ(*ParseLossPercent("5 %"), 0.05);
  EXPECT_DOUBLE_EQ(*ParseLossPercent("0%"), 0);
  EXPECT_DOUBLE_EQ(*ParseLossPercent("100%"), 1);
  for (const char* bad : {"1", "0.01", "101%", "x%", "%", "-1%", "1%%"}) {
    EXPECT_FALSE(ParseLossPercent(bad).ok()) << bad;
  }
}

TEST(LinkemParseTest, QueueLimit) {
  EXPECT_EQ(*ParseQueueLimit("256KiB", 0), 262144u);
  EXPECT_EQ(*ParseQueueLimit("64000", k100Mbit), 64000u);
  EXPECT_EQ(*ParseQueueLimit("100ms", k100Mbit), 1'250'000u);
  EXPECT_EQ(*ParseQueueLimit("0.5s", k100Mbit), 6'250'000u);
  EXPECT_FALSE(ParseQueueLimit("100ms", 0).ok());  // a time needs a rate
  EXPECT_FALSE(ParseQueueLimit("0", k100Mbit).ok());
  EXPECT_FALSE(ParseQueueLimit("lots", k100Mbit).ok());
  EXPECT_FALSE(ParseQueueLimit("5parsec", k100Mbit).ok());
}

TEST(LinkemParseTest, DefaultQueueLimitIsHundredMillisecondsWithAFloor) {
  EXPECT_EQ(DefaultQueueLimit(k100Mbit), 1'250'000u);
  EXPECT_EQ(DefaultQueueLimit(125'000), 24'000u);  // 1 Mbit/s: 16 full packets
}

TEST(LinkemRngTest, SameSeedSameSequenceOtherSeedOther) {
  Rng a(7), b(7), c(8);
  int same_c = 0;
  for (int i = 0; i < 1000; ++i) {
    uint64_t x = a.Next();
    EXPECT_EQ(x, b.Next());
    same_c += x == c.Next();
  }
  EXPECT_EQ(same_c, 0);
  Rng r(1);
  for (int i = 0; i < 10000; ++i) {
    double d = r.NextDouble();
    ASSERT_GE(d, 0.0);
    ASSERT_LT(d, 1.0);
    ASSERT_LT(r.Below(3), 3u);
  }
}

TEST(LinkemSchedulerTest, DelayIsAddedExactlyWithoutRate) {
  LinkScheduler s({.delay_ns = 25 * kMs}, 1);
  DirectionStats stats;
  for (int64_t t : {int64_t{0}, 3 * kMs, 1000 * kMs}) {
    auto d = s.Admit(t, 1500, stats);
    ASSERT_EQ(d.verdict, LinkScheduler::Verdict::kForward);
    EXPECT_EQ(d.deliver_at_ns, t + 25 * kMs);
  }
  EXPECT_EQ(s.BacklogBytes(0), 0u);
}

TEST(LinkemSchedulerTest, IdleLinkAddsOneSerializationTime) {
  LinkScheduler s({.delay_ns = 25 * kMs, .rate_bytes_per_s = k100Mbit}, 1);
  DirectionStats stats;
  auto d = s.Admit(5 * kMs, 1500, stats);
  EXPECT_EQ(d.deliver_at_ns, 5 * kMs + 120 * kUs + 25 * kMs);  // 1500 B at 100 Mbit/s: 120 us
}

TEST(LinkemSchedulerTest, BackToBackPacketsAreSpacedBySerializationTime) {
  LinkScheduler s({.rate_bytes_per_s = 1'000'000'000 / 8}, 1);  // 1 Gbit/s
  DirectionStats stats;
  auto times = Offer(s, stats, 10, 1500, 0);  // a burst: all at t = 0
  ASSERT_EQ(times.size(), 10u);
  for (size_t i = 0; i < times.size(); ++i) {
    EXPECT_EQ(times[i], static_cast<int64_t>(i + 1) * 12 * kUs);
  }
  EXPECT_EQ(s.BacklogBytes(0), 15000u);
  EXPECT_EQ(s.BacklogBytes(60 * kUs), 7500u);
}

TEST(LinkemSchedulerTest, RateLimitsThroughputUnderOverload) {
  // 200 Mbit/s offered to a 100 Mbit/s bottleneck for 10 simulated seconds.
  LinkScheduler s({.delay_ns = 10 * kMs, .rate_bytes_per_s = k100Mbit}, 1);
  DirectionStats stats;
  auto times = Offer(s, stats, 166'667, 1500, 60 * kUs);
  ASSERT_FALSE(times.empty());
  double seconds = (times.back() - 10 * kMs) / 1e9;
  double rate = times.size() * 1500.0 / seconds;
  EXPECT_NEAR(rate, double(k100Mbit), k100Mbit * 0.01);
  EXPECT_GT(stats.drop_queue, 70'000u);
  EXPECT_LE(stats.max_queue_bytes, s.queue_limit_bytes());
  EXPECT_EQ(s.queue_limit_bytes(), 1'250'000u);
  EXPECT_TRUE(std::is_sorted(times.begin(), times.end()));
}

TEST(LinkemSchedulerTest, FullQueueDelaysByAtMostItsLimitAtTheRate) {
  LinkScheduler s({.delay_ns = 10 * kMs, .rate_bytes_per_s = k100Mbit}, 1);
  DirectionStats stats;
  int64_t worst = 0;
  for (int i = 0; i < 50'000; ++i) {
    int64_t now = i * 60 * kUs;
    auto d = s.Admit(now, 1500, stats);
    if (d.verdict == LinkScheduler::Verdict::kForward) {
      worst = std::max(worst, d.deliver_at_ns - now);
    }
  }
  EXPECT_LE(worst, 10 * kMs + 100 * kMs);  // propagation + 1.25 MB at 100 Mbit/s
  EXPECT_GT(worst, 10 * kMs + 99 * kMs);   // and the queue did fill up
}

TEST(LinkemSchedulerTest, RateAccountingIsExactOverManyPackets) {
  // 1 kB at 3 B/s does not divide evenly; the carried remainder keeps the long-run rate exact.
  LinkScheduler s({.rate_bytes_per_s = 3'000, .queue_limit_bytes = 1'000'000'000}, 1);
  DirectionStats stats;
  auto times = Offer(s, stats, 3000, 1000, 0);
  ASSERT_EQ(times.size(), 3000u);
  EXPECT_EQ(times.back(), 1000 * kNanosPerSecond);
}

TEST(LinkemSchedulerTest, QueueIsDropTailAtItsByteLimit) {
  LinkScheduler s({.rate_bytes_per_s = k100Mbit, .queue_limit_bytes = 15'000}, 1);
  DirectionStats stats;
  auto times = Offer(s, stats, 20, 1500, 0);
  EXPECT_EQ(times.size(), 10u);  // 10 × 1500 B fill the queue; the rest is dropped
  EXPECT_EQ(stats.drop_queue, 10u);
  EXPECT_EQ(stats.max_queue_bytes, 15'000u);
  // Once it drained, the link accepts again.
  EXPECT_EQ(s.Admit(10 * kMs, 1500, stats).verdict, LinkScheduler::Verdict::kForward);
}

TEST(LinkemSchedulerTest, IdleLinkAcceptsAPacketLargerThanTheQueue) {
  LinkScheduler s({.rate_bytes_per_s = k100Mbit, .queue_limit_bytes = 100}, 1);
  DirectionStats stats;
  EXPECT_EQ(s.Admit(0, 1500, stats).verdict, LinkScheduler::Verdict::kForward);
  EXPECT_EQ(s.Admit(0, 1500, stats).verdict, LinkScheduler::Verdict::kDropQueue);
}

TEST(LinkemSchedulerTest, LossRateMatchesProbabilityAndIsReproducible) {
  constexpr int kPackets = 1'000'000;
  constexpr double kLoss = 0.01;
  LinkScheduler s({.loss = kLoss}, 42), again({.loss = kLoss}, 42), other({.loss = kLoss}, 43);
  DirectionStats stats, stats_again, stats_other;
  int differ = 0;
  for (int i = 0; i < kPackets; ++i) {
    auto v = s.Admit(i, 100, stats).verdict;
    EXPECT_EQ(v, again.Admit(i, 100, stats_again).verdict);
    differ += v != other.Admit(i, 100, stats_other).verdict;
  }
  double sigma = std::sqrt(kLoss * (1 - kLoss) / kPackets);  // about 0.0001
  EXPECT_NEAR(double(stats.drop_loss) / kPackets, kLoss, 4 * sigma);
  EXPECT_NEAR(double(stats_other.drop_loss) / kPackets, kLoss, 4 * sigma);
  EXPECT_GT(differ, 0);
}

TEST(LinkemSchedulerTest, NoLossMeansNoDrops) {
  LinkScheduler none({}, 1), all({.loss = 1.0}, 1);
  DirectionStats a, b;
  Offer(none, a, 10'000, 100, kUs);
  Offer(all, b, 10'000, 100, kUs);
  EXPECT_EQ(a.drop_loss, 0u);
  EXPECT_EQ(b.drop_loss, 10'000u);
}

TEST(LinkemSchedulerTest, JitterStaysWithinBoundsAndCentresOnTheDelay) {
  // Packets 10 ms apart cannot catch up with each other, so no clamping.
  LinkScheduler s({.delay_ns = 25 * kMs, .jitter_ns = 2 * kMs}, 3);
  DirectionStats stats;
  constexpr int kCount = 20'000;
  auto times = Offer(s, stats, kCount, 100, 10 * kMs);
  double sum = 0;
  int64_t lo = INT64_MAX, hi = 0;
  for (int i = 0; i < kCount; ++i) {
    int64_t delay = times[i] - i * 10 * kMs;
    lo = std::min(lo, delay);
    hi = std::max(hi, delay);
    sum += delay;
  }
  EXPECT_GE(lo, 23 * kMs);
  EXPECT_LE(hi, 27 * kMs);
  EXPECT_LT(lo, 23 * kMs + 50 * kUs);  // the whole range is used
  EXPECT_GT(hi, 27 * kMs - 50 * kUs);
  EXPECT_NEAR(sum / kCount, 25.0 * kMs, 0.05 * kMs);
}

TEST(LinkemSchedulerTest, JitterLargerThanDelayIsFlooredAtZero) {
  LinkScheduler s({.delay_ns = 1 * kMs, .jitter_ns = 5 * kMs, .allow_reorder = true}, 3);
  DirectionStats stats;
  auto times = Offer(s, stats, 1000, 100, 100 * kMs);
  for (int i = 0; i < 1000; ++i) EXPECT_GE(times[i], i * 100 * kMs);
}

TEST(LinkemSchedulerTest, JitterKeepsOrderUnlessReorderingIsAllowed) {
  // Packets 100 us apart with ±5 ms jitter: without the clamp many would overtake.
  LinkConfig fifo{.delay_ns = 20 * kMs, .jitter_ns = 5 * kMs};
  LinkConfig reorder = fifo;
  reorder.allow_reorder = true;
  LinkScheduler a(fifo, 9), b(reorder, 9);
  DirectionStats sa, sb;
  auto in_order = Offer(a, sa, 10'000, 1500, 100 * kUs);
  auto reordered = Offer(b, sb, 10'000, 1500, 100 * kUs);
  EXPECT_TRUE(std::is_sorted(in_order.begin(), in_order.end()));
  EXPECT_FALSE(std::is_sorted(reordered.begin(), reordered.end()));
  // The clamp only ever holds packets back, by less than the jitter span.
  for (size_t i = 0; i < in_order.size(); ++i) {
    int64_t delay = in_order[i] - static_cast<int64_t>(i) * 100 * kUs;
    EXPECT_GE(delay, 15 * kMs);
    EXPECT_LE(delay, 25 * kMs);
  }
}

TEST(LinkemReconfigureTest, NewDelayAppliesToLaterPacketsOnly) {
  LinkScheduler s({}, 1);
  DirectionStats stats;
  EXPECT_EQ(s.Admit(0, 1500, stats).deliver_at_ns, 0);
  s.Reconfigure({.delay_ns = 25 * kMs});
  EXPECT_EQ(s.config().delay_ns, 25 * kMs);
  EXPECT_EQ(s.Admit(1 * kMs, 1500, stats).deliver_at_ns, 26 * kMs);
  EXPECT_EQ(s.Admit(2 * kMs, 1500, stats).deliver_at_ns, 27 * kMs);
}

TEST(LinkemReconfigureTest, ShorterDelayKeepsOrderUnlessReorderingIsAllowed) {
  LinkScheduler fifo({.delay_ns = 25 * kMs}, 1), reorder({.delay_ns = 25 * kMs}, 1);
  DirectionStats stats;
  EXPECT_EQ(fifo.Admit(0, 1500, stats).deliver_at_ns, 25 * kMs);
  EXPECT_EQ(reorder.Admit(0, 1500, stats).deliver_at_ns, 25 * kMs);
  fifo.Reconfigure({});
  reorder.Reconfigure({.allow_reorder = true});
  // Held behind the packet sent under the old delay, then back to no delay.
  EXPECT_EQ(fifo.Admit(1 * kMs, 1500, stats).deliver_at_ns, 25 * kMs);
  EXPECT_EQ(fifo.Admit(30 * kMs, 1500, stats).deliver_at_ns, 30 * kMs);
  EXPECT_EQ(reorder.Admit(1 * kMs, 1500, stats).deliver_at_ns, 1 * kMs);
}

TEST(LinkemReconfigureTest, RateChangeServesTheBacklogFirstThenTheNewRate) {
  LinkScheduler s({.rate_bytes_per_s = k100Mbit}, 1);  // 1500 B: 120 us
  DirectionStats stats;
  auto before = Offer(s, stats, 10, 1500, 0);  // busy until 1.2 ms
  ASSERT_EQ(before.back(), 1200 * kUs);
  s.Reconfigure({.rate_bytes_per_s = 10 * k100Mbit});  // 1500 B: 12 us
  EXPECT_EQ(s.queue_limit_bytes(), 12'500'000u);       // the default limit follows the rate
  EXPECT_EQ(s.Admit(0, 1500, stats).deliver_at_ns, 1212 * kUs);
  EXPECT_EQ(s.Admit(0, 1500, stats).deliver_at_ns, 1224 * kUs);
  // Unlimited: no serialization any more, but no overtaking either.
  s.Reconfigure({});
  EXPECT_EQ(s.BacklogBytes(0), 0u);
  EXPECT_EQ(s.Admit(0, 1500, stats).deliver_at_ns, 1224 * kUs);
  EXPECT_EQ(s.Admit(2 * kMs, 1500, stats).deliver_at_ns, 2 * kMs);
  // And limited again: starts from an idle link.
  s.Reconfigure({.rate_bytes_per_s = k100Mbit, .queue_limit_bytes = 3000});
  EXPECT_EQ(s.queue_limit_bytes(), 3000u);
  EXPECT_EQ(s.Admit(3 * kMs, 1500, stats).deliver_at_ns, 3 * kMs + 120 * kUs);
  EXPECT_EQ(s.Admit(3 * kMs, 1500, stats).verdict, LinkScheduler::Verdict::kForward);
  EXPECT_EQ(s.Admit(3 * kMs, 1500, stats).verdict, LinkScheduler::Verdict::kDropQueue);
}

TEST(LinkemReconfigureTest, LossCanBeSwitchedOnAndOff) {
  LinkScheduler s({}, 1);
  DirectionStats stats;
  Offer(s, stats, 1000, 100, kUs);
  s.Reconfigure({.loss = 1.0});
  Offer(s, stats, 1000, 100, kUs);
  s.Reconfigure({});
  Offer(s, stats, 1000, 100, kUs);
  EXPECT_EQ(stats.drop_loss, 1000u);
}

TEST(LinkemLinkFileTest, SplitsWordsAndDropsComments) {
  EXPECT_EQ(SplitLinkFileWords("--delay 25ms\n\t--rate=1Gbit  # the WAN\n# all of it\n--loss 0%"),
            (std::vector<std::string>{"--delay", "25ms", "--rate=1Gbit", "--loss", "0%"}));
  EXPECT_EQ(SplitLinkFileWords("--delay 5ms#no space before the comment\n--jitter 1ms"),
            (std::vector<std::string>{"--delay", "5ms", "--jitter", "1ms"}));
  EXPECT_TRUE(SplitLinkFileWords("").empty());
  EXPECT_TRUE(SplitLinkFileWords("  \n# only a comment").empty());
}

TEST(LinkemDelayLineTest, ReleasesInDeliveryOrderAndArrivalOrderOnTies) {
  DelayLine line(100);
  Rng rng(5);
  std::vector<std::pair<int64_t, uint8_t>> pushed;
  for (int i = 0; i < 100; ++i) {
    int64_t at = static_cast<int64_t>(rng.Below(20));  // many ties
    uint8_t tag = static_cast<uint8_t>(i);
    ASSERT_TRUE(line.Push(at, std::span<const uint8_t>(&tag, 1)));
    pushed.emplace_back(at, tag);
  }
  std::stable_sort(pushed.begin(), pushed.end(),
                   [](const auto& x, const auto& y) { return x.first < y.first; });
  EXPECT_EQ(line.NextDueNs(), pushed.front().first);
  std::vector<uint8_t> got;
  EXPECT_EQ(line.PopDue(9, [&](std::span<const uint8_t> p) { got.push_back(p[0]); }),
            static_cast<size_t>(std::count_if(pushed.begin(), pushed.end(),
                                              [](const auto& x) { return x.first <= 9; })));
  line.PopDue(INT64_MAX, [&](std::span<const uint8_t> p) { got.push_back(p[0]); });
  ASSERT_EQ(got.size(), pushed.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], pushed[i].second) << i;
  EXPECT_TRUE(line.empty());
  EXPECT_EQ(line.NextDueNs(), INT64_MAX);
}

TEST(LinkemDelayLineTest, HoldsPacketsUntilDueAndKeepsTheirBytes) {
  DelayLine line(10);
  std::vector<uint8_t> big(1500, 0xab), small = {1, 2, 3};
  ASSERT_TRUE(line.Push(100, big));
  ASSERT_TRUE(line.Push(200, small));
  int calls = 0;
  EXPECT_EQ(line.PopDue(99, [&](std::span<const uint8_t>) { ++calls; }), 0u);
  line.PopDue(100, [&](std::span<const uint8_t> p) {
    EXPECT_EQ(std::vector<uint8_t>(p.begin(), p.end()), big);
  });
  // The pooled 1500-byte buffer is reused for a small packet: only its own bytes come out.
  ASSERT_TRUE(line.Push(300, small));
  std::vector<std::vector<uint8_t>> rest;
  line.PopDue(300, [&](std::span<const uint8_t> p) { rest.emplace_back(p.begin(), p.end()); });
  EXPECT_EQ(rest, (std::vector<std::vector<uint8_t>>{small, small}));
  EXPECT_EQ(calls, 0);
}

TEST(LinkemDelayLineTest, RefusesPacketsBeyondItsCapacity) {
  DelayLine line(2);
  uint8_t b = 0;
  EXPECT_TRUE(line.Push(1, std::span<const uint8_t>(&b, 1)));
  EXPECT_TRUE(line.Push(2, std::span<const uint8_t>(&b, 1)));
  EXPECT_FALSE(line.Push(3, std::span<const uint8_t>(&b, 1)));
  EXPECT_EQ(line.size(), 2u);
  line.PopDue(1, [](std::span<const uint8_t>) {});
  EXPECT_TRUE(line.Push(3, std::span<const uint8_t>(&b, 1)));
}

TEST(LinkemStatsTest, JsonHasEveryCounter) {
  DirectionStats s{.rx_packets = 1,
                   .rx_bytes = 2,
                   .tx_packets = 3,
                   .tx_bytes = 4,
                   .drop_loss = 5,
                   .drop_queue = 6,
                   .drop_overflow = 7,
                   .tx_errors = 8,
                   .max_queue_bytes = 9,
                   .in_flight_at_exit = 10};
  EXPECT_EQ(s.ToJson(),
            "{\"rx_packets\":1,\"rx_bytes\":2,\"tx_packets\":3,\"tx_bytes\":4,\"drop_loss\":5,"
            "\"drop_queue\":6,\"drop_overflow\":7,\"tx_errors\":8,\"max_queue_bytes\":9,"
            "\"in_flight_at_exit\":10}");
}

}  // namespace
}  // namespace dwcp::linkem
