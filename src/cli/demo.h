// `dwcp demo`: a local cluster of dwcpd processes migrating synthetic VMs back and forth.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace dwcp::cli {

struct DemoOptions {
  int nodes = 3;
  int vms = 4;
  std::string data_dir = ".demo";
  uint64_t memory_bytes = 256ull << 20;
  uint64_t dirty_rate = 20'000'000;
  uint64_t bandwidth_limit = 250'000'000;  // bytes/s; 0 = unlimited
  int64_t interval_ms = 1000;
  std::string dwcpd;  // empty: next to this binary, then $PATH
  int64_t count = 0;  // migrations to run; 0 = until SIGINT/SIGTERM
  bool json = false;  // final migration JSON per line on stdout; other text on stderr
  // Also run Prometheus and Alertmanager (Debian packages) with the shipped configuration
  // from `deploy_dir`, scraping the demo nodes (src/cli/demo_stack.h).
  bool stack = false;
  std::string deploy_dir = "deploy";
};

// Runs the demo and returns the process exit code: 0 after SIGINT/SIGTERM or when `count`
// migrations all succeeded; 1 when a node failed to start or died, or a counted migration
// failed. Always stops every dwcpd it started before returning. Installs SIGINT/SIGTERM
// handlers for its duration.
int RunDemo(const DemoOptions& options);

// "node-a" … "node-z", then "node-aa", "node-ab", … (index from 0).
std::string DemoNodeId(int index);

// Which loopback ports can be listened on. Behind an interface so tests can script it.
class PortProber {
 public:
  virtual ~PortProber() = default;
  // True when a listener could bind 127.0.0.1:port right now.
  virtual bool IsFree(int port) = 0;
  // A port the kernel picks for 127.0.0.1 (bind to port 0); 0 when none could be had.
  virtual int AnyFreePort() = 0;
};

// Probes by binding real sockets (with SO_REUSEADDR, as servers do) and closing them.
class LoopbackPortProber final : public PortProber {
 public:
  bool IsFree(int port) override;
  int AnyFreePort() override;
};

inline constexpr int kDemoApiPortBase = 8080;
inline constexpr int kDemoDataPortBase = 7070;
inline constexpr int kDemoPprofPortBase = 6060;

struct DemoNode {
  std::string id;        // node-a
  int api_port = 0;      // 127.0.0.1:api_port serves the API and /metrics
  int data_port = 0;     // 127.0.0.1:data_port receives migrations
  int pprof_port = 0;    // 127.0.0.1:pprof_port serves /debug/pprof/
  std::string data_dir;  // <data-dir>/node-a
  std::string log_path;  // <data-dir>/node-a.log
  std::string api_url() const { return "http://127.0.0.1:" + std::to_string(api_port); }
};

// Plans `count` nodes: ids from DemoNodeId, API port 8080+i and data port 7070+i when free,
// else a port from AnyFreePort; no port is handed out twice. Unavailable when no free port
// can be found.
Result<std::vector<DemoNode>> PlanDemoNodes(int count, const std::string& data_dir,
                                            PortProber& ports);

// argv (program path first) that starts `node` in a demo sharing `<data_dir>/state.db`
// and the rollback webhook secret `<data_dir>/rollback-token`.
std::vector<std::string> DwcpdArgs(const std::string& dwcpd, const DemoNode& node,
                                   const std::string& data_dir);

// Finds dwcpd: `explicit_path` when set (must be executable), else `dwcpd` in the directory
// of `self_exe`, else the first executable `dwcpd` on `path_env` (a $PATH value).
// NotFound with a hint otherwise.
Result<std::string> FindDwcpd(const std::string& explicit_path, const std::string& self_exe,
                              const std::string& path_env);

// The first executable `name` on `path_env` (a $PATH value); "" when there is none.
std::string FindOnPath(const std::string& name, const std::string& path_env);

// "exited with status 1", "was killed by signal 9 (Killed)" for a waitpid() status.
std::string DescribeWaitStatus(int wait_status);

// The last `lines` lines of the file at `path` ("" when it cannot be read).
std::string TailFile(const std::string& path, int lines);

}  // namespace dwcp::cli
