#include "node/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <vector>

namespace dwcp::node {
namespace {

namespace fs = std::filesystem;

// Runs ParseNodeConfig over "dwcpd" followed by `args`.
Result<NodeConfig> Parse(std::vector<std::string> args, bool* exit_now = nullptr) {
  args.insert(args.begin(), "dwcpd");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  bool ignored = false;
  return ParseNodeConfig(static_cast<int>(args.size()), argv.data(),
                         exit_now ? exit_now : &ignored);
}

NodeConfig MustParse(std::vector<std::string> args) {
  auto r = Parse(args);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : NodeConfig{};
}

void ExpectInvalid(const Result<NodeConfig>& r, const std::string& needle) {
  ASSERT_FALSE(r.ok()) << "expected an error mentioning '" << needle << "'";
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find(needle), std::string::npos)
      << "'" << r.status().message() << "' lacks '" << needle << "'";
}

void ExpectInvalid(const Status& st, const std::string& needle) {
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
  EXPECT_NE(st.message().find(needle), std::string::npos)
      << "'" << st.message() << "' lacks '" << needle << "'";
}

class NodeConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/dwcp_config_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string WriteFile(const std::string& name, const std::string& text) {
    std::string path = (dir_ / name).string();
    std::ofstream(path) << text;
    return path;
  }

  fs::path dir_;
};

constexpr const char* kFullYaml = R"(node_id: node-a
region: eu-west
api_listen: 10.1.2.3:9090
data_listen: 10.1.2.3:9191
advertise_host: node-a.example.com
data_dir: /srv/dwcp
store: /srv/shared/state.db
log_level: debug
log_file: /var/log/dwcpd.json
api_token: s3cret
downtime_budget: 1.5s
max_rounds: 12
on_round_limit: abort
io_threads: 8
sampling:
  type: probabilistic
  param: 0.1
  always_sample: ["migrate_vm", "acp_consensus", "error_*"]
profiling:
  enabled: true
  interval: 60s
  cpu: true
  heap: true
  goroutine: true
  storage: s3://profiling-bucket/dwcp-v3/
)";

TEST_F(NodeConfigTest, Defaults) {
  NodeConfig c = MustParse({});
  char host[256] = {};
  ASSERT_EQ(gethostname(host, sizeof host - 1), 0);
  EXPECT_EQ(c.node_id, host);
  EXPECT_EQ(c.region, "local");
  EXPECT_EQ(c.api_listen, "0.0.0.0:8080");
  EXPECT_EQ(c.data_listen, "0.0.0.0:7070");
  EXPECT_EQ(c.advertise_host, "127.0.0.1");
  EXPECT_EQ(c.data_dir, "/var/lib/dwcp");
  EXPECT_EQ(c.store, "");
  EXPECT_EQ(c.StorePath(), "/var/lib/dwcp/state.db");
  EXPECT_EQ(c.log_level, "info");
  EXPECT_EQ(c.log_file, "");
  EXPECT_EQ(c.api_token, "");
  EXPECT_EQ(c.downtime_budget_ms, 300);
  EXPECT_EQ(c.max_rounds, 30u);
  EXPECT_EQ(c.on_round_limit, "force");
  EXPECT_EQ(c.io_threads, 4u);
  EXPECT_FALSE(c.sampling.present);
  EXPECT_EQ(c.sampling.type, "probabilistic");
  EXPECT_DOUBLE_EQ(c.sampling.param, 0.1);
  EXPECT_EQ(c.sampling.always_sample,
            (std::vector<std::string>{"migrate_vm", "acp_consensus", "error_*"}));
  EXPECT_FALSE(c.profiling.enabled);
  EXPECT_EQ(c.profiling.interval, "60s");
  EXPECT_EQ(c.profiling.storage, "");
}

