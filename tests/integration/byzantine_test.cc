// Byzantine peers (docs/consensus.md): a destination that asks for signed round commitments
// (--round-commitments on) catches a source whose pages do not match its signed Merkle root,
// a signature that does not verify, and a replayed MigrationBegin whose owner or epoch the
// store contradicts. Each is counted, logged, fails only its own migration (the VM stays on
// the source, running once) and quarantines the peer until an operator lifts it.
#include <gtest/gtest.h>
#include <httplib.h>

#include <asio.hpp>
#include <chrono>
#include <cmath>
#include <string>

#include "amst/connection.h"
#include "dwcp.pb.h"
#include "obs/metrics.h"
#include "tests/integration/cluster.h"

namespace dwcp::testing {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

json Migrate(Cluster& c, const std::string& vm, const std::string& from, const std::string& to) {
  auto r = HttpPost(c.node(from).api_port, "/api/v1/migrations", {{"vm", vm}, {"to", to}});
  EXPECT_EQ(r.status, 202) << r.text;
  if (r.status != 202) return json();
  return c.WaitForMigration(from, r.body["id"], 60000);
}

// The VM runs on `owner` only, at `epoch`.
void ExpectRunsOnlyOn(Cluster& c, const std::string& vm, const std::string& owner) {
  for (const char* n : {"node-a", "node-b"}) {
    auto r = HttpGet(c.node(n).api_port, "/api/v1/vms/" + vm);
    ASSERT_EQ(r.status, 200) << r.text;
    EXPECT_EQ(r.body["node"], owner) << n;
    EXPECT_EQ(r.body["state"], "running") << n;
    EXPECT_EQ(r.body["runs_here"].get<bool>(), n == owner) << n;
  }
}

// Connects to a node's data port as `claimed_node` and sends a MigrationBegin copied from a
// finished migration: what a peer replaying an old message would do. Returns the error of
// the destination's MigrationReady.
std::string ReplayBegin(uint16_t data_port, const std::string& claimed_node, const json& old,
                        uint64_t epoch) {
  asio::io_context io;
  obs::Metrics metrics;
  std::string error = "no answer";
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto c = co_await amst::Connect("127.0.0.1", data_port, metrics, milliseconds(5000));
        if (!c.ok()) {
          error = c.status().ToString();
          co_return;
        }
        auto& conn = **c;
        wire::Control hello;
        hello.mutable_hello()->set_node_id(claimed_node);
        hello.mutable_hello()->add_versions(3);
        (void)co_await conn.SendControl(hello, milliseconds(5000));
        auto ack = co_await conn.ReceiveControl(milliseconds(5000));
        if (!ack.ok() || ack->hello_ack().version() == 0) {
          error = ack.ok() ? "hello refused: " + ack->hello_ack().error() : ack.status().ToString();
          co_return;
        }
        conn.set_protocol(3);
        wire::Control begin;
        auto* b = begin.mutable_begin();
        b->set_migration_id(old["id"].get<std::string>());
        b->set_vm_id(old["vm"].get<std::string>());
        b->set_memory_bytes(old["memory_bytes"].get<uint64_t>());
        b->set_page_size(4096);
        b->set_epoch(epoch);
        b->set_source_node(claimed_node);
        (void)co_await conn.SendControl(begin, milliseconds(5000));
        auto ready = co_await conn.ReceiveControl(milliseconds(5000));
        error = ready.ok() ? ready->ready().error() : ready.status().ToString();
      },
      asio::detached);
  io.run();
  return error;
}

