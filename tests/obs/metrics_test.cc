#include "obs/metrics.h"

#include <gtest/gtest.h>

#include <cmath>

#include "obs/metrics_views.h"
#include "obs/process_metrics.h"

namespace dwcp::obs {
namespace {

TEST(MetricsTest, NamesFollowTheGuideRule) {
  EXPECT_EQ(*MetricName(Component::kAmst, "throughput", "bytes_per_second"),
            "dwcp_v3_amst_throughput_bytes_per_second");
  EXPECT_EQ(*MetricName(Component::kHde, "compression_ratio", "percent"),
            "dwcp_v3_hde_compression_ratio_percent");
  EXPECT_EQ(*MetricName(std::nullopt, "migrations", "total"), "dwcp_v3_migrations_total");
  EXPECT_EQ(*MetricName(Component::kPba, "prediction_accuracy", "percent"),
            "dwcp_v3_pba_prediction_accuracy_percent");
  EXPECT_EQ(*MetricName(Component::kHde, "pages_total", "total"), "dwcp_v3_hde_pages_total");
  EXPECT_FALSE(MetricName(Component::kHde, "BadName", "").ok());
  EXPECT_FALSE(MetricName(Component::kHde, "has-dash", "").ok());
  EXPECT_FALSE(MetricName(Component::kHde, "trailing_", "").ok());
  EXPECT_FALSE(MetricName(Component::kHde, "", "").ok());
  EXPECT_FALSE(MetricName(Component::kHde, "latency", "milliseconds").ok());
}

TEST(MetricsTest, FamilyBuildersRegisterInTheOneRegistry) {
  Metrics m;
  auto& family = m.GaugeFamily(Component::kHde, "my_custom_metric", "", "Description");
  family.Add({{"label1", "value1"}, {"label2", "value2"}}).Set(42.0);
  m.CounterFamily(Component::kAmst, "resets", "Resets").Add({}).Increment(3);
  std::string text = PrometheusText(m.Collect());
  EXPECT_NE(text.find("dwcp_v3_hde_my_custom_metric{label1=\"value1\",label2=\"value2\"} 42"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("dwcp_v3_amst_resets_total 3"), std::string::npos);
  // The same name returns the same family.
  EXPECT_EQ(&m.GaugeFamily(Component::kHde, "my_custom_metric", "", "Description"), &family);
}

TEST(MetricsTest, ComponentViewKeepsOnlyThatComponent) {
  Metrics m;
  m.SetHealth(Component::kAmst, kHealthy);
  m.SetHealth(Component::kHde, kHealthDegraded);
  m.CountError(Component::kHde, "digest_mismatch", "critical");
  m.CountError(Component::kAmst, "protocol", "critical");
  std::string hde = PrometheusText(ComponentView(m.Collect(), Component::kHde));
  EXPECT_NE(hde.find("dwcp_v3_component_health{component=\"hde\"} 0.5"), std::string::npos) << hde;
  EXPECT_NE(hde.find("error_type=\"digest_mismatch\""), std::string::npos);
  EXPECT_NE(hde.find("dwcp_v3_hde_pages_total"), std::string::npos);
  EXPECT_EQ(hde.find("component=\"amst\""), std::string::npos);
  EXPECT_EQ(hde.find("dwcp_v3_migrations_total"), std::string::npos);
  // A component nothing reports on has an empty view.
  EXPECT_EQ(PrometheusText(ComponentView(m.Collect(), Component::kItp)), "");
}

TEST(MetricsTest, HistogramQuantileInterpolatesLikePromQL) {
  Metrics m;
  // 10 migrations of 0.3 s and 10 of 3 s: buckets (0.25, 0.5] and (2.5, 5].
  for (int i = 0; i < 10; ++i) m.migration_latency(Component::kAmst).Observe(0.3);
  for (int i = 0; i < 10; ++i) m.migration_latency(Component::kHde).Observe(3);
  auto f = m.Collect();
  // Rank 10 of 20 is the top of (0.25, 0.5]: 0.5.
  EXPECT_DOUBLE_EQ(HistogramQuantile(f, "dwcp_v3_migration_latency_seconds", 0.5), 0.5);
  // Rank 19 of 20: 9/10 of the way through (2.5, 5].
  EXPECT_DOUBLE_EQ(HistogramQuantile(f, "dwcp_v3_migration_latency_seconds", 0.95), 4.75);
  EXPECT_DOUBLE_EQ(
      HistogramQuantile(f, "dwcp_v3_migration_latency_seconds", 0.5, "component", "amst"), 0.375);
  EXPECT_TRUE(std::isnan(HistogramQuantile(f, "dwcp_v3_migration_downtime_seconds", 0.5)));
}

TEST(MetricsTest, SummaryReportsCountsHealthAndRatios) {
  Metrics m;
  m.migrations(MigrationResult::kSuccess, 3).Increment(4);
  m.migrations(MigrationResult::kFailed, 1).Increment();
  m.hde_input_bytes.Increment(300);
  m.hde_output_bytes.Increment(100);
  m.SetHealth(Component::kAcp, kHealthDown);
  m.CountError(Component::kAcp, "store");
  auto s = Summary(m.Collect(), {"node-x", 2});
  EXPECT_EQ(s["node"], "node-x");
  EXPECT_EQ(s["migrations"]["total"], 5);
  EXPECT_EQ(s["migrations"]["success"], 4);
  EXPECT_EQ(s["migrations"]["failed"], 1);
  EXPECT_EQ(s["migrations"]["per_minute"], 2);
  EXPECT_EQ(s["bytes"]["hde_compression_ratio"], 3);
  EXPECT_EQ(s["health"]["acp"], 0);
  EXPECT_EQ(s["errors"]["by_component"]["acp"], 1);
  EXPECT_EQ(s["errors"]["by_type"]["store"], 1);
  EXPECT_EQ(s["latency_seconds"]["p99"], 0);  // no observations: 0, not NaN, in JSON
}

TEST(MetricsTest, ComputedGaugesReadAtScrapeTime) {
  Metrics m;
  double v = 1;
  m.AddComputedGauge("dwcp_v3_test_value", "test", [&] { return v; });
  EXPECT_EQ(SumOf(m.Collect(), "dwcp_v3_test_value"), 1);
  v = 7;
  EXPECT_EQ(SumOf(m.Collect(), "dwcp_v3_test_value"), 7);
  m.hde_input_bytes.Increment(400);
  m.hde_output_bytes.Increment(100);
  EXPECT_EQ(SumOf(m.Collect(), "dwcp_v3_hde_compression_ratio"), 4);
  EXPECT_EQ(SumOf(m.Collect(), "dwcp_v3_hde_compression_ratio_percent"), 75);
}

TEST(MetricsTest, ProcessSampleReadsThisProcess) {
  ProcessSample s = ReadProcessSample();
  EXPECT_GT(s.resident_bytes, 1u << 20);
  EXPECT_GT(s.virtual_bytes, s.resident_bytes);
  EXPECT_GE(s.threads, 1u);
  EXPECT_GT(s.open_fds, 0u);
  EXPECT_GT(s.start_time_seconds, 1.6e9);
  EXPECT_GT(HostMemoryBytes(), s.resident_bytes);
  auto families = ProcessCollector().Collect();
  EXPECT_EQ(families.size(), 7u);
  EXPECT_EQ(families[0].name, "process_cpu_seconds_total");
}

}  // namespace
}  // namespace dwcp::obs
