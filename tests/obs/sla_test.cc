#include "obs/sla.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <functional>

#include "common/clock.h"
#include "obs/log.h"
#include "obs/metrics.h"
#include "obs/metrics_views.h"

namespace dwcp::obs {
namespace {

using std::chrono::seconds;

// What the node does in one second of simulated load.
struct Second {
  double bytes = 100e6;          // logical bytes moved this second
  bool active = true;            // a migration is in progress
  double finished_latency = 2;   // a migration finished with this latency (s); < 0: none
  int errors = 0;                // errors counted this second
  double acp_health = kHealthy;  // health of the acp component
};

// A node's metrics driven second by second, and an evaluator reading them like the node's
// background loop will: Tick(SlaInputs::FromFamilies(metrics.Collect())).
class SlaHarness {
 public:
  explicit SlaHarness(SlaConfig config = {}) : sla_(config, metrics_, clock_) {}

  // Runs ticks t = now+1 .. now+n. `at(t)` describes second t (t counts from construction,
  // so minute k holds the ticks of seconds (60k, 60k + 60]).
  void Run(int n, const std::function<Second(int64_t)>& at = nullptr) {
    for (int i = 0; i < n; ++i) {
      clock_.Advance(seconds(1));
      ++t_;
      Second s = at ? at(t_) : Second{};
      metrics_.bytes_sent.Increment(s.bytes);
      metrics_.migrations_out.Set(s.active ? 1 : 0);
      if (s.finished_latency >= 0)
        metrics_.migration_latency(Component::kAmst).Observe(s.finished_latency);
      for (int e = 0; e < s.errors; ++e) metrics_.CountError(Component::kAmst, "unavailable");
      metrics_.SetHealth(Component::kAcp, s.acp_health);
      metrics_.SetHealth(Component::kAmst, kHealthy);
      metrics_.SetHealth(Component::kHde, kHealthy);
      sla_.Tick(SlaInputs::FromFamilies(metrics_.Collect()));
    }
  }
  // Whole minutes of the given load.
  void RunMinutes(int minutes, const std::function<Second(int64_t)>& at = nullptr) {
    Run(minutes * 60, at);
  }

  double Counter(const std::string& name, const std::string& sla_type = "") {
    std::vector<std::pair<std::string, std::string>> match;
    if (!sla_type.empty()) match.emplace_back("sla_type", sla_type);
    return SumOf(metrics_.Collect(), name, match);
  }
  double Gauge(const std::string& sla_type) {
    return SumOf(metrics_.Collect(), "dwcp_v3_sla_compliance", {{"sla_type", sla_type}});
  }

