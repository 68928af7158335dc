// A real httplib::Server on 127.0.0.1:<port 0> for CLI tests that need a fake dwcpd.
#pragma once

#include <httplib.h>

#include <chrono>
#include <string>
#include <thread>

#include "cli/demo.h"

namespace dwcp::cli::testing {

// Register handlers through `http()`, then Start(). Stops and joins in the destructor.
class TestServer {
 public:
  TestServer() = default;
  ~TestServer() {
    http_.stop();
    if (thread_.joinable()) thread_.join();
  }

  httplib::Server& http() { return http_; }

  // Binds 127.0.0.1 on a kernel-picked port and serves on a background thread.
  void Start() {
    port_ = http_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { http_.listen_after_bind(); });
    for (int i = 0; i < 2000 && !http_.is_running(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

 private:
  httplib::Server http_;
  std::thread thread_;
  int port_ = 0;
};

// A port on 127.0.0.1 that nothing listens on (picked by the kernel, then released).
inline int UnusedPort() { return LoopbackPortProber().AnyFreePort(); }

}  // namespace dwcp::cli::testing
