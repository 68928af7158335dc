// Access control and limits of the HTTP API and the pprof listener (docs/security.md), on real
// dwcpd processes: every auth path (no token, wrong token, token from a file and from the
// environment, client certificates from the right CA, another CA, expired) and every limit
// (body size, request rate, connections per client, slow requests).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <regex>

#include "tests/integration/cluster.h"

namespace dwcp::testing {
namespace {

constexpr char kToken[] = "t0k3n-for-the-api-8c1f";

std::string WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
  return path;
}

HttpReply Send(uint16_t port, const std::string& method, const std::string& path,
               const std::string& token = "", const std::string& body = "{}") {
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(2);
  c.set_read_timeout(30);
  httplib::Headers headers;
  if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
  httplib::Result r = method == "GET"      ? c.Get(path, headers)
                      : method == "DELETE" ? c.Delete(path, headers)
                      : method == "PUT"    ? c.Put(path, headers, body, "application/json")
                                           : c.Post(path, headers, body, "application/json");
  HttpReply out;
  if (!r) return out;
  out.status = r->status;
  out.text = r->body + "\nWWW-Authenticate: " + r->get_header_value("WWW-Authenticate") +
             "\nRetry-After: " + r->get_header_value("Retry-After");
  out.body = nlohmann::json::parse(r->body, nullptr, false);
  return out;
}

// A concrete path for a route pattern of the index ("/api/v1/vms/([^/]+)" -> ".../x").
std::string PathOf(const std::string& pattern) {
  return std::regex_replace(pattern, std::regex(R"(\([^)]*\))"), "x");
}

TEST(ApiSecurityTest, TokenGuardsEveryMutatingRouteAndNeverLeaks) {
  Cluster c;
  const std::string token_file = WriteFile(c.dir() + "/api.token", std::string(kToken) + "\n");
  c.StartNode("node-a", {"--api-token-file", token_file});
  const uint16_t a = c.node("node-a").api_port;

  // Every route the index flags as mutating, with every method that changes state.
  auto index = HttpGet(a, "/api/v1/");
  ASSERT_EQ(index.status, 200);
  int mutating = 0;
  for (const auto& r : index.body["routes"]) {
    const std::string method = r["method"], pattern = r["path"];
    EXPECT_EQ(r["mutating"].get<bool>(), method != "GET" && pattern != "/api/v1/rollback")
        << method << " " << pattern;
    if (!r["mutating"].get<bool>()) continue;
    ++mutating;
    auto none = Send(a, method, PathOf(pattern));
    EXPECT_EQ(none.status, 401) << method << " " << pattern << ": " << none.text;
    EXPECT_EQ(none.body.value("code", ""), "unauthenticated") << none.text;
    EXPECT_NE(none.text.find("WWW-Authenticate: Bearer"), std::string::npos) << none.text;
    auto wrong = Send(a, method, PathOf(pattern), "not-the-token");
    EXPECT_EQ(wrong.status, 401) << method << " " << pattern;
    EXPECT_NE(wrong.text.find("invalid_token"), std::string::npos) << wrong.text;
  }
  EXPECT_GE(mutating, 8);
  // Unknown paths are no way around it.
  EXPECT_EQ(Send(a, "POST", "/api/v1/nope").status, 401);
  // Reads stay open; the right token works.
  EXPECT_EQ(Send(a, "GET", "/api/v1/vms").status, 200);
  auto created = Send(a, "POST", "/api/v1/vms", kToken, R"({"id":"vm-1","memory":"16MiB"})");
  EXPECT_EQ(created.status, 201) << created.text;

  EXPECT_GE(Metric(c, "node-a", "dwcp_v3_auth_failures_total",
                   R"(listener="api",reason="missing_token")"),
            mutating + 1);
  EXPECT_GE(
      Metric(c, "node-a", "dwcp_v3_auth_failures_total", R"(listener="api",reason="wrong_token")"),
      mutating);

  // The CLI: --token-file, $DWCP_API_TOKEN, and a clear failure without.
  const std::string api = "--api http://127.0.0.1:" + std::to_string(a);
  auto with_file =
      RunDwcp("vm create " + api + " --vm vm-3 --memory 16MiB --token-file " + token_file);
  EXPECT_EQ(with_file.exit_code, 0) << with_file.output;
  auto with_env = RunDwcp("vm create " + api + " --vm vm-4 --memory 16MiB");
  EXPECT_NE(with_env.exit_code, 0);
  EXPECT_NE(with_env.output.find("bearer token"), std::string::npos) << with_env.output;
  setenv("DWCP_API_TOKEN", kToken, 1);
  with_env = RunDwcp("vm create " + api + " --vm vm-4 --memory 16MiB");
  unsetenv("DWCP_API_TOKEN");
  EXPECT_EQ(with_env.exit_code, 0) << with_env.output;
  auto bad_file = RunDwcp("vm create " + api + " --vm vm-5 --token-file " + c.dir() + "/none");
  EXPECT_EQ(bad_file.exit_code, 2) << bad_file.output;

  // The token is in neither the log, the metrics nor any API answer.
  EXPECT_EQ(c.ReadLog("node-a").find(kToken), std::string::npos);
  EXPECT_EQ(c.Metrics("node-a").find(kToken), std::string::npos);
  EXPECT_EQ(HttpGet(a, "/api/v1/").text.find(kToken), std::string::npos);
  EXPECT_EQ(HttpGet(a, "/api/v1/nodes").text.find(kToken), std::string::npos);
}

TEST(ApiSecurityTest, TokenFromTheEnvironment) {
  Cluster c;
  c.StartNode("node-a", {}, {std::string("DWCP_API_TOKEN=") + kToken});
  const uint16_t a = c.node("node-a").api_port;
  EXPECT_EQ(Send(a, "POST", "/api/v1/vms", "", R"({"id":"vm-1"})").status, 401);
  EXPECT_EQ(Send(a, "POST", "/api/v1/vms", kToken, R"({"id":"vm-1","memory":"16MiB"})").status,
            201);
  EXPECT_EQ(c.ReadLog("node-a").find(kToken), std::string::npos);
}

// An https client of the node: verifies the server against the test CA and presents
// `client` (a name of make-certs.sh's output) when given.
httplib::Result HttpsPost(const std::string& certs, uint16_t port, const std::string& path,
                          const std::string& body, const std::string& client = "",
                          const std::string& token = "") {
  std::unique_ptr<httplib::Client> cl =
      client.empty()
          ? std::make_unique<httplib::Client>("https://127.0.0.1:" + std::to_string(port))
          : std::make_unique<httplib::Client>("https://127.0.0.1:" + std::to_string(port),
                                              client + ".pem", client + ".key");
  cl->set_ca_cert_path(certs + "/ca.pem");
  cl->set_connection_timeout(3);
  cl->set_read_timeout(10);
  httplib::Headers headers;
  if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
  return cl->Post(path, headers, body, "application/json");
}

double HttpsMetric(const std::string& certs, uint16_t port, const std::string& name,
                   const std::string& labels) {
  httplib::Client cl("https://127.0.0.1:" + std::to_string(port));
  cl.set_ca_cert_path(certs + "/ca.pem");
  auto r = cl.Get("/metrics");
  if (!r) return std::nan("");
  double v = MetricValue(r->body, name, labels);
  return std::isnan(v) ? 0 : v;
}

TEST(ApiSecurityTest, ClientCertificatesFromTheClientCaAuthorizeOthersFailTheHandshake) {
  Cluster c;
  const std::string certs = c.dir() + "/certs", rogue = c.dir() + "/rogue";
  const std::string make = std::string(DWCP_SOURCE_DIR) + "/scripts/make-certs.sh ";
  ASSERT_EQ(std::system((make + certs + " node-a operator > /dev/null").c_str()), 0);
  ASSERT_EQ(std::system((make + "--expired " + certs + " stale > /dev/null").c_str()), 0);
  ASSERT_EQ(std::system((make + rogue + " intruder > /dev/null").c_str()), 0);  // another CA
  const std::string token_file = WriteFile(c.dir() + "/api.token", kToken);
  c.StartNode("node-a",
              {"--api-tls-cert", certs + "/node-a.pem", "--api-tls-key", certs + "/node-a.key",
               "--api-client-ca", certs + "/ca.pem", "--api-token-file", token_file});
  const uint16_t a = c.node("node-a").api_port;
  auto failures = [&] {
    return HttpsMetric(certs, a, "dwcp_v3_auth_failures_total",
                       R"(listener="api",reason="bad_client_certificate")");
  };

  // The operator's certificate stands in for the token; without either: 401.
  auto by_cert =
      HttpsPost(certs, a, "/api/v1/vms", R"({"id":"vm-1","memory":"16MiB"})", certs + "/operator");
  ASSERT_TRUE(by_cert) << httplib::to_string(by_cert.error());
  EXPECT_EQ(by_cert->status, 201) << by_cert->body;
  auto bare = HttpsPost(certs, a, "/api/v1/vms", R"({"id":"vm-2","memory":"16MiB"})");
  ASSERT_TRUE(bare);
  EXPECT_EQ(bare->status, 401);
  auto by_token =
      HttpsPost(certs, a, "/api/v1/vms", R"({"id":"vm-2","memory":"16MiB"})", "", kToken);
  ASSERT_TRUE(by_token);
  EXPECT_EQ(by_token->status, 201) << by_token->body;
  EXPECT_EQ(failures(), 0);

  // Another CA's certificate and an expired one: the handshake fails, and it is counted.
  auto intruder =
      HttpsPost(certs, a, "/api/v1/vms", R"({"id":"vm-3"})", rogue + "/intruder", kToken);
  EXPECT_TRUE(!intruder || intruder->status != 201);
  EXPECT_EQ(failures(), 1);
  auto stale = HttpsPost(certs, a, "/api/v1/vms", R"({"id":"vm-4"})", certs + "/stale", kToken);
  EXPECT_TRUE(!stale || stale->status != 201);
  EXPECT_EQ(failures(), 2);
  // Plain HTTP to the TLS port gets no answer.
  EXPECT_EQ(HttpGet(a, "/healthz").status, 0);

  // The CLI over https, with the CA, and with a client certificate instead of a token.
  const std::string api =
      "--api https://127.0.0.1:" + std::to_string(a) + " --ca-cert " + certs + "/ca.pem";
  auto listed = RunDwcp("vm list " + api);
  EXPECT_EQ(listed.exit_code, 0) << listed.output;
  EXPECT_NE(listed.output.find("vm-1"), std::string::npos) << listed.output;
  auto created = RunDwcp("vm create " + api + " --vm vm-5 --memory 16MiB --client-cert " + certs +
                         "/operator.pem --client-key " + certs + "/operator.key");
  EXPECT_EQ(created.exit_code, 0) << created.output;
  auto untrusted = RunDwcp("vm list --api https://127.0.0.1:" + std::to_string(a));
  EXPECT_NE(untrusted.exit_code, 0);
  EXPECT_NE(untrusted.output.find("TLS"), std::string::npos) << untrusted.output;
}

TEST(ApiSecurityTest, ExposedPprofNeedsATokenAndChecksIt) {
  Cluster c;
  auto refused = RunCommand(DWCPD_BINARY,
                            "--node-id x --data-dir " + c.dir() +
                                "/x --tls false --api-listen "
                                "127.0.0.1:0 --data-listen 127.0.0.1:0 --pprof-listen 0.0.0.0:0");
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_NE(refused.output.find("not a loopback address"), std::string::npos) << refused.output;
  EXPECT_NE(refused.output.find("api_token_file"), std::string::npos) << refused.output;

  // Exposed with a token (given as a flag here: /debug/pprof/cmdline must redact it).
  const uint16_t pprof = FreePort();
  c.StartNode("node-a",
              {"--pprof-listen", "0.0.0.0:" + std::to_string(pprof), "--api-token", kToken});
  httplib::Client cl("127.0.0.1", pprof);
  auto none = cl.Get("/debug/pprof/cmdline");
  ASSERT_TRUE(none);
  EXPECT_EQ(none->status, 401);
  auto wrong = cl.Get("/debug/pprof/goroutine", {{"Authorization", "Bearer nope"}});
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 401);
  auto right = cl.Get("/debug/pprof/cmdline", {{"Authorization", std::string("Bearer ") + kToken}});
  ASSERT_TRUE(right);
  EXPECT_EQ(right->status, 200);
  EXPECT_NE(right->body.find("REDACTED"), std::string::npos);
  EXPECT_EQ(right->body.find(kToken), std::string::npos);
  EXPECT_EQ(Metric(c, "node-a", "dwcp_v3_auth_failures_total",
                   R"(listener="pprof",reason="missing_token")"),
            1);
  EXPECT_EQ(Metric(c, "node-a", "dwcp_v3_auth_failures_total",
                   R"(listener="pprof",reason="wrong_token")"),
            1);
  // On loopback (the cluster's other nodes) pprof needs nothing: google-pprof keeps working.
}

