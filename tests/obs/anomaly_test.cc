#include "obs/anomaly.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <random>

#include "common/clock.h"
#include "obs/log.h"
#include "obs/metrics.h"
#include "obs/metrics_views.h"

namespace dwcp::obs {
namespace {

using std::chrono::seconds;

// One simulated second of a node's load: a migration finishes every other second.
struct Second {
  bool migration = false;
  double latency = 2;         // s
  double throughput = 200e6;  // B/s
  double compression = 2;     // logical / wire
  int errors = 0;
  double prediction = 0.1;
  double consensus = 0.002;  // s, one store transaction per second
  double cpu = 30;           // percent
  double memory = 20;        // percent
};

// Normal load with seeded noise and an optional slow drift, fed to a detector the way the
// node will: ObserveMigration per finished migration, Tick once a second.
class AnomalyHarness {
 public:
  explicit AnomalyHarness(uint32_t seed = 1, AnomalyConfig config = {})
      : detector_(config, metrics_, clock_), rng_(seed) {}

  // The normal load at second t: `drift` grows linearly to 1 + drift_total over drift_span.
  Second Normal(int64_t t) {
    const double drift = 1 + drift_total_ * std::min(1.0, static_cast<double>(t) / drift_span_);
    std::normal_distribution<double> n(0, 1);
    Second s;
    s.migration = t % 2 == 0;
    s.latency = 2 * drift * (1 + 0.05 * n(rng_));
    s.throughput = 200e6 / drift * (1 + 0.05 * n(rng_));
    s.compression = 2 * (1 + 0.02 * n(rng_));
    s.errors = std::bernoulli_distribution(0.5 * drift / 60)(rng_) ? 1 : 0;
    s.prediction = 0.1 * drift + 0.01 * n(rng_);
    s.consensus = 0.002 * drift * std::exp(0.25 * n(rng_));
    s.cpu = 30 * drift + 3 * n(rng_);
    s.memory = 20 * drift + 0.3 * n(rng_);
    return s;
  }

  // Runs n seconds; `change` may alter each second's normal load.
  void Run(int n, const std::function<void(int64_t, Second&)>& change = nullptr) {
    for (int i = 0; i < n; ++i) {
      clock_.Advance(seconds(1));
      ++t_;
      Second s = Normal(t_);
      if (change) change(t_, s);
      if (s.migration) {
        ++migrations_;
        MigrationObservation o;
        o.latency_seconds = s.latency;
        o.throughput_bytes_per_second = s.throughput;
        o.compression_ratio = s.compression;
        o.trace_id = TraceOf(migrations_);
        o.vm_id = "vm-" + std::to_string(migrations_ % 4);
        o.migration_id = "m-" + std::to_string(migrations_);
        detector_.ObserveMigration(o);
      }
      errors_ += s.errors;
      consensus_sum_ += s.consensus;
      consensus_count_ += 1;
      AnomalyTick tick;
      tick.errors_total = errors_;
      tick.consensus_seconds_sum = consensus_sum_;
      tick.consensus_count = consensus_count_;
      tick.cpu_percent = s.cpu;
      tick.memory_percent = s.memory;
      tick.prediction_error = s.prediction;
      detector_.Tick(tick);
    }
  }

  // Runs until a detection is counted or `limit` seconds pass; returns the seconds it took
  // (limit + 1 when none came).
  int RunUntilDetection(int limit, const std::function<void(int64_t, Second&)>& change) {
    const size_t before = Total();
    for (int i = 1; i <= limit; ++i) {
      Run(1, change);
      if (Total() > before) return i;
    }
    return limit + 1;
  }

  static std::string TraceOf(int64_t migration) {
    char buf[33];
    std::snprintf(buf, sizeof buf, "%032llx", static_cast<unsigned long long>(migration));
    return buf;
  }

  double Count(const std::string& type = "", const std::string& severity = "") {
    std::vector<std::pair<std::string, std::string>> match;
    if (!type.empty()) match.emplace_back("anomaly_type", type);
    if (!severity.empty()) match.emplace_back("severity", severity);
    return SumOf(metrics_.Collect(), "dwcp_v3_anomaly_detections_total", match);
  }
  size_t Total() { return static_cast<size_t>(Count()); }