TEST_F(NodeConfigTest, Flags) {
  NodeConfig c = MustParse({"--node-id",         "node-b",
                            "--region",          "us-east",
                            "--api-listen",      "127.0.0.1:18080",
                            "--data-listen",     "127.0.0.1:17070",
                            "--data-dir",        "/tmp/d",
                            "--store",           "/tmp/s.db",
                            "--log-level",       "warn",
                            "--log-file",        "/tmp/l.json",
                            "--api-token",       "tok",
                            "--downtime-budget", "2s",
                            "--max-rounds",      "5",
                            "--on-round-limit",  "abort",
                            "--io-threads",      "2"});
  EXPECT_EQ(c.node_id, "node-b");
  EXPECT_EQ(c.region, "us-east");
  EXPECT_EQ(c.api_listen, "127.0.0.1:18080");
  EXPECT_EQ(c.data_listen, "127.0.0.1:17070");
  EXPECT_EQ(c.advertise_host, "127.0.0.1");
  EXPECT_EQ(c.data_dir, "/tmp/d");
  EXPECT_EQ(c.StorePath(), "/tmp/s.db");
  EXPECT_EQ(c.log_level, "warn");
  EXPECT_EQ(c.log_file, "/tmp/l.json");
  EXPECT_EQ(c.api_token, "tok");
  EXPECT_EQ(c.downtime_budget_ms, 2000);
  EXPECT_EQ(c.max_rounds, 5u);
  EXPECT_EQ(c.on_round_limit, "abort");
  EXPECT_EQ(c.io_threads, 2u);
  // --flag=value works as well.
  EXPECT_EQ(MustParse({"--node-id=node-c"}).node_id, "node-c");
  EXPECT_EQ(MustParse({"--data-dir", "/x"}).StorePath(), "/x/state.db");
}

TEST_F(NodeConfigTest, AdvertiseHostDefaults) {
  EXPECT_EQ(MustParse({"--data-listen", "10.0.0.5:7070"}).advertise_host, "10.0.0.5");
  EXPECT_EQ(MustParse({"--data-listen", "[::]:7070"}).advertise_host, "127.0.0.1");
  EXPECT_EQ(MustParse({"--data-listen", "node-a.lan:7070"}).advertise_host, "node-a.lan");
  // A wildcard data listener with a specific API listener: the API's host, where both serve.
  EXPECT_EQ(MustParse({"--api-listen", "10.0.0.9:8080"}).advertise_host, "10.0.0.9");
  EXPECT_EQ(
      MustParse({"--api-listen", "10.0.0.9:8080", "--data-listen", "10.0.0.5:7070"}).advertise_host,
      "10.0.0.5");
  // An explicit value always wins.
  EXPECT_EQ(MustParse({"--data-listen", "10.0.0.5:7070", "--advertise-host", "peer.example"})
                .advertise_host,
            "peer.example");
}

TEST_F(NodeConfigTest, LeasesTimeoutsAndDataAdvertise) {
  NodeConfig d = MustParse({});
  EXPECT_EQ(d.node_lease_ms, 10000);
  EXPECT_EQ(d.peer_timeout_ms, 15000);
  EXPECT_EQ(d.data_advertise, "");
  NodeConfig c = MustParse({"--node-lease", "3s", "--peer-timeout", "2500ms", "--data-advertise",
                            "gw.example:17070"});
  EXPECT_EQ(c.node_lease_ms, 3000);
  EXPECT_EQ(c.peer_timeout_ms, 2500);
  EXPECT_EQ(c.data_advertise, "gw.example:17070");
  std::string path = WriteFile("lease.yaml", "node_lease: 20s\npeer_timeout: 1m\n"
                                             "data_advertise: 10.0.0.1:7000\n");
  NodeConfig y = MustParse({"--config", path});
  EXPECT_EQ(y.node_lease_ms, 20000);
  EXPECT_EQ(y.peer_timeout_ms, 60000);
  EXPECT_EQ(y.data_advertise, "10.0.0.1:7000");
  ExpectInvalid(Parse({"--node-lease", "500ms"}), "--node-lease must be between 1s and 10m");
  ExpectInvalid(Parse({"--peer-timeout", "11m"}), "--peer-timeout must be between 1s and 10m");
  ExpectInvalid(Parse({"--peer-timeout", "soon"}), "--peer-timeout");
  ExpectInvalid(Parse({"--data-advertise", "gw.example"}), "--data-advertise must be HOST:PORT");
  ExpectInvalid(Parse({"--data-advertise", "gw.example:0"}), "--data-advertise must be HOST:PORT");
}