TEST(ApiSecurityTest, BodyOverTheLimitIs413AndCounted) {
  Cluster c;
  c.StartNode("node-a", {"--api-max-body", "4KiB"});
  const uint16_t a = c.node("node-a").api_port;
  std::string big = R"({"id":"vm-1","pad":")" + std::string(10000, 'x') + "\"}";
  auto r = Send(a, "POST", "/api/v1/vms", "", big);
  EXPECT_EQ(r.status, 413) << r.text;
  EXPECT_EQ(r.body.value("code", ""), "invalid_argument") << r.text;
  EXPECT_NE(r.body.value("error", "").find("api_max_body"), std::string::npos) << r.text;
  // Bodies without a length or compressed (unbounded once decoded) are refused, counted alike.
  auto chunked = RawHttp("127.0.0.1", a,
                         "POST /api/v1/vms HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                         "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                         "2710\r\n" +
                             std::string(10000, ' ') + "\r\n0\r\n\r\n");
  EXPECT_EQ(chunked.status, 411) << chunked.text;
  auto gzipped = RawHttp("127.0.0.1", a,
                         "POST /api/v1/vms HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                         "Content-Encoding: gzip\r\nContent-Length: 4\r\n\r\nabcd");
  EXPECT_EQ(gzipped.status, 415) << gzipped.text;
  EXPECT_EQ(Metric(c, "node-a", "dwcp_v3_limit_rejections_total", R"(limit="api_body_size")"), 3);
  EXPECT_EQ(Send(a, "POST", "/api/v1/vms", "", R"({"id":"vm-1","memory":"16MiB"})").status, 201);
}

