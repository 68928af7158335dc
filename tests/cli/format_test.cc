#include "cli/format.h"

#include <gtest/gtest.h>

namespace dwcp::cli {
namespace {

using nlohmann::json;

constexpr uint64_t kGiB = 1ull << 30;

MigrationInfo Running(int64_t round, uint64_t transferred, uint64_t remaining) {
  MigrationInfo m;
  m.id = "mig-1";
  m.vm = "vm-2";
  m.source = "node-a";
  m.destination = "node-c";
  m.phase = "precopy";
  m.round = round;
  m.memory_bytes = kGiB;
  m.bytes_transferred = transferred;
  m.remaining_bytes = remaining;
  return m;
}

MigrationInfo Completed() {
  MigrationInfo m = Running(3, 1'500'000'000, 0);
  m.phase = "completed";
  m.result = "success";
  m.protocol = "v3";
  m.network_bytes = 1'000'000'000;
  m.total_ms = 1420;
  m.downtime_ms = 12;
  m.source_digest = "sha256:0123456789abcdef0123";
  m.dest_digest = "sha256:0123456789abcdef0123";
  return m;
}

TEST(FormatTest, ProgressBarFillsByFraction) {
  EXPECT_EQ(RenderProgressBar(0), "[--------------------]");
  EXPECT_EQ(RenderProgressBar(0.4), "[########------------]");
  EXPECT_EQ(RenderProgressBar(1), "[####################]");
  EXPECT_EQ(RenderProgressBar(1.7), "[####################]");
  EXPECT_EQ(RenderProgressBar(-1), "[--------------------]");
  EXPECT_EQ(RenderProgressBar(0.5, 4), "[##--]");
}

TEST(FormatTest, FractionUsesSentBytesInRoundOneThenRemaining) {
  EXPECT_DOUBLE_EQ(MigrationFraction(Running(1, kGiB / 4, 0)), 0.25);
  EXPECT_NEAR(MigrationFraction(Running(2, 2 * kGiB, kGiB / 10)), 0.9, 1e-6);
  EXPECT_DOUBLE_EQ(MigrationFraction(Running(0, 0, 0)), 0.0);  // pending
  MigrationInfo no_memory = Running(1, 100, 0);
  no_memory.memory_bytes = 0;
  EXPECT_DOUBLE_EQ(MigrationFraction(no_memory), 0.0);
  // Unfinished never shows a full bar; switchover is nearly done; completed is 1.
  EXPECT_LT(MigrationFraction(Running(1, kGiB, 0)), 1.0);
  MigrationInfo switchover = Running(4, 2 * kGiB, kGiB / 2);
  switchover.phase = "switchover";
  EXPECT_GE(MigrationFraction(switchover), 0.99);
  EXPECT_DOUBLE_EQ(MigrationFraction(Completed()), 1.0);
  MigrationInfo failed = Running(2, kGiB, kGiB / 2);
  failed.phase = "failed";
  failed.result = "failed";
  EXPECT_LT(MigrationFraction(failed), 1.0);
}

TEST(FormatTest, TrackerNeverGoesBackwards) {
  ProgressTracker tracker;
  EXPECT_DOUBLE_EQ(tracker.Update(Running(1, kGiB / 2, 0)), 0.5);
  EXPECT_NEAR(tracker.Update(Running(1, kGiB, 0)), 0.999, 1e-9);
  // Round 2 starts with 30% left: the bar stays where it was.
  EXPECT_NEAR(tracker.Update(Running(2, kGiB, kGiB * 3 / 10)), 0.999, 1e-9);
  EXPECT_DOUBLE_EQ(tracker.Update(Completed()), 1.0);
}

TEST(FormatTest, EtaText) {
  EXPECT_EQ(FormatEta(0.4), "0.4 s");
  EXPECT_EQ(FormatEta(12), "12.0 s");
  EXPECT_EQ(FormatEta(0.01), "<0.1 s");
  EXPECT_EQ(FormatEta(123), "2m03s");
  EXPECT_EQ(FormatEta(-1), "-");
}

TEST(FormatTest, ProgressLineShowsRoundBytesRateEtaPhase) {
  MigrationInfo m = Running(3, 2 * kGiB, kGiB / 5);
  m.throughput_bps = 1.2e9;
  m.eta_seconds = 0.4;
  EXPECT_EQ(RenderProgressLine(m, 0.8),
            "[################----] round 3 | 819.20 MiB / 1.00 GiB | 1.20 GB/s | ETA 0.4 s | "
            "precopy");
  MigrationInfo pending;
  pending.phase = "pending";
  EXPECT_EQ(RenderProgressLine(pending, 0),
            "[--------------------] round - | 0 B / 0 B | 0.00 B/s | ETA - | pending");
}

TEST(FormatTest, SummaryOfSuccess) {
  std::string s = RenderSummary(Completed());
  EXPECT_EQ(s,
            "migration mig-1  vm-2  node-a \u2192 node-c  (v3)\n"
            "  result:       success\n"
            "  total time:   1.42 s\n"
            "  downtime:     12 ms\n"
            "  rounds:       3\n"
            "  bytes moved:  1.40 GiB\n"
            "  on the wire:  953.67 MiB (1.50x reduction)\n"
            "  throughput:   1.06 GB/s average\n"
            "  digest:       verified yes (sha256:012345678)\n");
}

TEST(FormatTest, SummaryOfFailureShowsErrorAndUnverifiedDigest) {
  MigrationInfo m = Running(2, kGiB, kGiB / 2);
  m.phase = "failed";
  m.result = "failed";
  m.error = "destination node-c unreachable";
  m.created_ms = 1000;
  m.finished_ms = 1840;
  m.source_digest = "aaaa";
  std::string s = RenderSummary(m);
  EXPECT_NE(s.find("  result:       failed: destination node-c unreachable\n"), std::string::npos)
      << s;
  EXPECT_NE(s.find("  total time:   0.84 s\n"), std::string::npos) << s;
  EXPECT_NE(s.find("  on the wire:  0 B\n"), std::string::npos) << s;
  EXPECT_NE(s.find("  digest:       verified no (digest not reported)\n"), std::string::npos) << s;
  m.dest_digest = "bbbb";
  EXPECT_NE(RenderSummary(m).find("verified no (source aaaa != destination bbbb)"),
            std::string::npos);
}

TEST(FormatTest, DemoLines) {
  MigrationInfo m = Completed();
  m.memory_bytes = 256ull << 20;
  m.bytes_transferred = 256ull << 20;
  m.network_bytes = 207'731'015;  // 198.11 MiB
  EXPECT_EQ(RenderDemoResultLine(m),
            "mig-1 vm-2 node-a \u2192 node-c  v3  ok  3 rounds  1.42 s  downtime 12 ms  256.00 MiB "
            "moved  198.11 MiB on wire");
  m.protocol.clear();
  m.phase = "aborted";
  m.result = "aborted";
  m.round = 1;
  m.error = "round limit hit";
  EXPECT_EQ(RenderDemoResultLine(m),
            "mig-1 vm-2 node-a \u2192 node-c  ABORTED  1 round  1.42 s  round limit hit");
  MigrationInfo r = Running(2, kGiB, kGiB / 2);
  r.throughput_bps = 2e8;
  EXPECT_EQ(RenderDemoProgressLine(r, 0.5),
            "mig-1 vm-2 node-a \u2192 node-c  [######------] round 2  200.00 MB/s  precopy");
}

TEST(FormatTest, ParseMigrationReadsApiExample) {
  json j = json::parse(R"({"id": "mig-4f9c2a1b0d3e", "vm": "vm-12345", "source": "node-a",
    "destination": "node-b", "phase": "precopy", "result": "", "error": "", "protocol": "v3",
    "round": 2, "memory_bytes": 1073741824, "bytes_transferred": 1190000000,
    "network_bytes": 910000000, "remaining_bytes": 4800000, "throughput_bps": 1.9e9,
    "eta_seconds": 0.01, "downtime_ms": 0, "total_ms": 0, "epoch_before": 1,
    "source_digest": "", "dest_digest": "", "created_ms": 1764078000000,
    "updated_ms": 1764078000400, "finished_ms": 0})");
  MigrationInfo m = ParseMigration(j);
  EXPECT_EQ(m.id, "mig-4f9c2a1b0d3e");
  EXPECT_EQ(m.round, 2);
  EXPECT_EQ(m.memory_bytes, 1073741824u);
  EXPECT_EQ(m.remaining_bytes, 4800000u);
  EXPECT_DOUBLE_EQ(m.throughput_bps, 1.9e9);
  EXPECT_FALSE(m.finished());
  EXPECT_FALSE(m.succeeded());
  MigrationInfo garbage = ParseMigration(json::parse(R"({"round": "two", "phase": 5})"));
  EXPECT_EQ(garbage.round, 0);
  EXPECT_EQ(garbage.phase, "");
}

TEST(FormatTest, TableAlignsByDisplayWidth) {
  EXPECT_EQ(RenderTable({"ID", "ROUTE"}, {{"mig-1", "a \u2192 b"}, {"m", "x"}}),
            "ID     ROUTE\n"
            "mig-1  a \u2192 b\n"
            "m      x\n");
  EXPECT_EQ(DisplayWidth("a\u2192b"), 3u);
  EXPECT_EQ(TruncateToWidth("a\u2192bcd", 3), "a\u2192b");
  EXPECT_EQ(TruncateToWidth("ab", 5), "ab");
}

TEST(FormatTest, VmTable) {
  json vms = json::parse(R"([
    {"id": "vm-1", "node": "node-a", "state": "running", "epoch": 1, "migration_id": "",
     "memory_bytes": 1073741824, "dirty_rate": 20000000},
    {"id": "vm-2", "node": "node-b", "state": "migrating", "epoch": 4, "migration_id": "mig-9",
     "memory_bytes": 268435456, "dirty_rate": 0}])");
  EXPECT_EQ(RenderVmTable(vms),
            "ID    NODE    DRIVER     STATE              MEMORY      DIRTY RATE  EPOCH\n"
            "vm-1  node-a  synthetic  running            1.00 GiB    20.00 MB/s  1\n"
            "vm-2  node-b  synthetic  migrating (mig-9)  256.00 MiB  0.00 B/s    4\n");
  EXPECT_NE(RenderVmTable(json::array()).find("no VMs"), std::string::npos);
}

// A qemu VM adds the QEMU column: QEMU's status as its owner reports it.
TEST(FormatTest, VmTableWithQemu) {
  json vms = json::parse(R"([
    {"id": "vm-1", "node": "node-a", "driver": "synthetic", "state": "running", "epoch": 1,
     "memory_bytes": 1073741824, "dirty_rate": 0},
    {"id": "vm-q", "node": "node-a", "driver": "qemu", "state": "running", "epoch": 1,
     "memory_bytes": 268435456, "dirty_rate": 0,
     "qemu": {"status": "paused", "accel": "tcg", "pid": 4242, "adopted": false}},
    {"id": "vm-r", "node": "node-b", "driver": "qemu", "state": "running", "epoch": 2,
     "memory_bytes": 134217728, "dirty_rate": 0, "qemu": null},
    {"id": "vm-s", "node": "node-b", "driver": "qemu", "state": "stopped", "epoch": 2,
     "memory_bytes": 134217728, "dirty_rate": 0, "qemu": null}])");
  EXPECT_EQ(
      RenderVmTable(vms),
      "ID    NODE    DRIVER     STATE    MEMORY      DIRTY RATE  EPOCH  QEMU\n"
      "vm-1  node-a  synthetic  running  1.00 GiB    0.00 B/s    1      -\n"
      "vm-q  node-a  qemu       running  256.00 MiB  -           1      paused, tcg, pid 4242\n"
      "vm-r  node-b  qemu       running  128.00 MiB  -           2      unknown\n"
      "vm-s  node-b  qemu       stopped  128.00 MiB  -           2      -\n");
}

