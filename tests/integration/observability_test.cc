// The operator's guide against a running cluster: every metric and endpoint it names that
// this build implements exists, moves during a migration, and passes promtool.
#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "tests/integration/cluster.h"

namespace dwcp::testing {
namespace {

using nlohmann::json;

double Value(const std::string& text, const std::string& name, const std::string& labels = "") {
  double v = MetricValue(text, name, labels);
  return std::isnan(v) ? 0 : v;
}

// Metric names of the guide (sections 2, 6, 7, 8) implemented in this build, with a label
// selector where the guide queries one series.
const std::vector<std::pair<std::string, std::string>> kGuideMetrics = {
    {"dwcp_v3_migrations_total", ""},
    {"dwcp_v3_bytes_transferred_total", ""},
    {"dwcp_v3_network_bytes_total", ""},
    {"dwcp_v3_throughput_bytes_per_second", "transport=\"tcp\""},
    {"dwcp_v3_active_connections", ""},
    {"dwcp_v3_migration_latency_seconds_bucket", ""},
    {"dwcp_v3_migration_latency_seconds_sum", ""},
    {"dwcp_v3_migration_latency_seconds_count", ""},
    {"dwcp_v3_compression_ratio_bucket", ""},
    {"dwcp_v3_amst_throughput_bytes_per_second", ""},
    {"dwcp_v3_amst_active_streams", ""},
    {"dwcp_v3_amst_stream_saturation_ratio", ""},
    {"dwcp_v3_pba_prediction_accuracy_percent", ""},
    {"dwcp_v3_pba_prediction_error_ratio_count", ""},
    {"dwcp_v3_acp_consensus_latency_seconds_count", ""},
    {"dwcp_v3_hde_compression_ratio", ""},
    {"dwcp_v3_hde_compression_ratio_percent", ""},
    {"dwcp_v3_resource_utilization_percent", "resource_type=\"cpu\""},
    {"dwcp_v3_resource_utilization_percent", "resource_type=\"memory\""},
    {"dwcp_v3_resource_utilization_percent", "resource_type=\"goroutines\""},
};

TEST(ObservabilityTest, GuideMetricsExistAndMoveDuringAMigration) {
  Cluster c;
  c.StartNode("node-a");
  c.StartNode("node-b");
  auto r = HttpPost(c.node("node-a").api_port, "/api/v1/vms",
                    {{"id", "vm-12345"}, {"memory", "256MiB"}, {"dirty_rate", "20MB/s"}});
  ASSERT_EQ(r.status, 201) << r.text;
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));  // one sampling period
  const std::string before = c.Metrics("node-a");

