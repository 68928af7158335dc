#include "cli/demo_stack.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

namespace dwcp::cli {
namespace {

namespace fs = std::filesystem;

const std::string kSource = DWCP_SOURCE_DIR;

// Runs a shell command; returns its exit status and output.
std::pair<int, std::string> RunShell(const std::string& command) {
  std::string out;
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) return {-1, ""};
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  return {pclose(p), out};
}

class DemoStackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) / ("dwcp_stack_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::ofstream(dir_ / "rollback-token") << "0123456789abcdef";
    plan_.deploy_dir = kSource + "/deploy";
    plan_.dir = (dir_ / "stack").string();
    plan_.prometheus_port = 19090;
    plan_.alertmanager_port = 19093;
    plan_.rollback_token_file = (dir_ / "rollback-token").string();
    nodes_ = {{"node-a", 18080, 17070, 16060, "", ""}, {"node-b", 18081, 17071, 16061, "", ""}};
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path dir_;
  DemoStackPlan plan_;
  std::vector<DemoNode> nodes_;
};

TEST_F(DemoStackTest, ConfigComesFromTheShippedFilesAndPassesPromtoolAndAmtool) {
  ASSERT_TRUE(WriteDemoStackConfig(plan_, nodes_).ok());
  const fs::path stack = dir_ / "stack";

  YAML::Node prom = YAML::LoadFile((stack / "prometheus/prometheus.yml").string());
  EXPECT_EQ(prom["global"]["scrape_interval"].as<std::string>(), "5s");
  EXPECT_EQ(
      prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0].as<std::string>(),
      "127.0.0.1:19093");
  bool dwcp_job = false;
  for (const auto& job : prom["scrape_configs"]) {
    if (job["job_name"].as<std::string>() == "dwcp-v3") dwcp_job = true;  // the guide's job
  }
  EXPECT_TRUE(dwcp_job);
  YAML::Node targets = YAML::LoadFile((stack / "prometheus/targets/dwcp-v3.yml").string());
  ASSERT_EQ(targets[0]["targets"].size(), 2u);
  EXPECT_EQ(targets[0]["targets"][1].as<std::string>(), "127.0.0.1:18081");
  EXPECT_EQ(targets[0]["labels"]["region"].as<std::string>(), "local");
  // Every shipped rule is there.
  YAML::Node shipped = YAML::LoadFile(kSource + "/deploy/prometheus/rules/alerts.yml");
  YAML::Node copied = YAML::LoadFile((stack / "prometheus/rules/alerts.yml").string());
  ASSERT_EQ(copied["groups"].size(), shipped["groups"].size());
  for (size_t i = 0; i < shipped["groups"].size(); ++i) {
    EXPECT_EQ(copied["groups"][i]["rules"].size(), shipped["groups"][i]["rules"].size());
  }

  YAML::Node am = YAML::LoadFile((stack / "alertmanager/alertmanager.yml").string());
  int webhooks = 0;
  for (const auto& receiver : am["receivers"]) {
    EXPECT_FALSE(receiver["slack_configs"]) << receiver["name"];
    for (const auto& w : receiver["webhook_configs"]) {
      ++webhooks;
      EXPECT_EQ(w["url"].as<std::string>(), "http://127.0.0.1:18080/api/v1/rollback");
      EXPECT_EQ(w["http_config"]["authorization"]["credentials_file"].as<std::string>(),
                fs::absolute(plan_.rollback_token_file).string());
    }
  }
  EXPECT_GE(webhooks, 1);

  // The real tools accept what the demo starts the servers with.
  auto [prom_rc, prom_out] =
      RunShell("promtool check config " + (stack / "prometheus/prometheus.yml").string());
  EXPECT_EQ(prom_rc, 0) << prom_out;
  auto [am_rc, am_out] =
      RunShell("amtool check-config " + (stack / "alertmanager/alertmanager.yml").string());
  EXPECT_EQ(am_rc, 0) << am_out;
}

TEST_F(DemoStackTest, MissingDeployDirIsAClearError) {
  plan_.deploy_dir = (dir_ / "nowhere").string();
  Status st = WriteDemoStackConfig(plan_, nodes_);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("nowhere/prometheus/prometheus.yml"), std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("--deploy-dir"), std::string::npos) << st.message();
}

TEST_F(DemoStackTest, ArgvPointsTheServersAtTheGeneratedFiles) {
  auto prom = PrometheusArgs("/usr/bin/prometheus", plan_);
  EXPECT_EQ(prom[0], "/usr/bin/prometheus");
  EXPECT_EQ(prom[1], "--config.file=" + plan_.dir + "/prometheus/prometheus.yml");
  EXPECT_EQ(prom.back(), "--web.listen-address=127.0.0.1:19090");
  auto am = AlertmanagerArgs("/usr/bin/prometheus-alertmanager", plan_);
  EXPECT_EQ(am[1], "--config.file=" + plan_.dir + "/alertmanager/alertmanager.yml");
  EXPECT_NE(std::find(am.begin(), am.end(), "--web.listen-address=127.0.0.1:19093"), am.end());
}

}  // namespace
}  // namespace dwcp::cli
