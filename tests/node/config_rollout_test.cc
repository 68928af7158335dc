// The `rollout:` block and the --rollout-* flags of dwcpd's configuration.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "node/config.h"

namespace dwcp::node {
namespace {

Result<NodeConfig> Parse(std::vector<std::string> args) {
  args.insert(args.begin(), "dwcpd");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  bool exit_now = false;
  return ParseNodeConfig(static_cast<int>(args.size()), argv.data(), &exit_now);
}

class NodeConfigRolloutTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/dwcp_config_rollout_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Write(const std::string& text) {
    const std::string path = dir_ + "/dwcp.yaml";
    std::ofstream(path) << text;
    return path;
  }
  std::string dir_;
};

TEST_F(NodeConfigRolloutTest, DefaultsStartRegionsFullyRolledOut) {
  auto c = Parse({"--node-id", "node-a"});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->region, "local");
  EXPECT_EQ(c->rollout.stages.size(), 4u);
  EXPECT_EQ(c->rollout.initial_stage, "");
  EXPECT_EQ(rollout::InitialStageIndex(c->rollout), 4u);
  EXPECT_EQ(c->rollout.webhook_token_file, "");
}

TEST_F(NodeConfigRolloutTest, YamlBlockAndFlags) {
  const std::string path = Write(R"(
node_id: node-a
region: eu-west
rollout:
  stages: [{name: pilot, percent: 10}, {name: all, percent: 100}]
  initial_stage: pilot
  go_period: 30m
  webhook_token_file: /etc/dwcp/am.token
)");
  auto c = Parse({"--config", path});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->region, "eu-west");
  ASSERT_EQ(c->rollout.stages.size(), 2u);
  EXPECT_EQ(c->rollout.stages[0].name, "pilot");
  EXPECT_EQ(c->rollout.initial_stage, "pilot");
  EXPECT_EQ(c->rollout.go_period, std::chrono::minutes(30));
  EXPECT_EQ(c->rollout.webhook_token_file, "/etc/dwcp/am.token");

  // Flags win over the file.
  c = Parse({"--config", path, "--rollout-initial-stage", "v1", "--rollout-webhook-token-file",
             "/run/secrets/am", "--region", "us-east"});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->rollout.initial_stage, "v1");
  EXPECT_EQ(c->rollout.webhook_token_file, "/run/secrets/am");
  EXPECT_EQ(c->region, "us-east");
  EXPECT_EQ(c->rollout.stages[0].name, "pilot");
}

TEST_F(NodeConfigRolloutTest, BadValuesNameTheKey) {
  auto c = Parse({"--node-id", "node-a", "--rollout-initial-stage", "everything"});
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("rollout.initial_stage"), std::string::npos)
      << c.status().message();
  c = Parse({"--config", Write("rollout: {go_period: forever}\n")});
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("rollout.go_period"), std::string::npos);
  c = Parse({"--config", Write("rollout: {speed: fast}\n")});
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("rollout.speed"), std::string::npos);
}

}  // namespace
}  // namespace dwcp::node