TEST(ByzantineTest, BadCommitmentsAndReplaysAreCaughtCountedAndQuarantined) {
  Cluster c;
  c.StartNode("node-a");
  c.StartNode("node-b", {"--round-commitments", "on"});
  ASSERT_GT(c.node("node-a").pid, 0) << c.ReadLog("node-a");
  ASSERT_GT(c.node("node-b").pid, 0) << c.ReadLog("node-b");
  auto created = HttpPost(c.node("node-a").api_port, "/api/v1/vms",
                          {{"id", "vm-1"}, {"memory", "32MiB"}, {"dirty_rate", "20MB/s"}});
  ASSERT_EQ(created.status, 201) << created.text;
  // Every node publishes its Ed25519 public key in the store.
  auto nodes = HttpGet(c.node("node-b").api_port, "/api/v1/nodes");
  ASSERT_EQ(nodes.status, 200);
  for (const auto& n : nodes.body["nodes"]) {
    EXPECT_EQ(n["public_key"].get<std::string>().size(), 64u) << n.dump();
  }

  // Honest: every round committed and verified; the VM moves.
  json ok = Migrate(c, "vm-1", "node-a", "node-b");
  ASSERT_EQ(ok["result"], "success") << ok.dump() << c.ReadLog("node-b");
  EXPECT_NE(c.ReadLog("node-b").find("\"round_commitments\":true"), std::string::npos);
  EXPECT_EQ(Metric(c, "node-b", "dwcp_v3_acp_quarantined_peers"), 0);
  ASSERT_EQ(Migrate(c, "vm-1", "node-b", "node-a")["result"], "success");

  // A source whose pages do not match the root it signs.
  ASSERT_EQ(c.Terminate("node-a"), 0);
  c.Restart("node-a", {"DWCP_FAILPOINTS=migration.source.tamper_commitment=on"});
  ASSERT_GT(c.node("node-a").pid, 0) << c.ReadLog("node-a");
  json tampered = Migrate(c, "vm-1", "node-a", "node-b");
  EXPECT_EQ(tampered["result"], "failed") << tampered.dump();
  ExpectRunsOnlyOn(c, "vm-1", "node-a");
  EXPECT_EQ(
      Metric(c, "node-b", "dwcp_v3_acp_byzantine_detections_total", "reason=\"merkle_mismatch\""),
      1);
  EXPECT_EQ(Metric(c, "node-b", "dwcp_v3_acp_quarantined_peers"), 1);
  auto q = HttpGet(c.node("node-b").api_port, "/api/v1/quarantine");
  ASSERT_EQ(q.status, 200) << q.text;
  ASSERT_EQ(q.body["quarantined"].size(), 1u) << q.text;
  EXPECT_EQ(q.body["quarantined"][0]["peer"], "node-a");
  EXPECT_EQ(q.body["quarantined"][0]["reason"], "merkle_mismatch");
  EXPECT_GT(q.body["quarantined"][0]["until_ms"].get<int64_t>(),
            q.body["quarantined"][0]["since_ms"].get<int64_t>());
  EXPECT_NE(c.ReadLog("node-b").find("Byzantine peer detected: quarantined"), std::string::npos);
  const std::string api_b = " --api http://127.0.0.1:" + std::to_string(c.node("node-b").api_port);
  CommandResult listed = RunDwcp("quarantine list" + api_b);
  EXPECT_EQ(listed.exit_code, 0) << listed.output;
  EXPECT_NE(listed.output.find("node-a"), std::string::npos) << listed.output;
  EXPECT_NE(listed.output.find("merkle_mismatch"), std::string::npos) << listed.output;

  // Quarantined: node-b refuses node-a's connections, and sends nothing to it either.
  json refused = Migrate(c, "vm-1", "node-a", "node-b");
  EXPECT_EQ(refused["result"], "failed") << refused.dump();
  EXPECT_NE(refused["error"].get<std::string>().find("quarantined"), std::string::npos)
      << refused.dump();
  EXPECT_GE(
      Metric(c, "node-b", "dwcp_v3_errors_total", "component=\"acp\",error_type=\"quarantined\""),
      1);
  ExpectRunsOnlyOn(c, "vm-1", "node-a");
  ASSERT_EQ(HttpPost(c.node("node-b").api_port, "/api/v1/vms",
                     {{"id", "vm-2"}, {"memory", "16MiB"}, {"dirty_rate", "0"}})
                .status,
            201);
  auto out =
      HttpPost(c.node("node-b").api_port, "/api/v1/migrations", {{"vm", "vm-2"}, {"to", "node-a"}});
  EXPECT_EQ(out.status, 409) << out.text;
  EXPECT_NE(out.text.find("quarantined"), std::string::npos) << out.text;

  // An operator lifts it (once).
  httplib::Client api("127.0.0.1", c.node("node-b").api_port);
  auto lifted = api.Delete("/api/v1/quarantine/node-a");
  ASSERT_TRUE(lifted);
  EXPECT_EQ(lifted->status, 200) << lifted->body;
  auto again = api.Delete("/api/v1/quarantine/node-a");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 404) << again->body;
  EXPECT_EQ(Metric(c, "node-b", "dwcp_v3_acp_quarantined_peers"), 0);

  // A signature that does not verify with the source's published key.
  ASSERT_EQ(c.Terminate("node-a"), 0);
  c.Restart("node-a", {"DWCP_FAILPOINTS=migration.source.forge_signature=on"});
  json forged = Migrate(c, "vm-1", "node-a", "node-b");
  EXPECT_EQ(forged["result"], "failed") << forged.dump();
  ExpectRunsOnlyOn(c, "vm-1", "node-a");
  EXPECT_EQ(
      Metric(c, "node-b", "dwcp_v3_acp_byzantine_detections_total", "reason=\"bad_signature\""), 1);
  CommandResult lift = RunDwcp("quarantine lift node-a" + api_b);
  EXPECT_EQ(lift.exit_code, 0) << lift.output;
  EXPECT_NE(lift.output.find("node-b accepts node-a again"), std::string::npos) << lift.output;
  lift = RunDwcp("quarantine lift node-a" + api_b);
  EXPECT_NE(lift.exit_code, 0) << lift.output;
  EXPECT_NE(lift.output.find("not quarantined"), std::string::npos) << lift.output;

  // Honest again: the VM moves.
  ASSERT_EQ(c.Terminate("node-a"), 0);
  c.Restart("node-a");
  json moved = Migrate(c, "vm-1", "node-a", "node-b");
  ASSERT_EQ(moved["result"], "success") << moved.dump();
  ExpectRunsOnlyOn(c, "vm-1", "node-b");

  // Replays of that migration's MigrationBegin: node-b now owns vm-1 (owner mismatch) ...
  const uint64_t epoch = moved["epoch_before"].get<uint64_t>();
  std::string error = ReplayBegin(c.node("node-b").data_port, "node-a", moved, epoch);
  EXPECT_NE(error.find("store does not show"), std::string::npos) << error;
  EXPECT_EQ(
      Metric(c, "node-b", "dwcp_v3_acp_byzantine_detections_total", "reason=\"owner_mismatch\""),
      1);
  ASSERT_TRUE(api.Delete("/api/v1/quarantine/node-a"));
  // ... and once vm-1 is back on node-a at a newer epoch, a stale epoch.
  ASSERT_EQ(Migrate(c, "vm-1", "node-b", "node-a")["result"], "success");
  error = ReplayBegin(c.node("node-b").data_port, "node-a", moved, epoch);
  EXPECT_NE(error.find("store does not show"), std::string::npos) << error;
  EXPECT_EQ(Metric(c, "node-b", "dwcp_v3_acp_byzantine_detections_total", "reason=\"stale_epoch\""),
            1);
  // Quarantined again: the next hello is refused outright.
  error = ReplayBegin(c.node("node-b").data_port, "node-a", moved, epoch);
  EXPECT_NE(error.find("hello refused"), std::string::npos) << error;
  EXPECT_NE(error.find("quarantined"), std::string::npos) << error;
  ExpectRunsOnlyOn(c, "vm-1", "node-a");
}

}  // namespace
}  // namespace dwcp::testing
