// End-to-end migrations between real dwcpd processes on loopback.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "amst/frame.h"
#include "tests/integration/cluster.h"

namespace dwcp::testing {
namespace {

using nlohmann::json;

constexpr uint64_t kVmBytes = 256ull << 20;

json CreateVm(Cluster& c, const std::string& via, const std::string& id, const std::string& node,
              const std::string& dirty_rate = "20MB/s") {
  auto r = HttpPost(c.node(via).api_port, "/api/v1/vms",
                    {{"id", id}, {"node", node}, {"memory", "256MiB"}, {"dirty_rate", dirty_rate}});
  EXPECT_EQ(r.status, 201) << r.text;
  return r.body;
}

json GetVm(Cluster& c, const std::string& via, const std::string& id) {
  auto r = HttpGet(c.node(via).api_port, "/api/v1/vms/" + id);
  EXPECT_EQ(r.status, 200) << r.text;
  return r.body;
}

// Waits until the migration has sent at least `bytes`.
void WaitForProgress(Cluster& c, const std::string& via, const std::string& id, uint64_t bytes) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = HttpGet(c.node(via).api_port, "/api/v1/migrations/" + id);
    if (r.status == 200 && r.body["bytes_transferred"].get<uint64_t>() >= bytes) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  FAIL() << "migration " << id << " made no progress";
}

TEST(MigrationIntegrationTest, MovesADirtyingVmExactlyOnce) {
  Cluster c;
  c.StartNode("node-a");
  c.StartNode("node-b");
  json vm = CreateVm(c, "node-a", "vm-12345", "node-a");
  ASSERT_EQ(vm["epoch"], 1);
  // Let the guest dirty memory for a moment so pre-copy has work in later rounds.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));

  auto r = HttpPost(c.node("node-a").api_port, "/api/v1/migrations",
                    {{"vm", "vm-12345"}, {"to", "node-b"}});
  ASSERT_EQ(r.status, 202) << r.text;
  std::string id = r.body["id"];
  json m = c.WaitForMigration("node-b", id);

  EXPECT_EQ(m["result"], "success") << m.dump();
  EXPECT_EQ(m["phase"], "completed");
  EXPECT_EQ(m["protocol"], "v3");
  EXPECT_EQ(m["source"], "node-a");
  EXPECT_EQ(m["destination"], "node-b");
  EXPECT_GE(m["round"].get<int>(), 2);  // at least one pre-copy round plus stop-and-copy
  EXPECT_EQ(m["source_digest"].get<std::string>().size(), 32u);
  EXPECT_EQ(m["source_digest"], m["dest_digest"]);
  EXPECT_GT(m["downtime_ms"].get<double>(), 0);
  EXPECT_LT(m["downtime_ms"].get<double>(), m["total_ms"].get<double>());
  uint64_t moved = m["bytes_transferred"];
  uint64_t wire = m["network_bytes"];
  EXPECT_GE(moved, kVmBytes);  // every page once, plus the re-sent dirty pages
  EXPECT_LT(wire, moved);      // zero pages travel as 9-byte entries

  // Ownership changed exactly once, and only the destination runs the guest.
  json on_a = GetVm(c, "node-a", "vm-12345");
  json on_b = GetVm(c, "node-b", "vm-12345");
  EXPECT_EQ(on_a["node"], "node-b");
  EXPECT_EQ(on_a["epoch"], 2);
  EXPECT_EQ(on_a["state"], "running");
  EXPECT_EQ(on_a["migration_id"], "");
  EXPECT_FALSE(on_a["runs_here"].get<bool>());
  EXPECT_TRUE(on_b["runs_here"].get<bool>());
  auto list = HttpGet(c.node("node-a").api_port, "/api/v1/migrations").body["migrations"];
  ASSERT_EQ(list.size(), 1u);

  // Metrics moved by the right amounts on both sides.
  EXPECT_EQ(Metric(c, "node-a", "dwcp_v3_migrations_total", "result=\"success\",protocol=\"v3\""),
            1);
  EXPECT_EQ(Metric(c, "node-b", "dwcp_v3_migrations_total", "result=\"success\",protocol=\"v3\""),
            0);
  EXPECT_EQ(Metric(c, "node-a", "dwcp_v3_bytes_transferred_total", "direction=\"sent\""), moved);
  EXPECT_EQ(Metric(c, "node-b", "dwcp_v3_bytes_transferred_total", "direction=\"received\""),
            moved);
  EXPECT_EQ(Metric(c, "node-a", "dwcp_v3_network_bytes_total", "direction=\"sent\""), wire);
  EXPECT_EQ(Metric(c, "node-b", "dwcp_v3_network_bytes_total", "direction=\"received\""), wire);
  EXPECT_EQ(
      Metric(c, "node-a", "dwcp_v3_migration_latency_seconds_count", "component=\"amst\"") +
          Metric(c, "node-a", "dwcp_v3_migration_latency_seconds_count", "component=\"hde\"") +
          Metric(c, "node-a", "dwcp_v3_migration_latency_seconds_count", "component=\"acp\""),
      1);
  EXPECT_EQ(Metric(c, "node-a", "dwcp_v3_migration_downtime_seconds_count"), 1);
  EXPECT_EQ(Metric(c, "node-a", "dwcp_v3_vms_running"), 0);
  EXPECT_EQ(Metric(c, "node-b", "dwcp_v3_vms_running"), 1);
  EXPECT_EQ(Metric(c, "node-a", "dwcp_v3_errors_total"), 0);

  // And back again, over the legacy protocol: v1 sends every page raw.
  r = HttpPost(c.node("node-b").api_port, "/api/v1/migrations",
               {{"vm", "vm-12345"}, {"to", "node-a"}, {"protocol", "v1"}});
  ASSERT_EQ(r.status, 202) << r.text;
  json back = c.WaitForMigration("node-a", r.body["id"]);
  EXPECT_EQ(back["result"], "success") << back.dump();
  EXPECT_EQ(back["protocol"], "v1");
  EXPECT_EQ(back["source_digest"], back["dest_digest"]);
  EXPECT_GT(back["network_bytes"].get<uint64_t>(), back["bytes_transferred"].get<uint64_t>());
  EXPECT_EQ(GetVm(c, "node-a", "vm-12345")["epoch"], 3);
  EXPECT_TRUE(GetVm(c, "node-a", "vm-12345")["runs_here"].get<bool>());
  EXPECT_FALSE(GetVm(c, "node-b", "vm-12345")["runs_here"].get<bool>());
}

TEST(MigrationIntegrationTest, KillingTheDestinationLeavesTheVmOnTheSource) {
  Cluster c;
  c.StartNode("node-a");
  c.StartNode("node-b");
  CreateVm(c, "node-a", "vm-1", "node-a");
  // A bandwidth cap makes the migration slow enough to kill the destination mid-way.
  auto r = HttpPost(c.node("node-a").api_port, "/api/v1/migrations",
                    {{"vm", "vm-1"}, {"to", "node-b"}, {"bandwidth_limit", "40MB/s"}});
  ASSERT_EQ(r.status, 202) << r.text;
  std::string id = r.body["id"];
  WaitForProgress(c, "node-a", id, 32ull << 20);
  c.Kill("node-b");

  json m = c.WaitForMigration("node-a", id);
  EXPECT_EQ(m["result"], "failed") << m.dump();
  EXPECT_FALSE(m["error"].get<std::string>().empty());
  json vm = GetVm(c, "node-a", "vm-1");
  EXPECT_EQ(vm["node"], "node-a");
  EXPECT_EQ(vm["state"], "running");
  EXPECT_EQ(vm["epoch"], 1);
  EXPECT_TRUE(vm["runs_here"].get<bool>());
  EXPECT_EQ(Metric(c, "node-a", "dwcp_v3_migrations_total", "result=\"failed\""), 1);
  EXPECT_EQ(Metric(c, "node-a", "dwcp_v3_vms_running"), 1);
  EXPECT_GE(Metric(c, "node-a", "dwcp_v3_errors_total", "component=\"amst\""), 1);
  // {job="dwcp-v3"} |= "error" | json | level="error" finds the failure, about this VM.
  bool logged = false;
  std::istringstream log(c.ReadLog("node-a"));
  for (std::string line; std::getline(log, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.value("level", "") == "error" && j.value("vm_id", "") == "vm-1" &&
        j.value("migration_id", "") == id) {
      logged = !j.value("error", "").empty();
    }
  }
  EXPECT_TRUE(logged) << c.ReadLog("node-a");

  // The VM can still move once the destination is back.
  c.StartNode("node-b");
  r = HttpPost(c.node("node-a").api_port, "/api/v1/migrations", {{"vm", "vm-1"}, {"to", "node-b"}});
  ASSERT_EQ(r.status, 202) << r.text;
  EXPECT_EQ(c.WaitForMigration("node-a", r.body["id"])["result"], "success");
  EXPECT_EQ(GetVm(c, "node-b", "vm-1")["epoch"], 2);
}

TEST(MigrationIntegrationTest, KillingTheSourceCancelsTheMigrationInTheStore) {
  Cluster c;
  c.StartNode("node-a");
  c.StartNode("node-b");
  CreateVm(c, "node-a", "vm-1", "node-a");
  auto r = HttpPost(c.node("node-a").api_port, "/api/v1/migrations",
                    {{"vm", "vm-1"}, {"to", "node-b"}, {"bandwidth_limit", "40MB/s"}});
  ASSERT_EQ(r.status, 202) << r.text;
  std::string id = r.body["id"];
  WaitForProgress(c, "node-a", id, 32ull << 20);
  c.Kill("node-a");
  // The destination never resumes it; the restarted source owns it and boots it again.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_FALSE(GetVm(c, "node-b", "vm-1")["runs_here"].get<bool>());
  c.StartNode("node-a");
  json vm = GetVm(c, "node-a", "vm-1");
  EXPECT_EQ(vm["node"], "node-a");
  EXPECT_EQ(vm["state"], "running");
  EXPECT_EQ(vm["epoch"], 1);
  EXPECT_TRUE(vm["runs_here"].get<bool>());
  json m = HttpGet(c.node("node-b").api_port, "/api/v1/migrations/" + id).body;
  EXPECT_NE(m["result"], "success");
  EXPECT_NE(m["result"], "");
}

// Sends `bytes` on a fresh connection to the data port and reports whether the node closed it.
bool SendAndExpectClose(uint16_t port, const std::string& bytes) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return false;
  }
  (void)!write(fd, bytes.data(), bytes.size());
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char buf[64];
  ssize_t n = read(fd, buf, sizeof buf);
  close(fd);
  return n == 0 || (n < 0 && errno == ECONNRESET);
}