TEST_F(NodeConfigTest, YamlFileWithEveryKey) {
  std::string path = WriteFile("full.yaml", kFullYaml);
  NodeConfig c = MustParse({"--config", path});
  EXPECT_EQ(c.node_id, "node-a");
  EXPECT_EQ(c.region, "eu-west");
  EXPECT_EQ(c.api_listen, "10.1.2.3:9090");
  EXPECT_EQ(c.data_listen, "10.1.2.3:9191");
  EXPECT_EQ(c.advertise_host, "node-a.example.com");
  EXPECT_EQ(c.data_dir, "/srv/dwcp");
  EXPECT_EQ(c.StorePath(), "/srv/shared/state.db");
  EXPECT_EQ(c.log_level, "debug");
  EXPECT_EQ(c.log_file, "/var/log/dwcpd.json");
  EXPECT_EQ(c.api_token, "s3cret");
  EXPECT_EQ(c.downtime_budget_ms, 1500);
  EXPECT_EQ(c.max_rounds, 12u);
  EXPECT_EQ(c.on_round_limit, "abort");
  EXPECT_EQ(c.io_threads, 8u);
  EXPECT_TRUE(c.sampling.present);
  EXPECT_EQ(c.sampling.type, "probabilistic");
  EXPECT_DOUBLE_EQ(c.sampling.param, 0.1);
  EXPECT_EQ(c.sampling.always_sample,
            (std::vector<std::string>{"migrate_vm", "acp_consensus", "error_*"}));
  EXPECT_TRUE(c.profiling.enabled);
  EXPECT_EQ(c.profiling.interval, "60s");
  EXPECT_TRUE(c.profiling.cpu);
  EXPECT_TRUE(c.profiling.heap);
  EXPECT_TRUE(c.profiling.goroutine);
  EXPECT_EQ(c.profiling.storage, "s3://profiling-bucket/dwcp-v3/");
}

TEST_F(NodeConfigTest, YamlNonDefaultBlockValues) {
  std::string path = WriteFile("blocks.yaml", R"(sampling:
  type: always
  param: 1
  always_sample: []
profiling:
  enabled: false
  interval: 5m
  cpu: false
  heap: false
  goroutine: false
)");
  NodeConfig c = MustParse({"--config", path});
  EXPECT_TRUE(c.sampling.present);
  EXPECT_EQ(c.sampling.type, "always");
  EXPECT_DOUBLE_EQ(c.sampling.param, 1.0);
  EXPECT_TRUE(c.sampling.always_sample.empty());
  EXPECT_FALSE(c.profiling.enabled);
  EXPECT_EQ(c.profiling.interval, "5m");
  EXPECT_FALSE(c.profiling.cpu);
  EXPECT_FALSE(c.profiling.heap);
  EXPECT_FALSE(c.profiling.goroutine);
}

TEST_F(NodeConfigTest, EmptyYamlFileKeepsDefaults) {
  std::string path = WriteFile("empty.yaml", "");
  NodeConfig c = MustParse({"--config", path, "--node-id", "n1"});
  EXPECT_EQ(c.region, "local");
  EXPECT_EQ(c.max_rounds, 30u);
  EXPECT_FALSE(c.sampling.present);
}

