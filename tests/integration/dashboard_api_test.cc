// The API the dashboard (web/, docs/dashboard.md) reads, against real nodes: a migration's
// timeline, the cluster's links with PBA's forecasts, another node's summary, and the
// summary's recent history.
#include <gtest/gtest.h>

#include <chrono>
#include <regex>
#include <sstream>
#include <thread>

#include "cluster.h"

namespace dwcp::testing {
namespace {

using nlohmann::json;

TEST(DashboardApiTest, TimelineLinksForwardedSummaryAndHistory) {
  Cluster c;
  c.StartNode("node-a");
  c.StartNode("node-b");
  const uint16_t a = c.node("node-a").api_port;
  const uint16_t b = c.node("node-b").api_port;
  ASSERT_EQ(
      HttpPost(a, "/api/v1/vms", {{"id", "vm-1"}, {"memory", "64MiB"}, {"dirty_rate", "5MB/s"}})
          .status,
      201);
  auto started =
      HttpPost(a, "/api/v1/migrations", {{"vm", "vm-1"}, {"to", "node-b"}, {"protocol", "v3"}});
  ASSERT_EQ(started.status, 202) << started.text;
  json m = c.WaitForMigration("node-a", started.body["id"]);
  ASSERT_EQ(m["result"], "success") << m.dump();

  // --- The migration's timeline: phases in order, where the time went, its trace.
  const int64_t created = m["created_ms"], precopy = m["precopy_started_ms"],
                switchover = m["switchover_started_ms"], commit = m["commit_started_ms"],
                finished = m["finished_ms"];
  EXPECT_GT(precopy, 0);
  EXPECT_LE(created, precopy);
  EXPECT_LE(precopy, switchover);
  EXPECT_LE(switchover, commit);
  EXPECT_LE(commit, finished);
  const double amst = m["amst_seconds"], hde = m["hde_seconds"], acp = m["acp_seconds"];
  EXPECT_GT(amst, 0);
  EXPECT_GT(acp, 0);
  EXPECT_GE(hde, 0);
  EXPECT_LE(amst + hde + acp, m["total_ms"].get<double>() / 1e3 * 1.05 + 0.01) << m.dump();
  const std::string trace_id = m["trace_id"];
  EXPECT_TRUE(std::regex_match(trace_id, std::regex("[0-9a-f]{32}"))) << trace_id;
  // The same trace id as the source's log line for the migration.
  bool logged = false;
  std::istringstream log(c.ReadLog("node-a"));
  for (std::string line; std::getline(log, line);) {
    json j = json::parse(line, nullptr, false);
    if (j.is_object() && j.value("message", "") == "Migration completed") {
      logged = j.value("trace_id", "") == trace_id;
    }
  }
  EXPECT_TRUE(logged) << trace_id;
  // The list carries the same fields.
  auto list = HttpGet(b, "/api/v1/migrations?limit=1");
  ASSERT_EQ(list.status, 200);
  EXPECT_EQ(list.body["migrations"][0]["trace_id"], trace_id);

  // --- Links: node-a measured sending to node-b (with PBA's forecast), node-b measured
  // receiving from node-a; any node answers for the whole cluster.
  for (uint16_t port : {a, b}) {
    auto links = HttpGet(port, "/api/v1/links");
    ASSERT_EQ(links.status, 200) << links.text;
    EXPECT_EQ(links.body["unreachable"].size(), 0u) << links.text;
    const json* sent = nullptr;
    const json* received = nullptr;
    for (const auto& l : links.body["links"]) {
      ASSERT_EQ(l["source"], "node-a") << l.dump();
      ASSERT_EQ(l["destination"], "node-b") << l.dump();
      (l["measured_by"] == "node-a" ? sent : received) = &l;
    }
    ASSERT_NE(sent, nullptr) << links.text;
    ASSERT_NE(received, nullptr) << links.text;
    EXPECT_GT((*sent)["rtt_ms"].get<double>(), 0);
    EXPECT_GT((*sent)["bandwidth_bytes_per_second"].get<double>(), 0);
    EXPECT_GT((*sent)["predicted_bandwidth_bytes_per_second"].get<double>(), 0);
    EXPECT_TRUE((*sent)["model"].is_string());
    // Loopback is a datacenter link, but a loaded test machine's delivery rate can say hybrid.
    const std::string mode = (*sent)["mode"];
    EXPECT_TRUE(mode == "datacenter" || mode == "hybrid" || mode == "internet") << mode;
    EXPECT_GT((*sent)["updated_ms"].get<int64_t>(), created - 1);
    EXPECT_TRUE((*received)["predicted_bandwidth_bytes_per_second"].is_null());
  }
  auto local = HttpGet(b, "/api/v1/links?scope=local");
  ASSERT_EQ(local.status, 200);
  for (const auto& l : local.body["links"]) EXPECT_EQ(l["measured_by"], "node-b");

  // --- Another node's summary, through any node.
  auto other = HttpGet(a, "/metrics/summary?node=node-b");
  ASSERT_EQ(other.status, 200) << other.text;
  EXPECT_EQ(other.body["node"], "node-b");
  EXPECT_GT(other.body["bytes"]["transferred_received"].get<double>(), 0);
  EXPECT_EQ(HttpGet(a, "/metrics/summary?node=node-zz").status, 404);

  // --- History: a point per 5 s whose window holds the migration.
  json point;
  for (int i = 0; i < 80 && point.is_null(); ++i) {
    auto h = HttpGet(a, "/metrics/summary/history");
    ASSERT_EQ(h.status, 200) << h.text;
    EXPECT_EQ(h.body["node"], "node-a");
    for (const auto& p : h.body["points"]) {
      if (p["latency_seconds"]["count"].get<double>() >= 1) point = p;
    }
    if (point.is_null()) std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  ASSERT_FALSE(point.is_null()) << "no history point saw the migration";
  EXPECT_GT(point["latency_seconds"]["p50"].get<double>(), 0);
  EXPECT_GE(point["latency_seconds"]["p99"].get<double>(),
            point["latency_seconds"]["p50"].get<double>());
  EXPECT_GT(point["migrations_per_minute"].get<double>(), 0);
  EXPECT_TRUE(point["throughput_bytes_per_second"].contains("tcp")) << point.dump();
  auto remote = HttpGet(a, "/metrics/summary/history?node=node-b");
  ASSERT_EQ(remote.status, 200);
  EXPECT_EQ(remote.body["node"], "node-b");
}

}  // namespace
}  // namespace dwcp::testing
