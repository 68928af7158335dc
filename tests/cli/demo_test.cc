#include "cli/demo.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "test_server.h"

namespace dwcp::cli {
namespace {

namespace fs = std::filesystem;

// Ports in `busy` are taken; AnyFreePort hands out 40000, 40001, … (or `any` in order).
class FakePortProber : public PortProber {
 public:
  std::set<int> busy;
  std::vector<int> any;
  bool IsFree(int port) override { return !busy.contains(port); }
  int AnyFreePort() override {
    if (!any.empty()) {
      int port = any.front();
      any.erase(any.begin());
      return port;
    }
    return next_++;
  }

 private:
  int next_ = 40000;
};

// A fresh directory under the test temp dir, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    path_ = fs::path(::testing::TempDir()) /
            ("dwcp_cli_" + std::to_string(getpid()) + "_" + std::to_string(counter_++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string path() const { return path_.string(); }

 private:
  static inline int counter_ = 0;
  fs::path path_;
};

void WriteExecutable(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
  fs::permissions(path, fs::perms::owner_all);
}

TEST(DemoTest, NodeIds) {
  EXPECT_EQ(DemoNodeId(0), "node-a");
  EXPECT_EQ(DemoNodeId(2), "node-c");
  EXPECT_EQ(DemoNodeId(25), "node-z");
  EXPECT_EQ(DemoNodeId(26), "node-aa");
  EXPECT_EQ(DemoNodeId(27), "node-ab");
}

TEST(DemoTest, PlanUsesDefaultPortsWhenFree) {
  FakePortProber ports;
  Result<std::vector<DemoNode>> plan = PlanDemoNodes(3, ".demo", ports);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  ASSERT_EQ(plan->size(), 3u);
  EXPECT_EQ((*plan)[0].id, "node-a");
  EXPECT_EQ((*plan)[0].api_port, 8080);
  EXPECT_EQ((*plan)[0].data_port, 7070);
  EXPECT_EQ((*plan)[0].pprof_port, 6060);
  EXPECT_EQ((*plan)[2].pprof_port, 6062);
  EXPECT_EQ((*plan)[2].id, "node-c");
  EXPECT_EQ((*plan)[2].api_port, 8082);
  EXPECT_EQ((*plan)[2].data_port, 7072);
  EXPECT_EQ((*plan)[1].data_dir, ".demo/node-b");
  EXPECT_EQ((*plan)[1].log_path, ".demo/node-b.log");
  EXPECT_EQ((*plan)[1].api_url(), "http://127.0.0.1:8081");
}

TEST(DemoTest, PlanFallsBackToFreePortsWithoutDuplicates) {
  FakePortProber ports;
  ports.busy = {8080, 7071};
  // The kernel's first pick collides with node-b's default API port; it must not be reused.
  ports.any = {8081, 8081, 45000, 45001};
  Result<std::vector<DemoNode>> plan = PlanDemoNodes(2, "d", ports);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ((*plan)[0].api_port, 8081);
  EXPECT_EQ((*plan)[0].data_port, 7070);
  EXPECT_EQ((*plan)[1].api_port, 45000);  // 8081 is taken by node-a
  EXPECT_EQ((*plan)[1].data_port, 45001);
}

TEST(DemoTest, PlanFailsWhenNoPortIsFree) {
  class NoPorts : public PortProber {
   public:
    bool IsFree(int) override { return false; }
    int AnyFreePort() override { return 0; }
  } ports;
  Result<std::vector<DemoNode>> plan = PlanDemoNodes(1, "d", ports);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), StatusCode::kUnavailable);
}

TEST(DemoTest, LoopbackProberSeesListeners) {
  LoopbackPortProber prober;
  int port = prober.AnyFreePort();
  ASSERT_GT(port, 0);
  EXPECT_TRUE(prober.IsFree(port));
  testing::TestServer server;
  server.Start();
  EXPECT_FALSE(prober.IsFree(server.port()));
}

TEST(DemoTest, DwcpdCommandLine) {
  DemoNode node{"node-a", 8080, 7070, 6060, ".demo/node-a", ".demo/node-a.log"};
  std::vector<std::string> args = DwcpdArgs("/bin/dwcpd", node, ".demo");
  EXPECT_EQ(args, (std::vector<std::string>{
                      "/bin/dwcpd", "--node-id", "node-a", "--region", "local", "--api-listen",
                      "127.0.0.1:8080", "--data-listen", "127.0.0.1:7070", "--pprof-listen",
                      "127.0.0.1:6060", "--advertise-host", "127.0.0.1", "--tls", "false",
                      "--rollout-initial-stage", "majority", "--data-dir",
                      ".demo/node-a", "--store", ".demo/state.db",
                      "--rollout-webhook-token-file", ".demo/rollback-token"}));
}

TEST(DemoTest, FindsDwcpdExplicitBesideSelfThenPath) {
  TempDir dir;
  fs::create_directories(dir.path() + "/bin");
  fs::create_directories(dir.path() + "/path");
  WriteExecutable(dir.path() + "/bin/dwcpd", "#!/bin/sh\n");
  WriteExecutable(dir.path() + "/path/dwcpd", "#!/bin/sh\n");
  std::ofstream(dir.path() + "/not_exec") << "x";

  EXPECT_EQ(*FindDwcpd(dir.path() + "/path/dwcpd", dir.path() + "/bin/dwcp", ""),
            dir.path() + "/path/dwcpd");
  EXPECT_FALSE(FindDwcpd(dir.path() + "/not_exec", "", "").ok());
  EXPECT_EQ(*FindDwcpd("", dir.path() + "/bin/dwcp", dir.path() + "/path"),
            dir.path() + "/bin/dwcpd");
  EXPECT_EQ(*FindDwcpd("", dir.path() + "/elsewhere/dwcp", "/nonexistent:" + dir.path() + "/path"),
            dir.path() + "/path/dwcpd");
  Result<std::string> none = FindDwcpd("", dir.path() + "/elsewhere/dwcp", "/nonexistent");
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
}

TEST(DemoTest, DescribesWaitStatus) {
  pid_t pid = fork();
  if (pid == 0) _exit(3);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_EQ(DescribeWaitStatus(status), "exited with status 3");
  pid = fork();
  if (pid == 0) {
    pause();
    _exit(0);
  }
  kill(pid, SIGKILL);
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_EQ(DescribeWaitStatus(status).rfind("was killed by signal 9", 0), 0u);
}

TEST(DemoTest, TailFileKeepsLastLines) {
  TempDir dir;
  std::string path = dir.path() + "/log";
  {
    std::ofstream out(path);
    for (int i = 1; i <= 30; ++i) out << "line " << i << "\n";
  }
  EXPECT_EQ(TailFile(path, 3), "line 28\nline 29\nline 30");
  EXPECT_EQ(TailFile(path, 100).substr(0, 7), "line 1\n");
  EXPECT_EQ(TailFile(dir.path() + "/missing", 3), "");
}

// A dwcpd that dies at once: the demo reports it with the log and exits 1, leaving nothing
// running. The log also shows the command line the node got.
TEST(DemoTest, NodeThatExitsDuringStartupFailsTheDemo) {
  TempDir dir;
  std::string fake = dir.path() + "/dwcpd";
  WriteExecutable(
      fake, "#!/bin/sh\necho \"fake dwcpd $*\"\necho 'fatal: cannot open store' >&2\nexit 3\n");
  DemoOptions options;
  options.nodes = 2;
  options.data_dir = dir.path() + "/demo";
  options.dwcpd = fake;
  ::testing::internal::CaptureStderr();
  ::testing::internal::CaptureStdout();
  int rc = RunDemo(options);
  std::string out = ::testing::internal::GetCapturedStdout();
  std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(rc, 1);
  EXPECT_NE(err.find("node-a exited with status 3 during startup"), std::string::npos) << err;
  EXPECT_NE(err.find("fatal: cannot open store"), std::string::npos) << err;
  EXPECT_NE(out.find("stopped"), std::string::npos) << out;
  std::ifstream log(options.data_dir + "/node-a.log");
  std::string first_line;
  std::getline(log, first_line);
  EXPECT_EQ(
      first_line.rfind("fake dwcpd --node-id node-a --region local --api-listen 127.0.0.1:", 0), 0u)
      << first_line;
  EXPECT_NE(first_line.find("--store " + options.data_dir + "/state.db"), std::string::npos);
  EXPECT_TRUE(fs::is_directory(options.data_dir + "/node-a"));
  EXPECT_FALSE(fs::exists(options.data_dir + "/node-b.log"));  // never started
  // The rollback webhook secret the nodes and --stack's Alertmanager share: private.
  const fs::path token = options.data_dir + "/rollback-token";
  ASSERT_TRUE(fs::exists(token));
  EXPECT_EQ(fs::status(token).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  std::string secret;
  std::ifstream(token) >> secret;
  EXPECT_EQ(secret.size(), 32u);
}

TEST(DemoTest, MissingDwcpdIsReported) {
  TempDir dir;
  DemoOptions options;
  options.data_dir = dir.path() + "/demo";
  options.dwcpd = dir.path() + "/no-such-dwcpd";
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(RunDemo(options), 1);
  std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("is not an executable file"), std::string::npos) << err;
}

}  // namespace
}  // namespace dwcp::cli