TEST(FormatTest, StatusSections) {
  json nodes = json::parse(R"([
    {"id": "node-a", "region": "local", "api_url": "http://127.0.0.1:8080", "state": "up",
     "alive": true, "heartbeat_ms": 1000, "vms": 2},
    {"id": "node-b", "region": "local", "api_url": "http://127.0.0.1:8081", "state": "up",
     "alive": false, "heartbeat_ms": 1000, "vms": 0}])");
  json vms = json::parse(R"([{"id": "vm-1", "node": "node-a", "state": "running", "epoch": 3,
    "memory_bytes": 268435456}])");
  json migrations = json::array();
  for (int i = 0; i < 12; ++i) {
    json m = {{"id", "mig-" + std::to_string(i)},
              {"vm", "vm-1"},
              {"source", "node-a"},
              {"destination", "node-b"},
              {"phase", "completed"},
              {"result", "success"},
              {"round", 3},
              {"total_ms", 1420},
              {"downtime_ms", 12},
              {"bytes_transferred", 268435456}};
    migrations.push_back(m);
  }
  migrations[0]["phase"] = "precopy";
  migrations[0]["result"] = "";
  std::string s = RenderStatus(nodes, vms, migrations, 15000);
  EXPECT_NE(s.find("NODES\nID      REGION  STATE  ALIVE"), std::string::npos) << s;
  EXPECT_NE(
      s.find("node-b  local   up     no (last heartbeat 14.000 s ago)  http://127.0.0.1:8081"),
      std::string::npos)
      << s;
  EXPECT_NE(s.find("\nVMS\nID    NODE    STATE    MEMORY      EPOCH\nvm-1  node-a  running  256.00 "
                   "MiB  3\n"),
            std::string::npos)
      << s;
  EXPECT_NE(s.find("\nRECENT MIGRATIONS\n"), std::string::npos) << s;
  EXPECT_NE(s.find("mig-0  vm-1  node-a \u2192 node-b  precopy    3       -       -"),
            std::string::npos)
      << s;
  EXPECT_NE(
      s.find("mig-1  vm-1  node-a \u2192 node-b  completed  3       1.42 s  12 ms     256.00 MiB"),
      std::string::npos)
      << s;
  EXPECT_NE(s.find("mig-9 "), std::string::npos);
  EXPECT_EQ(s.find("mig-10"), std::string::npos);  // only the last 10
  EXPECT_NE(RenderStatus(json::array(), json::array(), json::array(), 0).find("  (none)"),
            std::string::npos);
}

}  // namespace
}  // namespace dwcp::cli
