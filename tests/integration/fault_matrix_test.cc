// The fault matrix of docs/consensus.md: for each phase of a migration, kill -9 the source,
// the destination or the etcd leader, cut the network between the nodes, or freeze a node
// (SIGSTOP) past its lease — then recover and check that the VM runs in exactly one place,
// with the memory it had at the pause, under a final and correct migration record.
//
// Real processes: a 3-member etcd cluster and two dwcpd nodes on loopback. The destination's
// data connections go through a TcpProxy (--data-advertise), which can cut the link. A
// failpoint (DWCP_FAILPOINTS, common/failpoint.h) holds the migration at the phase under test
// while the fault is injected. Guests are idle (dirty rate 0), so their digest is stable.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/acp/etcd_test_cluster.h"
#include "tests/integration/cluster.h"
#include "tests/integration/tcp_proxy.h"

namespace dwcp::testing {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

enum class Fault { kKillSource, kKillDest, kKillEtcdLeader, kCutNetwork, kPauseSource, kPauseDest };
// Where the VM must end up; kEither where the fault races the protocol's timeouts (both are
// correct outcomes, and the invariants are checked either way).
enum class Expect { kSource, kDest, kEither };

const char* FaultName(Fault f) {
  switch (f) {
    case Fault::kKillSource:
      return "kill -9 source";
    case Fault::kKillDest:
      return "kill -9 destination";
    case Fault::kKillEtcdLeader:
      return "kill -9 etcd leader";
    case Fault::kCutNetwork:
      return "cut network";
    case Fault::kPauseSource:
      return "SIGSTOP source past its lease";
    case Fault::kPauseDest:
      return "SIGSTOP destination past its lease";
  }
  return "?";
}

struct Phase {
  const char* name;
  const char* failpoint;  // where the migration waits while the fault is injected
  bool on_dest;           // the failpoint is the destination's
};

const Phase kPrecopy{"pre-copy", "migration.source.precopy_round", false};
const Phase kStopAndCopy{"stop-and-copy", "migration.source.paused", false};
const Phase kCommit{"commit (verified, CAS not sent)", "migration.source.before_commit", false};
const Phase kCommitted{"commit (CAS applied, destination not told)",
                       "migration.source.after_commit", false};
const Phase kResume{"resume (destination owns the VM, not resumed yet)",
                    "migration.dest.before_resume", true};

constexpr int kLeaseMs = 2000;             // --node-lease and --peer-timeout of the nodes
constexpr int kFaultMs = kLeaseMs + 1000;  // how long a cut or a freeze lasts
constexpr int kFailpointMs = 1500;

class FaultMatrixTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto started = EtcdTestCluster::Start(3);
    ASSERT_TRUE(started.ok()) << started.status().ToString();
    etcd_ = std::move(started).value().release();
  }
  static void TearDownTestSuite() {
    delete etcd_;
    etcd_ = nullptr;
  }

  // One migration of an idle VM from node-a to node-b with `fault` injected at `phase`.
  void Run(const Phase& phase, Fault fault, Expect expect) {
    SCOPED_TRACE(std::string(phase.name) + " / " + FaultName(fault));
    ASSERT_NE(etcd_, nullptr);
    for (int i = 0; i < etcd_->size(); ++i) {
      if (!etcd_->Running(i)) {
        ASSERT_TRUE(etcd_->Restart(i).ok());
      }
    }
    ASSERT_GE(etcd_->WaitForLeader(), 0);
    const std::string store = etcd_->Url() + "/dwcp/fm-" + std::to_string(++case_) + "/";
    Cluster c;
    const std::vector<std::string> common = {"--store",         store,
                                             "--store-timeout", "3s",
                                             "--node-lease",    std::to_string(kLeaseMs) + "ms",
                                             "--peer-timeout",  std::to_string(kLeaseMs) + "ms"};
    const std::string armed = "DWCP_FAILPOINTS=" + std::string(phase.failpoint) + "=sleep(" +
                              std::to_string(kFailpointMs) + ")";
    c.StartNode("node-a", common,
                phase.on_dest ? std::vector<std::string>{} : std::vector<std::string>{armed});
    // The destination's data listener sits behind the proxy.
    TcpProxy proxy(c.Prepare("node-b").data_port);
    auto flags = common;
    flags.insert(flags.end(), {"--data-advertise", "127.0.0.1:" + std::to_string(proxy.port())});
    c.StartNode("node-b", flags,
                phase.on_dest ? std::vector<std::string>{armed} : std::vector<std::string>{});
    ASSERT_GT(c.node("node-a").pid, 0) << c.ReadLog("node-a");
    ASSERT_GT(c.node("node-b").pid, 0) << c.ReadLog("node-b");

    auto created =
        HttpPost(c.node("node-a").api_port, "/api/v1/vms",
                 {{"id", "vm-1"}, {"memory", "32MiB"}, {"dirty_rate", "0"}, {"seed", 7}});
    ASSERT_EQ(created.status, 201) << created.text;
    auto before = HttpGet(c.node("node-a").api_port, "/api/v1/vms/vm-1?digest=true");
    ASSERT_EQ(before.status, 200) << before.text;
    const std::string digest = before.body["digest"];
    ASSERT_EQ(digest.size(), 32u);

    auto started = HttpPost(c.node("node-a").api_port, "/api/v1/migrations",
                            {{"vm", "vm-1"}, {"to", "node-b"}, {"protocol", "v3"}});
    ASSERT_EQ(started.status, 202) << started.text;
    const std::string id = started.body["id"];

    // Hold at the phase, then inject the fault.
    const std::string holder = phase.on_dest ? "node-b" : "node-a";
    ASSERT_TRUE(WaitFor(
        [&] {
          return c.ReadLog(holder).find(phase.failpoint) != std::string::npos &&
                 c.ReadLog(holder).find("failpoint reached") != std::string::npos;
        },
        30000))
        << "the migration never reached " << phase.failpoint << "\n"
        << c.ReadLog("node-a") << c.ReadLog("node-b");
    switch (fault) {
      case Fault::kKillSource:
      case Fault::kKillDest: {
        const std::string victim = fault == Fault::kKillSource ? "node-a" : "node-b";
        c.Kill(victim);
        std::this_thread::sleep_for(milliseconds(kFaultMs));
        c.Restart(victim);
        ASSERT_GT(c.node(victim).pid, 0) << c.ReadLog(victim);
        break;
      }
      case Fault::kKillEtcdLeader: {
        const int leader = etcd_->WaitForLeader();
        ASSERT_GE(leader, 0);
        etcd_->Kill(leader);
        std::this_thread::sleep_for(milliseconds(kFaultMs));
        ASSERT_TRUE(etcd_->Restart(leader).ok());
        break;
      }
      case Fault::kCutNetwork:
        proxy.Cut();
        std::this_thread::sleep_for(milliseconds(kFaultMs));
        proxy.Heal();
        break;
      case Fault::kPauseSource:
      case Fault::kPauseDest: {
        const std::string victim = fault == Fault::kPauseSource ? "node-a" : "node-b";
        c.Pause(victim);
        std::this_thread::sleep_for(milliseconds(kFaultMs));
        c.Continue(victim);
        break;
      }
    }

    // The migration record becomes final.
    json m = c.WaitForMigration("node-a", id, 60000);
    ASSERT_FALSE(m.value("result", std::string()).empty())
        << m.dump() << c.ReadLog("node-a") << c.ReadLog("node-b");
    const bool moved = m["result"] == "success";
    EXPECT_TRUE(moved || m["result"] == "failed" || m["result"] == "aborted") << m.dump();
    EXPECT_GT(m.value("finished_ms", 0), 0) << m.dump();
    if (expect != Expect::kEither) {
      EXPECT_EQ(moved, expect == Expect::kDest) << m.dump();
    }
    const std::string owner = moved ? "node-b" : "node-a";
    const int epoch = moved ? 2 : 1;
    if (moved) {
      EXPECT_EQ(m["source_digest"], digest) << m.dump();
      EXPECT_EQ(m["dest_digest"], digest) << m.dump();
    } else {
      EXPECT_FALSE(m.value("error", std::string()).empty()) << m.dump();
    }

    // Exactly one node runs the VM: the owner the store names, at the right epoch, with the
    // memory the source had at the pause. Both nodes agree on the record.
    auto settled = [&] {
      int running = 0;
      for (const char* n : {"node-a", "node-b"}) {
        auto r = HttpGet(c.node(n).api_port, "/api/v1/vms/vm-1");
        if (r.status != 200 || r.body["node"] != owner || r.body["epoch"] != epoch ||
            r.body["state"] != "running") {
          return false;
        }
        if (r.body["runs_here"].get<bool>() != (n == owner)) return false;
        running += r.body["runs_here"].get<bool>() ? 1 : 0;
      }
      return running == 1;
    };
    EXPECT_TRUE(WaitFor(settled, 30000))
        << "expected vm-1 running only on " << owner << " at epoch " << epoch << "\n"
        << HttpGet(c.node("node-a").api_port, "/api/v1/vms/vm-1").text << "\n"
        << HttpGet(c.node("node-b").api_port, "/api/v1/vms/vm-1").text << "\n"
        << m.dump() << "\n"
        << c.ReadLog("node-a") << c.ReadLog("node-b");
    auto after = HttpGet(c.node(owner).api_port, "/api/v1/vms/vm-1?digest=true");
    EXPECT_EQ(after.body["digest"], digest) << after.text;
    // The other node has no copy at all (not even a paused one).
    const std::string other = moved ? "node-a" : "node-b";
    auto there = HttpGet(c.node(other).api_port, "/api/v1/vms/vm-1?digest=true");
    EXPECT_TRUE(there.body["digest"].is_null()) << there.text;
    // The VM moves on afterwards: the record is not stuck and the cluster still works.
    // (A restarted or frozen node is a valid destination once it heartbeats again.)
    HttpReply again;
    WaitFor(
        [&] {
          again = HttpPost(c.node(owner).api_port, "/api/v1/migrations",
                           {{"vm", "vm-1"}, {"to", other}, {"protocol", "v3"}});
          return again.status == 202;
        },
        10000);
    ASSERT_EQ(again.status, 202) << again.text;
    json next = c.WaitForMigration(owner, again.body["id"], 60000);
    EXPECT_EQ(next["result"], "success") << next.dump() << c.ReadLog(owner) << c.ReadLog(other);
    EXPECT_EQ(next["dest_digest"], digest) << next.dump();
  }

  static EtcdTestCluster* etcd_;
  static int case_;
};

