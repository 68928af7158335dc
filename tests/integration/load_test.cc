// A live migration completes, digest intact, while a second process (dwcp_load_client) abuses
// the source's HTTP API (hundreds of idle connections, slowloris, oversized bodies, a request
// flood) and the destination's data port (garbage, silence): the limits refuse the abusers,
// count them, and leave the migration and legitimate API calls alone (docs/security.md).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <iostream>
#include <sstream>

#include "tests/integration/cluster.h"

namespace dwcp::testing {
namespace {

constexpr int kLoadSeconds = 14;

TEST(ApiLoadTest, MigrationCompletesWhileASecondProcessAbusesTheApiAndDataPorts) {
  Cluster c;
  c.StartNode("node-a", {"--api-rate", "100/s", "--api-burst", "100", "--api-read-timeout", "2s"});
  c.StartNode("node-b");
  const uint16_t a = c.node("node-a").api_port;
  auto vm =
      HttpPost(a, "/api/v1/vms", {{"id", "vm-1"}, {"memory", "256MiB"}, {"dirty_rate", "20MB/s"}});
  ASSERT_EQ(vm.status, 201) << vm.text;

  const std::string out_path = c.dir() + "/load.json";
  std::vector<std::string> args = {LOAD_CLIENT_BINARY,
                                   "--api-port",
                                   std::to_string(a),
                                   "--data-port",
                                   std::to_string(c.node("node-b").data_port),
                                   "--seconds",
                                   std::to_string(kLoadSeconds),
                                   "--idle",
                                   "300"};
  std::vector<char*> argv;
  for (auto& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  pid_t load = fork();
  if (load == 0) {
    int fd = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    execv(argv[0], argv.data());
    _exit(127);
  }
  ASSERT_GT(load, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // the abuse in full swing

  auto started = HttpPost(a, "/api/v1/migrations",
                          {{"vm", "vm-1"}, {"to", "node-b"}, {"bandwidth_limit", "40MB/s"}});
  ASSERT_EQ(started.status, 202) << started.text;
  const std::string id = started.body["id"];
  // Legitimate calls, a read and a write, go through meanwhile.
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  auto progress = HttpGet(a, "/api/v1/migrations/" + id);
  EXPECT_EQ(progress.status, 200) << progress.text;
  EXPECT_EQ(progress.body.value("result", "?"), "") << progress.text;  // still running
  EXPECT_EQ(HttpPost(a, "/api/v1/vms", {{"id", "vm-2"}, {"memory", "16MiB"}}).status, 201);

  auto done = c.WaitForMigration("node-a", id, 60000);
  EXPECT_EQ(done["result"], "success") << done.dump();
  EXPECT_FALSE(done.value("source_digest", "").empty());
  EXPECT_EQ(done["source_digest"], done["dest_digest"]);

  int status = 0;
  ASSERT_EQ(waitpid(load, &status, 0), load);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  std::ifstream in(out_path);
  std::stringstream ss;
  ss << in.rdbuf();
  auto seen = nlohmann::json::parse(ss.str(), nullptr, false);
  ASSERT_TRUE(seen.is_object()) << ss.str();
  std::cout << "dwcp_load_client saw: " << ss.str();
  // Each abuse met its limit.
  EXPECT_GT(seen["flood"].value("429", 0), 0) << ss.str();
  EXPECT_GT(seen["oversized"].value("413", 0), 0) << ss.str();
  EXPECT_GT(seen["slow"].value("408", 0), 0) << ss.str();
  EXPECT_GT(seen["idle"].value("429", 0), 0) << ss.str();  // beyond 32 per client
  EXPECT_GT(seen["data"].value("garbage_sent", 0), 0) << ss.str();
  for (const char* limit : {"api_connections", "api_rate", "api_body_size", "api_read_timeout"}) {
    EXPECT_GT(Metric(c, "node-a", "dwcp_v3_limit_rejections_total",
                     std::string("limit=\"") + limit + "\""),
              0)
        << limit;
  }
  // And the API still serves everyone once the abuse stops.
  EXPECT_EQ(HttpGet(a, "/api/v1/vms").status, 200);
  EXPECT_EQ(HttpGet(c.node("node-b").api_port, "/api/v1/vms/vm-1").body.value("node", ""),
            "node-b");
}

}  // namespace
}  // namespace dwcp::testing