  FakeClock clock_;
  Metrics metrics_;
  AnomalyDetector detector_;
  std::mt19937 rng_;
  double drift_total_ = 0;
  double drift_span_ = 1;
  int64_t t_ = 0;
  int64_t migrations_ = 0;
  double errors_ = 0, consensus_sum_ = 0, consensus_count_ = 0;
};

TEST(AnomalyTest, SeriesExistFromTheStart) {
  AnomalyHarness h;
  std::string text = PrometheusText(h.metrics_.Collect());
  for (int t = 0; t < kAnomalyTypeCount; ++t) {
    for (const char* sev : {"warning", "critical"}) {
      std::string series = std::string("dwcp_v3_anomaly_detections_total{anomaly_type=\"") +
                           AnomalyTypeName(static_cast<AnomalyType>(t)) + "\",severity=\"" + sev +
                           "\"} 0";
      EXPECT_NE(text.find(series), std::string::npos) << series;
    }
  }
}

TEST(AnomalyTest, SteadyDriftingLoadWithOutliersRaisesNone) {
  AnomalyHarness h(42);
  h.drift_total_ = 0.5;  // +50 % over six hours (throughput -33 %)
  h.drift_span_ = 6 * 3600;
  int outliers = 0;
  h.Run(6 * 3600 + 1800, [&](int64_t t, Second& s) {
    // Isolated single-sample outliers on every series.
    if (t % 617 == 0) s.cpu = 98, ++outliers;
    if (t % 701 == 0) s.consensus = 0.25, ++outliers;
    if (t % 809 == 0) s.memory += 30, ++outliers;
    if (t % 907 == 0) s.prediction = 1.0, ++outliers;
    if (t % 1009 == 0) s.errors = 3, ++outliers;
    if (s.migration && t % 106 == 0) s.latency *= 6, ++outliers;
    if (s.migration && t % 118 == 0) s.throughput /= 6, ++outliers;
    if (s.migration && t % 142 == 0) s.compression = 1, ++outliers;
  });
  EXPECT_GT(outliers, 500);
  EXPECT_EQ(h.Count(), 0) << h.detector_.Recent(5).dump(1);
  EXPECT_TRUE(h.detector_.Detections(10).empty());
  // The baselines followed the drift.
  auto summary = h.detector_.AnomalySummary();
  EXPECT_NEAR(summary["series"]["migration_latency"]["baseline"].get<double>(), 3.0, 0.15);
  EXPECT_NEAR(summary["series"]["cpu"]["baseline"].get<double>(), 45, 1.5);
  EXPECT_EQ(summary["detections"]["total"], 0);
}

struct Injection {
  const char* name;
  AnomalyType type;
  AnomalySeverity severity;
  AnomalySeries series;
  std::function<void(int64_t, Second&)> apply;
  int within;  // seconds
};

std::vector<Injection> Injections() {
  using S = AnomalySeries;
  using T = AnomalyType;
  const auto kW = AnomalySeverity::kWarning;
  const auto kC = AnomalySeverity::kCritical;
  return {
      {"latency x5", T::kLatencySpike, kC, S::kMigrationLatency,
       [](int64_t, Second& s) { s.latency = 10; }, 5},
      {"latency +90%", T::kLatencySpike, kW, S::kMigrationLatency,
       [](int64_t, Second& s) { s.latency = 3.8; }, 5},
      {"throughput -90%", T::kThroughputDrop, kC, S::kMigrationThroughput,
       [](int64_t, Second& s) { s.throughput = 20e6; }, 5},
      {"throughput -55%", T::kThroughputDrop, kW, S::kMigrationThroughput,
       [](int64_t, Second& s) { s.throughput = 90e6; }, 5},
      {"error storm", T::kErrorBurst, kC, S::kErrorRate, [](int64_t, Second& s) { s.errors = 50; },
       4},
      {"compression 2 -> 1", T::kCompressionDrop, kC, S::kCompressionRatio,
       [](int64_t, Second& s) { s.compression = 1.0; }, 5},
      {"compression 2 -> 1.5", T::kCompressionDrop, kW, S::kCompressionRatio,
       [](int64_t, Second& s) { s.compression = 1.5; }, 5},
      {"prediction error x3.5", T::kPredictionError, kC, S::kPredictionError,
       [](int64_t, Second& s) { s.prediction = 0.35; }, 4},
      {"prediction error x2.2", T::kPredictionError, kW, S::kPredictionError,
       [](int64_t, Second& s) { s.prediction = 0.22; }, 4},
      {"store 60 ms", T::kConsensusLatency, kC, S::kConsensusLatency,
       [](int64_t, Second& s) { s.consensus = 0.060; }, 4},
      {"store 30 ms", T::kConsensusLatency, kW, S::kConsensusLatency,
       [](int64_t, Second& s) { s.consensus = 0.030; }, 4},
      {"cpu 95 %", T::kResourceSaturation, kC, S::kCpu, [](int64_t, Second& s) { s.cpu = 95; }, 4},
      {"memory 20 -> 32 %", T::kResourceSaturation, kW, S::kMemory,
       [](int64_t, Second& s) { s.memory = 32; }, 4},
  };
}

TEST(AnomalyTest, EachInjectedAnomalyIsCaught) {
  for (const Injection& inj : Injections()) {
    SCOPED_TRACE(inj.name);
    AnomalyHarness h(7);
    h.Run(600);  // warm-up: ten minutes of normal load
    ASSERT_EQ(h.Count(), 0);
    const int took = h.RunUntilDetection(60, inj.apply);
    EXPECT_LE(took, inj.within);
    ASSERT_EQ(h.Count(), 1);
    EXPECT_EQ(h.Count(AnomalyTypeName(inj.type), AnomalySeverityName(inj.severity)), 1);
    auto d = h.detector_.Detections(5);
    ASSERT_EQ(d.size(), 1u);
    EXPECT_EQ(d[0].type, inj.type);
    EXPECT_EQ(d[0].severity, inj.severity);
    EXPECT_EQ(d[0].series, inj.series);
    EXPECT_EQ(d[0].wall_millis, h.clock_.WallMillis());
    EXPECT_GE(d[0].score, inj.severity == AnomalySeverity::kCritical ? 8 : 4);
    if (inj.severity == AnomalySeverity::kWarning) {
      EXPECT_LT(d[0].score, 8);
    }
    if (inj.series == AnomalySeries::kMigrationLatency ||
        inj.series == AnomalySeries::kMigrationThroughput ||
        inj.series == AnomalySeries::kCompressionRatio) {
      // The migration that confirmed it.
      EXPECT_EQ(d[0].trace_id, AnomalyHarness::TraceOf(h.migrations_));
      EXPECT_EQ(d[0].migration_id, "m-" + std::to_string(h.migrations_));
      EXPECT_EQ(d[0].vm_id, "vm-" + std::to_string(h.migrations_ % 4));
    } else {
      EXPECT_TRUE(d[0].trace_id.empty());
    }
    // Sustained for ten more minutes, it is still one incident.
    h.Run(600, inj.apply);
    EXPECT_EQ(h.Count(), 1) << h.detector_.Recent(5).dump(1);
  }
}

TEST(AnomalyTest, ErrorBurstEscalatesFromWarningToCritical) {
  AnomalyHarness h(3);
  h.Run(600);
  auto burst = [](int64_t, Second& s) { s.errors = 5; };  // 300 a minute, ramping in
  EXPECT_LE(h.RunUntilDetection(10, burst), 6);
  auto d = h.detector_.Detections(1);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].type, AnomalyType::kErrorBurst);
  EXPECT_EQ(d[0].severity, AnomalySeverity::kWarning);
  EXPECT_LE(h.RunUntilDetection(10, burst), 4);
  d = h.detector_.Detections(2);
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].severity, AnomalySeverity::kCritical);
  EXPECT_TRUE(d[0].escalation);
  EXPECT_EQ(h.Count("error_burst", "warning"), 1);
  EXPECT_EQ(h.Count("error_burst", "critical"), 1);
  h.Run(300, burst);
  EXPECT_EQ(h.Count(), 2);
}

