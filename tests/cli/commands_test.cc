#include "cli/commands.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "test_server.h"

namespace dwcp::cli {
namespace {

using nlohmann::json;
using testing::TestServer;

struct CliRun {
  int rc = -1;
  std::string out;
  std::string err;
};

CliRun RunDwcp(std::vector<std::string> args) {
  args.insert(args.begin(), "dwcp");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  CliRun run;
  ::testing::internal::CaptureStdout();
  ::testing::internal::CaptureStderr();
  run.rc = RunCli(static_cast<int>(args.size()), argv.data());
  run.out = ::testing::internal::GetCapturedStdout();
  run.err = ::testing::internal::GetCapturedStderr();
  return run;
}

void Reply(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

json MigrationJson(const std::string& id, const std::string& phase, int round, uint64_t transferred,
                   uint64_t remaining) {
  return {{"id", id},
          {"vm", "vm-1"},
          {"source", "node-a"},
          {"destination", "node-b"},
          {"phase", phase},
          {"result", ""},
          {"error", ""},
          {"protocol", "v3"},
          {"round", round},
          {"memory_bytes", 1073741824},
          {"bytes_transferred", transferred},
          {"network_bytes", transferred / 2},
          {"remaining_bytes", remaining},
          {"throughput_bps", 1.2e9},
          {"eta_seconds", 0.4},
          {"downtime_ms", 0},
          {"total_ms", 0},
          {"source_digest", ""},
          {"dest_digest", ""}};
}

// A fake dwcpd: one VM store, migrations mig-ok (completes on the 3rd poll) and mig-bad
// (fails on the 2nd poll). Records the last request bodies.
class FakeDwcpd {
 public:
  FakeDwcpd() {
    auto& http = server_.http();
    http.Post("/api/v1/vms", [this](const httplib::Request& req, httplib::Response& res) {
      json body = json::parse(req.body, nullptr, false);
      Record(body);
      if (body["id"] == "vm-1") {
        return Reply(res, 409, {{"error", "vm vm-1 already exists"}, {"code", "already_exists"}});
      }
      Reply(res, 201,
            {{"id", body["id"]},
             {"node", body.value("node", "node-a")},
             {"state", "running"},
             {"epoch", 1},
             {"memory_bytes", body.value("memory", 268435456)},
             {"dirty_rate", body.value("dirty_rate", 0)}});
    });
    http.Get("/api/v1/vms", [](const httplib::Request&, httplib::Response& res) {
      Reply(res, 200,
            {{"vms",
              {{{"id", "vm-1"},
                {"node", "node-a"},
                {"state", "running"},
                {"epoch", 2},
                {"memory_bytes", 1073741824},
                {"dirty_rate", 20000000}}}}});
    });
    http.Get("/api/v1/nodes", [](const httplib::Request&, httplib::Response& res) {
      Reply(res, 200,
            {{"nodes",
              {{{"id", "node-a"},
                {"region", "local"},
                {"api_url", "http://127.0.0.1:8080"},
                {"state", "up"},
                {"alive", true},
                {"vms", 1}}}}});
    });
    http.Get("/api/v1/migrations", [](const httplib::Request& req, httplib::Response& res) {
      json m = MigrationJson("mig-ok", "completed", 3, 1500000000, 0);
      m["result"] = "success";
      m["total_ms"] = 1420;
      Reply(res, 200, {{"migrations", {m}}, {"limit", req.get_param_value("limit")}});
    });
    http.Post("/api/v1/migrations", [this](const httplib::Request& req, httplib::Response& res) {
      json body = json::parse(req.body, nullptr, false);
      Record(body);
      if (body["vm"] == "vm-9") {
        return Reply(res, 404, {{"error", "vm vm-9 does not exist"}, {"code", "not_found"}});
      }
      std::string id = body["to"] == "node-bad" ? "mig-bad" : "mig-ok";
      Reply(res, 202, MigrationJson(id, "pending", 0, 0, 0));
    });
    http.Get("/api/v1/migrations/mig-ok", [this](const httplib::Request&, httplib::Response& res) {
      int poll = ++polls_;
      if (poll == 1) return Reply(res, 200, MigrationJson("mig-ok", "precopy", 1, 536870912, 0));
      if (poll == 2) {
        return Reply(res, 200, MigrationJson("mig-ok", "precopy", 2, 1200000000, 10000000));
      }
      json m = MigrationJson("mig-ok", "completed", 3, 1500000000, 0);
      m["result"] = "success";
      m["total_ms"] = 1420;
      m["downtime_ms"] = 12;
      m["source_digest"] = m["dest_digest"] = "sha256:abc";
      Reply(res, 200, m);
    });
    http.Get("/api/v1/migrations/mig-bad", [this](const httplib::Request&, httplib::Response& res) {
      if (++polls_ == 1) return Reply(res, 200, MigrationJson("mig-bad", "precopy", 1, 1000, 0));
      json m = MigrationJson("mig-bad", "failed", 1, 1000, 0);
      m["result"] = "failed";
      m["error"] = "destination node-bad unreachable";
      Reply(res, 200, m);
    });
    server_.Start();
  }

  std::string url() const { return server_.url(); }
  json last_body() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_body_;
  }

 private:
  void Record(const json& body) {
    std::lock_guard<std::mutex> lock(mu_);
    last_body_ = body;
  }

  TestServer server_;
  std::atomic<int> polls_{0};
  std::mutex mu_;
  json last_body_;
};

TEST(CommandsTest, Version) {
  CliRun r = RunDwcp({"--version"});
  EXPECT_EQ(r.rc, 0);
  EXPECT_EQ(r.out, "dwcp 3.0.0\n");
}

TEST(CommandsTest, HelpOnEveryCommand) {
  for (auto args : std::vector<std::vector<std::string>>{{"--help"},
                                                         {"vm", "--help"},
                                                         {"vm", "create", "--help"},
                                                         {"vm", "list", "--help"},
                                                         {"migrate", "--help"},
                                                         {"status", "--help"},
                                                         {"demo", "--help"}}) {
    CliRun r = RunDwcp(args);
    EXPECT_EQ(r.rc, 0) << args.back();
    EXPECT_NE(r.out.find("--api"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("--json"), std::string::npos) << r.out;
  }
}

TEST(CommandsTest, UsageErrorsExitTwo) {
  EXPECT_EQ(RunDwcp({}).rc, 2);
  EXPECT_EQ(RunDwcp({"frobnicate"}).rc, 2);
  EXPECT_EQ(RunDwcp({"vm"}).rc, 2);
  EXPECT_EQ(RunDwcp({"vm", "create"}).rc, 2);  // --vm is required
  EXPECT_EQ(RunDwcp({"migrate", "--vm", "vm-1", "--to", "node-b", "--protocol", "v2"}).rc, 2);
  EXPECT_EQ(RunDwcp({"migrate", "--vm", "vm-1", "--to", "node-b", "--on-round-limit", "x"}).rc, 2);
  EXPECT_EQ(RunDwcp({"migrate", "--vm", "vm-1", "--to", "node-b", "--max-rounds", "0"}).rc, 2);
  EXPECT_EQ(RunDwcp({"demo", "--nodes", "1"}).rc, 2);
  EXPECT_EQ(RunDwcp({"vm", "create", "--vm", "v", "--seed", "abc"}).rc, 2);

  CliRun memory = RunDwcp({"vm", "create", "--vm", "vm-2", "--memory", "1XB"});
  EXPECT_EQ(memory.rc, 2);
  EXPECT_NE(memory.err.find("invalid --memory '1XB': unknown size unit 'xb'"), std::string::npos)
      << memory.err;
  CliRun rate = RunDwcp({"migrate", "--vm", "vm-1", "--to", "b", "--bandwidth-limit", "fast"});
  EXPECT_EQ(rate.rc, 2);
  EXPECT_NE(rate.err.find("invalid --bandwidth-limit 'fast'"), std::string::npos) << rate.err;
  CliRun budget = RunDwcp({"migrate", "--vm", "vm-1", "--to", "b", "--downtime-budget", "3 weeks"});
  EXPECT_EQ(budget.rc, 2);
  EXPECT_NE(budget.err.find("invalid --downtime-budget"), std::string::npos) << budget.err;
  CliRun interval = RunDwcp({"demo", "--interval", "soon"});
  EXPECT_EQ(interval.rc, 2);
}

TEST(CommandsTest, UnreachableDwcpdExitsOneWithHint) {
  std::string url = "http://127.0.0.1:" + std::to_string(testing::UnusedPort());
  CliRun r = RunDwcp({"status", "--api", url});
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(r.err, "dwcp: cannot reach dwcpd at " + url +
                       ": Connection refused \u2014 is it running? start a local cluster with "
                       "`dwcp demo`\n");
}

TEST(CommandsTest, VmCreateSendsNumericSizes) {
  FakeDwcpd fake;
  CliRun r = RunDwcp({"vm", "create", "--api", fake.url(), "--vm", "vm-12345", "--node", "node-a",
                      "--memory", "1GiB", "--dirty-rate", "20MB/s", "--seed", "7"});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "created vm-12345 on node-a (1.00 GiB, dirtying 20.00 MB/s)\n");
  json body = fake.last_body();
  EXPECT_EQ(body["memory"], 1073741824);
  EXPECT_EQ(body["dirty_rate"], 20000000);
  EXPECT_EQ(body["seed"], 7);
  EXPECT_EQ(body["node"], "node-a");
}

TEST(CommandsTest, ServerErrorsExitOneWithServerMessage) {
  FakeDwcpd fake;
  CliRun exists = RunDwcp({"vm", "create", "--api", fake.url(), "--vm", "vm-1"});
  EXPECT_EQ(exists.rc, 1);
  EXPECT_EQ(exists.err, "dwcp: vm vm-1 already exists\n");
  CliRun unknown = RunDwcp({"migrate", "--api", fake.url(), "--vm", "vm-9", "--to", "node-b"});
  EXPECT_EQ(unknown.rc, 1);
  EXPECT_EQ(unknown.err, "dwcp: vm vm-9 does not exist\n");
}

TEST(CommandsTest, ApiFromEnvironment) {
  FakeDwcpd fake;
  setenv("DWCP_API", fake.url().c_str(), 1);
  CliRun r = RunDwcp({"vm", "list"});
  unsetenv("DWCP_API");
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("vm-1  node-a  synthetic  running  1.00 GiB  20.00 MB/s  2"),
            std::string::npos)
      << r.out;
}

TEST(CommandsTest, VmListAndStatusJson) {
  FakeDwcpd fake;
  CliRun list = RunDwcp({"--json", "vm", "list", "--api", fake.url()});
  EXPECT_EQ(list.rc, 0);
  json vms = json::parse(list.out, nullptr, false);
  ASSERT_FALSE(vms.is_discarded()) << list.out;
  EXPECT_EQ(vms["vms"][0]["id"], "vm-1");

  CliRun status = RunDwcp({"status", "--api", fake.url(), "--json"});
  EXPECT_EQ(status.rc, 0);
  json all = json::parse(status.out, nullptr, false);
  ASSERT_FALSE(all.is_discarded()) << status.out;
  EXPECT_EQ(all["nodes"][0]["id"], "node-a");
  EXPECT_EQ(all["migrations"][0]["id"], "mig-ok");
}

TEST(CommandsTest, StatusTables) {
  FakeDwcpd fake;
  CliRun r = RunDwcp({"status", "--api", fake.url()});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("NODES\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("node-a  local   up     yes    http://127.0.0.1:8080  1"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("\nVMS\n"), std::string::npos);
  EXPECT_NE(r.out.find("mig-ok  vm-1  node-a \u2192 node-b  completed  3       1.42 s"),
            std::string::npos)
      << r.out;
}

TEST(CommandsTest, MigrateWatchesToSuccess) {
  FakeDwcpd fake;
  CliRun r = RunDwcp({"migrate", "--api", fake.url(), "--vm", "vm-1", "--to", "node-b",
                      "--protocol", "v1", "--bandwidth-limit", "100MB/s", "--downtime-budget",
                      "300ms", "--max-rounds", "5", "--on-round-limit", "abort"});
  EXPECT_EQ(r.rc, 0) << r.err;
  json body = fake.last_body();
  EXPECT_EQ(body["vm"], "vm-1");
  EXPECT_EQ(body["to"], "node-b");
  EXPECT_EQ(body["protocol"], "v1");
  EXPECT_EQ(body["bandwidth_limit"], 100000000);
  EXPECT_EQ(body["downtime_budget_ms"], 300);
  EXPECT_EQ(body["max_rounds"], 5);
  EXPECT_EQ(body["on_round_limit"], "abort");
  // Not a terminal: plain progress lines, one per round, then the summary.
  EXPECT_NE(r.out.find("[##########----------] round 1 | 512.00 MiB / 1.00 GiB"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("round 2 |"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find('\r'), std::string::npos);
  EXPECT_NE(r.out.find("  result:       success\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  downtime:     12 ms\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  on the wire:  715.26 MiB (2.00x reduction)\n"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("  digest:       verified yes"), std::string::npos) << r.out;
}

TEST(CommandsTest, MigrateFailureExitsOne) {
  FakeDwcpd fake;
  CliRun r = RunDwcp({"migrate", "--api", fake.url(), "--vm", "vm-1", "--to", "node-bad"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.out.find("  result:       failed: destination node-bad unreachable\n"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(r.err, "dwcp: migration mig-bad failed: destination node-bad unreachable\n");
}

TEST(CommandsTest, MigrateJsonPrintsOnlyTheFinalMigration) {
  FakeDwcpd fake;
  CliRun r = RunDwcp({"migrate", "--json", "--api", fake.url(), "--vm", "vm-1", "--to", "node-b"});
  EXPECT_EQ(r.rc, 0) << r.err;
  json m = json::parse(r.out, nullptr, false);
  ASSERT_FALSE(m.is_discarded()) << r.out;
  EXPECT_EQ(m["id"], "mig-ok");
  EXPECT_EQ(m["result"], "success");
}

TEST(CommandsTest, MigrateNoWait) {
  FakeDwcpd fake;
  CliRun r =
      RunDwcp({"migrate", "--no-wait", "--api", fake.url(), "--vm", "vm-1", "--to", "node-b"});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "started mig-ok: vm-1 node-a \u2192 node-b; follow it with `dwcp status`\n");
}

}  // namespace
}  // namespace dwcp::cli
