#include "hde/hde_stats.h"

#include <gtest/gtest.h>

#include <string>

#include "obs/metrics.h"
#include "obs/metrics_views.h"

namespace dwcp::hde {
namespace {

double Value(const std::vector<prometheus::MetricFamily>& families, const std::string& name,
             const std::string& label = "", const std::string& value = "") {
  double sum = 0;
  for (const auto& f : families) {
    if (f.name != name) continue;
    for (const auto& m : f.metric) {
      bool match = label.empty();
      for (const auto& l : m.label) match = match || (l.name == label && l.value == value);
      if (!match) continue;
      switch (f.type) {
        case prometheus::MetricType::Counter:
          sum += m.counter.value;
          break;
        case prometheus::MetricType::Gauge:
          sum += m.gauge.value;
          break;
        case prometheus::MetricType::Histogram:
          sum += static_cast<double>(m.histogram.sample_count);
          break;
        default:
          break;
      }
    }
  }
  return sum;
}

EncodeStats Sample() {
  EncodeStats s;
  s.pages = 256;
  s.zero_pages = 64;
  s.dedup_pages = 40;
  s.delta_pages = 50;
  s.raw_pages = 102;
  s.pattern_pages = {64, 40, 50, 60, 20, 22};
  s.delta_base_hits = 60;
  s.delta_base_misses = 20;
  s.input_bytes = 256 * 4096;
  s.output_bytes = 262144;
  s.codec = Codec::kZstd;
  s.plan_seconds = 0.0002;
  s.compress_seconds = 0.001;
  return s;
}

TEST(HdeStatsTest, EncodedBatchesUpdateTheGuideMetrics) {
  obs::Metrics metrics;
  HdeStats stats(metrics);
  stats.RecordEncoded(Sample());
  EncodeStats lz4 = Sample();
  lz4.codec = Codec::kLz4;
  stats.RecordEncoded(lz4);
  auto f = metrics.Collect();
  EXPECT_EQ(Value(f, "dwcp_v3_compression_ratio", "algorithm", "zstd"), 1);
  EXPECT_EQ(Value(f, "dwcp_v3_compression_ratio", "algorithm", "lz4"), 1);
  EXPECT_EQ(Value(f, "dwcp_v3_compression_ratio", "algorithm", "none"), 0);
  EXPECT_EQ(Value(f, "dwcp_v3_hde_pages_total", "encoding", "zero"), 128);
  EXPECT_EQ(Value(f, "dwcp_v3_hde_pages_total", "encoding", "dedup"), 80);
  EXPECT_EQ(Value(f, "dwcp_v3_hde_pages_total", "encoding", "delta"), 100);
  EXPECT_EQ(Value(f, "dwcp_v3_hde_pages_total", "encoding", "raw"), 204);
  EXPECT_EQ(Value(f, "dwcp_v3_hde_pattern_pages_total", "pattern", "text"), 120);
  EXPECT_EQ(Value(f, "dwcp_v3_hde_pattern_pages_total", "pattern", "random"), 44);
  EXPECT_EQ(Value(f, "dwcp_v3_hde_pattern_pages_total"), 512);
  EXPECT_EQ(Value(f, "dwcp_v3_hde_delta_base_lookups_total", "result", "hit"), 120);
  EXPECT_EQ(Value(f, "dwcp_v3_hde_compression_latency_seconds", "algorithm", "zstd"), 1);
  EXPECT_EQ(Value(f, "dwcp_v3_hde_input_bytes_total"), 2 * 256 * 4096);
  EXPECT_EQ(Value(f, "dwcp_v3_hde_compression_ratio"), 4);
  EXPECT_DOUBLE_EQ(Value(f, "dwcp_v3_hde_dedup_hit_ratio"), 40.0 / 192.0);
  EXPECT_DOUBLE_EQ(Value(f, "dwcp_v3_hde_delta_hit_ratio"), 50.0 / 80.0);
  EXPECT_EQ(Value(f, "dwcp_v3_component_latency_seconds", "operation", "encode_batch"), 2);
  // All of them on /metrics/hde (the component view), bar the shared ratio histogram.
  std::string hde = obs::PrometheusText(obs::ComponentView(f, obs::Component::kHde));
  for (const char* name : {"dwcp_v3_hde_pattern_pages_total", "dwcp_v3_hde_dedup_hit_ratio",
                           "dwcp_v3_hde_delta_hit_ratio", "dwcp_v3_hde_compression_latency_seconds",
                           "dwcp_v3_hde_delta_base_lookups_total"}) {
    EXPECT_NE(hde.find(name), std::string::npos) << name;
  }
}

TEST(HdeStatsTest, DecodedAndRejectedBatches) {
  obs::Metrics metrics;
  HdeStats stats(metrics);
  HdeStats again(metrics);  // a second instance shares the series
  DecodeStats d;
  d.parse_seconds = 0.001;
  stats.RecordDecoded(d);
  stats.RecordRejected(DataLoss("content hash mismatch"));
  again.RecordRejected(ProtocolError("truncated"));
  again.RecordRejected(FailedPrecondition("wrong guest"));
  auto f = metrics.Collect();
  EXPECT_EQ(Value(f, "dwcp_v3_component_latency_seconds", "operation", "decode_batch"), 1);
  EXPECT_EQ(Value(f, "dwcp_v3_errors_total", "error_type", "data_loss"), 1);
  EXPECT_EQ(Value(f, "dwcp_v3_errors_total", "error_type", "protocol"), 1);
  EXPECT_EQ(Value(f, "dwcp_v3_errors_total", "error_type", "failed_precondition"), 1);
  int pattern_families = 0;
  for (const auto& fam : f) pattern_families += fam.name == "dwcp_v3_hde_pattern_pages_total";
  EXPECT_EQ(pattern_families, 1);
}

}  // namespace
}  // namespace dwcp::hde