EtcdTestCluster* FaultMatrixTest::etcd_ = nullptr;
int FaultMatrixTest::case_ = 0;

// Before the commit nothing can move the VM: every fault leaves it on the source.
TEST_F(FaultMatrixTest, PreCopy) {
  Run(kPrecopy, Fault::kKillSource, Expect::kSource);
  Run(kPrecopy, Fault::kKillDest, Expect::kSource);
  Run(kPrecopy, Fault::kKillEtcdLeader, Expect::kEither);
  Run(kPrecopy, Fault::kCutNetwork, Expect::kSource);
  Run(kPrecopy, Fault::kPauseSource, Expect::kEither);
  Run(kPrecopy, Fault::kPauseDest, Expect::kEither);
}

TEST_F(FaultMatrixTest, StopAndCopy) {
  Run(kStopAndCopy, Fault::kKillSource, Expect::kSource);
  Run(kStopAndCopy, Fault::kKillDest, Expect::kSource);
  Run(kStopAndCopy, Fault::kKillEtcdLeader, Expect::kEither);
  Run(kStopAndCopy, Fault::kCutNetwork, Expect::kSource);
  Run(kStopAndCopy, Fault::kPauseSource, Expect::kEither);
  Run(kStopAndCopy, Fault::kPauseDest, Expect::kEither);
}

