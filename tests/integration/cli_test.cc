// The `dwcp` command line against real dwcpd processes, as a user runs it.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>

#include "tests/integration/cluster.h"

namespace dwcp::testing {
namespace {

// `dwcp bandwidth` changes caps while a migration runs, through any node (forwarded).
TEST(CliIntegrationTest, BandwidthCapsChangeWhileAMigrationRuns) {
  Cluster c;
  c.StartNode("node-a");
  c.StartNode("node-b");
  const std::string api_a = "--api http://127.0.0.1:" + std::to_string(c.node("node-a").api_port);
  const std::string api_b = "--api http://127.0.0.1:" + std::to_string(c.node("node-b").api_port);
  ASSERT_EQ(RunDwcp("vm create " + api_a + " --vm vm-cap --node node-a --memory 128MiB").exit_code,
            0);
  auto started = RunDwcp("migrate " + api_a +
                         " --vm vm-cap --to node-b --protocol v1 --bandwidth-limit 2MB/s "
                         "--no-wait --json");
  ASSERT_EQ(started.exit_code, 0) << started.output;
  auto m = nlohmann::json::parse(started.output.substr(started.output.find('{')), nullptr, false);
  ASSERT_FALSE(m.is_discarded()) << started.output;
  const std::string id = m["id"];
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  // Lifted through node-b, which forwards to the source.
  auto lifted = RunDwcp("bandwidth " + api_b + " --migration " + id + " unlimited");
  EXPECT_EQ(lifted.exit_code, 0) << lifted.output;
  EXPECT_NE(lifted.output.find("bandwidth limit removed"), std::string::npos) << lifted.output;
  auto done = c.WaitForMigration("node-a", id);
  EXPECT_EQ(done["result"], "success") << done.dump();
  // At 2 MB/s the raw 128 MiB could not have gone in less than 67 s.
  EXPECT_LT(done["total_ms"].get<double>(), 67000) << done.dump();
  auto finished = RunDwcp("bandwidth " + api_a + " --migration " + id + " 1MB/s");
  EXPECT_EQ(finished.exit_code, 1) << finished.output;
  EXPECT_NE(finished.output.find("not running"), std::string::npos) << finished.output;

  auto node = RunDwcp("bandwidth " + api_b + " --node node-a 50MB/s");
  EXPECT_EQ(node.exit_code, 0) << node.output;
  EXPECT_NE(node.output.find("node node-a: bandwidth limit 50.00 MB/s"), std::string::npos)
      << node.output;
  auto unknown = RunDwcp("bandwidth " + api_a + " --migration mig-000000000000 1MB/s");
  EXPECT_EQ(unknown.exit_code, 1) << unknown.output;
  EXPECT_NE(unknown.output.find("does not exist"), std::string::npos) << unknown.output;
  EXPECT_EQ(RunDwcp("bandwidth " + api_a + " 1MB/s").exit_code,
            2);  // neither --node nor --migration
  EXPECT_EQ(RunDwcp("bandwidth " + api_a + " --node node-a fast").exit_code, 2);
}

TEST(CliIntegrationTest, CreateMigrateAndStatus) {
  Cluster c;
  c.StartNode("node-a");
  c.StartNode("node-b");
  std::string api = "--api http://127.0.0.1:" + std::to_string(c.node("node-a").api_port);

  auto created = RunDwcp("vm create " + api +
                         " --vm vm-12345 --node node-a --memory 256MiB --dirty-rate 20MB/s");
  ASSERT_EQ(created.exit_code, 0) << created.output;
  EXPECT_NE(created.output.find("created vm-12345 on node-a"), std::string::npos) << created.output;

  auto migrated = RunDwcp("migrate " + api + " --vm vm-12345 --to node-b --json");
  ASSERT_EQ(migrated.exit_code, 0) << migrated.output;
  auto brace = migrated.output.find('{');
  ASSERT_NE(brace, std::string::npos) << migrated.output;
  auto m = nlohmann::json::parse(migrated.output.substr(brace), nullptr, false);
  ASSERT_FALSE(m.is_discarded()) << migrated.output;
  EXPECT_EQ(m["result"], "success");
  EXPECT_EQ(m["source_digest"], m["dest_digest"]);

  auto human = RunDwcp("migrate " + api + " --vm vm-12345 --to node-a");
  EXPECT_EQ(human.exit_code, 0) << human.output;
  for (const char* field : {"total time", "downtime", "rounds", "bytes moved", "on the wire"}) {
    EXPECT_NE(human.output.find(field), std::string::npos) << field << "\n" << human.output;
  }

  auto status = RunDwcp("status " + api + " --json");
  ASSERT_EQ(status.exit_code, 0) << status.output;
  auto s = nlohmann::json::parse(status.output, nullptr, false);
  ASSERT_FALSE(s.is_discarded()) << status.output;
  EXPECT_EQ(s["nodes"].size(), 2u);
  EXPECT_EQ(s["vms"][0]["node"], "node-a");
  EXPECT_EQ(s["migrations"].size(), 2u);

  auto table = RunDwcp("status " + api);
  EXPECT_EQ(table.exit_code, 0);
  EXPECT_NE(table.output.find("vm-12345"), std::string::npos) << table.output;

  // Errors: the server's message, exit 1; bad usage, exit 2.
  auto same = RunDwcp("migrate " + api + " --vm vm-12345 --to node-a");
  EXPECT_EQ(same.exit_code, 1) << same.output;
  EXPECT_NE(same.output.find("destination must differ"), std::string::npos) << same.output;
  auto unknown = RunDwcp("migrate " + api + " --vm vm-nope --to node-b");
  EXPECT_EQ(unknown.exit_code, 1) << unknown.output;
  EXPECT_NE(unknown.output.find("does not exist"), std::string::npos) << unknown.output;
  auto bad_size = RunDwcp("vm create " + api + " --vm vm-2 --memory 1XB");
  EXPECT_EQ(bad_size.exit_code, 2) << bad_size.output;
  auto no_server = RunDwcp("status --api http://127.0.0.1:1");
  EXPECT_EQ(no_server.exit_code, 1) << no_server.output;
  EXPECT_NE(no_server.output.find("cannot reach dwcpd"), std::string::npos) << no_server.output;
}

TEST(CliIntegrationTest, MigrateRedrawsAProgressBarOnATerminal) {
  Cluster c;
  c.StartNode("node-a");
  c.StartNode("node-b");
  std::string api = "--api http://127.0.0.1:" + std::to_string(c.node("node-a").api_port);
  ASSERT_EQ(RunDwcp("vm create " + api +
                    " --vm vm-tty --node node-a --memory 256MiB "
                    "--dirty-rate 10MB/s")
                .exit_code,
            0);
  // script(1) gives the command a pseudo-terminal: one line redrawn in place with '\r'.
  const std::string command = std::string(DWCP_BINARY) + " migrate " + api +
                              " --vm vm-tty --to node-b --bandwidth-limit 80MB/s";
  CommandResult tty;
  FILE* p = popen(("script -qfec '" + command + "' /dev/null 2>&1").c_str(), "r");
  ASSERT_NE(p, nullptr);
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) tty.output.append(buf, n);
  int status = pclose(p);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << tty.output;
  size_t redraws = 0;
  for (size_t pos = 0; (pos = tty.output.find("\r[", pos)) != std::string::npos; ++pos) ++redraws;
  EXPECT_GE(redraws, 3u) << tty.output;  // 256 MiB at 80 MB/s: several 200 ms polls
  EXPECT_NE(tty.output.find("] round 1 | "), std::string::npos) << tty.output;
  EXPECT_NE(tty.output.find("result:       success"), std::string::npos) << tty.output;