TEST_F(NodeConfigTest, FlagsOverrideYaml) {
  std::string path = WriteFile("full.yaml", kFullYaml);
  NodeConfig c = MustParse({"--config", path, "--region", "ap-south", "--max-rounds", "3",
                            "--downtime-budget", "50ms", "--api-token", "other"});
  EXPECT_EQ(c.region, "ap-south");
  EXPECT_EQ(c.max_rounds, 3u);
  EXPECT_EQ(c.downtime_budget_ms, 50);
  EXPECT_EQ(c.api_token, "other");
  // Keys without a flag keep the file's values.
  EXPECT_EQ(c.node_id, "node-a");
  EXPECT_EQ(c.on_round_limit, "abort");
  EXPECT_EQ(c.io_threads, 8u);
  // A flag equal to the built-in default still overrides the file.
  EXPECT_EQ(MustParse({"--config", path, "--region", "local"}).region, "local");
  // Flag order relative to --config does not matter.
  EXPECT_EQ(MustParse({"--region", "x1", "--config", path}).region, "x1");
}

TEST_F(NodeConfigTest, UnknownKeysAreNamed) {
  ExpectInvalid(Parse({"--config", WriteFile("a.yaml", "node_id: a\nbogus_key: 1\n")}),
                "'bogus_key'");
  ExpectInvalid(Parse({"--config", WriteFile("b.yaml", "sampling:\n  rate: 0.5\n")}),
                "'sampling.rate'");
  ExpectInvalid(Parse({"--config", WriteFile("c.yaml", "profiling:\n  mutex: true\n")}),
                "'profiling.mutex'");
}

TEST_F(NodeConfigTest, UnreadableFile) {
  std::string missing = (dir_ / "missing.yaml").string();
  ExpectInvalid(Parse({"--config", missing}), missing);
  ExpectInvalid(Parse({"--config", dir_.string()}), dir_.string());
}

TEST_F(NodeConfigTest, InvalidYaml) {
  ExpectInvalid(Parse({"--config", WriteFile("bad.yaml", "region: [unclosed\n")}), "YAML");
  ExpectInvalid(Parse({"--config", WriteFile("list.yaml", "- a\n- b\n")}), "mapping");
  ExpectInvalid(Parse({"--config", WriteFile("s.yaml", "sampling: 0.5\n")}), "sampling");
  ExpectInvalid(Parse({"--config", WriteFile("p.yaml", "profiling: yes\n")}), "profiling");
}

TEST_F(NodeConfigTest, YamlEmptyValuesAreErrorsNotTheStringNull) {
  // yaml-cpp would read these as the string "null": a bearer token of "null" or a log file
  // named "null" must not happen silently.
  ExpectInvalid(Parse({"--config", WriteFile("a.yaml", "api_token:\n")}), "'api_token'");
  ExpectInvalid(Parse({"--config", WriteFile("b.yaml", "log_file: ~\n")}), "'log_file'");
  ExpectInvalid(Parse({"--config", WriteFile("c.yaml", "profiling:\n  storage:\n")}),
                "'profiling.storage'");
  // An explicit empty string is a value.
  NodeConfig c = MustParse({"--config", WriteFile("d.yaml", "api_token: \"\"\nnode_id: n\n")});
  EXPECT_EQ(c.api_token, "");
}

TEST_F(NodeConfigTest, YamlRepeatedAndNonStringKeys) {
  ExpectInvalid(Parse({"--config", WriteFile("a.yaml", "region: a\nregion: b\n")}),
                "'region' is given twice");
  ExpectInvalid(Parse({"--config", WriteFile("b.yaml", "sampling:\n  param: 0.1\n  param: 0.2\n")}),
                "'sampling.param' is given twice");
  ExpectInvalid(Parse({"--config", WriteFile("c.yaml", "[a, b]: 1\n")}), "non-string key");
  ExpectInvalid(Parse({"--config", WriteFile("d.yaml", "profiling:\n  {x: 1}: 2\n")}),
                "non-string key");
}

