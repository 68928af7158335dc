// The `dwcp` command line against real dwcpd processes, as a user runs it.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "tests/integration/cluster.h"

namespace dwcp::testing {
namespace {

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

CommandResult RunDwcp(const std::string& args) {
  CommandResult r;
  std::string cmd = std::string(DWCP_BINARY) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
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
