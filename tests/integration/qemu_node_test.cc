// A qemu VM through dwcpd's API and the dwcp CLI: created, listed with QEMU's status, running
// (its console counter advances), refused for migration (501), and stopped with the node.
#include <gtest/gtest.h>
#include <signal.h>

#include <cerrno>
#include <chrono>
#include <thread>

#include "tests/integration/cluster.h"
#include "tests/integration/qemu_test_util.h"

namespace dwcp::testing {
namespace {

using nlohmann::json;
using std::chrono::seconds;

TEST(QemuNodeTest, CreateListRefuseMigrationStop) {
  const std::string why = QemuSkipReason();
  if (!why.empty()) GTEST_SKIP() << why;
  Cluster c;
  c.StartNode("node-a");
  c.StartNode("node-b");
  const uint16_t api = c.node("node-a").api_port;
  const TestGuest guest = TheTestGuest();

  HttpReply created = HttpPost(api, "/api/v1/vms",
                               {{"id", "vm-q"},
                                {"driver", "qemu"},
                                {"memory", "128MiB"},
                                {"kernel", guest.kernel},
                                {"initrd", guest.initrd},
                                {"append", guest.append},
                                {"boot_marker", guest.boot_marker}});
  ASSERT_EQ(created.status, 201) << created.text;
  EXPECT_EQ(created.body["driver"], "qemu");
  EXPECT_EQ(created.body["node"], "node-a");
  EXPECT_EQ(created.body["memory_bytes"], 128ull << 20);
  const json qemu = created.body["qemu"];
  ASSERT_TRUE(qemu.is_object()) << created.text;
  EXPECT_EQ(qemu["status"], "running");
  EXPECT_FALSE(qemu["adopted"].get<bool>());
  const int pid = qemu["pid"];
  const std::string accel = qemu["accel"];
  EXPECT_GT(pid, 0);
  EXPECT_TRUE(accel == "kvm" || accel == "tcg") << accel;
  const std::string console = qemu["console"];

  // The guest runs: its counter advances.
  const int64_t first = WaitForCounter(console, 1, seconds(240));
  ASSERT_GE(first, 1) << c.ReadLog("node-a");
  EXPECT_GE(WaitForCounter(console, first + 5, seconds(60)), first + 5);

  // Listed by both nodes with QEMU's status (node-b asks node-a, which owns it).
  for (const char* via : {"node-a", "node-b"}) {
    HttpReply list = HttpGet(c.node(via).api_port, "/api/v1/vms");
    ASSERT_EQ(list.status, 200) << list.text;
    ASSERT_EQ(list.body["vms"].size(), 1u) << list.text;
    const json& vm = list.body["vms"][0];
    EXPECT_EQ(vm["id"], "vm-q");
    EXPECT_EQ(vm["driver"], "qemu");
    EXPECT_EQ(vm["state"], "running");
    ASSERT_TRUE(vm["qemu"].is_object()) << via << ": " << list.text;
    EXPECT_EQ(vm["qemu"]["status"], "running") << via;
    EXPECT_EQ(vm["qemu"]["pid"], pid) << via;
  }
  HttpReply one = HttpGet(api, "/api/v1/vms/vm-q");
  ASSERT_EQ(one.status, 200) << one.text;
  EXPECT_TRUE(one.body["runs_here"].get<bool>());
  auto listed =
      RunDwcp("vm list --api http://127.0.0.1:" + std::to_string(c.node("node-b").api_port));
  ASSERT_EQ(listed.exit_code, 0) << listed.output;
  EXPECT_NE(listed.output.find("qemu"), std::string::npos) << listed.output;
  EXPECT_NE(listed.output.find("running, " + accel + ", pid " + std::to_string(pid)),
            std::string::npos)
      << listed.output;

  // Migrating it is refused, clearly, until the engine carries QEMU's stream.
  HttpReply migrate = HttpPost(api, "/api/v1/migrations", {{"vm", "vm-q"}, {"to", "node-b"}});
  EXPECT_EQ(migrate.status, 501) << migrate.text;
  EXPECT_EQ(migrate.body["code"], "unimplemented") << migrate.text;
  EXPECT_NE(migrate.text.find("live migration of qemu guests is not implemented yet"),
            std::string::npos)
      << migrate.text;
  auto cli_migrate =
      RunDwcp("migrate --api http://127.0.0.1:" + std::to_string(api) + " --vm vm-q --to node-b");
  EXPECT_EQ(cli_migrate.exit_code, 1) << cli_migrate.output;
  EXPECT_NE(cli_migrate.output.find("not implemented yet"), std::string::npos)
      << cli_migrate.output;
  EXPECT_EQ(HttpGet(api, "/api/v1/vms/vm-q").body["state"], "running");

  // A qemu VM needs a kernel or a socket; synthetic fields are refused.
  HttpReply no_kernel = HttpPost(api, "/api/v1/vms", {{"id", "vm-x"}, {"driver", "qemu"}});
  EXPECT_EQ(no_kernel.status, 400) << no_kernel.text;
  HttpReply stray = HttpPost(api, "/api/v1/vms", {{"id", "vm-y"}, {"kernel", guest.kernel}});
  EXPECT_EQ(stray.status, 400) << stray.text;
  EXPECT_EQ(RunDwcp("vm create --api http://127.0.0.1:" + std::to_string(api) +
                    " --vm vm-z --driver qemu")
                .exit_code,
            2);

  // The node's shutdown quits the QEMU it started, and records the VM as stopped.
  EXPECT_EQ(c.Terminate("node-a"), 0);
  EXPECT_EQ(kill(pid, 0), -1);
  EXPECT_EQ(errno, ESRCH);
  HttpReply after = HttpGet(c.node("node-b").api_port, "/api/v1/vms/vm-q");
  EXPECT_EQ(after.body["state"], "stopped") << after.text;
}

}  // namespace
}  // namespace dwcp::testing
