// `make demo STACK=1` as a newcomer runs it: `dwcp demo --stack` starts the cluster, a real
// Prometheus with the shipped rules scraping it and a real Alertmanager, prints where they
// are, and stops all of it on SIGTERM.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "tests/integration/cluster.h"

namespace dwcp::testing {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Prometheus' instant query; null when it did not answer.
json Query(int port, const std::string& expr) {
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(5);
  auto reply =
      client.Get("/api/v1/query?" + httplib::detail::params_to_query_str({{"query", expr}}));
  if (!reply || reply->status != 200) return nullptr;
  json body = json::parse(reply->body, nullptr, false);
  return body.is_object() ? body["data"]["result"] : json(nullptr);
}

TEST(DemoStackTest, PrometheusScrapesTheDemoWithTheShippedRules) {
  Cluster c;  // only for its temp directory
  const std::string dir = c.dir() + "/demo";
  const std::string out = c.dir() + "/demo.out";
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int fd = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    execl(DWCP_BINARY, DWCP_BINARY, "demo", "--stack", "--nodes", "2", "--vms", "2", "--memory",
          "64MiB", "--interval", "200ms", "--data-dir", dir.c_str(), "--dwcpd", DWCPD_BINARY,
          "--deploy-dir", DWCP_SOURCE_DIR "/deploy", static_cast<char*>(nullptr));
    _exit(127);
  }
  // The banner names the dashboard and the stack's URLs.
  std::smatch prom, am, dashboard;
  std::string text;
  const std::regex prom_re("Prometheus +http://127\\.0\\.0\\.1:(\\d+)/");
  const std::regex am_re("Alertmanager +http://127\\.0\\.0\\.1:(\\d+)/");
  const std::regex dash_re("Dashboard +http://127\\.0\\.0\\.1:(\\d+)/");
  for (int i = 0; i < 600; ++i) {
    text = ReadFile(out);
    if (std::regex_search(text, prom, prom_re) && std::regex_search(text, am, am_re) &&
        std::regex_search(text, dashboard, dash_re)) {
      break;
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, WNOHANG), 0) << "the demo exited:\n" << text;
    std::this_thread::sleep_for(milliseconds(200));
  }
  ASSERT_FALSE(prom.empty()) << text;
  const int prom_port = std::stoi(prom[1]);
  EXPECT_NE(text.find("Try, in another terminal:"), std::string::npos) << text;
  EXPECT_NE(text.find("/debug/pprof/"), std::string::npos) << text;

  // Both nodes are up in Prometheus' eyes, a recording rule of the shipped set has a value
  // computed from the demo's migrations, and the shipped alerts are loaded.
  bool up = false, recorded = false;
  for (int i = 0; i < 120 && !(up && recorded); ++i) {
    json targets = Query(prom_port, "sum(up{job=\"dwcp-v3\"})");
    up = targets.is_array() && targets.size() == 1 && targets[0]["value"][1] == "2";
    json rate = Query(prom_port, "job:dwcp_v3_bytes_transferred:rate5m");
    recorded = rate.is_array() && !rate.empty();
    std::this_thread::sleep_for(milliseconds(500));
  }
  EXPECT_TRUE(up) << ReadFile(dir + "/stack/prometheus.log");
  EXPECT_TRUE(recorded) << "no job:dwcp_v3_bytes_transferred:rate5m";
  httplib::Client prom_client("127.0.0.1", prom_port);
  auto rules = prom_client.Get("/api/v1/rules?type=alert");
  ASSERT_TRUE(rules);
  EXPECT_NE(rules->body.find("DwcpV3RolloutNoGo"), std::string::npos);
  httplib::Client am_client("127.0.0.1", std::stoi(am[1]));
  auto am_ready = am_client.Get("/-/ready");
  ASSERT_TRUE(am_ready);
  EXPECT_EQ(am_ready->status, 200);

  // SIGTERM stops the demo, its nodes and both servers.
  kill(pid, SIGTERM);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  text = ReadFile(out);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << text;
  std::smatch pids;
  for (const char* server : {"prometheus", "alertmanager"}) {
    ASSERT_TRUE(std::regex_search(text, pids,
                                  std::regex(std::string("starting ") + server + " \\(pid (\\d+)")))
        << text;
    EXPECT_NE(kill(std::stoi(pids[1]), 0), 0) << server << " still runs";
  }
}

}  // namespace
}  // namespace dwcp::testing
