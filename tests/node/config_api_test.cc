// The HTTP API's access-control and limit keys (docs/security.md).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "node/config.h"

namespace dwcp::node {
namespace {

namespace fs = std::filesystem;

class ApiConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/dwcp_api_config_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    unsetenv("DWCP_API_TOKEN");
  }
  void TearDown() override {
    unsetenv("DWCP_API_TOKEN");
    fs::remove_all(dir_);
  }

  std::string WriteFile(const std::string& name, const std::string& text) {
    std::string path = (dir_ / name).string();
    std::ofstream(path) << text;
    return path;
  }

  Result<NodeConfig> Parse(std::vector<std::string> args) {
    args.insert(args.begin(), {"dwcpd", "--node-id", "n"});
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    bool exit_now = false;
    return ParseNodeConfig(static_cast<int>(args.size()), argv.data(), &exit_now);
  }

  void ExpectInvalid(std::vector<std::string> args, const std::string& needle) {
    auto r = Parse(args);
    ASSERT_FALSE(r.ok()) << "expected an error mentioning '" << needle << "'";
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status().message();
  }

  fs::path dir_;
};

TEST_F(ApiConfigTest, DefaultsAreOpenWithGenerousLimits) {
  auto c = Parse({});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->api_token, "");
  EXPECT_FALSE(c->ApiTls());
  EXPECT_EQ(c->api_max_body_bytes, 1u << 20);
  EXPECT_DOUBLE_EQ(c->api_rate_per_second, 200);
  EXPECT_EQ(c->api_burst, 400u);
  EXPECT_EQ(c->api_read_timeout_ms, 10000);
  EXPECT_EQ(c->api_write_timeout_ms, 10000);
  EXPECT_EQ(c->api_idle_timeout_ms, 5000);
  EXPECT_EQ(c->api_max_connections, 256u);
  EXPECT_EQ(c->api_max_connections_per_client, 32u);
  EXPECT_FALSE(c->PprofExposed());
}

TEST_F(ApiConfigTest, TokenFromFileTrimmedFromEnvironmentOrFlag) {
  auto file = Parse({"--api-token-file", WriteFile("token", "  file-token\n")});
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ(file->api_token, "file-token");

  setenv("DWCP_API_TOKEN", "env-token", 1);
  auto env = Parse({});
  ASSERT_TRUE(env.ok());
  EXPECT_EQ(env->api_token, "env-token");
  // The file and the key win over the environment.
  EXPECT_EQ(Parse({"--api-token-file", WriteFile("t2", "f2")})->api_token, "f2");
  EXPECT_EQ(Parse({"--api-token", "flag-token"})->api_token, "flag-token");

  auto yaml =
      Parse({"--config",
             WriteFile("c.yaml", "api_token_file: " + WriteFile("t3", "yaml-file-token") + "\n")});
  ASSERT_TRUE(yaml.ok()) << yaml.status().ToString();
  EXPECT_EQ(yaml->api_token, "yaml-file-token");
}

TEST_F(ApiConfigTest, TokenSourcesAndFilesAreChecked) {
  ExpectInvalid({"--api-token", "a", "--api-token-file", WriteFile("t", "b")}, "both set");
  ExpectInvalid({"--api-token-file", (dir_ / "missing").string()}, "api_token_file: cannot read");
  ExpectInvalid({"--api-token-file", WriteFile("empty", "\n \n")}, "is empty");
  ExpectInvalid({"--api-token-file", dir_.string()}, "cannot read");
  ExpectInvalid({"--api-token", "has space"}, "printable ASCII");
}

TEST_F(ApiConfigTest, TlsFilesGoTogetherAndMustBeReadable) {
  std::string cert = WriteFile("api.pem", "x"), key = WriteFile("api.key", "x");
  ExpectInvalid({"--api-tls-cert", cert}, "set both or neither");
  ExpectInvalid({"--api-tls-key", key}, "set both or neither");
  ExpectInvalid({"--api-client-ca", cert}, "api_client_ca needs TLS");
  ExpectInvalid({"--api-tls-cert", (dir_ / "no.pem").string(), "--api-tls-key", key},
                "api_tls_cert: cannot read");
  auto ok = Parse({"--api-tls-cert", cert, "--api-tls-key", key, "--api-client-ca", cert});
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_TRUE(ok->ApiTls());
  auto yaml =
      Parse({"--config", WriteFile("c.yaml", "api_tls_cert: " + cert + "\napi_tls_key: " + key +
                                                 "\napi_client_ca: " + cert + "\n")});
  ASSERT_TRUE(yaml.ok()) << yaml.status().ToString();
  EXPECT_EQ(yaml->api_client_ca, cert);
}

