#include "rollout/controller.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "acp/sqlite_state_store.h"
#include "common/clock.h"
#include "obs/metrics.h"
#include "obs/metrics_views.h"

namespace dwcp::rollout {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr int64_t kT0 = 1'700'000'000'000;

// The value of the series of `name` whose labels are exactly `labels`; nullopt if absent.
std::optional<double> Series(const obs::Metrics& metrics, const std::string& name,
                             const std::vector<std::pair<std::string, std::string>>& labels) {
  for (const auto& f : metrics.Collect()) {
    if (f.name != name) continue;
    for (const auto& m : f.metric) {
      if (m.label.size() != labels.size()) continue;
      bool all = true;
      for (const auto& [k, v] : labels) {
        bool found = false;
        for (const auto& l : m.label) found = found || (l.name == k && l.value == v);
        all = all && found;
      }
      if (!all) continue;
      return f.type == prometheus::MetricType::Counter ? m.counter.value : m.gauge.value;
    }
  }
  return std::nullopt;
}

RolloutConfig TestConfig() {
  RolloutConfig c;
  c.initial_stage = "canary";
  c.min_samples = 5;
  c.go_period = seconds(60);
  c.interval = seconds(1);
  return c;
}

// One dwcpd's worth of controller: its own metrics and store connection.
struct TestNode {
  std::unique_ptr<acp::SqliteStateStore> store;
  obs::Metrics metrics;
  std::unique_ptr<RolloutController> rollout;

  double Decision() { return *Series(metrics, "dwcp_v3_rollout_decision", {{"region", "eu"}}); }
  double Stage() { return *Series(metrics, "dwcp_v3_rollout_stage", {{"region", "eu"}}); }
  std::optional<double> Progress(const std::string& stage) {
    return Series(metrics, "dwcp_v3_rollout_progress_percent",
                  {{"region", "eu"}, {"stage", stage}});
  }
  double Rollbacks(const std::string& reason, const std::string& region = "eu") {
    return Series(metrics, "dwcp_v3_rollout_rollbacks_total",
                  {{"region", region}, {"reason", reason}})
        .value_or(0);
  }
  double Advances(const std::string& reason) {
    return *Series(metrics, "dwcp_v3_rollout_advances_total",
                   {{"region", "eu"}, {"reason", reason}});
  }
  double Webhook(const std::string& result) {
    return *Series(metrics, "dwcp_v3_rollout_webhook_requests_total", {{"result", result}});
  }
};

class RolloutControllerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/rollout_controller_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    auto store = acp::SqliteStateStore::Open(dir_ + "/state.db", clock_);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
    for (const auto& [id, region] :
         {std::pair{"node-a", "eu"}, {"node-b", "eu"}, {"node-c", "us"}}) {
      acp::NodeRecord n;
      n.id = id;
      n.region = region;
      n.state = "up";
      ASSERT_TRUE(store_->UpsertNode(n).ok());
    }
  }
  void TearDown() override {
    nodes_.clear();
    store_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  TestNode& StartNode(const std::string& id, RolloutConfig config = TestConfig(),
                      AnomalySource anomalies = {}, const std::string& region = "eu") {
    auto node = std::make_unique<TestNode>();
    auto store = acp::SqliteStateStore::Open(dir_ + "/state.db", clock_);
    EXPECT_TRUE(store.ok());
    node->store = std::move(store).value();
    node->rollout = std::make_unique<RolloutController>(config, id, region, *node->store,
                                                        node->metrics, clock_, anomalies);
    Status st = node->rollout->Start();
    EXPECT_TRUE(st.ok()) << st.ToString();
    nodes_.push_back(std::move(node));
    return *nodes_.back();
  }

  // `n` finished migrations of `protocol` from `source`, created now, the first `failures`
  // of them failed.
  void AddMigrations(int protocol, int n, double latency_s, double throughput, int failures = 0,
                     const std::string& source = "node-a") {
    for (int i = 0; i < n; ++i) {
      acp::MigrationRecord m;
      m.id = "mig-" + std::to_string(next_id_++);
      m.vm_id = "vm-" + std::to_string(i);
      m.source_node = source;
      m.dest_node = "node-b";
      m.protocol = "v" + std::to_string(protocol);
      m.phase = i < failures ? acp::kPhaseFailed : acp::kPhaseCompleted;
      m.total_ms = latency_s * 1e3;
      m.throughput_bps = i < failures ? 0 : throughput;
      m.created_ms = clock_.WallMillis();
      m.finished_ms = clock_.WallMillis();
      ASSERT_TRUE(store_->PutMigration(m).ok());
    }
  }

  acp::RolloutRecord Record(const std::string& region = "eu") {
    auto r = store_->GetRollout(region);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : acp::RolloutRecord{};
  }

  void Advance(milliseconds d) { clock_.Advance(d); }

  std::string dir_;
  FakeClock clock_{kT0};
  std::unique_ptr<acp::SqliteStateStore> store_;
  std::vector<std::unique_ptr<TestNode>> nodes_;
  int next_id_ = 0;
};

