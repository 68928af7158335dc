// Mutual TLS 1.3 between real dwcpd processes, with certificates from scripts/make-certs.sh.
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace dwcp::testing