// Found while writing fuzz/node_config_fuzzer: a non-string key inside `tls:` or
// `profiling.retention:` threw YAML::TypedBadConversion out of LoadYamlConfig, which
// terminated dwcpd instead of reporting the bad file.
TEST_F(NodeConfigTest, YamlNonStringKeysInNestedBlocksAreErrors) {
  for (const char* text :
       {"tls:\n  [a, b]: 1\n", "tls:\n  {x: 1}: 2\n", "profiling:\n  retention:\n    [a]: 1\n"}) {
    SCOPED_TRACE(text);
    NodeConfig config;
    ExpectInvalid(LoadYamlConfigText(text, "nested.yaml", &config), "non-string key");
  }
  NodeConfig config;
  ExpectInvalid(LoadYamlConfigText("tls:\n  ca: a\n  ca: b\n", "twice.yaml", &config),
                "'tls.ca' is given twice");
}

TEST_F(NodeConfigTest, YamlValuesOfTheWrongType) {
  ExpectInvalid(Parse({"--config", WriteFile("a.yaml", "max_rounds: many\n")}), "max_rounds");
  ExpectInvalid(Parse({"--config", WriteFile("b.yaml", "max_rounds: -1\n")}), "max_rounds");
  ExpectInvalid(Parse({"--config", WriteFile("c.yaml", "io_threads: 1.5\n")}), "io_threads");
  ExpectInvalid(Parse({"--config", WriteFile("d.yaml", "region: {a: 1}\n")}), "region");
  ExpectInvalid(Parse({"--config", WriteFile("e.yaml", "downtime_budget: 5x\n")}),
                "downtime_budget");
  ExpectInvalid(Parse({"--config", WriteFile("f.yaml", "profiling:\n  enabled: maybe\n")}),
                "profiling.enabled");
  ExpectInvalid(Parse({"--config", WriteFile("g.yaml", "sampling:\n  always_sample: x\n")}),
                "sampling.always_sample");
  ExpectInvalid(Parse({"--config", WriteFile("h.yaml", "sampling:\n  param: high\n")}),
                "sampling.param");
}

TEST_F(NodeConfigTest, BadFlagValues) {
  ExpectInvalid(Parse({"--max-rounds", "0"}), "--max-rounds");
  ExpectInvalid(Parse({"--max-rounds", "1001"}), "--max-rounds");
  ExpectInvalid(Parse({"--max-rounds", "-1"}), "max-rounds");
  ExpectInvalid(Parse({"--on-round-limit", "maybe"}), "--on-round-limit");
  ExpectInvalid(Parse({"--log-level", "loud"}), "loud");
  ExpectInvalid(Parse({"--api-listen", "0.0.0.0"}), "--api-listen");
  ExpectInvalid(Parse({"--api-listen", "0.0.0.0:"}), "--api-listen");
  ExpectInvalid(Parse({"--api-listen", "0.0.0.0:70000"}), "--api-listen");
  ExpectInvalid(Parse({"--data-listen", "host"}), "--data-listen");
  ExpectInvalid(Parse({"--downtime-budget", "5x"}), "--downtime-budget");
  ExpectInvalid(Parse({"--downtime-budget", "0ms"}), "--downtime-budget");
  ExpectInvalid(Parse({"--io-threads", "0"}), "--io-threads");
  ExpectInvalid(Parse({"--io-threads", "65"}), "--io-threads");
  ExpectInvalid(Parse({"--node-id", "bad id!"}), "bad id!");
  ExpectInvalid(Parse({"--node-id", std::string(65, 'n')}), "64");
  ExpectInvalid(Parse({"--no-such-flag"}), "--no-such-flag");
  ExpectInvalid(Parse({"--max-rounds", "lots"}), "max-rounds");
}

