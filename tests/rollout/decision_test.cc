#include "rollout/decision.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace dwcp::rollout {
namespace {

constexpr int64_t kNow = 1'700'000'000'000;
constexpr int64_t kMinute = 60'000;

RolloutConfig Config() {
  RolloutConfig c;  // defaults: window 15m, min_samples 10, drops 5% / +50% / -25%
  return c;
}

// `n` finished migrations of one protocol, each `latency` s at `throughput` B/s, created
// `age_ms` before kNow; the first `failures` of them failed.
std::vector<MigrationSample> Samples(int protocol, int n, double latency, double throughput,
                                     int failures = 0, int64_t age_ms = kMinute,
                                     const std::string& prefix = "") {
  std::vector<MigrationSample> out;
  for (int i = 0; i < n; ++i) {
    MigrationSample m;
    m.id = prefix + "v" + std::to_string(protocol) + "-" + std::to_string(i);
    m.protocol = protocol;
    m.success = i >= failures;
    m.latency_seconds = latency;
    m.throughput_bytes_per_second = m.success ? throughput : 0;
    m.created_ms = kNow - age_ms;
    m.finished_ms = m.created_ms + static_cast<int64_t>(latency * 1000);
    out.push_back(m);
  }
  return out;
}

EvaluationInput Input(double percent, int64_t stage_age_ms = 10 * kMinute) {
  EvaluationInput in;
  in.now_ms = kNow;
  in.stage = {"canary", percent};
  in.stage_since_ms = kNow - stage_age_ms;
  return in;
}

void Add(EvaluationInput* in, const std::vector<MigrationSample>& s) {
  in->migrations.insert(in->migrations.end(), s.begin(), s.end());
}

TEST(RolloutDecisionTest, V1StageIsPending) {
  EvaluationInput in = Input(0);
  in.stage.name = "v1";
  Add(&in, Samples(1, 20, 2.0, 1e8));
  Verdict v = Evaluate(Config(), in);
  EXPECT_EQ(v.decision, Decision::kPending);
  EXPECT_EQ(v.value(), 0.5);
  EXPECT_EQ(v.v1.migrations, 20u);
}

TEST(RolloutDecisionTest, TooFewSamplesIsPending) {
  EvaluationInput in = Input(5);
  Add(&in, Samples(1, 20, 2.0, 1e8));
  Add(&in, Samples(3, 9, 1.0, 2e8));
  Verdict v = Evaluate(Config(), in);
  EXPECT_EQ(v.decision, Decision::kPending);
  ASSERT_EQ(v.reasons.size(), 1u);
  EXPECT_NE(v.reasons[0].find("v3 samples 9 < 10"), std::string::npos) << v.reasons[0];

  in = Input(5);
  Add(&in, Samples(1, 3, 2.0, 1e8));
  Add(&in, Samples(3, 12, 1.0, 2e8));
  v = Evaluate(Config(), in);
  EXPECT_EQ(v.decision, Decision::kPending);
  EXPECT_EQ(v.v1.migrations, 3u);
  EXPECT_EQ(v.v3.migrations, 12u);
}

TEST(RolloutDecisionTest, GoWhenV3IsAsGoodAsV1) {
  EvaluationInput in = Input(25);
  Add(&in, Samples(1, 10, 2.0, 1e8));
  Add(&in, Samples(3, 10, 2.5, 0.9e8));  // 25 % slower, 10 % less throughput: within limits
  Verdict v = Evaluate(Config(), in);
  EXPECT_EQ(v.decision, Decision::kGo) << v.reasons[0];
  EXPECT_EQ(v.value(), 1);
  EXPECT_EQ(v.v3.success_rate, 1);
  EXPECT_DOUBLE_EQ(v.v3.latency_p50_seconds, 2.5);
  EXPECT_DOUBLE_EQ(v.v1.throughput_p50_bytes_per_second, 1e8);
}

TEST(RolloutDecisionTest, NoGoWhenV3FailsMore) {
  EvaluationInput in = Input(25);
  Add(&in, Samples(1, 20, 2.0, 1e8));
  Add(&in, Samples(3, 20, 2.0, 1e8, /*failures=*/2));  // 90 % < 100 % - 5 %
  Verdict v = Evaluate(Config(), in);
  EXPECT_EQ(v.decision, Decision::kNoGo);
  EXPECT_EQ(v.value(), 0);
  ASSERT_EQ(v.reasons.size(), 1u);
  EXPECT_NE(v.reasons[0].find("success rate"), std::string::npos) << v.reasons[0];

  // One failure in 20 is exactly at the tolerance: still GO.
  in = Input(25);
  Add(&in, Samples(1, 20, 2.0, 1e8));
  Add(&in, Samples(3, 20, 2.0, 1e8, /*failures=*/1));
  EXPECT_EQ(Evaluate(Config(), in).decision, Decision::kGo);
}

TEST(RolloutDecisionTest, NoGoOnSlowerOrNarrowerV3) {
  EvaluationInput in = Input(25);
  Add(&in, Samples(1, 10, 2.0, 1e8));
  Add(&in, Samples(3, 10, 3.1, 1e8));  // +55 % > +50 %
  Verdict v = Evaluate(Config(), in);
  EXPECT_EQ(v.decision, Decision::kNoGo);
  ASSERT_EQ(v.reasons.size(), 1u);
  EXPECT_NE(v.reasons[0].find("latency"), std::string::npos);

  in = Input(25);
  Add(&in, Samples(1, 10, 2.0, 1e8));
  Add(&in, Samples(3, 10, 2.0, 0.7e8));  // -30 % < -25 %
  v = Evaluate(Config(), in);
  EXPECT_EQ(v.decision, Decision::kNoGo);
  ASSERT_EQ(v.reasons.size(), 1u);
  EXPECT_NE(v.reasons[0].find("throughput"), std::string::npos);

  // Both at once: one reason each.
  in = Input(25);
  Add(&in, Samples(1, 10, 2.0, 1e8));
  Add(&in, Samples(3, 10, 4.0, 0.5e8, /*failures=*/3));
  v = Evaluate(Config(), in);
  EXPECT_EQ(v.decision, Decision::kNoGo);
  EXPECT_EQ(v.reasons.size(), 3u);
}

TEST(RolloutDecisionTest, MediansIgnoreAFewOutliers) {
  EvaluationInput in = Input(25);
  Add(&in, Samples(1, 10, 2.0, 1e8));
  auto v3 = Samples(3, 11, 2.0, 1e8);
  v3[0].latency_seconds = 60;  // one stuck migration among eleven
  v3[1].latency_seconds = 45;
  Add(&in, v3);
  EXPECT_EQ(Evaluate(Config(), in).decision, Decision::kGo);
}

TEST(RolloutDecisionTest, EarlyNoGoWhenFailuresCannotBeMadeUp) {
  EvaluationInput in = Input(5);
  Add(&in, Samples(1, 10, 2.0, 1e8));
  Add(&in, Samples(3, 2, 2.0, 1e8, /*failures=*/2));  // best case 8/10 < 95 %
  Verdict v = Evaluate(Config(), in);
  EXPECT_EQ(v.decision, Decision::kNoGo);
  ASSERT_EQ(v.reasons.size(), 1u);
  EXPECT_NE(v.reasons[0].find("cannot reach"), std::string::npos) << v.reasons[0];

  // Without a v1 baseline there is nothing to compare with yet.
  in = Input(5);
  Add(&in, Samples(3, 2, 2.0, 1e8, /*failures=*/2));
  EXPECT_EQ(Evaluate(Config(), in).decision, Decision::kPending);
}

TEST(RolloutDecisionTest, EachStageIsJudgedOnItsOwnV3Traffic) {
  // v3 migrations from before the stage began (the stage that was rolled back) do not count;
  // v1 ones do, while they are in the window.
  EvaluationInput in = Input(5, /*stage_age_ms=*/kMinute / 2);
  Add(&in, Samples(1, 10, 2.0, 1e8, 0, 5 * kMinute));
  Add(&in, Samples(3, 10, 2.0, 1e8, /*failures=*/10, 5 * kMinute));
  Verdict v = Evaluate(Config(), in);
  EXPECT_EQ(v.decision, Decision::kPending);
  EXPECT_EQ(v.v1.migrations, 10u);
  EXPECT_EQ(v.v3.migrations, 0u);
}

TEST(RolloutDecisionTest, OnlyTheWindowCounts) {
  EvaluationInput in = Input(5, /*stage_age_ms=*/60 * kMinute);
  Add(&in, Samples(1, 10, 2.0, 1e8, 0, 20 * kMinute, "old-"));  // finished before the window
  Add(&in, Samples(3, 10, 2.0, 1e8, 0, kMinute));
  Verdict v = Evaluate(Config(), in);
  EXPECT_EQ(v.decision, Decision::kPending);
  EXPECT_EQ(v.v1.migrations, 0u);
  Add(&in, Samples(1, 10, 2.0, 1e8, 0, kMinute, "new-"));
  EXPECT_EQ(Evaluate(Config(), in).decision, Decision::kGo);
}

TEST(RolloutDecisionTest, CriticalAnomaliesSinceTheStageBeganAreNoGo) {
  EvaluationInput in = Input(25, /*stage_age_ms=*/5 * kMinute);
  Add(&in, Samples(1, 10, 2.0, 1e8));
  Add(&in, Samples(3, 10, 2.0, 1e8));
  // Before the stage began, or tied to a v1 migration: not held against v3.
  in.anomalies.push_back({kNow - 6 * kMinute, "latency_spike", ""});
  in.anomalies.push_back({kNow - kMinute, "latency_spike", "v1-3"});
  Verdict v = Evaluate(Config(), in);
  EXPECT_EQ(v.decision, Decision::kGo);
  EXPECT_EQ(v.anomalies, 0u);

  in.anomalies.push_back({kNow - kMinute, "throughput_drop", "v3-4"});
  v = Evaluate(Config(), in);
  EXPECT_EQ(v.decision, Decision::kNoGo);
  EXPECT_EQ(v.anomalies, 1u);
  ASSERT_EQ(v.reasons.size(), 1u);
  EXPECT_NE(v.reasons[0].find("throughput_drop"), std::string::npos);

  // Node-wide anomalies count too, even before the samples are complete.
  in = Input(25);
  in.anomalies.push_back({kNow - kMinute, "resource_saturation", ""});
  EXPECT_EQ(Evaluate(Config(), in).decision, Decision::kNoGo);
  RolloutConfig tolerant = Config();
  tolerant.max_critical_anomalies = 1;
  EXPECT_EQ(Evaluate(tolerant, in).decision, Decision::kPending);
}

TEST(RolloutDecisionTest, FullStageNeedsPinnedV1ForABaseline) {
  EvaluationInput in = Input(100, 60 * kMinute);
  Add(&in, Samples(3, 30, 2.0, 1e8));
  Verdict v = Evaluate(Config(), in);
  EXPECT_EQ(v.decision, Decision::kPending);
  ASSERT_EQ(v.reasons.size(), 1u);
  EXPECT_NE(v.reasons[0].find("pin some migrations to v1"), std::string::npos);
}

TEST(RolloutDecisionTest, BucketsAreStableAndUniform) {
  EXPECT_EQ(BucketOf("vm-12345"), BucketOf("vm-12345"));
  EXPECT_LT(BucketOf("vm-12345"), 10000u);
  int v3_at_5 = 0, v3_at_50 = 0;
  constexpr int kVms = 20000;
  for (int i = 0; i < kVms; ++i) {
    const uint32_t b = BucketOf("vm-" + std::to_string(i));
    v3_at_5 += UsesV3(b, 5);
    v3_at_50 += UsesV3(b, 50);
    // Monotone: a VM on v3 stays on v3 when the stage advances.
    if (UsesV3(b, 5)) {
      ASSERT_TRUE(UsesV3(b, 25));
    }
    ASSERT_FALSE(UsesV3(b, 0));
    ASSERT_TRUE(UsesV3(b, 100));
  }
  EXPECT_NEAR(v3_at_5 / double(kVms), 0.05, 0.01);
  EXPECT_NEAR(v3_at_50 / double(kVms), 0.50, 0.02);
  EXPECT_TRUE(UsesV3(499, 5));
  EXPECT_FALSE(UsesV3(500, 5));
}

}  // namespace
}  // namespace dwcp::rollout