TEST(ApiSecurityTest, RateLimitIsPerClientAndSparesScrapes) {
  Cluster c;
  c.StartNode("node-a", {"--api-rate", "5/s", "--api-burst", "5"});
  const uint16_t a = c.node("node-a").api_port;
  const std::string get = "GET /api/v1/vms HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  int ok = 0, limited = 0;
  RawReply last_limited;
  for (int i = 0; i < 20; ++i) {
    auto r = RawHttp("127.0.0.1", a, get);
    if (r.status == 200) ++ok;
    if (r.status == 429) {
      ++limited;
      last_limited = r;
    }
  }
  EXPECT_LE(ok, 8);
  EXPECT_GE(limited, 12);
  EXPECT_NE(last_limited.text.find("Retry-After: 1"), std::string::npos) << last_limited.text;
  EXPECT_EQ(last_limited.body.value("code", ""), "unavailable") << last_limited.text;
  // Another client is not affected, nor are scrapes and probes of the throttled one.
  EXPECT_EQ(RawHttp("127.0.0.2", a, get).status, 200);
  EXPECT_EQ(RawHttp("127.0.0.1", a, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .status,
            200);
  EXPECT_EQ(RawHttp("127.0.0.1", a, "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .status,
            200);
  EXPECT_GE(Metric(c, "node-a", "dwcp_v3_limit_rejections_total", R"(limit="api_rate")"), limited);
  // The bucket refills.
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  EXPECT_EQ(RawHttp("127.0.0.1", a, get).status, 200);
}

// Holds an open TCP connection from `source` to 127.0.0.1:port, sending `prefix` first.
int Hold(const std::string& source, uint16_t port, const std::string& prefix = "") {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in from{}, to{};
  from.sin_family = to.sin_family = AF_INET;
  inet_pton(AF_INET, source.c_str(), &from.sin_addr);
  inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  to.sin_port = htons(port);
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof from), 0);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to), 0);
  if (!prefix.empty()) {
    EXPECT_GT(send(fd, prefix.data(), prefix.size(), MSG_NOSIGNAL), 0);
  }
  return fd;
}