TEST_F(NodeConfigTest, BadYamlValues) {
  ExpectInvalid(Parse({"--config", WriteFile("a.yaml", "sampling:\n  param: 2\n")}),
                "sampling.param");
  ExpectInvalid(Parse({"--config", WriteFile("b.yaml", "sampling:\n  param: -0.1\n")}),
                "sampling.param");
  ExpectInvalid(Parse({"--config", WriteFile("c.yaml", "sampling:\n  type: sometimes\n")}),
                "sampling.type");
  ExpectInvalid(Parse({"--config", WriteFile("d.yaml", "profiling:\n  interval: 0s\n")}),
                "profiling.interval");
  ExpectInvalid(Parse({"--config", WriteFile("e.yaml", "profiling:\n  interval: soon\n")}),
                "profiling.interval");
  ExpectInvalid(Parse({"--config", WriteFile("f.yaml", "max_rounds: 0\n")}), "max-rounds");
  ExpectInvalid(Parse({"--config", WriteFile("g.yaml", "on_round_limit: maybe\n")}),
                "on-round-limit");
}

TEST_F(NodeConfigTest, HelpAndVersionExitNow) {
  for (const char* flag : {"--help", "-h", "--version"}) {
    bool exit_now = false;
    testing::internal::CaptureStdout();
    auto r = Parse({flag}, &exit_now);
    std::string out = testing::internal::GetCapturedStdout();
    EXPECT_TRUE(r.ok()) << flag << ": " << r.status().ToString();
    EXPECT_TRUE(exit_now) << flag;
    EXPECT_FALSE(out.empty()) << flag;
  }
  bool exit_now = true;
  ASSERT_TRUE(Parse({"--node-id", "n"}, &exit_now).ok());
  EXPECT_FALSE(exit_now);
}

TEST_F(NodeConfigTest, ValidateFillsDefaultsOnStruct) {
  NodeConfig c;
  c.node_id = "n1";
  c.data_listen = "192.168.1.7:7070";
  ASSERT_TRUE(ValidateNodeConfig(&c).ok());
  EXPECT_EQ(c.advertise_host, "192.168.1.7");
  NodeConfig bad;
  bad.node_id = "n1";
  bad.sampling.param = 2;
  EXPECT_EQ(ValidateNodeConfig(&bad).code(), StatusCode::kInvalidArgument);
}

TEST_F(NodeConfigTest, LoadYamlConfigLayersOnExistingValues) {
  NodeConfig c;
  c.region = "keep-me";
  c.max_rounds = 7;
  ASSERT_TRUE(LoadYamlConfig(WriteFile("x.yaml", "max_rounds: 9\n"), &c).ok());
  EXPECT_EQ(c.region, "keep-me");
  EXPECT_EQ(c.max_rounds, 9u);
}

}  // namespace
}  // namespace dwcp::node

