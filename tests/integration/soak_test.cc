// Soak: 200 back-to-back migrations among three dwcpd nodes on a 3-member etcd cluster, with
// random faults (kill -9 of a node or of the etcd leader, SIGSTOP of a node past its lease)
// injected at random moments of random migrations. After every migration: each VM runs on
// exactly one node, the one the store names, with its memory intact. At the end: the node
// that was never killed has not leaked file descriptors, threads or memory.
//
// DWCP_SOAK_MIGRATIONS overrides the count (e.g. 1000 for a longer run by hand).
#include <gtest/gtest.h>
#include <signal.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/acp/etcd_test_cluster.h"
#include "tests/integration/cluster.h"

namespace dwcp::testing {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

const std::vector<std::string> kNodes = {"node-a", "node-b", "node-c"};
constexpr int kLeaseMs = 2000;

struct ProcessUsage {
  int fds = 0;
  int threads = 0;
  long rss_kib = 0;
  int guests = 0;  // guests the node runs (16 MiB each)
};

ProcessUsage UsageOf(pid_t pid) {
  ProcessUsage u;
  const std::string proc = "/proc/" + std::to_string(pid);
  for (auto it = std::filesystem::directory_iterator(proc + "/fd");
       it != std::filesystem::directory_iterator(); ++it) {
    ++u.fds;
  }
  std::ifstream status(proc + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Threads:", 0) == 0) u.threads = std::stoi(line.substr(8));
    if (line.rfind("VmRSS:", 0) == 0) u.rss_kib = std::stol(line.substr(6));
  }
  return u;
}

int GuestsOn(Cluster& c, const std::string& node) {
  auto r = HttpGet(c.node(node).api_port, "/api/v1/vms");
  int n = 0;
  for (const auto& vm : r.body["vms"]) {
    auto one = HttpGet(c.node(node).api_port, "/api/v1/vms/" + vm["id"].get<std::string>());
    n += one.body.value("runs_here", false) ? 1 : 0;
  }
  return n;
}

// The node whose copy of `vm` runs, after checking that exactly one does and that it is the
// owner every node reads from the store. "" (with a test failure) otherwise.
std::string CheckRunsOnce(Cluster& c, const std::string& vm) {
  std::string owner, runner;
  int running = 0;
  for (const auto& n : kNodes) {
    auto r = HttpGet(c.node(n).api_port, "/api/v1/vms/" + vm);
    if (r.status != 200) {
      ADD_FAILURE() << n << ": " << r.text;
      return "";
    }
    if (owner.empty()) owner = r.body["node"];
    if (r.body["node"] != owner) ADD_FAILURE() << vm << ": nodes disagree on the owner";
    if (r.body["runs_here"].get<bool>()) {
      runner = n;
      ++running;
    }
  }
  if (running != 1 || runner != owner) return "";
  return runner;
}

TEST(SoakTest, TwoHundredMigrationsWithRandomFaults) {
  int total = 200;
  if (const char* env = std::getenv("DWCP_SOAK_MIGRATIONS")) total = std::atoi(env);
  auto started = EtcdTestCluster::Start(3);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  EtcdTestCluster& etcd = **started;
  Cluster c;
  const std::vector<std::string> flags = {"--store",         etcd.Url(),
                                          "--store-timeout", "3s",
                                          "--node-lease",    std::to_string(kLeaseMs) + "ms",
                                          "--peer-timeout",  std::to_string(kLeaseMs) + "ms"};
  for (const auto& n : kNodes) {
    c.StartNode(n, flags);
    ASSERT_GT(c.node(n).pid, 0) << c.ReadLog(n);
  }

  // Idle VMs, so that each one's digest must never change wherever it runs.
  std::map<std::string, std::string> digests;
  for (int i = 0; i < 6; ++i) {
    const std::string vm = "soak-" + std::to_string(i);
    const std::string& node = kNodes[i % kNodes.size()];
    auto r = HttpPost(c.node(node).api_port, "/api/v1/vms",
                      {{"id", vm}, {"memory", "16MiB"}, {"dirty_rate", "0"}, {"seed", 100 + i}});
    ASSERT_EQ(r.status, 201) << r.text;
    auto d = HttpGet(c.node(node).api_port, "/api/v1/vms/" + vm + "?digest=true");
    digests[vm] = d.body["digest"];
  }

  std::mt19937 rng(20261202);
  std::map<std::string, int> results;
  int faults = 0;
  ProcessUsage baseline;
  for (int i = 0; i < total; ++i) {
    SCOPED_TRACE("migration " + std::to_string(i + 1));
    const std::string vm = "soak-" + std::to_string(rng() % 6);
    std::string from;
    ASSERT_TRUE(WaitFor([&] { return !(from = CheckRunsOnce(c, vm)).empty(); }, 30000))
        << vm << " does not run in exactly one place";
    std::string to = kNodes[rng() % 3];
    while (to == from) to = kNodes[rng() % 3];
    HttpReply r;
    // A node that was just restarted or frozen is a destination again once it heartbeats.
    WaitFor(
        [&] {
          r = HttpPost(c.node(from).api_port, "/api/v1/migrations", {{"vm", vm}, {"to", to}});
          return r.status == 202;
        },
        15000);
    ASSERT_EQ(r.status, 202) << r.text;

    // One migration in ten meets a fault. node-a is never killed: its resource use is the
    // leak check.
    if (i % 10 == 5) {
      ++faults;
      std::this_thread::sleep_for(milliseconds(rng() % 400));
      const int kind = rng() % 3;
      const std::string victim = kNodes[1 + rng() % 2];
      if (kind == 0) {
        c.Kill(victim);
        std::this_thread::sleep_for(milliseconds(500));
        c.Restart(victim);
        ASSERT_GT(c.node(victim).pid, 0) << c.ReadLog(victim);
      } else if (kind == 1) {
        const std::string frozen = kNodes[rng() % 3];
        c.Pause(frozen);
        std::this_thread::sleep_for(milliseconds(kLeaseMs + 1000));
        c.Continue(frozen);
      } else {
        const int leader = etcd.WaitForLeader();
        ASSERT_GE(leader, 0);
        etcd.Kill(leader);
        std::this_thread::sleep_for(milliseconds(1500));
        ASSERT_TRUE(etcd.Restart(leader).ok());
      }
    }
    json m = c.WaitForMigration(from, r.body["id"], 60000);
    ASSERT_FALSE(m.value("result", std::string()).empty()) << m.dump();
    ++results[m["result"].get<std::string>()];
    if (m["result"] == "success") {
      EXPECT_EQ(m["source_digest"], digests[vm]) << m.dump();
      EXPECT_EQ(m["dest_digest"], digests[vm]) << m.dump();
    }
    std::string runner;
    ASSERT_TRUE(WaitFor([&] { return !(runner = CheckRunsOnce(c, vm)).empty(); }, 30000))
        << vm << " after " << m.dump();
    EXPECT_EQ(runner, m["result"] == "success" ? to : from) << m.dump();
    auto d = HttpGet(c.node(runner).api_port, "/api/v1/vms/" + vm + "?digest=true");
    EXPECT_EQ(d.body["digest"], digests[vm]) << vm << " on " << runner;
    if (i == 19) {  // after warm-up
      baseline = UsageOf(c.node("node-a").pid);
      baseline.guests = GuestsOn(c, "node-a");
    }
  }
  // Without faults every migration succeeds; each fault costs at most its own migration.
  EXPECT_GE(results["success"], total - faults) << "results: " << json(results).dump();

  // No leaks on the node that was never killed: nothing grows with the migration count.
  ASSERT_GE(total, 40);
  ProcessUsage end = UsageOf(c.node("node-a").pid);
  end.guests = GuestsOn(c, "node-a");
  RecordProperty("fds", std::to_string(baseline.fds) + " -> " + std::to_string(end.fds));
  RecordProperty("threads",
                 std::to_string(baseline.threads) + " -> " + std::to_string(end.threads));
  RecordProperty("rss_kib",
                 std::to_string(baseline.rss_kib) + " -> " + std::to_string(end.rss_kib));
  std::cout << "node-a after warm-up -> end: fds " << baseline.fds << " -> " << end.fds
            << ", threads " << baseline.threads << " -> " << end.threads << ", RSS "
            << baseline.rss_kib / 1024 << " -> " << end.rss_kib / 1024 << " MiB (guests "
            << baseline.guests << " -> " << end.guests << "); results " << json(results).dump()
            << ", faults " << faults << "\n";
  EXPECT_LE(end.fds, baseline.fds + 8);
  EXPECT_LE(end.threads, baseline.threads + 4);
  // Guest memory is the node's to hold: 16 MiB per guest it runs more than at the baseline.
  EXPECT_LE(end.rss_kib, baseline.rss_kib + (end.guests - baseline.guests) * 16 * 1024 + 64 * 1024);
}

}  // namespace
}  // namespace dwcp::testing