TEST(MigrationIntegrationTest, MalformedFramesAreRejectedAndCounted) {
  Cluster c;
  c.StartNode("node-a");
  uint16_t port = c.node("node-a").data_port;
  auto protocol_errors = [&] {
    return Metric(c, "node-a", "dwcp_v3_errors_total",
                  "component=\"amst\",error_type=\"protocol\"");
  };

  // Garbage.
  EXPECT_TRUE(SendAndExpectClose(port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  EXPECT_EQ(protocol_errors(), 1);

  // A valid header announcing a payload far above the limit.
  std::string big(amst::kFrameHeaderSize, '\0');
  auto h = amst::EncodeFrameHeader(0, amst::FrameType::kControl, 0, {});
  std::copy(h.begin(), h.end(), big.begin());
  uint32_t huge = 1u << 30;
  std::memcpy(&big[12], &huge, 4);
  EXPECT_TRUE(SendAndExpectClose(port, big));
  EXPECT_EQ(protocol_errors(), 2);

  // A frame out of sequence (seq 5 as the first frame).
  std::string payload = "hello";
  auto h2 =
      amst::EncodeFrameHeader(0, amst::FrameType::kControl, 5,
                              {reinterpret_cast<const uint8_t*>(payload.data()), payload.size()});
  EXPECT_TRUE(SendAndExpectClose(port, std::string(h2.begin(), h2.end()) + payload));
  EXPECT_EQ(protocol_errors(), 3);

  // A correct header whose payload was corrupted in flight.
  auto h3 =
      amst::EncodeFrameHeader(0, amst::FrameType::kControl, 0,
                              {reinterpret_cast<const uint8_t*>(payload.data()), payload.size()});
  EXPECT_TRUE(SendAndExpectClose(port, std::string(h3.begin(), h3.end()) + "hellO"));
  EXPECT_EQ(protocol_errors(), 4);

  // The node is unharmed.
  EXPECT_EQ(HttpGet(c.node("node-a").api_port, "/healthz").status, 200);
  // The rejected connections are released (their coroutines end just after closing them).
  double open = -1;
  for (int i = 0; i < 100 && open != 0; ++i) {
    open = Metric(c, "node-a", "dwcp_v3_active_connections");
    if (open != 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(open, 0);
  EXPECT_NE(c.ReadLog("node-a").find("closing connection after a bad frame"), std::string::npos);
}

TEST(MigrationIntegrationTest, BadRequestsGetJsonErrors) {
  Cluster c;
  c.StartNode("node-a");
  c.StartNode("node-b");
  uint16_t a = c.node("node-a").api_port;
  CreateVm(c, "node-a", "vm-1", "node-a", "0");

  auto expect = [](const HttpReply& r, int status, const std::string& code) {
    EXPECT_EQ(r.status, status) << r.text;
    EXPECT_EQ(r.body.value("code", ""), code) << r.text;
    EXPECT_FALSE(r.body.value("error", "").empty()) << r.text;
  };
  httplib::Client raw("127.0.0.1", a);
  auto bad_json = raw.Post("/api/v1/vms", "{not json", "application/json");
  ASSERT_TRUE(bad_json);
  EXPECT_EQ(bad_json->status, 400);
  expect(HttpPost(a, "/api/v1/vms", {{"id", "vm-1"}}), 409, "already_exists");
  expect(HttpPost(a, "/api/v1/vms", {{"id", "vm-2"}, {"memory", "12XB"}}), 400, "invalid_argument");
  expect(HttpPost(a, "/api/v1/vms", {{"id", "vm-2"}, {"memory", "4097"}}), 400, "invalid_argument");
  expect(HttpPost(a, "/api/v1/vms", {{"id", "vm-2"}, {"dirty_rate", "fast"}}), 400,
         "invalid_argument");
  expect(HttpPost(a, "/api/v1/vms", {{"id", "bad id!"}}), 400, "invalid_argument");
  expect(HttpPost(a, "/api/v1/vms", {{"id", "vm-2"}, {"node", "node-z"}}), 404, "not_found");
  expect(HttpPost(a, "/api/v1/migrations", {{"vm", "vm-404"}, {"to", "node-b"}}), 404, "not_found");
  expect(HttpPost(a, "/api/v1/migrations", {{"vm", "vm-1"}, {"to", "node-z"}}), 404, "not_found");
  expect(HttpPost(a, "/api/v1/migrations", {{"vm", "vm-1"}, {"to", "node-a"}}), 400,
         "invalid_argument");
  expect(HttpPost(a, "/api/v1/migrations", {{"vm", "vm-1"}}), 400, "invalid_argument");
  expect(HttpPost(a, "/api/v1/migrations", {{"vm", "vm-1"}, {"to", "node-b"}, {"protocol", "v2"}}),
         400, "invalid_argument");
  expect(HttpGet(a, "/api/v1/vms/vm-404"), 404, "not_found");
  expect(HttpGet(a, "/api/v1/migrations/mig-404"), 404, "not_found");
  expect(HttpGet(a, "/api/v1/nope"), 404, "not_found");

  // A VM already migrating is refused, and the first migration is unaffected.
  auto first = HttpPost(a, "/api/v1/migrations",
                        {{"vm", "vm-1"}, {"to", "node-b"}, {"bandwidth_limit", "50MB/s"}});
  ASSERT_EQ(first.status, 202) << first.text;
  expect(HttpPost(a, "/api/v1/migrations", {{"vm", "vm-1"}, {"to", "node-b"}}), 409,
         "failed_precondition");
  EXPECT_EQ(c.WaitForMigration("node-a", first.body["id"])["result"], "success");
  // Asked of node-a, which no longer owns it: forwarded to node-b, which refuses b → b.
  expect(HttpPost(a, "/api/v1/migrations", {{"vm", "vm-1"}, {"to", "node-b"}}), 400,
         "invalid_argument");
}

TEST(MigrationIntegrationTest, StateSurvivesAGracefulRestart) {
  Cluster c;
  c.StartNode("node-a");
  c.StartNode("node-b");
  CreateVm(c, "node-a", "vm-1", "node-a");
  auto r =
      HttpPost(c.node("node-a").api_port, "/api/v1/migrations", {{"vm", "vm-1"}, {"to", "node-b"}});
  ASSERT_EQ(r.status, 202);
  ASSERT_EQ(c.WaitForMigration("node-a", r.body["id"])["result"], "success");

  int status = c.Terminate("node-b");
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << c.ReadLog("node-b");
  json stopped = GetVm(c, "node-a", "vm-1");
  EXPECT_EQ(stopped["state"], "stopped");
  EXPECT_EQ(stopped["node"], "node-b");
  auto nodes = HttpGet(c.node("node-a").api_port, "/api/v1/nodes").body["nodes"];
  ASSERT_EQ(nodes.size(), 2u);
  EXPECT_EQ(nodes[1]["state"], "down");
  EXPECT_FALSE(nodes[1]["alive"].get<bool>());
  // Migrating to a node that is down is refused.
  CreateVm(c, "node-a", "vm-2", "node-a");
  auto refused =
      HttpPost(c.node("node-a").api_port, "/api/v1/migrations", {{"vm", "vm-2"}, {"to", "node-b"}});
  EXPECT_EQ(refused.status, 409) << refused.text;

  c.StartNode("node-b");
  json vm = GetVm(c, "node-b", "vm-1");
  EXPECT_EQ(vm["state"], "running");
  EXPECT_EQ(vm["node"], "node-b");
  EXPECT_EQ(vm["epoch"], 2);
  EXPECT_TRUE(vm["runs_here"].get<bool>());
  EXPECT_EQ(HttpGet(c.node("node-b").api_port, "/api/v1/migrations").body["migrations"].size(), 1u);
}

TEST(MigrationIntegrationTest, SigtermDuringAMigrationAbortsItSafely) {
  Cluster c;
  c.StartNode("node-a");
  c.StartNode("node-b");
  CreateVm(c, "node-a", "vm-1", "node-a");
  auto r = HttpPost(c.node("node-a").api_port, "/api/v1/migrations",
                    {{"vm", "vm-1"}, {"to", "node-b"}, {"bandwidth_limit", "40MB/s"}});
  ASSERT_EQ(r.status, 202);
  std::string id = r.body["id"];
  WaitForProgress(c, "node-a", id, 16ull << 20);
  int status = c.Terminate("node-a");
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << c.ReadLog("node-a");
  json m = HttpGet(c.node("node-b").api_port, "/api/v1/migrations/" + id).body;
  EXPECT_EQ(m["result"], "aborted") << m.dump();
  json vm = GetVm(c, "node-b", "vm-1");
  EXPECT_EQ(vm["node"], "node-a");
  EXPECT_EQ(vm["state"], "stopped");
  EXPECT_EQ(vm["epoch"], 1);
  EXPECT_FALSE(vm["runs_here"].get<bool>());
}

}  // namespace
}  // namespace dwcp::testing

namespace dwcp::testing {
namespace {

TEST(MigrationIntegrationTest, BearerTokenGuardsMutatingCalls) {
  Cluster c;
  c.StartNode("node-a", {"--api-token", "s3cret"});
  uint16_t port = c.node("node-a").api_port;
  auto denied = HttpPost(port, "/api/v1/vms", {{"id", "vm-1"}});
  EXPECT_EQ(denied.status, 401) << denied.text;
  EXPECT_EQ(denied.body["code"], "unauthenticated");
  httplib::Client client("127.0.0.1", port);
  auto allowed = client.Post("/api/v1/vms", {{"Authorization", "Bearer s3cret"}},
                             R"({"id":"vm-1","memory":"16MiB"})", "application/json");
  ASSERT_TRUE(allowed);
  EXPECT_EQ(allowed->status, 201) << allowed->body;
  EXPECT_EQ(HttpGet(port, "/api/v1/vms").status, 200);  // reads stay open
}

TEST(MigrationIntegrationTest, BadConfigurationIsRefusedAtStart) {
  Cluster c;
  std::string cfg = c.dir() + "/bad.yaml";
  std::ofstream(cfg) << "node_id: n1\nmax_rounds: many\n";
  std::string cmd = std::string(DWCPD_BINARY) + " --config " + cfg + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  char buf[1024] = {};
  size_t n = fread(buf, 1, sizeof buf - 1, p);
  int status = pclose(p);
  EXPECT_EQ(WEXITSTATUS(status), 2);
  EXPECT_NE(std::string(buf, n).find("max_rounds"), std::string::npos) << buf;
  p = popen((std::string(DWCPD_BINARY) + " --config /nonexistent.yaml 2>&1").c_str(), "r");
  n = fread(buf, 1, sizeof buf - 1, p);
  status = pclose(p);
  EXPECT_EQ(WEXITSTATUS(status), 2);
  EXPECT_NE(std::string(buf, n).find("cannot read config file"), std::string::npos);
}

}  // namespace
}  // namespace dwcp::testing