  r = HttpPost(c.node("node-a").api_port, "/api/v1/migrations",
               {{"vm", "vm-12345"}, {"to", "node-b"}, {"bandwidth_limit", "100MB/s"}});
  ASSERT_EQ(r.status, 202) << r.text;
  std::string id = r.body["id"];
  // Gauges are seen at their peak while the migration runs.
  std::map<std::string, double> peak;
  for (int i = 0; i < 100; ++i) {
    std::string now = c.Metrics("node-a");
    for (const auto& [name, labels] : kGuideMetrics) {
      peak[name + labels] = std::max(peak[name + labels], Value(now, name, labels));
    }
    auto m = HttpGet(c.node("node-a").api_port, "/api/v1/migrations/" + id);
    if (!m.body.value("result", "").empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(c.WaitForMigration("node-a", id)["result"], "success");
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  const std::string after = c.Metrics("node-a");

  for (const auto& [name, labels] : kGuideMetrics) {
    SCOPED_TRACE(name + "{" + labels + "}");
    EXPECT_FALSE(std::isnan(MetricValue(after, name, labels))) << "missing from /metrics";
    double changed = std::max(std::fabs(Value(after, name, labels) - Value(before, name, labels)),
                              std::fabs(peak[name + labels] - Value(before, name, labels)));
    EXPECT_GT(changed, 0) << "never changed during the migration";
  }
  // Health comes from checks: present and healthy for every component of this build.
  for (const char* comp : {"amst", "hde", "acp"}) {
    EXPECT_EQ(Value(after, "dwcp_v3_component_health", std::string("component=\"") + comp + "\""),
              1)
        << comp;
  }
  // Standard process metrics.
  for (const char* name : {"process_cpu_seconds_total", "process_resident_memory_bytes",
                           "process_open_fds", "process_start_time_seconds"}) {
    EXPECT_GT(Value(after, name), 0) << name;
  }
  // The destination counted what it received.
  EXPECT_GT(Value(c.Metrics("node-b"), "dwcp_v3_bytes_transferred_total", "direction=\"received\""),
            256.0 * (1 << 20));

  // promtool finds nothing to complain about in a busy node's exposition.
  std::string file = c.dir() + "/metrics.txt";
  std::ofstream(file) << after;
  FILE* p = popen(("promtool check metrics < " + file + " 2>&1").c_str(), "r");
  char buf[4096] = {};
  size_t n = fread(buf, 1, sizeof buf - 1, p);
  int status = pclose(p);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << std::string(buf, n);
  EXPECT_EQ(std::string(buf, n), "") << "promtool findings";

  // Logs (guide 4.1, 4.3): one JSON object per line with the guide's fields, and the LogQL
  // filters find what they describe.
  int lines = 0, about_vm = 0;
  bool completed = false;
  for (const char* node : {"node-a", "node-b"}) {
    std::istringstream log(c.ReadLog(node));
    std::string line;
    while (std::getline(log, line)) {
      json j = json::parse(line, nullptr, false);
      ASSERT_FALSE(j.is_discarded()) << "not JSON: " << line;
      ++lines;
      for (const char* field : {"timestamp", "level", "component", "message"}) {
        EXPECT_TRUE(j.contains(field)) << field << " missing: " << line;
      }
      EXPECT_TRUE(j["level"] == "debug" || j["level"] == "info" || j["level"] == "warn" ||
                  j["level"] == "error" || j["level"] == "fatal")
          << line;
      if (j.value("vm_id", "") != "vm-12345") continue;  // | json | vm_id="vm-12345"
      ++about_vm;
      if (j["message"] == "Migration completed") {
        completed = true;
        EXPECT_GT(j["latency_ms"].get<double>(), 500);  // | json | latency_ms > 500
        EXPECT_GT(j["throughput_gbps"].get<double>(), 0);
        EXPECT_EQ(j["component"], "migration");
      }
    }
  }
  EXPECT_GT(lines, 4);
  EXPECT_GE(about_vm, 4);  // created, started, receiving, completed, resumed
  EXPECT_TRUE(completed);
}

TEST(ObservabilityTest, ComponentEndpointsAndSummary) {
  Cluster c;
  c.StartNode("node-a");
  c.StartNode("node-b");
  uint16_t a = c.node("node-a").api_port;
  ASSERT_EQ(HttpPost(a, "/api/v1/vms", {{"id", "vm-1"}, {"memory", "64MiB"}}).status, 201);
  auto r = HttpPost(a, "/api/v1/migrations", {{"vm", "vm-1"}, {"to", "node-b"}});
  ASSERT_EQ(c.WaitForMigration("node-a", r.body["id"])["result"], "success");
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));

  // Each component view holds its own families and the series labelled with it, only.
  std::string hde = HttpGet(a, "/metrics/hde").text;
  EXPECT_NE(hde.find("dwcp_v3_hde_pages_total"), std::string::npos);
  EXPECT_NE(hde.find("dwcp_v3_component_health{component=\"hde\"}"), std::string::npos);
  EXPECT_EQ(hde.find("component=\"amst\""), std::string::npos);
  EXPECT_EQ(hde.find("dwcp_v3_amst_"), std::string::npos);
  std::string amst = HttpGet(a, "/metrics/amst").text;
  EXPECT_NE(amst.find("dwcp_v3_amst_active_streams"), std::string::npos);
  // The migration's latency is counted once, under the component that dominated it; each
  // component's series is in its own view.
  EXPECT_NE(amst.find("dwcp_v3_migration_latency_seconds_count{component=\"amst\"}"),
            std::string::npos)
      << amst;
  EXPECT_EQ(Value(c.Metrics("node-a"), "dwcp_v3_migration_latency_seconds_count"), 1);
  std::string acp = HttpGet(a, "/metrics/acp").text;
  EXPECT_NE(
      acp.find("dwcp_v3_component_latency_seconds_count{component=\"acp\",operation=\"commit\"} 1"),
      std::string::npos)
      << acp;
  std::string pba = HttpGet(a, "/metrics/pba").text;
  EXPECT_NE(pba.find("dwcp_v3_pba_prediction_accuracy_percent "), std::string::npos) << pba;
  EXPECT_NE(pba.find("dwcp_v3_pba_model_error_ratio{model=\"holt\"}"), std::string::npos) << pba;
  for (const char* comp : {"ass", "itp"}) {
    auto view = HttpGet(a, std::string("/metrics/") + comp);
    EXPECT_EQ(view.status, 200) << comp;  // nothing to show until the component exists
  }
  EXPECT_EQ(HttpGet(a, "/metrics/nope").status, 404);