TEST(AnomalyTest, CooldownCountsAFlappingIncidentOnce) {
  AnomalyHarness h(11);
  h.Run(600);
  // cpu at 95 % for 5 s in every 20 s: each burst opens an incident, the calm closes it.
  auto flap = [](int64_t t, Second& s) {
    if (t % 20 < 5) s.cpu = 95;
  };
  h.Run(280, flap);
  EXPECT_EQ(h.Count("resource_saturation"), 1);
  auto summary = h.detector_.AnomalySummary();
  EXPECT_GE(summary["series"]["cpu"]["suppressed"].get<int>(), 10);
  // Past the cooldown (5 min) a burst counts again.
  h.Run(60, flap);
  EXPECT_EQ(h.Count("resource_saturation"), 2);

  // Without a cooldown each burst is its own detection.
  AnomalyConfig c;
  c.cooldown = std::chrono::milliseconds(0);
  AnomalyHarness every(11, c);
  every.Run(600);
  every.Run(200, flap);
  EXPECT_EQ(every.Count("resource_saturation"), 10);
}

TEST(AnomalyTest, ALastingNewLevelBecomesTheBaseline) {
  AnomalyHarness h(5);
  h.Run(600);
  auto slower = [](int64_t, Second& s) { s.latency *= 3; };
  h.Run(1800, slower);
  EXPECT_EQ(h.Count("latency_spike"), 1);
  auto summary = h.detector_.AnomalySummary();
  EXPECT_FALSE(summary["series"]["migration_latency"]["open"].get<bool>());
  EXPECT_NEAR(summary["series"]["migration_latency"]["baseline"].get<double>(), 6, 0.3);
  // Back to normal (a drop, not an anomaly for latency), then a new spike past the
  // cooldown is caught again against the restored baseline.
  h.Run(600);
  EXPECT_EQ(h.Count(), 1);
  EXPECT_LE(h.RunUntilDetection(10, [](int64_t, Second& s) { s.latency = 10; }), 5);
  EXPECT_EQ(h.Count("latency_spike", "critical"), 2);
}

