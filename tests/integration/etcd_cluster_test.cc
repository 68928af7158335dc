// DWCP as a real cluster on etcd: three etcd members and three dwcpd nodes on loopback
// (--store etcd://...). Migrations go on while the etcd leader is killed, every VM is owned by
// exactly one node and runs only there, and the cluster-leader lease moves when the dwcpd
// holding it is killed.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "tests/acp/etcd_test_cluster.h"
#include "tests/integration/cluster.h"

namespace dwcp::testing {
namespace {

using nlohmann::json;

const std::vector<std::string> kNodes = {"node-a", "node-b", "node-c"};

// Moves `vm` from its owner `from` to `to` and checks the result; returns the migration.
json Migrate(Cluster& c, const std::string& vm, const std::string& from, const std::string& to) {
  auto r = HttpPost(c.node(from).api_port, "/api/v1/migrations", {{"vm", vm}, {"to", to}});
  EXPECT_EQ(r.status, 202) << r.text;
  if (r.status != 202) return json();
  json m = c.WaitForMigration(to, r.body["id"], 60000);
  EXPECT_EQ(m["result"], "success") << m.dump();
  EXPECT_EQ(m["source_digest"].get<std::string>().size(), 32u);
  EXPECT_EQ(m["source_digest"], m["dest_digest"]);
  return m;
}

// Every running node agrees on the owner and epoch, and only the owner runs the guest.
void ExpectOwnedOnce(Cluster& c, const std::vector<std::string>& nodes, const std::string& vm,
                     const std::string& owner, int epoch) {
  int running = 0;
  for (const auto& n : nodes) {
    auto r = HttpGet(c.node(n).api_port, "/api/v1/vms/" + vm);
    ASSERT_EQ(r.status, 200) << n << ": " << r.text;
    EXPECT_EQ(r.body["node"], owner) << n;
    EXPECT_EQ(r.body["epoch"], epoch) << n;
    EXPECT_EQ(r.body["state"], "running") << n;
    const bool here = r.body["runs_here"].get<bool>();
    EXPECT_EQ(here, n == owner) << vm << " on " << n;
    running += here ? 1 : 0;
  }
  EXPECT_EQ(running, 1) << vm;
}

// The node whose dwcp_v3_acp_leader is 1, waiting up to `timeout_ms`; "" when none.
std::string WaitForClusterLeader(Cluster& c, const std::vector<std::string>& nodes,
                                 int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    std::vector<std::string> leaders;
    for (const auto& n : nodes) {
      if (Metric(c, n, "dwcp_v3_acp_leader") == 1) leaders.push_back(n);
    }
    if (leaders.size() == 1) return leaders[0];
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return "";
}

TEST(EtcdClusterTest, MigrationsSurviveTheEtcdLeaderAndLeadershipMoves) {
  auto started = EtcdTestCluster::Start(3);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  EtcdTestCluster& etcd = **started;
  Cluster c;
  for (const auto& n : kNodes) {
    c.StartNode(n, {"--store", etcd.Url(), "--store-timeout", "3s"});
    ASSERT_GT(c.node(n).pid, 0) << c.ReadLog(n);
  }
  // Every node sees the same cluster through etcd.
  auto nodes = HttpGet(c.node("node-c").api_port, "/api/v1/nodes");
  ASSERT_EQ(nodes.status, 200) << nodes.text;
  EXPECT_EQ(nodes.body["nodes"].size(), 3u) << nodes.text;
  EXPECT_NEAR(Metric(c, "node-a", "dwcp_v3_acp_quorum_healthy_ratio"), 1.0, 1e-9);

  for (const char* vm : {"vm-1", "vm-2"}) {
    auto r =
        HttpPost(c.node("node-a").api_port, "/api/v1/vms",
                 {{"id", vm}, {"node", "node-a"}, {"memory", "64MiB"}, {"dirty_rate", "5MB/s"}});
    ASSERT_EQ(r.status, 201) << r.text;
  }
  Migrate(c, "vm-1", "node-a", "node-b");
  ExpectOwnedOnce(c, kNodes, "vm-1", "node-b", 2);

  // Kill the etcd leader: the remaining two members elect another and the store goes on.
  const int leader = etcd.WaitForLeader();
  ASSERT_GE(leader, 0);
  etcd.Kill(leader);
  Migrate(c, "vm-2", "node-a", "node-c");
  Migrate(c, "vm-1", "node-b", "node-c");
  Migrate(c, "vm-2", "node-c", "node-b");
  ExpectOwnedOnce(c, kNodes, "vm-1", "node-c", 3);
  ExpectOwnedOnce(c, kNodes, "vm-2", "node-b", 3);
  // Quorum health reflects the store's real members: 2 of 3.
  bool two_thirds = false;
  for (int i = 0; i < 50 && !two_thirds; ++i) {
    two_thirds = std::abs(Metric(c, "node-a", "dwcp_v3_acp_quorum_healthy_ratio") - 2.0 / 3) < 1e-6;
    if (!two_thirds) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(two_thirds) << Metric(c, "node-a", "dwcp_v3_acp_quorum_healthy_ratio");
  // ACP is healthy again (a heartbeat in flight when the leader died may have failed).
  bool acp_up = false;
  for (int i = 0; i < 50 && !acp_up; ++i) {
    acp_up = Metric(c, "node-a", "dwcp_v3_component_health", "component=\"acp\"") == 1;
    if (!acp_up) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(acp_up) << c.ReadLog("node-a");

  // The dwcpd holding "cluster-leader" dies: another takes the lease within its 5 s TTL.
  const std::string first = WaitForClusterLeader(c, kNodes, 10000);
  ASSERT_FALSE(first.empty());
  c.Kill(first);
  std::vector<std::string> alive;
  for (const auto& n : kNodes) {
    if (n != first) alive.push_back(n);
  }
  const auto t0 = std::chrono::steady_clock::now();
  const std::string second = WaitForClusterLeader(c, alive, 15000);
  ASSERT_FALSE(second.empty()) << "no node took over the cluster-leader lease";
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  EXPECT_GE(Metric(c, second, "dwcp_v3_acp_leader_elections_total"), 1);

  // The survivors still move VMs they own between them.
  if (first != "node-b") {
    const std::string other = alive[0] == "node-b" ? alive[1] : alive[0];
    Migrate(c, "vm-2", "node-b", other);
    ExpectOwnedOnce(c, alive, "vm-2", other, 4);
  } else {
    const std::string other = alive[0] == "node-c" ? alive[1] : alive[0];
    Migrate(c, "vm-1", "node-c", other);
    ExpectOwnedOnce(c, alive, "vm-1", other, 4);
  }
}

TEST(EtcdClusterTest, UnreachableEtcdStopsDwcpdWithAClearError) {
  Cluster c;
  const std::string url = "etcd://127.0.0.1:" + std::to_string(FreePort());
  const auto t0 = std::chrono::steady_clock::now();
  std::string cmd = std::string(DWCPD_BINARY) + " --node-id node-x --api-listen 127.0.0.1:0 " +
                    "--data-listen 127.0.0.1:0 --pprof-listen 127.0.0.1:0 --tls false " +
                    "--tracing false --data-dir " + c.dir() + "/x --store " + url +
                    " --store-timeout 1s 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << out;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  EXPECT_NE(out.find(url.substr(7)), std::string::npos) << out;  // names the endpoint

  cmd = std::string(DWCPD_BINARY) + " --node-id node-x --store etcd://127.0.0.1 2>&1";
  p = popen(cmd.c_str(), "r");
  out.clear();
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  EXPECT_NE(pclose(p), 0);
  EXPECT_NE(out.find("host:port"), std::string::npos) << out;
}

}  // namespace
}  // namespace dwcp::testing