namespace dwcp::node {
namespace {

TEST_F(NodeConfigTest, DataPlaneLimitsDefaultsFlagsAndYaml) {
  NodeConfig d = MustParse({});
  EXPECT_EQ(d.max_frame_bytes_value, 4u << 20);
  EXPECT_EQ(d.max_control_bytes_value, 64u << 10);
  EXPECT_EQ(d.max_migrations, 16u);
  EXPECT_EQ(d.max_migrations_per_peer, 4u);
  EXPECT_EQ(d.max_connections, 1024u);
  EXPECT_EQ(d.max_connections_per_peer, 128u);
  EXPECT_EQ(d.handshake_timeout_ms, 10000);
  EXPECT_EQ(d.max_buffer_memory_bytes, 512ull << 20);
  EXPECT_TRUE(d.tls_check_node_id);

  NodeConfig f =
      MustParse({"--max-frame-bytes", "8MiB", "--max-control-bytes", "16KiB", "--max-migrations",
                 "3", "--max-migrations-per-peer", "2", "--max-connections", "40",
                 "--max-connections-per-peer", "10", "--handshake-timeout", "2s",
                 "--max-buffer-memory", "64MiB", "--tls-check-node-id", "false"});
  EXPECT_EQ(f.max_frame_bytes_value, 8u << 20);
  EXPECT_EQ(f.max_control_bytes_value, 16u << 10);
  EXPECT_EQ(f.max_migrations, 3u);
  EXPECT_EQ(f.max_migrations_per_peer, 2u);
  EXPECT_EQ(f.max_connections, 40u);
  EXPECT_EQ(f.max_connections_per_peer, 10u);
  EXPECT_EQ(f.handshake_timeout_ms, 2000);
  EXPECT_EQ(f.max_buffer_memory_bytes, 64ull << 20);
  EXPECT_FALSE(f.tls_check_node_id);

  NodeConfig y = MustParse({"--config", WriteFile("limits.yaml",
                                                  "max_frame_bytes: 3MiB\n"
                                                  "max_control_bytes: 8KiB\n"
                                                  "max_migrations: 5\n"
                                                  "max_migrations_per_peer: 5\n"
                                                  "max_connections: 100\n"
                                                  "max_connections_per_peer: 8\n"
                                                  "handshake_timeout: 500ms\n"
                                                  "max_buffer_memory: 1GiB\n"
                                                  "tls:\n  check_node_id: false\n")});
  EXPECT_EQ(y.max_frame_bytes_value, 3u << 20);
  EXPECT_EQ(y.max_control_bytes_value, 8u << 10);
  EXPECT_EQ(y.max_migrations, 5u);
  EXPECT_EQ(y.max_migrations_per_peer, 5u);
  EXPECT_EQ(y.max_connections, 100u);
  EXPECT_EQ(y.max_connections_per_peer, 8u);
  EXPECT_EQ(y.handshake_timeout_ms, 500);
  EXPECT_EQ(y.max_buffer_memory_bytes, 1ull << 30);
  EXPECT_FALSE(y.tls_check_node_id);
}

TEST_F(NodeConfigTest, DataPlaneLimitsAreValidated) {
  ExpectInvalid(Parse({"--max-frame-bytes", "1MiB"}), "--max-frame-bytes must be between");
  ExpectInvalid(Parse({"--max-frame-bytes", "1GiB"}), "--max-frame-bytes must be between");
  ExpectInvalid(Parse({"--max-frame-bytes", "lots"}), "--max-frame-bytes");
  ExpectInvalid(Parse({"--max-control-bytes", "1KiB"}), "--max-control-bytes");
  ExpectInvalid(Parse({"--max-control-bytes", "5MiB"}), "--max-control-bytes");
  ExpectInvalid(Parse({"--max-migrations", "0"}), "--max-migrations must be between 1");
  ExpectInvalid(Parse({"--max-migrations", "20", "--max-tasks", "10"}), "--max-tasks (10)");
  ExpectInvalid(Parse({"--max-migrations-per-peer", "0"}), "--max-migrations-per-peer");
  ExpectInvalid(
      Parse({"--max-tasks", "10", "--max-migrations", "2", "--max-migrations-per-peer", "11"}),
      "--max-migrations-per-peer must be between 1 and --max-tasks (10)");
  // Lowering the node-wide limit alone is fine: the per-peer one then never binds.
  EXPECT_TRUE(Parse({"--max-migrations", "1"}).ok());
  ExpectInvalid(Parse({"--max-connections", "0"}), "--max-connections must be between");
  ExpectInvalid(Parse({"--max-connections-per-peer", "4"}),
                "--max-connections-per-peer must be at least --max-streams (8");
  ExpectInvalid(Parse({"--max-connections", "10", "--max-connections-per-peer", "20"}),
                "at most --max-connections (10)");
  ExpectInvalid(Parse({"--handshake-timeout", "10ms"}), "--handshake-timeout");
  ExpectInvalid(Parse({"--handshake-timeout", "11m"}), "--handshake-timeout");
  ExpectInvalid(Parse({"--max-buffer-memory", "6MiB"}),
                "--max-buffer-memory must be at least twice --max-frame-bytes");
  ExpectInvalid(Parse({"--config", WriteFile("bad-limit.yaml", "max_migrations: many\n")}),
                "max_migrations");
  // A per-peer connection limit below max_streams is fine once max_streams is lowered.
  EXPECT_TRUE(Parse({"--max-connections-per-peer", "4", "--max-streams", "4"}).ok());
}

}  // namespace
}  // namespace dwcp::node
