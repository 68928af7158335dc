// Mutual TLS 1.3 between real dwcpd processes, with certificates from scripts/make-certs.sh.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>

#include "tests/integration/cluster.h"

namespace dwcp::testing {
namespace {

std::vector<std::string> TlsFlags(const std::string& dir, const std::string& node) {
  return {"--tls", "true", "--tls-ca", dir + "/ca.pem", "--tls-cert", dir + "/" + node + ".pem",
          "--tls-key", dir + "/" + node + ".key"};
}

TEST(TlsIntegrationTest, NodesWithTheClusterCaMigrateAndOthersAreRefused) {
  Cluster c;
  const std::string certs = c.dir() + "/certs", rogue = c.dir() + "/rogue";
  std::string make = std::string(DWCP_SOURCE_DIR) + "/scripts/make-certs.sh ";
  ASSERT_EQ(std::system((make + certs + " node-a node-b > /dev/null").c_str()), 0);
  ASSERT_EQ(std::system((make + rogue + " node-c > /dev/null").c_str()), 0);  // another CA

  // node-a sends over three streams: every one of them runs its own TLS handshake.
  auto a_flags = TlsFlags(certs, "node-a");
  a_flags.insert(a_flags.end(), {"--streams", "3"});
  c.StartNode("node-a", a_flags);
  c.StartNode("node-b", TlsFlags(certs, "node-b"));
  c.StartNode("node-c", TlsFlags(rogue, "node-c"));
  uint16_t a = c.node("node-a").api_port;
  ASSERT_EQ(HttpPost(a, "/api/v1/vms", {{"id", "vm-1"}, {"memory", "64MiB"}, {"dirty_rate", "10MB/s"}})
                .status,
            201);
  auto ok = HttpPost(a, "/api/v1/migrations", {{"vm", "vm-1"}, {"to", "node-b"}});
  ASSERT_EQ(ok.status, 202) << ok.text;
  auto done = c.WaitForMigration("node-a", ok.body["id"]);
  EXPECT_EQ(done["result"], "success") << done.dump();
  EXPECT_EQ(done["source_digest"], done["dest_digest"]);
  const std::string b_log = c.ReadLog("node-b");
  size_t joined = 0;
  for (size_t at = b_log.find("data stream joined"); at != std::string::npos;
       at = b_log.find("data stream joined", at + 1)) {
    ++joined;
  }
  EXPECT_EQ(joined, 2u);

  // node-c's certificate is not from the cluster's CA: node-b refuses it, and counts it.
  ASSERT_EQ(HttpPost(c.node("node-c").api_port, "/api/v1/vms", {{"id", "vm-2"}, {"memory", "16MiB"}})
                .status,
            201);
  auto refused = HttpPost(c.node("node-c").api_port, "/api/v1/migrations",
                          {{"vm", "vm-2"}, {"to", "node-b"}});
  ASSERT_EQ(refused.status, 202) << refused.text;
  auto failed = c.WaitForMigration("node-c", refused.body["id"]);
  EXPECT_EQ(failed["result"], "failed");
  EXPECT_EQ(HttpGet(c.node("node-c").api_port, "/api/v1/vms/vm-2").body["node"], "node-c");
  double refusals = 0;
  for (int i = 0; i < 20 && refusals == 0; ++i) {
    double v = MetricValue(c.Metrics("node-b"), "dwcp_v3_errors_total",
                           "component=\"amst\",error_type=\"tls\"");
    refusals = std::isnan(v) ? 0 : v;
  }
  EXPECT_GE(refusals, 1);
  EXPECT_GE(MetricValue(c.Metrics("node-b"), "dwcp_v3_acp_byzantine_detections_total",
                        "reason=\"bad_certificate\""),
            1);
  EXPECT_NE(c.ReadLog("node-b").find("refused peer"), std::string::npos);
}

double AuthFailures(Cluster& c, const std::string& node, const std::string& reason) {
  return Metric(c, node, "dwcp_v3_auth_failures_total",
                "listener=\"data\",reason=\"" + reason + "\"");
}

TEST(TlsIntegrationTest, ExpiredMissingAndMisnamedCertificatesAreRefusedAndCounted) {
  Cluster c;
  const std::string certs = c.dir() + "/certs";
  const std::string make = std::string(DWCP_SOURCE_DIR) + "/scripts/make-certs.sh ";
  ASSERT_EQ(std::system((make + certs + " node-a node-b > /dev/null").c_str()), 0);
  // node-c's certificate comes from the cluster's CA but expired long ago.
  ASSERT_EQ(std::system((make + "--expired " + certs + " node-c > /dev/null").c_str()), 0);
  c.StartNode("node-b", TlsFlags(certs, "node-b"));
  c.StartNode("node-c", TlsFlags(certs, "node-c"));
  // node-d holds a valid cluster certificate, but node-a's: it may not pass for node-d.
  auto d_flags = TlsFlags(certs, "node-a");
  c.StartNode("node-d", d_flags);
  const uint16_t b_data = c.node("node-b").data_port;

  for (const char* node : {"node-c", "node-d"}) {
    SCOPED_TRACE(node);
    const uint16_t api = c.node(node).api_port;
    const std::string vm = std::string("vm-") + node;
    ASSERT_EQ(HttpPost(api, "/api/v1/vms", {{"id", vm}, {"memory", "16MiB"}}).status, 201);
    auto r = HttpPost(api, "/api/v1/migrations", {{"vm", vm}, {"to", "node-b"}});
    ASSERT_EQ(r.status, 202) << r.text;
    auto failed = c.WaitForMigration(node, r.body["id"]);
    EXPECT_EQ(failed["result"], "failed") << failed.dump();
    auto v = HttpGet(api, "/api/v1/vms/" + vm).body;
    EXPECT_EQ(v["node"], node);
    EXPECT_EQ(v["state"], "running");
  }
  EXPECT_TRUE(WaitFor([&] { return AuthFailures(c, "node-b", "expired_certificate") >= 1; }, 5000));
  EXPECT_TRUE(WaitFor([&] { return AuthFailures(c, "node-b", "node_id_mismatch") >= 1; }, 5000));

  // A TLS client without a certificate.
  const std::string s_client =
      "timeout 10 openssl s_client -connect 127.0.0.1:" + std::to_string(b_data) +
      " -tls1_3 -CAfile " + certs + "/ca.pem < /dev/null > /dev/null 2>&1";
  (void)std::system(s_client.c_str());
  EXPECT_TRUE(
      WaitFor([&] { return AuthFailures(c, "node-b", "no_client_certificate") >= 1; }, 5000));

  // A plain TCP client speaking DWCP on the TLS port.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(b_data);
  inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to), 0);
  const char hello[24] = {'D', 'W', 'C', 'P', 0, 1};
  (void)::send(fd, hello, sizeof hello, MSG_NOSIGNAL);
  char buf[64];
  timeval tv{3, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  while (::recv(fd, buf, sizeof buf, 0) > 0) {
  }
  ::close(fd);
  EXPECT_TRUE(WaitFor([&] { return AuthFailures(c, "node-b", "not_tls") >= 1; }, 5000))
      << c.Metrics("node-b");
  const std::string log = c.ReadLog("node-b");
  EXPECT_NE(log.find("expired_certificate"), std::string::npos);
  EXPECT_NE(log.find("does not name node 'node-d'"), std::string::npos);
}

}  // namespace
}  // namespace dwcp::testing