  FakeClock clock_;
  Metrics metrics_;
  SlaEvaluator sla_;
  int64_t t_ = 0;
};

// Minute index of second t, as SlaHarness::Run defines it.
int64_t MinuteOfSecond(int64_t t) { return (t - 1) / 60; }

TEST(SlaTest, SeriesExistFromTheStart) {
  SlaHarness h;
  std::string text = PrometheusText(h.metrics_.Collect());
  for (const char* type : {"latency", "throughput", "errors", "availability"}) {
    EXPECT_NE(text.find(std::string("dwcp_v3_sla_violations_total{sla_type=\"") + type + "\"} 0"),
              std::string::npos)
        << text;
    EXPECT_NE(text.find(std::string("dwcp_v3_sla_objective_violations_total{sla_type=\"") + type +
                        "\"} 0"),
              std::string::npos);
    EXPECT_NE(text.find(std::string("dwcp_v3_sla_compliance{sla_type=\"") + type + "\"} 1"),
              std::string::npos);
  }
  EXPECT_NE(text.find("dwcp_v3_sla_compliance{sla_type=\"overall\"} 1"), std::string::npos);
  // "overall" is never a violations series: the guide's sum() must count each minute once.
  EXPECT_EQ(text.find("dwcp_v3_sla_violations_total{sla_type=\"overall\""), std::string::npos);
}

TEST(SlaTest, GoodLoadIsFullyCompliant) {
  SlaHarness h;
  h.RunMinutes(90);
  for (auto t :
       {SlaType::kLatency, SlaType::kThroughput, SlaType::kErrors, SlaType::kAvailability}) {
    EXPECT_DOUBLE_EQ(h.sla_.Compliance(t), 1.0) << SlaTypeName(t);
    EXPECT_DOUBLE_EQ(h.Gauge(SlaTypeName(t)), 1.0);
    EXPECT_EQ(h.sla_.ObjectiveViolationMinutes(t), 0);
  }
  EXPECT_DOUBLE_EQ(h.Gauge("overall"), 1.0);
  EXPECT_EQ(h.sla_.ViolationMinutes(), 0);
  EXPECT_EQ(h.Counter("dwcp_v3_sla_violations_total"), 0);
  auto j = h.sla_.SlaSummary();
  EXPECT_EQ(j["minutes_evaluated"], 60);
  EXPECT_EQ(j["last_minute"]["finished_migrations"], 60);
  EXPECT_NEAR(j["last_minute"]["throughput_bytes_per_second"].get<double>(), 100e6, 1);
  EXPECT_TRUE(j["last_minute"]["violated"].empty());
  EXPECT_DOUBLE_EQ(j["error_budget"]["remaining_percent"].get<double>(), 100.0);
}

TEST(SlaTest, ThreeSlowMinutesAddThreeViolationMinutes) {
  SlaHarness h;
  // Minutes 10, 11 and 12 finish their migrations in 20 s against a 10 s objective.
  auto load = [](int64_t t) {
    Second s;
    int64_t m = MinuteOfSecond(t);
    if (m >= 10 && m <= 12) s.finished_latency = 20;
    return s;
  };
  h.RunMinutes(20, load);
  EXPECT_EQ(h.sla_.ViolationMinutes(), 3);
  EXPECT_EQ(h.sla_.ObjectiveViolationMinutes(SlaType::kLatency), 3);
  EXPECT_EQ(h.Counter("dwcp_v3_sla_violations_total", "latency"), 3);
  EXPECT_EQ(h.Counter("dwcp_v3_sla_violations_total"), 3);
  EXPECT_EQ(h.Counter("dwcp_v3_sla_objective_violations_total", "latency"), 3);
  // 20 minutes judged so far, 3 of them bad.
  EXPECT_DOUBLE_EQ(h.sla_.Compliance(SlaType::kLatency), 17.0 / 20.0);
  EXPECT_DOUBLE_EQ(h.sla_.OverallCompliance(), 17.0 / 20.0);
  EXPECT_DOUBLE_EQ(h.sla_.Compliance(SlaType::kThroughput), 1.0);

  // A full window (60 minutes): 3 of 60 bad.
  h.RunMinutes(40, load);
  EXPECT_DOUBLE_EQ(h.Gauge("latency"), 57.0 / 60.0);
  EXPECT_DOUBLE_EQ(h.Gauge("overall"), 57.0 / 60.0);
  EXPECT_DOUBLE_EQ(h.Gauge("errors"), 1.0);

  // Minutes 10-12 leave the rolling window after minute 72; the counter keeps them.
  h.RunMinutes(13, load);
  EXPECT_DOUBLE_EQ(h.Gauge("latency"), 1.0);
  EXPECT_EQ(h.Counter("dwcp_v3_sla_violations_total"), 3);

  auto j = h.sla_.SlaSummary();
  ASSERT_EQ(j["recent_violations"].size(), 3u);
  EXPECT_EQ(j["recent_violations"][0]["sla_type"], "latency");
  // 60 migrations in the (10, 30] bucket: interpolated as histogram_quantile does.
  EXPECT_NEAR(j["recent_violations"][0]["latency_p99_seconds"].get<double>(), 29.8, 1e-9);
  EXPECT_EQ(j["recent_violations"][0]["minute_start"],
            FormatTimestamp(1'700'000'000'000 + 12 * 60'000));
}

TEST(SlaTest, ErrorBudgetQueryCountsEachBadMinuteOnce) {
  SlaHarness h;
  // Minutes 2 and 3 miss latency and errors together; minute 5 misses throughput only.
  h.RunMinutes(8, [](int64_t t) {
    Second s;
    int64_t m = MinuteOfSecond(t);
    if (m == 2 || m == 3) {
      s.finished_latency = 45;
      s.errors = t % 10 == 0 ? 1 : 0;  // 6 a minute, the objective allows 5
    }
    if (m == 5) s.bytes = 1e6;
    return s;
  });
  EXPECT_EQ(h.sla_.ObjectiveViolationMinutes(SlaType::kLatency), 2);
  EXPECT_EQ(h.sla_.ObjectiveViolationMinutes(SlaType::kErrors), 2);
  EXPECT_EQ(h.sla_.ObjectiveViolationMinutes(SlaType::kThroughput), 1);
  EXPECT_EQ(h.Counter("dwcp_v3_sla_objective_violations_total"), 5);
  // Each bad minute is attributed once: errors before latency.
  EXPECT_EQ(h.Counter("dwcp_v3_sla_violations_total", "errors"), 2);
  EXPECT_EQ(h.Counter("dwcp_v3_sla_violations_total", "latency"), 0);
  EXPECT_EQ(h.Counter("dwcp_v3_sla_violations_total", "throughput"), 1);

  // The guide's 7.4: 100 - (sum(increase(dwcp_v3_sla_violations_total[30d])) / (30*24*60) * 100)
  const double sum = h.Counter("dwcp_v3_sla_violations_total");
  EXPECT_EQ(sum, 3);
  const double remaining = 100 - (sum / (30 * 24 * 60) * 100);
  EXPECT_NEAR(remaining, 99.993055, 1e-6);
  auto j = h.sla_.SlaSummary();
  EXPECT_DOUBLE_EQ(j["error_budget"]["remaining_percent"].get<double>(), remaining);
  EXPECT_EQ(j["violation_minutes"]["total"], 3);
  EXPECT_EQ(j["violation_minutes"]["by_objective"]["latency"], 2);
  // Overall compliance agrees with the counter: 3 bad minutes of 8.
  EXPECT_DOUBLE_EQ(h.sla_.OverallCompliance(), 5.0 / 8.0);
  EXPECT_DOUBLE_EQ(h.sla_.Compliance(SlaType::kErrors), 6.0 / 8.0);
}

TEST(SlaTest, LatencyIsTheP99OfTheMinute) {
  SlaHarness h;
  // One migration in a hundred slow: P99 still within the objective.
  h.RunMinutes(1, [](int64_t t) {
    Second s;
    s.finished_latency = -1;
    return s;
  });
  for (int i = 0; i < 99; ++i) h.metrics_.migration_latency(Component::kAmst).Observe(2);
  h.metrics_.migration_latency(Component::kHde).Observe(25);
  h.RunMinutes(1, [](int64_t) { return Second{.finished_latency = -1}; });
  EXPECT_EQ(h.sla_.ObjectiveViolationMinutes(SlaType::kLatency), 0);
  // Two in a hundred: P99 above it.
  for (int i = 0; i < 98; ++i) h.metrics_.migration_latency(Component::kAmst).Observe(2);
  h.metrics_.migration_latency(Component::kHde).Observe(25);
  h.metrics_.migration_latency(Component::kAcp).Observe(25);
  h.RunMinutes(1, [](int64_t) { return Second{.finished_latency = -1}; });
  EXPECT_EQ(h.sla_.ObjectiveViolationMinutes(SlaType::kLatency), 1);
  // A latency exactly at the objective (a bucket bound) is within it.
  h.RunMinutes(1, [](int64_t) { return Second{.finished_latency = 10}; });
  EXPECT_EQ(h.sla_.ObjectiveViolationMinutes(SlaType::kLatency), 1);
  // Minutes without finished migrations are good.
  h.RunMinutes(2, [](int64_t) { return Second{.active = false, .finished_latency = -1}; });
  EXPECT_EQ(h.sla_.ObjectiveViolationMinutes(SlaType::kLatency), 1);
  EXPECT_TRUE(h.sla_.SlaSummary()["last_minute"]["latency_p99_seconds"].is_null());
}

TEST(SlaTest, ThroughputFloorAppliesWhileMigrationsAreActive) {
  SlaHarness h;
  // 5 MB/s while active all minute: below the 10 MB/s floor.
  h.RunMinutes(1, [](int64_t) { return Second{.bytes = 5e6}; });
  EXPECT_EQ(h.sla_.ObjectiveViolationMinutes(SlaType::kThroughput), 1);
  EXPECT_EQ(h.Counter("dwcp_v3_sla_violations_total", "throughput"), 1);
  // Active for only 8 s (below throughput_min_active = 10 s): not judged.
  h.RunMinutes(1, [](int64_t t) {
    bool active = (t - 1) % 60 < 8;
    return Second{.bytes = active ? 1e6 : 0, .active = active};
  });
  EXPECT_EQ(h.sla_.ObjectiveViolationMinutes(SlaType::kThroughput), 1);
  // Idle minutes are good; fast minutes are good.
  h.RunMinutes(1, [](int64_t) { return Second{.bytes = 0, .active = false}; });
  h.RunMinutes(1, [](int64_t) { return Second{.bytes = 50e6}; });
  EXPECT_EQ(h.sla_.ObjectiveViolationMinutes(SlaType::kThroughput), 1);
  // Active half the minute at 30 MB/s per active second: good.
  h.RunMinutes(1, [](int64_t t) {
    bool active = (t - 1) % 60 < 30;
    return Second{.bytes = active ? 30e6 : 0, .active = active};
  });
  EXPECT_EQ(h.sla_.ObjectiveViolationMinutes(SlaType::kThroughput), 1);
  EXPECT_DOUBLE_EQ(h.sla_.Compliance(SlaType::kThroughput), 4.0 / 5.0);
}

TEST(SlaTest, ErrorsPerMinuteAboveTheObjective) {
  SlaHarness h;
  h.RunMinutes(1, [](int64_t t) { return Second{.errors = t % 12 == 0 ? 1 : 0}; });  // 5
  EXPECT_EQ(h.sla_.ObjectiveViolationMinutes(SlaType::kErrors), 0);
  h.RunMinutes(1, [](int64_t t) { return Second{.errors = t % 10 == 0 ? 1 : 0}; });  // 6
  EXPECT_EQ(h.sla_.ObjectiveViolationMinutes(SlaType::kErrors), 1);
  EXPECT_EQ(h.Counter("dwcp_v3_sla_violations_total", "errors"), 1);
  EXPECT_EQ(h.sla_.SlaSummary()["last_minute"]["errors"], 6);
}

TEST(SlaTest, AvailabilityCountsDownSecondsAndGaps) {
  SlaHarness h;
  // acp down for 5 s: within availability_max_down.
  h.RunMinutes(
      1, [](int64_t t) { return Second{.acp_health = (t - 1) % 60 < 5 ? kHealthDown : kHealthy}; });
  EXPECT_EQ(h.sla_.ObjectiveViolationMinutes(SlaType::kAvailability), 0);
  // Down for 6 s: a bad minute.
  h.RunMinutes(
      1, [](int64_t t) { return Second{.acp_health = (t - 1) % 60 < 6 ? kHealthDown : kHealthy}; });
  EXPECT_EQ(h.sla_.ObjectiveViolationMinutes(SlaType::kAvailability), 1);
  EXPECT_EQ(h.sla_.SlaSummary()["last_minute"]["down_component"], "acp");
  // Degraded all minute still counts as up.
  h.RunMinutes(1, [](int64_t) { return Second{.acp_health = kHealthDegraded}; });
  EXPECT_EQ(h.sla_.ObjectiveViolationMinutes(SlaType::kAvailability), 1);

  // The loop stalls for 20 s mid-minute: that minute is bad.
  h.Run(30);
  h.clock_.Advance(seconds(19));
  h.t_ += 19;
  h.Run(11);
  EXPECT_EQ(h.sla_.ObjectiveViolationMinutes(SlaType::kAvailability), 2);

  // No tick at all for three whole minutes: each of them is bad, and the minute the gap
  // started in too.
  h.Run(30);
  h.clock_.Advance(seconds(200));
  h.t_ += 200;
  h.Run(50);  // up to the end of the minute the gap ended in
  EXPECT_EQ(h.sla_.ObjectiveViolationMinutes(SlaType::kAvailability), 2 + 4);
  EXPECT_EQ(h.Counter("dwcp_v3_sla_violations_total", "availability"), 6);
  EXPECT_EQ(h.sla_.ViolationMinutes(), 6);
}

TEST(SlaTest, ShorterWindowAndCustomObjectives) {
  SlaConfig c;
  c.window = std::chrono::minutes(10);
  c.latency_p99_seconds = 1;
  c.errors_max_per_minute = 0;
  SlaHarness h(c);
  h.RunMinutes(10);  // 2 s migrations miss a 1 s objective
  EXPECT_DOUBLE_EQ(h.sla_.Compliance(SlaType::kLatency), 0.0);
  h.RunMinutes(5, [](int64_t) { return Second{.finished_latency = 0.5}; });
  EXPECT_DOUBLE_EQ(h.sla_.Compliance(SlaType::kLatency), 0.5);
  h.RunMinutes(1, [](int64_t t) { return Second{.finished_latency = 0.5, .errors = t % 60 == 0}; });
  EXPECT_EQ(h.sla_.ObjectiveViolationMinutes(SlaType::kErrors), 1);
  EXPECT_EQ(h.sla_.SlaSummary()["window_minutes"], 10);
}

Status Parse(const std::string& yaml, SlaConfig* c) {
  return ParseSlaConfig(YAML::Load(yaml)["sla"], c);
}

TEST(SlaConfigTest, Defaults) {
  SlaConfig c;
  EXPECT_TRUE(ValidateSlaConfig(c).ok());
  EXPECT_EQ(c.window, std::chrono::minutes(60));
  EXPECT_EQ(c.latency_p99_seconds, 10);
  EXPECT_EQ(c.throughput_min_bytes_per_second, 10e6);
  EXPECT_EQ(c.throughput_min_active, std::chrono::seconds(10));
  EXPECT_EQ(c.errors_max_per_minute, 5);
  EXPECT_EQ(c.availability_min_health, 0.5);
  EXPECT_EQ(c.availability_max_down, std::chrono::seconds(5));
  // An empty block keeps them.
  SlaConfig empty;
  ASSERT_TRUE(Parse("sla:\n", &empty).ok());
  EXPECT_EQ(empty.window, c.window);
  ASSERT_TRUE(Parse("sla: {}\n", &empty).ok());
  EXPECT_EQ(empty.latency_p99_seconds, c.latency_p99_seconds);
}

TEST(SlaConfigTest, EveryKey) {
  SlaConfig c;
  Status st = Parse(R"(
sla:
  window: 24h
  latency_p99: 30s
  throughput_min: 1Gbit/s
  throughput_min_active: 15s
  errors_max_per_minute: 2.5
  availability_min_health: 1
  availability_max_down: 0s
)",
                    &c);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(c.window, std::chrono::minutes(24 * 60));
  EXPECT_EQ(c.latency_p99_seconds, 30);
  EXPECT_EQ(c.throughput_min_bytes_per_second, 125e6);
  EXPECT_EQ(c.throughput_min_active, std::chrono::seconds(15));
  EXPECT_EQ(c.errors_max_per_minute, 2.5);
  EXPECT_EQ(c.availability_min_health, 1);
  EXPECT_EQ(c.availability_max_down, std::chrono::seconds(0));
  // Keys not given keep their values.
  SlaConfig partial;
  ASSERT_TRUE(Parse("sla:\n  latency_p99: 2500ms\n  throughput_min: 0\n", &partial).ok());
  EXPECT_EQ(partial.latency_p99_seconds, 2.5);
  EXPECT_EQ(partial.throughput_min_bytes_per_second, 0);
  EXPECT_EQ(partial.errors_max_per_minute, 5);
}

TEST(SlaConfigTest, UnknownAndBadValuesAreRejected) {
  struct Case {
    const char* yaml;
    const char* mentions;
  };
  for (const Case& k : std::vector<Case>{
           {"sla:\n  latency: 10s\n", "sla.latency"},
           {"sla:\n  window: 90s\n", "sla.window"},
           {"sla:\n  window: 0m\n", "sla.window"},
           {"sla:\n  window: 31d\n", "sla.window"},
           {"sla:\n  window: 721h\n", "sla.window"},
           {"sla:\n  latency_p99: 0s\n", "sla.latency_p99"},
           {"sla:\n  latency_p99: fast\n", "sla.latency_p99"},
           {"sla:\n  latency_p99: -1s\n", "sla.latency_p99"},
           {"sla:\n  throughput_min: lots\n", "sla.throughput_min"},
           {"sla:\n  throughput_min: -5MB/s\n", "sla.throughput_min"},
           {"sla:\n  throughput_min_active: 0s\n", "sla.throughput_min_active"},
           {"sla:\n  throughput_min_active: 2m\n", "sla.throughput_min_active"},
           {"sla:\n  errors_max_per_minute: -1\n", "sla.errors_max_per_minute"},
           {"sla:\n  errors_max_per_minute: many\n", "sla.errors_max_per_minute"},
           {"sla:\n  errors_max_per_minute: .nan\n", "sla.errors_max_per_minute"},
           {"sla:\n  availability_min_health: 0\n", "sla.availability_min_health"},
           {"sla:\n  availability_min_health: 1.5\n", "sla.availability_min_health"},
           {"sla:\n  availability_max_down: 60s\n", "sla.availability_max_down"},
           {"sla:\n  availability_max_down:\n", "sla.availability_max_down"},
           {"sla:\n  latency_p99: [10s]\n", "sla.latency_p99"},
           {"sla:\n  latency_p99: 10s\n  latency_p99: 20s\n", "sla.latency_p99"},
           {"sla: 10s\n", "sla"},
       }) {
    SlaConfig c;
    Status st = Parse(k.yaml, &c);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << k.yaml;
    EXPECT_NE(st.message().find(k.mentions), std::string::npos) << k.yaml << st.message();
  }
}

}  // namespace
}  // namespace dwcp::obs