TEST_F(RolloutControllerTest, StartsTheRegionAtTheInitialStageAndExportsIt) {
  TestNode& a = StartNode("node-a");
  acp::RolloutRecord r = Record();
  EXPECT_EQ(r.stage, "canary");
  EXPECT_EQ(r.percent, 5);
  EXPECT_EQ(r.version, 1u);
  EXPECT_EQ(r.reason, "initial");
  EXPECT_EQ(r.changed_by, "node-a");
  EXPECT_EQ(r.changed_ms, kT0);
  EXPECT_EQ(a.Progress("canary"), 5);
  EXPECT_EQ(a.Stage(), 1);
  EXPECT_EQ(a.Decision(), 0.5);
  for (const char* reason : {"no_go", "alert", "manual"}) EXPECT_EQ(a.Rollbacks(reason), 0);

  // A second node of the region finds the record and does not start it again.
  Advance(seconds(5));
  StartNode("node-b");
  EXPECT_EQ(Record().version, 1u);
  EXPECT_EQ(Record().changed_ms, kT0);
}

TEST_F(RolloutControllerTest, ChoosesTheProtocolFromTheStoreAtEveryMigration) {
  TestNode& a = StartNode("node-a");
  TestNode& b = StartNode("node-b");
  int v3 = 0;
  for (int i = 0; i < 400; ++i) {
    const std::string vm = "vm-" + std::to_string(i);
    ProtocolChoice c = a.rollout->ChooseProtocol(vm);
    EXPECT_EQ(c.protocol, BucketOf(vm) < 500 ? 3u : 1u) << vm;
    EXPECT_EQ(c.stage, "canary");
    EXPECT_EQ(c.region, "eu");
    EXPECT_TRUE(c.from_store);
    v3 += c.protocol == 3;
  }
  EXPECT_GT(v3, 0);
  EXPECT_LT(v3, 60);

  // Another node rolls back to v1: the next migration here uses v1.
  ASSERT_TRUE(b.rollout->Rollback("eu", "v1").ok());
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(a.rollout->ChooseProtocol("vm-" + std::to_string(i)).protocol, 1u);
  }
  EXPECT_EQ(a.Progress("v1"), 0);
  EXPECT_FALSE(a.Progress("canary").has_value());  // one series: the current stage
  EXPECT_EQ(a.Stage(), 0);

  ASSERT_TRUE(b.rollout->Advance("eu", "full").ok());
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(a.rollout->ChooseProtocol("vm-" + std::to_string(i)).protocol, 3u);
  }
  EXPECT_EQ(a.Progress("full"), 100);
}