TEST(AnomalyTest, NothingIsDetectedDuringWarmUp) {
  AnomalyHarness h(9);
  // From the first second the node is saturated: there is no normal to compare with yet.
  h.Run(30, [](int64_t t, Second& s) { s.cpu = t < 20 ? 30 : 95; });
  EXPECT_EQ(h.Count(), 0);
  EXPECT_FALSE(h.detector_.AnomalySummary()["series"]["cpu"]["warm"].get<bool>());
}

TEST(AnomalyTest, RecentIsATimelineNewestFirst) {
  AnomalyHarness h(13);
  h.Run(600);
  h.RunUntilDetection(10, [](int64_t, Second& s) { s.cpu = 95; });
  const int64_t first_ms = h.clock_.WallMillis();
  h.Run(30);
  h.RunUntilDetection(10, [](int64_t, Second& s) { s.consensus = 0.1; });
  auto recent = h.detector_.Recent(10);
  ASSERT_EQ(recent.size(), 2u);
  EXPECT_EQ(recent[0]["anomaly_type"], "consensus_latency");
  EXPECT_EQ(recent[0]["series"], "consensus_latency");
  EXPECT_EQ(recent[1]["anomaly_type"], "resource_saturation");
  EXPECT_EQ(recent[1]["series"], "cpu");
  EXPECT_EQ(recent[1]["severity"], "critical");
  EXPECT_EQ(recent[1]["timestamp"], FormatTimestamp(first_ms));
  EXPECT_NEAR(recent[1]["value"].get<double>(), 95, 1e-9);
  EXPECT_NEAR(recent[1]["baseline"].get<double>(), 30, 1);
  EXPECT_EQ(h.detector_.Recent(1).size(), 1u);
  EXPECT_EQ(h.detector_.Recent(1)[0]["anomaly_type"], "consensus_latency");
  auto summary = h.detector_.AnomalySummary(1);
  EXPECT_EQ(summary["detections"]["total"], 2);
  EXPECT_EQ(summary["detections"]["by_type"]["resource_saturation"]["critical"], 1);
  EXPECT_EQ(summary["recent"].size(), 1u);
}

