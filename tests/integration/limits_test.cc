// The data plane's limits (docs/security.md#limits) against real dwcpd processes: a peer or
// client past a limit is refused and counted, and the others' migrations go on.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "tests/common/socket_test_util.h"
#include "tests/integration/cluster.h"

namespace dwcp::testing {
namespace {

using namespace std::chrono_literals;

// A raw TCP client of a data port, bound to `source` (loopback answers all of 127/8, so a
// second address stands for a second host).
class RawPeer {
 public:
  RawPeer(uint16_t port, const char* source) {
    bool connected = false;
    fd_ = dwcp::testing::ConnectFrom(source, port, &connected);
    EXPECT_GE(fd_, 0) << "cannot bind " << source;
    EXPECT_TRUE(connected);
  }
  ~RawPeer() { ::close(fd_); }
  void Send(const void* data, size_t n) { (void)::send(fd_, data, n, MSG_NOSIGNAL); }
  // True once the node closed the connection, within `within`.
  bool ClosedWithin(std::chrono::milliseconds within) {
    return dwcp::testing::ClosedWithin(fd_, within);
  }

 private:
  int fd_ = -1;
};

// A DWCP frame header (docs/protocol.md) announcing `length` payload bytes of `type`.
std::array<uint8_t, 24> FrameHeader(uint8_t type, uint32_t length) {
  std::array<uint8_t, 24> h{'D', 'W', 'C', 'P'};
  h[5] = type;
  std::memcpy(&h[12], &length, 4);  // little-endian on the hosts we run on
  return h;
}

double Limit(Cluster& c, const std::string& node, const std::string& limit) {
  return Metric(c, node, "dwcp_v3_limit_rejections_total", "limit=\"" + limit + "\"");
}

TEST(LimitsIntegrationTest, DataPortAbusersAreRefusedAndAMigrationStillSucceeds) {
  Cluster c;
  c.StartNode("node-a");
  c.StartNode("node-b", {"--max-connections-per-peer", "4", "--max-streams", "4",
                         "--handshake-timeout", "1s", "--max-frame-bytes", "2MiB"});
  const uint16_t port = c.node("node-b").data_port;

  // A frame bigger than max_frame_bytes: the connection closes at its header.
  RawPeer big(port, "127.0.0.1");
  auto header = FrameHeader(2, 3u << 20);
  big.Send(header.data(), header.size());
  EXPECT_TRUE(big.ClosedWithin(3000ms));
  // A control message bigger than max_control_bytes (64KiB).
  RawPeer chatty(port, "127.0.0.1");
  header = FrameHeader(1, 1u << 20);
  chatty.Send(header.data(), header.size());
  EXPECT_TRUE(chatty.ClosedWithin(3000ms));

  // Four idle connections from 127.0.0.2 fill its per-address quota; the fifth is refused.
  std::vector<std::unique_ptr<RawPeer>> flood;
  for (int i = 0; i < 4; ++i) flood.push_back(std::make_unique<RawPeer>(port, "127.0.0.2"));
  std::this_thread::sleep_for(150ms);
  RawPeer fifth(port, "127.0.0.2");
  EXPECT_TRUE(fifth.ClosedWithin(1000ms));

  // Meanwhile node-a (127.0.0.1) migrates to node-b.
  ASSERT_EQ(HttpPost(c.node("node-a").api_port, "/api/v1/vms",
                     {{"id", "vm-1"}, {"memory", "32MiB"}, {"dirty_rate", "5MB/s"}})
                .status,
            201);
  auto r =
      HttpPost(c.node("node-a").api_port, "/api/v1/migrations", {{"vm", "vm-1"}, {"to", "node-b"}});
  ASSERT_EQ(r.status, 202) << r.text;

  // The idle ones never finish their handshake: closed after handshake_timeout.
  for (auto& peer : flood) EXPECT_TRUE(peer->ClosedWithin(3000ms));
  auto done = c.WaitForMigration("node-a", r.body["id"]);
  EXPECT_EQ(done["result"], "success") << done.dump();

  EXPECT_EQ(Limit(c, "node-b", "frame_size"), 1);
  EXPECT_EQ(Limit(c, "node-b", "message_size"), 1);
  EXPECT_GE(Limit(c, "node-b", "connections_per_peer"), 1);
  EXPECT_GE(Limit(c, "node-b", "handshake_timeout"), 4);
  const std::string log = c.ReadLog("node-b");
  EXPECT_NE(log.find("max_frame_bytes"), std::string::npos);
  EXPECT_NE(log.find("max_connections_per_peer"), std::string::npos);
  EXPECT_NE(log.find("127.0.0.2"), std::string::npos);
}

TEST(LimitsIntegrationTest, MigrationLimitsRefuseCleanlyAndLaterMigrationsSucceed) {
  Cluster c;
  c.StartNode("node-a", {"--max-migrations-per-peer", "1"});
  c.StartNode("node-b", {"--max-migrations", "1"});
  c.StartNode("node-c");
  const uint16_t a = c.node("node-a").api_port, cc = c.node("node-c").api_port;
  for (const char* vm : {"vm-1", "vm-2"}) {
    ASSERT_EQ(HttpPost(a, "/api/v1/vms", {{"id", vm}, {"memory", "32MiB"}}).status, 201);
  }
  ASSERT_EQ(HttpPost(cc, "/api/v1/vms", {{"id", "vm-3"}, {"memory", "16MiB"}}).status, 201);

  // node-a → node-b, slowly (about 2 s).
  auto slow = HttpPost(a, "/api/v1/migrations",
                       {{"vm", "vm-1"}, {"to", "node-b"}, {"bandwidth_limit", "16MB/s"}});
  ASSERT_EQ(slow.status, 202) << slow.text;

  // The source's own per-peer limit: the API refuses at once, naming the limit.
  auto per_peer = HttpPost(a, "/api/v1/migrations", {{"vm", "vm-2"}, {"to", "node-b"}});
  EXPECT_EQ(per_peer.status, 409) << per_peer.text;
  EXPECT_NE(per_peer.text.find("max_migrations_per_peer"), std::string::npos) << per_peer.text;
  EXPECT_EQ(Limit(c, "node-a", "migrations_per_peer"), 1);
  EXPECT_EQ(HttpGet(a, "/api/v1/vms/vm-2").body["state"], "running");

  // The destination's node-wide limit: node-c's migration is refused in the handshake and
  // vm-3 keeps running on node-c.
  ASSERT_TRUE(WaitFor(
      [&] {
        return HttpGet(a, "/api/v1/migrations/" + std::string(slow.body["id"])).body["phase"] !=
               "pending";
      },
      5000));
  auto busy = HttpPost(cc, "/api/v1/migrations", {{"vm", "vm-3"}, {"to", "node-b"}});
  ASSERT_EQ(busy.status, 202) << busy.text;
  auto refused = c.WaitForMigration("node-c", busy.body["id"]);
  EXPECT_EQ(refused["result"], "failed") << refused.dump();
  EXPECT_NE(refused.dump().find("max_migrations"), std::string::npos) << refused.dump();
  auto vm3 = HttpGet(cc, "/api/v1/vms/vm-3").body;
  EXPECT_EQ(vm3["node"], "node-c");
  EXPECT_EQ(vm3["state"], "running");
  EXPECT_EQ(Limit(c, "node-b", "migrations"), 1);

  // Once the slow one is done, both go through.
  EXPECT_EQ(c.WaitForMigration("node-a", slow.body["id"])["result"], "success");
  HttpReply again;
  ASSERT_TRUE(WaitFor(
      [&] {
        again = HttpPost(cc, "/api/v1/migrations", {{"vm", "vm-3"}, {"to", "node-b"}});
        return again.status == 202;
      },
      5000))
      << again.text;
  EXPECT_EQ(c.WaitForMigration("node-c", again.body["id"])["result"], "success");
  auto second = HttpPost(a, "/api/v1/migrations", {{"vm", "vm-2"}, {"to", "node-b"}});
  ASSERT_EQ(second.status, 202) << second.text;
  EXPECT_EQ(c.WaitForMigration("node-a", second.body["id"])["result"], "success");
}

}  // namespace
}  // namespace dwcp::testing