// Verified but not committed: the destination holds a paused copy and settles it through the
// store when the source goes quiet.
TEST_F(FaultMatrixTest, Commit) {
  Run(kCommit, Fault::kKillSource, Expect::kSource);
  // The destination verified before it died: the source's commit is valid and lands (the
  // restarted destination boots the VM it owns).
  Run(kCommit, Fault::kKillDest, Expect::kDest);
  Run(kCommit, Fault::kKillEtcdLeader, Expect::kEither);
  // The source's CAS races the destination's cancel after its peer timeout.
  Run(kCommit, Fault::kCutNetwork, Expect::kEither);
  // A frozen source cannot commit: the destination's cancel wins.
  Run(kCommit, Fault::kPauseSource, Expect::kSource);
  Run(kCommit, Fault::kPauseDest, Expect::kDest);
}

// Committed in the store: whatever happens next, the VM belongs to the destination.
TEST_F(FaultMatrixTest, Committed) {
  Run(kCommitted, Fault::kKillSource, Expect::kDest);
  Run(kCommitted, Fault::kKillDest, Expect::kDest);
  Run(kCommitted, Fault::kKillEtcdLeader, Expect::kDest);
  Run(kCommitted, Fault::kCutNetwork, Expect::kDest);
  Run(kCommitted, Fault::kPauseSource, Expect::kDest);
  Run(kCommitted, Fault::kPauseDest, Expect::kDest);
}

TEST_F(FaultMatrixTest, Resume) {
  Run(kResume, Fault::kKillSource, Expect::kDest);
  Run(kResume, Fault::kKillDest, Expect::kDest);
  Run(kResume, Fault::kKillEtcdLeader, Expect::kDest);
  Run(kResume, Fault::kCutNetwork, Expect::kDest);
  Run(kResume, Fault::kPauseSource, Expect::kDest);
  Run(kResume, Fault::kPauseDest, Expect::kDest);
}

}  // namespace
}  // namespace dwcp::testing