  // Piped: no redraws, plain lines.
  auto piped = RunDwcp("migrate " + api + " --vm vm-tty --to node-a --bandwidth-limit 80MB/s");
  EXPECT_EQ(piped.exit_code, 0) << piped.output;
  EXPECT_EQ(piped.output.find('\r'), std::string::npos) << piped.output;
  EXPECT_NE(piped.output.find("] round 1 | "), std::string::npos) << piped.output;
}

TEST(CliIntegrationTest, DemoRunsMigrationsAndStopsCleanly) {
  Cluster c;  // only for its temp directory
  std::string dir = c.dir() + "/demo";
  auto demo =
      RunDwcp("demo --nodes 2 --vms 2 --memory 64MiB --count 3 --interval 100ms --data-dir " + dir +
              " --dwcpd " + DWCPD_BINARY);
  EXPECT_EQ(demo.exit_code, 0) << demo.output;
  EXPECT_NE(demo.output.find("http://127.0.0.1:"), std::string::npos) << demo.output;
  size_t ok_lines = 0;
  for (size_t pos = 0; (pos = demo.output.find("  ok  ", pos)) != std::string::npos; ++pos) {
    ++ok_lines;
  }
  EXPECT_EQ(ok_lines, 3u) << demo.output;
  EXPECT_TRUE(std::filesystem::exists(dir + "/state.db"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/node-a.log"));
  // Every node was stopped: each logged its clean stop.
  for (const char* node : {"node-a", "node-b"}) {
    std::ifstream in(dir + "/" + node + ".log");
    std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_NE(log.find("dwcpd stopped"), std::string::npos) << node << "\n" << log;
  }
}

}  // namespace
}  // namespace dwcp::testing
