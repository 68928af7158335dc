#include "obs/summary_history.h"

#include <gtest/gtest.h>

#include "obs/metrics.h"

namespace dwcp::obs {
namespace {

constexpr int64_t kT0 = 1'764'000'000'000;

TEST(SummaryHistoryTest, APointNeedsAnIntervalAndABaseReading) {
  Metrics m;
  SummaryHistory h;
  EXPECT_TRUE(h.Offer(m.Collect(), kT0));           // the first reading: a base, no point
  EXPECT_FALSE(h.Offer(m.Collect(), kT0 + 4'999));  // within the interval
  EXPECT_EQ(h.ToJson()["points"].size(), 0u);
  EXPECT_TRUE(h.Offer(m.Collect(), kT0 + 5'000));
  auto json = h.ToJson();
  ASSERT_EQ(json["points"].size(), 1u);
  EXPECT_EQ(json["interval_seconds"], 5.0);
  EXPECT_EQ(json["window_seconds"], 60.0);
  const auto& p = json["points"][0];
  EXPECT_EQ(p["t_ms"], kT0 + 5'000);
  // No migration finished: quantiles are unknown, not zero.
  EXPECT_TRUE(p["latency_seconds"]["p50"].is_null());
  EXPECT_EQ(p["migrations_per_minute"], 0.0);
}

TEST(SummaryHistoryTest, RatesAndQuantilesComeFromTheWindow) {
  Metrics m;
  SummaryHistory h;
  h.Offer(m.Collect(), kT0);
  // An old, slow migration before the window starts...
  m.migration_latency(Component::kAcp).Observe(50);
  h.Offer(m.Collect(), kT0 + 5'000);
  // ... then ten fast ones, 1 GB on the wire and errors, over the next minute.
  for (int i = 0; i < 10; ++i) {
    m.migration_latency(Component::kAmst).Observe(1.5);
    m.migrations(MigrationResult::kSuccess, 3).Increment();
  }
  m.wire_sent.Increment(1e9);
  m.hde_input_bytes.Increment(2e9);
  m.CountError(Component::kAmst, "timeout", "warning");
  m.throughput.Set(3e8);
  for (int64_t t = 10'000; t <= 65'000; t += 5'000) h.Offer(m.Collect(), kT0 + t);
  auto points = h.ToJson()["points"];
  ASSERT_EQ(points.size(), 13u);  // +5 s, then +10 s .. +65 s
  // The point at +10 s saw all of it within its 5 s interval.
  const auto& first = points[1];
  EXPECT_DOUBLE_EQ(first["network_bytes_per_second"].get<double>(), 1e9 / 5);
  EXPECT_DOUBLE_EQ(first["hde_input_bytes_per_second"].get<double>(), 2e9 / 5);
  EXPECT_DOUBLE_EQ(first["throughput_bytes_per_second"]["tcp"].get<double>(), 3e8);
  // The last point's window (+5 s .. +65 s) holds the ten fast migrations, not the slow one.
  const auto& last = points.back();
  EXPECT_EQ(last["latency_seconds"]["count"], 10.0);
  EXPECT_GT(last["latency_seconds"]["p99"].get<double>(), 1.0);
  EXPECT_LE(last["latency_seconds"]["p99"].get<double>(), 2.5);
  EXPECT_DOUBLE_EQ(last["migrations_per_minute"].get<double>(), 10.0);
  EXPECT_DOUBLE_EQ(last["errors_per_second"]["amst"].get<double>(), 1.0 / 60);
  // Transfer stopped: the interval rate falls back to zero.
  EXPECT_EQ(last["network_bytes_per_second"], 0.0);
  // An earlier point's window still included the slow migration.
  EXPECT_GT(points[1]["latency_seconds"]["p99"].get<double>(), 10.0);
}

TEST(SummaryHistoryTest, WithAnOriginTheFirstPointCountsFromProcessStart) {
  Metrics m;
  SummaryHistory h;
  h.SetOrigin(kT0);
  // A migration that finished before the first reading still shows in the first point.
  m.migration_latency(Component::kAmst).Observe(0.8);
  m.migrations(MigrationResult::kSuccess, 3).Increment();
  EXPECT_FALSE(h.Offer(m.Collect(), kT0 + 1'000));
  EXPECT_TRUE(h.Offer(m.Collect(), kT0 + 5'000));
  auto points = h.ToJson()["points"];
  ASSERT_EQ(points.size(), 1u);
  EXPECT_EQ(points[0]["latency_seconds"]["count"], 1.0);
  EXPECT_GT(points[0]["latency_seconds"]["p50"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(points[0]["migrations_per_minute"].get<double>(), 60.0 / 5);
}

TEST(SummaryHistoryTest, KeepsAtMostMaxPoints) {
  Metrics m;
  SummaryHistory h({.interval_ms = 1000, .window_ms = 3000, .max_points = 4});
  for (int i = 0; i <= 10; ++i) h.Offer(m.Collect(), kT0 + i * 1000);
  auto points = h.ToJson()["points"];
  ASSERT_EQ(points.size(), 4u);
  EXPECT_EQ(points[0]["t_ms"], kT0 + 7'000);
  EXPECT_EQ(points[3]["t_ms"], kT0 + 10'000);
}

}  // namespace
}  // namespace dwcp::obs