  json s = HttpGet(a, "/metrics/summary").body;
  EXPECT_EQ(s["node"], "node-a");
  EXPECT_EQ(s["migrations"]["total"], 1);
  EXPECT_EQ(s["migrations"]["success"], 1);
  EXPECT_EQ(s["migrations"]["per_minute"], 1);
  EXPECT_GT(s["latency_seconds"]["p50"].get<double>(), 0);
  EXPECT_GE(s["latency_seconds"]["p99"].get<double>(), s["latency_seconds"]["p50"].get<double>());
  EXPECT_EQ(s["latency_seconds"]["count"], 1);
  EXPECT_GT(s["bytes"]["transferred_sent"].get<double>(), 64.0 * (1 << 20) - 1);
  EXPECT_GT(s["bytes"]["hde_compression_ratio"].get<double>(), 1.0);
  EXPECT_EQ(s["health"]["acp"], 1);
  EXPECT_EQ(s["errors"]["total"], 0);
  EXPECT_GT(s["resources"]["resident_memory_bytes"].get<double>(), 0);
  // SLA and anomaly figures (guide 7.4, 7.5): present from the start, healthy here.
  EXPECT_TRUE(s.contains("sla")) << s.dump();
  EXPECT_TRUE(s.contains("anomalies")) << s.dump();
  std::string text = c.Metrics("node-a");
  EXPECT_EQ(MetricValue(text, "dwcp_v3_sla_compliance", "sla_type=\"overall\""), 1);
  EXPECT_EQ(MetricValue(text, "dwcp_v3_sla_violations_total"), 0);
  EXPECT_EQ(MetricValue(text, "dwcp_v3_anomaly_detections_total"), 0);
}

TEST(ObservabilityTest, HealthDegradesOnProtocolErrorsAndLogLevelChangesAtRuntime) {
  Cluster c;
  c.StartNode("node-a");
  uint16_t a = c.node("node-a").api_port;
  httplib::Client raw("127.0.0.1", c.node("node-a").data_port);
  (void)raw.Get("/");  // an HTTP request is garbage to the DWCP data port
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_EQ(Value(c.Metrics("node-a"), "dwcp_v3_component_health", "component=\"amst\""), 0.5);
  json s = HttpGet(a, "/metrics/summary").body;
  EXPECT_EQ(s["errors"]["by_component"]["amst"], 1);
  EXPECT_EQ(s["errors"]["by_type"]["protocol"], 1);

  EXPECT_EQ(HttpGet(a, "/api/v1/log-level").body["level"], "info");
  httplib::Client api("127.0.0.1", a);
  auto put = api.Put("/api/v1/log-level", R"({"level":"debug"})", "application/json");
  ASSERT_TRUE(put);
  EXPECT_EQ(put->status, 200);
  EXPECT_EQ(HttpGet(a, "/api/v1/log-level").body["level"], "debug");
  auto bad = api.Put("/api/v1/log-level", R"({"level":"loud"})", "application/json");
  EXPECT_EQ(bad->status, 400);
  EXPECT_NE(c.ReadLog("node-a").find("\"message\":\"log level changed\""), std::string::npos);
}

// ACP's dashboard series: one leader at a time, a new one when it dies, which marks the dead
// node down; consensus latency observed per ownership transaction.
TEST(ObservabilityTest, OneLeaderAtATimeAndTheDeadOneIsMarkedDown) {
  Cluster c;
  c.StartNode("node-a");
  c.StartNode("node-b");
  auto leaders = [&] {
    double a = Value(c.Metrics("node-a"), "dwcp_v3_acp_leader");
    double b = Value(c.Metrics("node-b"), "dwcp_v3_acp_leader");
    return std::make_pair(a, b);
  };
  std::pair<double, double> l{0, 0};
  for (int i = 0; i < 50 && l.first + l.second == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    l = leaders();
  }
  ASSERT_EQ(l.first + l.second, 1) << "exactly one leader";
  const std::string leader = l.first == 1 ? "node-a" : "node-b";
  const std::string other = leader == "node-a" ? "node-b" : "node-a";
  EXPECT_EQ(Value(c.Metrics(leader), "dwcp_v3_acp_leader_elections_total"), 1);
  EXPECT_EQ(Value(c.Metrics(other), "dwcp_v3_acp_leader_elections_total"), 0);
  EXPECT_EQ(Value(c.Metrics(other), "dwcp_v3_acp_quorum_healthy_ratio"), 1);

  c.Kill(leader);  // SIGKILL: no lease release, no "down" heartbeat
  bool took_over = false, marked_down = false;
  for (int i = 0; i < 100 && !(took_over && marked_down); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    took_over = Value(c.Metrics(other), "dwcp_v3_acp_leader") == 1;
    const auto nodes = HttpGet(c.node(other).api_port, "/api/v1/nodes");  // kept alive
    for (const auto& n : nodes.body["nodes"]) {
      if (n.value("id", "") == leader && n.value("state", "") == "down") marked_down = true;
    }
  }
  EXPECT_TRUE(took_over);
  EXPECT_TRUE(marked_down);
  EXPECT_EQ(Value(c.Metrics(other), "dwcp_v3_acp_leader_elections_total"), 1);
  EXPECT_NE(c.ReadLog(other).find("marked down"), std::string::npos);
}

}  // namespace
}  // namespace dwcp::testing
