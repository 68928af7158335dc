// Test harness: real dwcpd processes on loopback with free ports and a temp directory.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

namespace dwcp::testing {

// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
uint16_t FreePort();

struct HttpReply {
  int status = 0;  // 0 when the request could not be sent
  nlohmann::json body;
  std::string text;
};

HttpReply HttpGet(uint16_t port, const std::string& path);
HttpReply HttpPost(uint16_t port, const std::string& path, const nlohmann::json& body);

// Sends `request` (raw HTTP/1.x text; ask for "Connection: close") to 127.0.0.1:`port` from
// the local address `source` (any of 127.0.0.0/8: each is another client for dwcpd's
// per-client limits) and reads until the server closes or `timeout_ms` passes. status 0
// when nothing parseable came back.
struct RawReply {
  int status = 0;
  nlohmann::json body;
  std::string text;  // the whole answer, headers included
};
RawReply RawHttp(const std::string& source, uint16_t port, const std::string& request,
                 int timeout_ms = 5000);

// Runs `binary` with `args` through the shell until it exits.
struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};
CommandResult RunCommand(const std::string& binary, const std::string& args);
// The `dwcp` CLI (DWCP_BINARY).
inline CommandResult RunDwcp(const std::string& args) { return RunCommand(DWCP_BINARY, args); }

// Sums the samples of `name` in Prometheus text whose labels include every one of `labels`
// (comma-separated as written, e.g. `direction="sent"`; empty: every series of `name`).
// NaN if no series matches.
double MetricValue(const std::string& exposition, const std::string& name,
                   const std::string& labels = "");

class Cluster;
// MetricValue of `node`'s /metrics; 0 when no series matches.
double Metric(Cluster& c, const std::string& node, const std::string& name,
              const std::string& labels = "");

// Polls `pred` every 100 ms until it holds or `timeout_ms` passed; returns whether it held.
template <class Pred>
bool WaitFor(Pred pred, int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return pred();
}

struct NodeProcess {
  std::string id;
  pid_t pid = -1;
  uint16_t api_port = 0;
  uint16_t data_port = 0;
  std::string log_path;
  std::vector<std::string> extra_flags;  // as given to StartNode, reused by Restart
  bool api_tls = false;                  // started with --api-tls-cert: the API is https
};

// Several dwcpd processes sharing one SQLite store in a temp directory (or the store a test
// passes with "--store" in a node's extra flags, e.g. an etcd:// cluster). Kills them all on
// destruction and removes the directory.
class Cluster {
 public:
  Cluster();
  ~Cluster();

  // Starts a node and waits until /readyz answers 200 (fails the test otherwise). `env`:
  // extra "NAME=value" environment entries of this process only (e.g. DWCP_FAILPOINTS).
  NodeProcess& StartNode(const std::string& id, std::vector<std::string> extra_flags = {},
                         std::vector<std::string> env = {});
  // Picks the ports of a node StartNode will start (so a test can point a proxy at its data
  // port first); StartNode of a prepared id keeps them.
  NodeProcess& Prepare(const std::string& id);
  // Starts a node that was killed or stopped again, on the same ports, data directory and
  // flags (without the first start's `env`).
  NodeProcess& Restart(const std::string& id, std::vector<std::string> env = {});
  // SIGSTOP / SIGCONT: the process freezes as under a long GC pause or a hung host.
  void Pause(const std::string& id);
  void Continue(const std::string& id);
  NodeProcess& node(const std::string& id) { return nodes_.at(id); }
  // SIGKILL, and reap.
  void Kill(const std::string& id);
  // SIGTERM and wait up to `timeout_ms` for a clean exit; returns the exit status.
  int Terminate(const std::string& id, int timeout_ms = 30000);
  std::string Metrics(const std::string& id);
  const std::string& dir() const { return dir_; }
  std::string ReadLog(const std::string& id);

  // Polls GET /api/v1/migrations/{id} until it has a result; returns the final record.
  nlohmann::json WaitForMigration(const std::string& via, const std::string& migration_id,
                                  int timeout_ms = 120000);

 private:
  NodeProcess& Spawn(NodeProcess n, std::vector<std::string> extra, std::vector<std::string> env);

  std::string dir_;
  std::map<std::string, NodeProcess> nodes_;
};

}  // namespace dwcp::testing