TEST_F(RolloutControllerTest, PendingUntilBothProtocolsHaveSamples) {
  TestNode& a = StartNode("node-a");
  Advance(seconds(1));
  AddMigrations(1, 5, 2.0, 1e8);
  AddMigrations(3, 4, 2.0, 1e8);
  a.rollout->Tick();
  EXPECT_EQ(a.Decision(), 0.5);
  EXPECT_EQ(a.rollout->last_verdict().v3.migrations, 4u);
  EXPECT_EQ(Record().stage, "canary");
}

TEST_F(RolloutControllerTest, AdvancesAfterGoHeldForTheGoPeriod) {
  TestNode& a = StartNode("node-a");
  Advance(seconds(1));
  AddMigrations(1, 5, 2.0, 1e8);
  AddMigrations(3, 5, 1.5, 1.3e8);
  a.rollout->Tick();
  EXPECT_EQ(a.Decision(), 1);
  EXPECT_EQ(Record().stage, "canary");

  Advance(seconds(59));  // GO for 59 s
  a.rollout->Tick();
  EXPECT_EQ(Record().stage, "canary");
  EXPECT_EQ(a.Advances("go"), 0);

  Advance(seconds(1));  // GO for 60 s
  a.rollout->Tick();
  acp::RolloutRecord r = Record();
  EXPECT_EQ(r.stage, "early");
  EXPECT_EQ(r.percent, 25);
  EXPECT_EQ(r.version, 2u);
  EXPECT_EQ(r.reason, "go");
  EXPECT_FALSE(r.halted);
  EXPECT_EQ(r.changed_ms, kT0 + 61'000);
  EXPECT_EQ(a.Advances("go"), 1);
  EXPECT_EQ(a.Stage(), 2);
  EXPECT_EQ(a.Progress("early"), 25);
  EXPECT_FALSE(a.Progress("canary").has_value());

  // The new stage is judged on its own v3 traffic: pending until it has some.
  Advance(seconds(1));
  a.rollout->Tick();
  EXPECT_EQ(a.Decision(), 0.5);
  AddMigrations(3, 5, 1.5, 1.3e8);
  Advance(seconds(1));
  a.rollout->Tick();
  EXPECT_EQ(a.Decision(), 1);
}

TEST_F(RolloutControllerTest, AnInterruptedGoStartsThePeriodAgain) {
  TestNode& a = StartNode("node-a");
  Advance(seconds(1));
  AddMigrations(1, 5, 2.0, 1e8);
  AddMigrations(3, 5, 2.0, 1e8);
  a.rollout->Tick();
  EXPECT_EQ(a.Decision(), 1);
  Advance(seconds(30));
  // Three fresh v3 failures push the v3 success rate below v1's (5 of 8): NO-GO would roll
  // back, so turn auto rollback off to watch the GO clock alone.
  nodes_.clear();
  RolloutConfig c = TestConfig();
  c.auto_rollback = false;
  TestNode& b = StartNode("node-b", c);
  AddMigrations(3, 3, 2.0, 1e8, /*failures=*/3);
  b.rollout->Tick();
  EXPECT_EQ(b.Decision(), 0);
  EXPECT_EQ(Record().stage, "canary");
  AddMigrations(3, 60, 2.0, 1e8);  // the failures are diluted (65 of 68): GO again, from now
  Advance(seconds(1));
  b.rollout->Tick();
  EXPECT_EQ(b.Decision(), 1);
  Advance(seconds(59));
  b.rollout->Tick();
  EXPECT_EQ(Record().stage, "canary");
  Advance(seconds(1));
  b.rollout->Tick();
  EXPECT_EQ(Record().stage, "early");
}

TEST_F(RolloutControllerTest, NoGoRollsBackOneStageAndHalts) {
  RolloutConfig c = TestConfig();
  c.initial_stage = "majority";
  TestNode& a = StartNode("node-a", c);
  Advance(seconds(1));
  AddMigrations(1, 5, 2.0, 1e8);
  AddMigrations(3, 5, 2.0, 1e8, /*failures=*/3);
  Advance(seconds(1));
  a.rollout->Tick();
  acp::RolloutRecord r = Record();
  EXPECT_EQ(r.stage, "early");
  EXPECT_EQ(r.percent, 25);
  EXPECT_TRUE(r.halted);
  EXPECT_EQ(r.reason, "no_go");
  EXPECT_NE(r.detail.find("success rate"), std::string::npos) << r.detail;
  EXPECT_EQ(a.Rollbacks("no_go"), 1);
  EXPECT_EQ(a.Decision(), 0);
  EXPECT_EQ(a.Progress("early"), 25);

  // The rolled-back stage starts without v3 samples: no cascade on the same data.
  Advance(seconds(1));
  a.rollout->Tick();
  EXPECT_EQ(Record().stage, "early");
  EXPECT_EQ(a.Decision(), 0.5);

  // A healthy early stage is GO, but halted: no automatic advance.
  Advance(seconds(1));
  AddMigrations(3, 5, 2.0, 1e8);
  for (int i = 0; i < 5; ++i) {
    Advance(seconds(60));
    a.rollout->Tick();
  }
  EXPECT_EQ(a.Decision(), 1);
  EXPECT_EQ(Record().stage, "early");

  // An operator advances: halted is lifted.
  auto status = a.rollout->Advance("", "");
  ASSERT_TRUE(status.ok()) << status.status().ToString();
  r = Record();
  EXPECT_EQ(r.stage, "majority");
  EXPECT_FALSE(r.halted);
  EXPECT_EQ(r.reason, "manual");
  EXPECT_EQ(a.Advances("manual"), 1);
  EXPECT_EQ((*status)["regions"][0]["stage"], "majority");
}

TEST_F(RolloutControllerTest, NoGoWithoutAutoRollbackOnlyReports) {
  RolloutConfig c = TestConfig();
  c.auto_rollback = false;
  TestNode& a = StartNode("node-a", c);
  Advance(seconds(1));
  AddMigrations(1, 5, 2.0, 1e8);
  AddMigrations(3, 5, 5.0, 1e8);  // 150 % slower
  a.rollout->Tick();
  EXPECT_EQ(a.Decision(), 0);
  EXPECT_EQ(Record().stage, "canary");
  EXPECT_EQ(a.Rollbacks("no_go"), 0);
  ASSERT_EQ(a.rollout->last_verdict().reasons.size(), 1u);
  EXPECT_NE(a.rollout->last_verdict().reasons[0].find("latency"), std::string::npos);
}

TEST_F(RolloutControllerTest, CriticalAnomaliesRollBack) {
  std::vector<AnomalySample> anomalies;
  std::mutex mu;
  AnomalySource source = [&] {
    std::lock_guard lock(mu);
    return anomalies;
  };
  RolloutConfig c = TestConfig();
  c.initial_stage = "early";
  TestNode& a = StartNode("node-a", c, source);
  Advance(seconds(1));
  a.rollout->Tick();
  EXPECT_EQ(a.Decision(), 0.5);
  {
    std::lock_guard lock(mu);
    anomalies.push_back({clock_.WallMillis(), "latency_spike", "mig-77"});
  }
  Advance(seconds(1));
  a.rollout->Tick();
  EXPECT_EQ(Record().stage, "canary");
  EXPECT_EQ(a.Rollbacks("no_go"), 1);
  EXPECT_NE(Record().detail.find("latency_spike"), std::string::npos);
  // The anomaly predates the canary stage: it is not held against it.
  Advance(seconds(1));
  a.rollout->Tick();
  EXPECT_EQ(Record().stage, "canary");
}

TEST_F(RolloutControllerTest, TwoNodesAdvanceTheRegionOnce) {
  TestNode& a = StartNode("node-a");
  TestNode& b = StartNode("node-b");
  Advance(seconds(1));
  AddMigrations(1, 5, 2.0, 1e8, 0, "node-a");
  AddMigrations(3, 5, 2.0, 1e8, 0, "node-b");  // samples of the region, from either node
  a.rollout->Tick();
  b.rollout->Tick();
  EXPECT_EQ(a.Decision(), 1);
  EXPECT_EQ(b.Decision(), 1);
  Advance(seconds(60));
  std::thread ta([&] { a.rollout->Tick(); });
  std::thread tb([&] { b.rollout->Tick(); });
  ta.join();
  tb.join();
  acp::RolloutRecord r = Record();
  EXPECT_EQ(r.stage, "early");
  EXPECT_EQ(r.version, 2u);
  EXPECT_EQ(a.Advances("go") + b.Advances("go"), 1);
  // Both export the region's one stage.
  Advance(seconds(1));
  a.rollout->Tick();
  b.rollout->Tick();
  EXPECT_EQ(a.Progress("early"), 25);
  EXPECT_EQ(b.Progress("early"), 25);
}

TEST_F(RolloutControllerTest, MigrationsOfOtherRegionsDoNotCount) {
  TestNode& a = StartNode("node-a");
  Advance(seconds(1));
  AddMigrations(1, 5, 2.0, 1e8, 0, "node-c");  // us
  AddMigrations(3, 5, 2.0, 1e8, 0, "node-a");
  a.rollout->Tick();
  EXPECT_EQ(a.Decision(), 0.5);
  EXPECT_EQ(a.rollout->last_verdict().v1.migrations, 0u);
}

TEST_F(RolloutControllerTest, ManualChangesValidateTheirTarget) {
  TestNode& a = StartNode("node-a");
  EXPECT_EQ(a.rollout->Advance("eu", "nope").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(a.rollout->Advance("eu", "canary").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(a.rollout->Rollback("eu", "majority").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(a.rollout->Advance("mars", "").status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(a.rollout->Rollback("", "").ok());
  EXPECT_EQ(Record().stage, "v1");
  EXPECT_TRUE(Record().halted);
  EXPECT_EQ(a.Rollbacks("manual"), 1);
  EXPECT_EQ(a.rollout->Rollback("", "").status().code(), StatusCode::kFailedPrecondition);
  ASSERT_TRUE(a.rollout->Advance("", "full").ok());
  EXPECT_EQ(a.rollout->Advance("", "").status().code(), StatusCode::kFailedPrecondition);

  // Another region with nodes but no record yet: started at the initial stage, then moved.
  ASSERT_TRUE(a.rollout->Advance("us", "").ok());
  EXPECT_EQ(Record("us").stage, "early");
  EXPECT_EQ(Record("us").version, 2u);
}

TEST_F(RolloutControllerTest, AlertsRollBackToV1OnceAndResolvedOnesAreIgnored) {
  TestNode& a = StartNode("node-a");
  AlertNotification firing;
  firing.status = "firing";
  firing.receiver = "dwcp-rollback";
  firing.firing = {"DwcpRolloutNoGo"};
  firing.regions = {"eu"};
  auto result = a.rollout->HandleAlert(firing);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ((*result)["action"], "rolled_back");
  EXPECT_EQ(Record().stage, "v1");
  EXPECT_TRUE(Record().halted);
  EXPECT_EQ(Record().reason, "alert");
  EXPECT_NE(Record().detail.find("DwcpRolloutNoGo"), std::string::npos);
  EXPECT_EQ(a.Rollbacks("alert"), 1);
  EXPECT_EQ(a.Webhook("rolled_back"), 1);

  // Alertmanager repeats the notification: nothing more happens.
  result = a.rollout->HandleAlert(firing);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ((*result)["action"], "ignored");
  EXPECT_EQ((*result)["regions"][0]["result"], "unchanged");
  EXPECT_EQ(a.Rollbacks("alert"), 1);
  EXPECT_EQ(Record().version, 2u);

  AlertNotification resolved;
  resolved.status = "resolved";
  ASSERT_TRUE(a.rollout->HandleAlert(resolved).ok());
  EXPECT_EQ(a.Webhook("ignored"), 2);

  // An alert without a region label concerns every region.
  ASSERT_TRUE(a.rollout->Advance("eu", "").ok());
  AlertNotification everywhere = firing;
  everywhere.regions.clear();
  everywhere.all_regions = true;
  result = a.rollout->HandleAlert(everywhere);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ((*result)["regions"].size(), 2u);
  EXPECT_EQ(Record("eu").stage, "v1");
  EXPECT_EQ(Record("us").stage, "v1");
  EXPECT_EQ(a.Rollbacks("alert", "us"), 1);
}

TEST_F(RolloutControllerTest, WebhookNeedsTheSecretFromTheFile) {
  {
    TestNode& none = StartNode("node-a");
    EXPECT_EQ(none.rollout->AuthorizeWebhook("Bearer anything").code(),
              StatusCode::kUnauthenticated);
    EXPECT_EQ(none.Webhook("unauthenticated"), 1);
  }
  const std::string path = dir_ + "/webhook.token";
  std::ofstream(path) << "am-secret\n";
  RolloutConfig c = TestConfig();
  c.webhook_token_file = path;
  TestNode& a = StartNode("node-b", c);
  EXPECT_TRUE(a.rollout->AuthorizeWebhook("Bearer am-secret").ok());
  EXPECT_EQ(a.rollout->AuthorizeWebhook("Bearer am-secreT").code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(a.rollout->AuthorizeWebhook("").code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(a.Webhook("unauthenticated"), 2);
  // Rotated without a restart.
  std::ofstream(path) << "rotated\n";
  EXPECT_TRUE(a.rollout->AuthorizeWebhook("Bearer rotated").ok());

  // A configured but unreadable secret stops the node at start.
  c.webhook_token_file = dir_ + "/missing.token";
  obs::Metrics metrics;
  RolloutController bad(c, "node-x", "eu", *store_, metrics, clock_);
  EXPECT_EQ(bad.Start().code(), StatusCode::kInvalidArgument);
}

TEST_F(RolloutControllerTest, StatusShowsEveryRegionWithItsSamples) {
  RolloutConfig c = TestConfig();
  c.auto_rollback = false;
  TestNode& a = StartNode("node-a", c);
  Advance(seconds(1));
  AddMigrations(1, 5, 2.0, 1e8);
  AddMigrations(3, 5, 2.0, 1e8, /*failures=*/1);
  a.rollout->Tick();
  auto status = a.rollout->StatusJson();
  ASSERT_TRUE(status.ok()) << status.status().ToString();
  const auto& s = *status;
  EXPECT_EQ(s["node"], "node-a");
  EXPECT_EQ(s["region"], "eu");
  EXPECT_EQ(s["stages"].size(), 5u);
  ASSERT_EQ(s["regions"].size(), 2u);  // eu (record) and us (a node, no record yet)
  const auto& eu = s["regions"][0];
  EXPECT_EQ(eu["region"], "eu");
  EXPECT_EQ(eu["stage"], "canary");
  EXPECT_EQ(eu["stage_index"], 1);
  EXPECT_EQ(eu["percent"], 5);
  EXPECT_EQ(eu["samples"]["v1"]["migrations"], 5);
  EXPECT_EQ(eu["samples"]["v3"]["migrations"], 5);
  EXPECT_EQ(eu["samples"]["v3"]["failed"], 1);
  EXPECT_EQ(eu["decision"], "no_go");  // 80 % vs 100 %
  EXPECT_EQ(eu["reasons"].size(), 1u);
  EXPECT_EQ(s["regions"][1]["region"], "us");
  EXPECT_EQ(a.rollout->StatusJson("mars").status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(a.rollout->StatusJson("us").ok());
  EXPECT_EQ((*a.rollout->StatusJson("us"))["regions"].size(), 1u);
}

}  // namespace
}  // namespace dwcp::rollout
