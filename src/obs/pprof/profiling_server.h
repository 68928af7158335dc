// dwcpd's profiling endpoints, the C++ counterpart of Go's net/http/pprof (guide section 5),
// on their own listener (default 127.0.0.1:6060, loopback unless configured):
//
//   /debug/pprof/                    index of the endpoints below
//   /debug/pprof/profile?seconds=N   CPU profile, N in 1..300 (default 30); 409 while another runs
//   /debug/pprof/heap                tcmalloc heap sample; ?debug=1 human-readable report
//   /debug/pprof/growth              stacks at which the heap grew
//   /debug/pprof/goroutine?debug=N   threads and coroutine tasks; text (see goroutine_profile.h)
//   /debug/pprof/symbol              GET "num_symbols: 1"; POST "0xaddr+0xaddr..." -> names
//   /debug/pprof/cmdline             argv, NUL-separated
//
// Every /debug/pprof/X is also served as /pprof/X, the paths google-pprof derives from a bare
// http://host:port. Errors are JSON {"error": "...", "code": "..."}. docs/profiling.md.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/status.h"
#include "obs/pprof/cpu_profiler.h"
#include "obs/pprof/task_registry.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace dwcp::obs::pprof {

inline constexpr char kDefaultProfilingHost[] = "127.0.0.1";
inline constexpr uint16_t kDefaultProfilingPort = 6060;

// Bounds of /debug/pprof/profile?seconds=N.
inline constexpr int kMinCpuProfileSeconds = 1;
inline constexpr int kMaxCpuProfileSeconds = 300;
inline constexpr int kDefaultCpuProfileSeconds = 30;

class ProfilingServer {
 public:
  // `tasks` and `cpu` must outlive the server.
  explicit ProfilingServer(TaskRegistry& tasks = TaskRegistry::Global(),
                           CpuProfiler& cpu = CpuProfiler::Global());
  ~ProfilingServer();  // Stop()
  ProfilingServer(const ProfilingServer&) = delete;
  ProfilingServer& operator=(const ProfilingServer&) = delete;

  // Every request must then carry "Authorization: Bearer <token>" (an exposed listener,
  // docs/security.md); others get 401 and `on_failure` is called with the reason
  // (missing_token, wrong_token). Call before Start(); the token is compared in constant time.
  void RequireBearerToken(std::string token, std::function<void(std::string_view)> on_failure);

  // Binds host:port (port 0 picks a free one). Unavailable when the address cannot be bound.
  Status Bind(const std::string& host, uint16_t port);
  // The bound port; 0 before Bind().
  uint16_t port() const { return port_; }
  // Serves on background threads ("dwcp-pprof") until Stop(). Call once, after Bind().
  void Start();
  // Cancels a CPU profile in progress (its request gets 503), stops serving, joins. Idempotent.
  void Stop();

 private:
  struct Route {
    std::string method;  // "GET" or "POST"
    std::string path;    // under /debug/pprof
    std::string help;    // one line for the index
    std::function<void(const httplib::Request&, httplib::Response&)> handler;
  };
  void AddRoutes();

  void Index(const httplib::Request& req, httplib::Response& res);
  void CpuProfile(const httplib::Request& req, httplib::Response& res);
  void Heap(const httplib::Request& req, httplib::Response& res);
  void Growth(const httplib::Request& req, httplib::Response& res);
  void Goroutine(const httplib::Request& req, httplib::Response& res);
  void SymbolCount(const httplib::Request& req, httplib::Response& res);
  void SymbolLookup(const httplib::Request& req, httplib::Response& res);
  void Cmdline(const httplib::Request& req, httplib::Response& res);

  TaskRegistry& tasks_;
  CpuProfiler& cpu_;
  std::unique_ptr<httplib::Server> server_;
  std::vector<Route> routes_;
  std::stop_source stop_;
  std::thread thread_;
  uint16_t port_ = 0;
};

// Resolves a google-pprof symbol request body ("0x4005d0+0x400600", '+' or whitespace
// separated) to its response: one "0x<addr>\t<demangled function>" line per address that
// names a function of this process; unknown addresses are left out. InvalidArgument for a
// token that is not a hex address.
Result<std::string> ResolveSymbols(const std::string& body);

// The process's arguments joined with NUL separators and no trailing NUL (Go's format, which
// google-pprof cuts at the first NUL to name the program), secrets redacted.
std::string ProcessCmdline();

// `cmdline` (NUL-separated arguments) with the value of every secret flag (--api-token X,
// --api-token=X) replaced by "REDACTED".
std::string RedactCmdline(std::string cmdline);

}  // namespace dwcp::obs::pprof