TEST(AnomalyTest, WarnLineCarriesTheMigrationsTraceId) {
  AnomalyHarness h(17);
  h.Run(600);
  // The fields the WARN line carries, as values.
  h.RunUntilDetection(10, [](int64_t, Second& s) { s.latency = 12; });
  auto d = h.detector_.Detections(1);
  ASSERT_EQ(d.size(), 1u);
  nlohmann::json fields = d[0].ToJson();
  EXPECT_EQ(fields["trace_id"], AnomalyHarness::TraceOf(h.migrations_));
  EXPECT_EQ(fields["vm_id"], d[0].vm_id);
  EXPECT_EQ(fields["anomaly_type"], "latency_spike");
  EXPECT_EQ(fields["value"], 12);

  // And the line itself, through a log file.
  char path[] = "/tmp/dwcp_anomaly_log_XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  ConfigureLogging(LogLevel::kInfo, "node-t", path);
  h.Run(400);  // past the cooldown, back to normal
  h.RunUntilDetection(10, [](int64_t, Second& s) { s.throughput = 10e6; });
  ConfigureLogging(LogLevel::kInfo, "", "/dev/stderr");
  std::ifstream in(path);
  std::string line;
  std::vector<nlohmann::json> warns;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.value("message", "") == "anomaly detected") warns.push_back(j);
  }
  std::remove(path);
  ASSERT_EQ(warns.size(), 1u);
  EXPECT_EQ(warns[0]["level"], "warn");
  EXPECT_EQ(warns[0]["node_id"], "node-t");
  EXPECT_EQ(warns[0]["anomaly_type"], "throughput_drop");
  EXPECT_EQ(warns[0]["series"], "migration_throughput");
  EXPECT_EQ(warns[0]["trace_id"], AnomalyHarness::TraceOf(h.migrations_));
  EXPECT_EQ(warns[0]["vm_id"], "vm-" + std::to_string(h.migrations_ % 4));
  EXPECT_EQ(warns[0]["migration_id"], "m-" + std::to_string(h.migrations_));
  EXPECT_EQ(warns[0]["value"], 10e6);
  EXPECT_GT(warns[0]["baseline"].get<double>(), 150e6);
  EXPECT_GE(warns[0]["score"].get<double>(), 8);
}

TEST(AnomalyTest, TickFromTheNodesMetrics) {
  Metrics m;
  m.CountError(Component::kAmst, "unavailable");
  m.CountError(Component::kAcp, "store", "critical");
  m.store_latency.Observe(0.004);
  m.store_latency.Observe(0.002);
  m.commit_latency.Observe(0.010);
  m.encode_latency.Observe(5);  // not ACP
  m.cpu_percent.Set(42);
  m.memory_percent.Set(7.5);
  AnomalyTick t = AnomalyTick::FromFamilies(m.Collect());
  EXPECT_EQ(t.errors_total, 2);
  EXPECT_EQ(t.consensus_count, 3);
  EXPECT_NEAR(*t.consensus_seconds_sum, 0.016, 1e-12);
  EXPECT_EQ(t.cpu_percent, 42);
  EXPECT_EQ(t.memory_percent, 7.5);
  EXPECT_FALSE(t.prediction_error.has_value());
  EXPECT_FALSE(AnomalyTick::FromFamilies({}).cpu_percent.has_value());
}

