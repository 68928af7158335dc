// The v1→v3 rollout across real dwcpd processes: unpinned migrations go v1 or v3 as the
// region's stage says, the metrics are served, and advance / rollback through the CLI, the
// API and the Alertmanager webhook change what the next migrations use.
#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "rollout/decision.h"
#include "tests/integration/cluster.h"

namespace dwcp::testing {
namespace {

using nlohmann::json;

constexpr char kRegion[] = "eu-test";
constexpr char kApiToken[] = "operator-token";
constexpr char kWebhookSecret[] = "alertmanager-secret";

HttpReply ToReply(const httplib::Result& r) {
  HttpReply out;
  if (!r) return out;
  out.status = r->status;
  out.text = r->body;
  out.body = json::parse(r->body, nullptr, false);
  return out;
}

// POST with an Authorization header ("" sends none).
HttpReply Post(uint16_t port, const std::string& path, const json& body,
               const std::string& authorization = std::string("Bearer ") + kApiToken) {
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(2);
  c.set_read_timeout(60);
  httplib::Headers headers;
  if (!authorization.empty()) headers.emplace("Authorization", authorization);
  return ToReply(c.Post(path, headers, body.dump(), "application/json"));
}

// The region's entry of GET /api/v1/rollout.
json RegionStatus(Cluster& c, const std::string& via) {
  auto r = HttpGet(c.node(via).api_port, std::string("/api/v1/rollout?region=") + kRegion);
  EXPECT_EQ(r.status, 200) << r.text;
  if (r.status != 200 || !r.body.contains("regions") || r.body["regions"].empty()) return {};
  return r.body["regions"][0];
}

class RolloutIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::ofstream(c_.dir() + "/webhook.token") << kWebhookSecret << "\n";
    // Automatic advance and rollback off: this test moves the stages itself (the decision
    // logic is covered by tests/rollout/controller_test.cc).
    std::ofstream(c_.dir() + "/dwcp.yaml") << "rollout:\n"
                                              "  initial_stage: majority\n"
                                              "  auto_advance: false\n"
                                              "  auto_rollback: false\n"
                                              "  interval: 1s\n"
                                              "  min_samples: 3\n";
    for (const char* id : {"node-a", "node-b"}) {
      c_.StartNode(id, {"--config", c_.dir() + "/dwcp.yaml", "--region", kRegion, "--api-token",
                        kApiToken, "--rollout-webhook-token-file", c_.dir() + "/webhook.token"});
    }
    for (int i = 0; i < kVms; ++i) {
      const std::string id = "vm-" + std::to_string(i);
      auto r = Post(c_.node("node-a").api_port, "/api/v1/vms",
                    {{"id", id}, {"node", "node-a"}, {"memory", "8MiB"}});
      ASSERT_EQ(r.status, 201) << r.text;
      vms_.push_back(id);
    }
  }

  // Migrates every VM (unpinned) to `to` through `via`; returns the protocols they used.
  std::vector<std::string> MigrateAll(const std::string& via, const std::string& to) {
    std::vector<std::string> protocols;
    for (const auto& vm : vms_) {
      auto r = Post(c_.node(via).api_port, "/api/v1/migrations", {{"vm", vm}, {"to", to}});
      EXPECT_EQ(r.status, 202) << r.text;
      if (r.status != 202) return protocols;
      json m = c_.WaitForMigration(via, r.body["id"]);
      EXPECT_EQ(m["result"], "success") << m.dump();
      protocols.push_back(m["protocol"]);
    }
    return protocols;
  }

  static constexpr int kVms = 12;
  Cluster c_;
  std::vector<std::string> vms_;
};

