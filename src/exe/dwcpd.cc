// dwcpd: the DWCP v3 node agent.
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "common/failpoint.h"
#include "node/config.h"
#include "node/node.h"
#include "obs/log.h"
#include "obs/pprof/heap_profile.h"

int main(int argc, char** argv) {
  // tcmalloc reads its heap-sampling period only at start: this re-executes dwcpd once with
  // it set (docs/profiling.md). Must run before any thread exists.
  dwcp::Status heap_sampling = dwcp::obs::pprof::EnableHeapSampling(argv);
  bool exit_now = false;
  auto config = dwcp::node::ParseNodeConfig(argc, argv, &exit_now);
  if (exit_now) return 0;
  if (!config.ok()) {
    std::cerr << "dwcpd: " << config.status().message() << "\nRun 'dwcpd --help' for usage.\n";
    return 2;
  }
  dwcp::obs::LogLevel level = dwcp::obs::LogLevel::kInfo;
  dwcp::obs::ParseLogLevel(config->log_level, &level);
  dwcp::obs::ConfigureLogging(level, config->node_id, config->log_file);
  if (!heap_sampling.ok()) {
    dwcp::obs::LogWarn("node", "heap profiles are off: cannot enable tcmalloc sampling",
                       {{"error", heap_sampling.ToString()}});
  }
  if (dwcp::Status fp = dwcp::Failpoints::Init(); !fp.ok()) {
    std::cerr << "dwcpd: " << fp.message() << "\n";
    return 2;
  }
  if (dwcp::Failpoints::Any()) {
    dwcp::obs::LogWarn("node", "failpoints are armed (DWCP_FAILPOINTS): for fault tests only",
                       {{"failpoints", std::getenv("DWCP_FAILPOINTS")}});
  }

  // Signals are taken by a dedicated thread so that shutdown runs outside signal context.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  auto node = dwcp::node::Node::Start(*config);
  if (!node.ok()) {
    dwcp::obs::LogError("node", "dwcpd failed to start", {{"error", node.status().ToString()}});
    std::cerr << "dwcpd: " << node.status().message() << "\n";
    return 1;
  }
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    dwcp::obs::LogInfo("node", "signal received, shutting down",
                       {{"signal", sig == SIGINT ? "SIGINT" : "SIGTERM"}});
    (*node)->Stop();
  });
  (*node)->WaitForStop();
  // The waiter is blocked in sigwait unless a signal stopped us; wake it to exit.
  pthread_kill(waiter.native_handle(), SIGTERM);
  waiter.join();
  return 0;
}