TEST(AnomalyTest, ConvenienceObserveMigration) {
  FakeClock clock;
  Metrics metrics;
  AnomalyDetector d(AnomalyConfig{}, metrics, clock);
  for (int i = 0; i < 30; ++i) {
    clock.Advance(seconds(2));
    d.ObserveMigration(2.0 + 0.01 * (i % 5), 100e6, "t" + std::to_string(i), "vm-a");
  }
  clock.Advance(seconds(2));
  d.ObserveMigration(9, 100e6, "slow-1", "vm-a");
  clock.Advance(seconds(2));
  d.ObserveMigration(9, 100e6, "slow-2", "vm-b");
  auto found = d.Detections(5);
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].trace_id, "slow-2");
  EXPECT_EQ(found[0].vm_id, "vm-b");
  EXPECT_EQ(found[0].type, AnomalyType::kLatencySpike);
}

Status Parse(const std::string& yaml, AnomalyConfig* c) {
  return ParseAnomalyConfig(YAML::Load(yaml)["anomaly"], c);
}

TEST(AnomalyConfigTest, DefaultsAndEveryKey) {
  AnomalyConfig c;
  EXPECT_TRUE(ValidateAnomalyConfig(c).ok());
  EXPECT_EQ(c.warning_score, 4);
  EXPECT_EQ(c.critical_score, 8);
  EXPECT_EQ(c.cooldown, std::chrono::minutes(5));
  EXPECT_EQ(c.series[static_cast<int>(AnomalySeries::kMigrationLatency)].window, 50u);
  ASSERT_TRUE(Parse("anomaly:\n", &c).ok());
  Status st = Parse(R"(
anomaly:
  warning_score: 3.5
  critical_score: 7
  clear_score: 1.5
  cooldown: 10m
  series:
    cpu:
      window: 600
      warmup: 120
      min_deviation: 10
      min_relative_deviation: 0.2
      confirm: 5
      clear: 10
    migration_latency: {min_deviation: 0.5}
)",
                    &c);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(c.warning_score, 3.5);
  EXPECT_EQ(c.critical_score, 7);
  EXPECT_EQ(c.clear_score, 1.5);
  EXPECT_EQ(c.cooldown, std::chrono::minutes(10));
  const auto& cpu = c.series[static_cast<int>(AnomalySeries::kCpu)];
  EXPECT_EQ(cpu.window, 600u);
  EXPECT_EQ(cpu.warmup, 120u);
  EXPECT_EQ(cpu.min_deviation, 10);
  EXPECT_EQ(cpu.min_relative_deviation, 0.2);
  EXPECT_EQ(cpu.confirm, 5);
  EXPECT_EQ(cpu.clear, 10);
  const auto& lat = c.series[static_cast<int>(AnomalySeries::kMigrationLatency)];
  EXPECT_EQ(lat.min_deviation, 0.5);
  EXPECT_EQ(lat.window, 50u);  // untouched
}

TEST(AnomalyConfigTest, UnknownAndBadValuesAreRejected) {
  for (const char* yaml : {
           "anomaly:\n  threshold: 3\n",
           "anomaly:\n  series:\n    disk: {window: 10}\n",
           "anomaly:\n  series:\n    cpu: {windw: 10}\n",
           "anomaly:\n  warning_score: 9\n",
           "anomaly:\n  clear_score: 0\n",
           "anomaly:\n  critical_score: .inf\n",
           "anomaly:\n  cooldown: soon\n",
           "anomaly:\n  series:\n    cpu: {window: 2}\n",
           "anomaly:\n  series:\n    cpu: {warmup: 400}\n",
           "anomaly:\n  series:\n    cpu: {min_deviation: 0}\n",
           "anomaly:\n  series:\n    cpu: {min_relative_deviation: -1}\n",
           "anomaly:\n  series:\n    cpu: {confirm: 0}\n",
           "anomaly:\n  series:\n    cpu: {clear: x}\n",
           "anomaly:\n  series:\n    cpu: {window: -5}\n",
           "anomaly:\n  series: [cpu]\n",
           "anomaly:\n  cooldown: 1m\n  cooldown: 2m\n",
           "anomaly: on\n",
       }) {
    AnomalyConfig c;
    Status st = Parse(yaml, &c);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << yaml;
    EXPECT_NE(st.message().find("anomaly"), std::string::npos) << yaml << st.message();
  }
}

}  // namespace
}  // namespace dwcp::obs
