// The store keys and flags: a SQLite path or etcd://, with the etcd TLS, auth and timeout.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "node/config.h"

namespace dwcp::node {
namespace {

Result<NodeConfig> Parse(std::vector<std::string> args) {
  args.insert(args.begin(), "dwcpd");
  args.push_back("--node-id");
  args.push_back("node-a");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  bool exit_now = false;
  return ParseNodeConfig(static_cast<int>(args.size()), argv.data(), &exit_now);
}

class ConfigStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/dwcp-config-store-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    for (const char* f : {"ca.pem", "cert.pem", "key.pem", "password"}) {
      std::ofstream(dir_ + "/" + f) << "x\n";
    }
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(ConfigStoreTest, SqliteByDefaultAndEtcdByUrl) {
  auto sqlite = Parse({"--data-dir", dir_});
  ASSERT_TRUE(sqlite.ok()) << sqlite.status().ToString();
  EXPECT_EQ(sqlite->StorePath(), dir_ + "/state.db");
  EXPECT_FALSE(sqlite->EtcdStore());
  EXPECT_EQ(sqlite->store_timeout_ms, 2000);

  auto etcd = Parse({"--store", "etcd://127.0.0.1:2379,127.0.0.1:22379", "--store-ca-file",
                     dir_ + "/ca.pem", "--store-cert-file", dir_ + "/cert.pem", "--store-key-file",
                     dir_ + "/key.pem", "--store-username", "dwcp", "--store-password-file",
                     dir_ + "/password", "--store-timeout", "750ms"});
  ASSERT_TRUE(etcd.ok()) << etcd.status().ToString();
  EXPECT_TRUE(etcd->EtcdStore());
  EXPECT_EQ(etcd->store_timeout_ms, 750);
  acp::StoreOptions o = StoreOptionsOf(*etcd);
  EXPECT_EQ(o.store, "etcd://127.0.0.1:2379,127.0.0.1:22379");
  EXPECT_EQ(o.ca_file, dir_ + "/ca.pem");
  EXPECT_EQ(o.cert_file, dir_ + "/cert.pem");
  EXPECT_EQ(o.key_file, dir_ + "/key.pem");
  EXPECT_EQ(o.username, "dwcp");
  EXPECT_EQ(o.password_file, dir_ + "/password");
  EXPECT_EQ(o.timeout.count(), 750);
}

TEST_F(ConfigStoreTest, YamlKeys) {
  const std::string path = dir_ + "/dwcp.yaml";
  std::ofstream(path) << "store: etcd://10.0.0.1:2379/dwcp/prod\n"
                      << "store_ca_file: " << dir_ << "/ca.pem\n"
                      << "store_username: dwcp\n"
                      << "store_password_file: " << dir_ << "/password\n"
                      << "store_timeout: 5s\n";
  auto c = Parse({"--config", path});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->store, "etcd://10.0.0.1:2379/dwcp/prod");
  EXPECT_EQ(c->store_ca_file, dir_ + "/ca.pem");
  EXPECT_EQ(c->store_username, "dwcp");
  EXPECT_EQ(c->store_timeout_ms, 5000);
}

TEST_F(ConfigStoreTest, BadStoreSettingsAreClearErrors) {
  struct Case {
    std::vector<std::string> args;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {{"--store", "etcd://"}, "no etcd endpoint"},
      {{"--store", "etcd://127.0.0.1"}, "host:port"},
      {{"--store", "etcd://127.0.0.1:70000"}, "bad port"},
      {{"--store", "redis://127.0.0.1:6379"}, "unknown scheme"},
      {{"--store", "etcd://127.0.0.1:2379", "--store-timeout", "0s"}, "--store-timeout"},
      {{"--store", "etcd://127.0.0.1:2379", "--store-timeout", "soon"}, "--store-timeout"},
      {{"--store", "etcd://127.0.0.1:2379", "--store-ca-file", "/nonexistent/ca.pem"},
       "/nonexistent/ca.pem"},
      {{"--store", "etcd://127.0.0.1:2379", "--store-username", "dwcp"}, "--store-password-file"},
      {{"--store-username", "dwcp", "--store-password-file", "/x"}, "etcd:// store only"},
  };
  for (const auto& c : cases) {
    auto r = Parse(c.args);
    ASSERT_FALSE(r.ok()) << c.needle;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.needle), std::string::npos)
        << r.status().message() << " lacks " << c.needle;
  }
}

}  // namespace
}  // namespace dwcp::node