TEST_F(RolloutIntegrationTest, StagesDecideTheProtocolAndEveryPathChangesThem) {
  // Start: the configured initial stage, the same from every node.
  for (const char* node : {"node-a", "node-b"}) {
    json s = RegionStatus(c_, node);
    EXPECT_EQ(s["stage"], "majority") << node;
    EXPECT_EQ(s["percent"], 50);
    EXPECT_EQ(s["stage_index"], 3);
    EXPECT_FALSE(s["halted"].get<bool>());
  }

  // majority (50 %): a VM's protocol follows its bucket, and both protocols run for real.
  std::vector<std::string> got = MigrateAll("node-a", "node-b");
  ASSERT_EQ(got.size(), vms_.size());
  int v1 = 0, v3 = 0;
  for (size_t i = 0; i < vms_.size(); ++i) {
    const bool expect_v3 = rollout::UsesV3(rollout::BucketOf(vms_[i]), 50);
    EXPECT_EQ(got[i], expect_v3 ? "v3" : "v1") << vms_[i];
    (expect_v3 ? v3 : v1)++;
  }
  ASSERT_GT(v1, 0) << "pick VM ids that fall on both sides of 50 %";
  ASSERT_GT(v3, 0) << "pick VM ids that fall on both sides of 50 %";
  EXPECT_EQ(Metric(c_, "node-a", "dwcp_v3_migrations_total", "result=\"success\",protocol=\"v1\""),
            v1);
  EXPECT_EQ(Metric(c_, "node-a", "dwcp_v3_migrations_total", "result=\"success\",protocol=\"v3\""),
            v3);
  // The choice is logged with the migration.
  std::string log = c_.ReadLog("node-a");
  EXPECT_NE(log.find("\"message\":\"migration protocol chosen by the rollout\""),
            std::string::npos);

  // The metrics, on every node of the region.
  for (const char* node : {"node-a", "node-b"}) {
    const std::string m = c_.Metrics(node);
    EXPECT_EQ(
        MetricValue(m, "dwcp_v3_rollout_progress_percent", "region=\"eu-test\",stage=\"majority\""),
        50)
        << node;
    EXPECT_EQ(MetricValue(m, "dwcp_v3_rollout_stage", "region=\"eu-test\""), 3) << node;
    const double decision = MetricValue(m, "dwcp_v3_rollout_decision", "region=\"eu-test\"");
    EXPECT_TRUE(decision == 0 || decision == 0.5 || decision == 1) << decision;
    EXPECT_EQ(
        MetricValue(m, "dwcp_v3_rollout_rollbacks_total", "region=\"eu-test\",reason=\"no_go\""),
        0);
  }
  json s = RegionStatus(c_, "node-b");
  EXPECT_EQ(s["samples"]["v1"]["migrations"], v1);
  EXPECT_EQ(s["samples"]["v3"]["migrations"], v3);

  // CLI advance (through node-b): the next migrations all use v3.
  const std::string api_b = "--api http://127.0.0.1:" + std::to_string(c_.node("node-b").api_port);
  auto refused = RunDwcp("rollout advance " + api_b + " --region eu-test");
  EXPECT_EQ(refused.exit_code, 1) << refused.output;  // no token
  auto advanced = RunDwcp("rollout advance " + api_b + " --region eu-test --token " + kApiToken);
  ASSERT_EQ(advanced.exit_code, 0) << advanced.output;
  EXPECT_NE(advanced.output.find("majority (50%) \u2192 full (100%)"), std::string::npos)
      << advanced.output;
  for (const auto& p : MigrateAll("node-b", "node-a")) EXPECT_EQ(p, "v3");
  EXPECT_EQ(Metric(c_, "node-b", "dwcp_v3_rollout_advances_total",
                   "region=\"eu-test\",reason=\"manual\""),
            1);

  // API rollback to v1 (through node-a): the next migrations all use v1.
  auto unauthorized = Post(c_.node("node-a").api_port, "/api/v1/rollout/rollback",
                           {{"region", kRegion}, {"to", "v1"}}, "");
  EXPECT_EQ(unauthorized.status, 401) << unauthorized.text;
  auto rolled = Post(c_.node("node-a").api_port, "/api/v1/rollout/rollback",
                     {{"region", kRegion}, {"to", "v1"}, {"note", "integration test"}});
  ASSERT_EQ(rolled.status, 200) << rolled.text;
  EXPECT_EQ(rolled.body["regions"][0]["stage"], "v1");
  EXPECT_TRUE(rolled.body["regions"][0]["halted"].get<bool>());
  for (const auto& p : MigrateAll("node-a", "node-b")) EXPECT_EQ(p, "v1");
  EXPECT_EQ(Metric(c_, "node-a", "dwcp_v3_rollout_rollbacks_total",
                   "region=\"eu-test\",reason=\"manual\""),
            1);
  EXPECT_EQ(MetricValue(c_.Metrics("node-a"), "dwcp_v3_rollout_progress_percent",
                        "region=\"eu-test\",stage=\"v1\""),
            0);

  auto status = RunDwcp("rollout status " + api_b + " --json");
  ASSERT_EQ(status.exit_code, 0) << status.output;
  json parsed = json::parse(status.output, nullptr, false);
  ASSERT_FALSE(parsed.is_discarded()) << status.output;
  EXPECT_EQ(parsed["regions"][0]["stage"], "v1");
  EXPECT_EQ(parsed["regions"][0]["change_reason"], "manual");
  auto table = RunDwcp("rollout status " + api_b);
  ASSERT_EQ(table.exit_code, 0) << table.output;
  EXPECT_NE(table.output.find("eu-test  v1 (0%) halted"), std::string::npos) << table.output;

  // Back to canary by the API, then Alertmanager: a wrong or missing secret is refused...
  ASSERT_EQ(Post(c_.node("node-a").api_port, "/api/v1/rollout/advance",
                 {{"region", kRegion}, {"to", "canary"}})
                .status,
            200);
  const json alert = {{"version", "4"},
                      {"status", "firing"},
                      {"receiver", "dwcp-rollback"},
                      {"groupKey", "{}:{alertname=\"DwcpRolloutNoGo\"}"},
                      {"alerts",
                       {{{"status", "firing"},
                         {"labels", {{"alertname", "DwcpRolloutNoGo"}, {"region", kRegion}}},
                         {"startsAt", "2025-11-10T18:00:00Z"}}}}};
  const uint16_t port_b = c_.node("node-b").api_port;
  auto wrong = Post(port_b, "/api/v1/rollback", alert, "Bearer not-the-secret");
  EXPECT_EQ(wrong.status, 401) << wrong.text;
  EXPECT_EQ(wrong.body["code"], "unauthenticated");
  auto missing = Post(port_b, "/api/v1/rollback", alert, "");
  EXPECT_EQ(missing.status, 401);
  auto api_token = Post(port_b, "/api/v1/rollback", alert);  // the operator token is not it
  EXPECT_EQ(api_token.status, 401);
  EXPECT_EQ(
      Metric(c_, "node-b", "dwcp_v3_rollout_webhook_requests_total", "result=\"unauthenticated\""),
      3);
  EXPECT_EQ(RegionStatus(c_, "node-a")["stage"], "canary");

  // ... and the right one rolls the region back to v1.
  auto accepted = Post(port_b, "/api/v1/rollback", alert, std::string("Bearer ") + kWebhookSecret);
  ASSERT_EQ(accepted.status, 200) << accepted.text;
  EXPECT_EQ(accepted.body["action"], "rolled_back");
  s = RegionStatus(c_, "node-a");
  EXPECT_EQ(s["stage"], "v1");
  EXPECT_EQ(s["change_reason"], "alert");
  EXPECT_TRUE(s["halted"].get<bool>());
  EXPECT_EQ(Metric(c_, "node-b", "dwcp_v3_rollout_rollbacks_total",
                   "region=\"eu-test\",reason=\"alert\""),
            1);
  auto again = Post(port_b, "/api/v1/migrations", {{"vm", vms_[0]}, {"to", "node-a"}});
  ASSERT_EQ(again.status, 202) << again.text;
  EXPECT_EQ(c_.WaitForMigration("node-b", again.body["id"])["protocol"], "v1");

  // A resolved notification changes nothing; a malformed one is a 400.
  json resolved = alert;
  resolved["status"] = "resolved";
  resolved["alerts"][0]["status"] = "resolved";
  auto ignored =
      Post(port_b, "/api/v1/rollback", resolved, std::string("Bearer ") + kWebhookSecret);
  EXPECT_EQ(ignored.status, 200);
  EXPECT_EQ(ignored.body["action"], "ignored");
  auto malformed =
      Post(port_b, "/api/v1/rollback", json{{"hello", 1}}, std::string("Bearer ") + kWebhookSecret);
  EXPECT_EQ(malformed.status, 400);
  EXPECT_EQ(Metric(c_, "node-b", "dwcp_v3_rollout_webhook_requests_total", "result=\"invalid\""),
            1);
}

}  // namespace
}  // namespace dwcp::testing