TEST(ApiSecurityTest, ConnectionCapAndSlowRequestsSpareOtherClients) {
  Cluster c;
  c.StartNode("node-a", {"--api-max-connections-per-client", "4", "--api-read-timeout", "1s",
                         "--api-idle-timeout", "30s"});
  const uint16_t a = c.node("node-a").api_port;
  const std::string get = "GET /api/v1/nodes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  std::vector<int> held;
  for (int i = 0; i < 4; ++i) held.push_back(Hold("127.0.0.3", a));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // admitted by the server
  auto fifth = RawHttp("127.0.0.3", a, get);
  EXPECT_EQ(fifth.status, 429) << fifth.text;
  EXPECT_EQ(RawHttp("127.0.0.4", a, get).status, 200);
  EXPECT_GE(Metric(c, "node-a", "dwcp_v3_limit_rejections_total", R"(limit="api_connections")"), 1);
  for (int fd : held) close(fd);

  // A request dribbled slower than api_read_timeout is cut off with 408 and counted.
  int slow = Hold("127.0.0.5", a, "POST /api/v1/vms HTTP/1.1\r\nHost: x\r\n");
  timeval tv{5, 0};
  setsockopt(slow, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  const auto start = std::chrono::steady_clock::now();
  std::string answer;
  char buf[1024];
  for (int i = 0; i < 50; ++i) {
    (void)!send(slow, "X", 1, MSG_NOSIGNAL);  // one header byte now and then
    pollfd p{slow, POLLIN, 0};
    if (poll(&p, 1, 200) == 1) {
      ssize_t n = recv(slow, buf, sizeof buf, 0);
      if (n <= 0) break;
      answer.append(buf, static_cast<size_t>(n));
    }
  }
  close(slow);
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_LT(took, std::chrono::seconds(4));
  EXPECT_EQ(answer.rfind("HTTP/1.1 408", 0), 0u) << answer;
  EXPECT_EQ(Metric(c, "node-a", "dwcp_v3_limit_rejections_total", R"(limit="api_read_timeout")"),
            1);
  EXPECT_EQ(RawHttp("127.0.0.3", a, get).status, 200);  // its connections were released
}

}  // namespace
}  // namespace dwcp::testing
