#include "rollout/rollout_config.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <string>

namespace dwcp::rollout {
namespace {

Status Parse(const std::string& yaml, RolloutConfig* c) {
  return ParseRolloutConfig(YAML::Load(yaml)["rollout"], c);
}

TEST(RolloutConfigTest, DefaultsAreValidAndEndFullyRolledOut) {
  RolloutConfig c;
  ASSERT_TRUE(ValidateRolloutConfig(c).ok());
  auto stages = StageList(c);
  ASSERT_EQ(stages.size(), 5u);
  EXPECT_EQ(stages[0].name, "v1");
  EXPECT_EQ(stages[0].percent, 0);
  EXPECT_EQ(stages[1].name, "canary");
  EXPECT_EQ(stages[1].percent, 5);
  EXPECT_EQ(stages[4].name, "full");
  EXPECT_EQ(stages[4].percent, 100);
  EXPECT_EQ(InitialStageIndex(c), 4u);
  c.initial_stage = "canary";
  EXPECT_EQ(InitialStageIndex(c), 1u);
  c.initial_stage = "v1";
  EXPECT_EQ(InitialStageIndex(c), 0u);
  EXPECT_EQ(StageIndex(stages, "majority"), 3u);
  EXPECT_FALSE(StageIndex(stages, "nope").has_value());
}

TEST(RolloutConfigTest, ParsesEveryKey) {
  RolloutConfig c;
  Status st = Parse(R"(
rollout:
  stages:
    - {name: pilot, percent: 1}
    - {name: half, percent: "50%"}
    - {name: all, percent: 100}
  initial_stage: pilot
  window: 30m
  min_samples: 20
  go_period: 1h
  auto_advance: false
  auto_rollback: false
  max_success_rate_drop: 0.01
  max_latency_increase: 0.2
  max_throughput_drop: 0.1
  max_critical_anomalies: 2
  interval: 1s
  webhook_token_file: /etc/dwcp/alertmanager.token
)",
                    &c);
  ASSERT_TRUE(st.ok()) << st.ToString();
  ASSERT_EQ(c.stages.size(), 3u);
  EXPECT_EQ(c.stages[1].name, "half");
  EXPECT_EQ(c.stages[1].percent, 50);
  EXPECT_EQ(c.initial_stage, "pilot");
  EXPECT_EQ(c.window, std::chrono::minutes(30));
  EXPECT_EQ(c.min_samples, 20u);
  EXPECT_EQ(c.go_period, std::chrono::hours(1));
  EXPECT_FALSE(c.auto_advance);
  EXPECT_FALSE(c.auto_rollback);
  EXPECT_DOUBLE_EQ(c.max_success_rate_drop, 0.01);
  EXPECT_DOUBLE_EQ(c.max_latency_increase, 0.2);
  EXPECT_DOUBLE_EQ(c.max_throughput_drop, 0.1);
  EXPECT_EQ(c.max_critical_anomalies, 2u);
  EXPECT_EQ(c.interval, std::chrono::seconds(1));
  EXPECT_EQ(c.webhook_token_file, "/etc/dwcp/alertmanager.token");
}

TEST(RolloutConfigTest, RejectsBadValuesNamingTheKey) {
  struct Case {
    const char* yaml;
    const char* mentions;
  };
  const Case cases[] = {
      {"rollout: {bogus: 1}", "rollout.bogus"},
      {"rollout: {window: }", "rollout.window"},
      {"rollout: {window: soon}", "rollout.window"},
      {"rollout: {min_samples: 0}", "rollout.min_samples"},
      {"rollout: {initial_stage: everything}", "rollout.initial_stage"},
      {"rollout: {max_throughput_drop: 1}", "rollout.max_throughput_drop"},
      {"rollout: {stages: []}", "rollout.stages"},
      {"rollout: {stages: [{name: a, percent: 50}, {name: b, percent: 20}]}", "increase"},
      {"rollout: {stages: [{name: a, percent: 150}]}", "increase"},
      {"rollout: {stages: [{name: v1, percent: 10}]}", "implicit"},
      {"rollout: {stages: [{name: a, percent: 10}, {name: a, percent: 20}]}", "twice"},
      {"rollout: {stages: [{name: Big, percent: 10}]}", "[a-z0-9_-]"},
      {"rollout: {stages: [{name: a}]}", "needs a name and a percent"},
      {"rollout: {stages: [{name: a, percent: lots}]}", "percentage"},
      {"rollout: [1, 2]", "mapping"},
  };
  for (const Case& c : cases) {
    RolloutConfig config;
    Status st = Parse(c.yaml, &config);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << c.yaml;
    EXPECT_NE(st.message().find(c.mentions), std::string::npos) << c.yaml << ": " << st.message();
  }
  RolloutConfig twice;
  EXPECT_FALSE(ParseRolloutConfig(YAML::Load("{window: 1m, window: 2m}"), &twice).ok());
}

TEST(RolloutConfigTest, AnEmptyBlockKeepsTheDefaults) {
  RolloutConfig c;
  ASSERT_TRUE(Parse("rollout:", &c).ok());
  EXPECT_EQ(c.stages.size(), 4u);
}

}  // namespace
}  // namespace dwcp::rollout