TEST_F(ApiConfigTest, LimitsParseFromFlagsAndYaml) {
  auto c = Parse({"--api-max-body", "64KiB", "--api-rate", "600/m", "--api-burst", "7",
                  "--api-read-timeout", "2s", "--api-write-timeout", "3s", "--api-idle-timeout",
                  "500ms", "--api-max-connections", "50", "--api-max-connections-per-client", "5"});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->api_max_body_bytes, 64u * 1024);
  EXPECT_DOUBLE_EQ(c->api_rate_per_second, 10);
  EXPECT_EQ(c->api_burst, 7u);
  EXPECT_EQ(c->api_read_timeout_ms, 2000);
  EXPECT_EQ(c->api_write_timeout_ms, 3000);
  EXPECT_EQ(c->api_idle_timeout_ms, 500);
  EXPECT_EQ(c->api_max_connections, 50u);
  EXPECT_EQ(c->api_max_connections_per_client, 5u);
  auto yaml = Parse({"--config", WriteFile("l.yaml",
                                           "api_rate: 0\napi_max_body: 2MiB\n"
                                           "api_max_connections_per_client: 3\n")});
  ASSERT_TRUE(yaml.ok()) << yaml.status().ToString();
  EXPECT_DOUBLE_EQ(yaml->api_rate_per_second, 0);
  EXPECT_EQ(yaml->api_max_body_bytes, 2u << 20);
  EXPECT_EQ(yaml->api_max_connections_per_client, 3u);
}

TEST_F(ApiConfigTest, BadLimitsSayWhatIsExpected) {
  ExpectInvalid({"--api-max-body", "12"}, "api_max_body must be a size from 1KiB");
  ExpectInvalid({"--api-max-body", "lots"}, "api_max_body");
  ExpectInvalid({"--api-rate", "fast"}, "api_rate: a request rate is like 200/s");
  ExpectInvalid({"--api-rate", "-5/s"}, "api_rate");
  ExpectInvalid({"--api-burst", "0"}, "api_burst must be at least 1");
  ExpectInvalid({"--api-read-timeout", "10"}, "api_read_timeout must be a duration");
  ExpectInvalid({"--api-idle-timeout", "2h"}, "api_idle_timeout");
  ExpectInvalid({"--api-max-connections", "0"}, "api_max_connections must be between");
  ExpectInvalid({"--api-max-connections", "10", "--api-max-connections-per-client", "11"},
                "api_max_connections_per_client");
  ExpectInvalid({"--config", WriteFile("bad.yaml", "api_burst: many\n")}, "'api_burst'");
  ExpectInvalid({"--config", WriteFile("bad2.yaml", "api_rate:\n")}, "'api_rate'");
}

TEST_F(ApiConfigTest, ExposedPprofNeedsAToken) {
  ExpectInvalid({"--pprof-listen", "0.0.0.0:6060"}, "api_token_file");
  ExpectInvalid({"--pprof-listen", "10.1.2.3:6060"}, "not a loopback address");
  auto with_token =
      Parse({"--pprof-listen", "0.0.0.0:6060", "--api-token-file", WriteFile("t", "tok")});
  ASSERT_TRUE(with_token.ok()) << with_token.status().ToString();
  EXPECT_TRUE(with_token->PprofExposed());
  setenv("DWCP_API_TOKEN", "env", 1);
  EXPECT_TRUE(Parse({"--pprof-listen", "0.0.0.0:6060"}).ok());
  unsetenv("DWCP_API_TOKEN");
  for (const char* loopback : {"127.0.0.1:0", "127.9.9.9:6060", "localhost:6060", "[::1]:6060"}) {
    auto c = Parse({"--pprof-listen", loopback});
    ASSERT_TRUE(c.ok()) << loopback << ": " << c.status().ToString();
    EXPECT_FALSE(c->PprofExposed()) << loopback;
  }
}

TEST(IsLoopbackHostTest, RecognisesLoopbackOnly) {
  EXPECT_TRUE(IsLoopbackHost("127.0.0.1"));
  EXPECT_TRUE(IsLoopbackHost("127.255.0.2"));
  EXPECT_TRUE(IsLoopbackHost("localhost"));
  EXPECT_TRUE(IsLoopbackHost("::1"));
  EXPECT_FALSE(IsLoopbackHost("0.0.0.0"));
  EXPECT_FALSE(IsLoopbackHost("::"));
  EXPECT_FALSE(IsLoopbackHost("128.0.0.1"));
  EXPECT_FALSE(IsLoopbackHost("node-a"));
}

TEST(ParseRequestRateTest, AcceptsPerSecondPerMinuteAndUnlimited) {
  EXPECT_DOUBLE_EQ(*ParseRequestRate("200/s"), 200);
  EXPECT_DOUBLE_EQ(*ParseRequestRate("50"), 50);
  EXPECT_DOUBLE_EQ(*ParseRequestRate("30/m"), 0.5);
  EXPECT_DOUBLE_EQ(*ParseRequestRate("0"), 0);
  EXPECT_DOUBLE_EQ(*ParseRequestRate("unlimited"), 0);
  EXPECT_FALSE(ParseRequestRate("").ok());
  EXPECT_FALSE(ParseRequestRate("/s").ok());
  EXPECT_FALSE(ParseRequestRate("10/h").ok());
  EXPECT_FALSE(ParseRequestRate("0/s").ok());
}

}  // namespace
}  // namespace dwcp::node
