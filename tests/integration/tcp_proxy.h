// Test helper: a TCP proxy on 127.0.0.1 that forwards to another loopback port and can cut
// the link like a failed router — no FIN, no RST: bytes simply stop moving both ways (the
// kernel buffers fill and the senders block) until Heal(). New connections are neither
// accepted nor dialled while cut.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace dwcp::testing {

class TcpProxy {
 public:
  // Listens on a free port; forwards each connection to 127.0.0.1:target_port.
  explicit TcpProxy(uint16_t target_port);
  ~TcpProxy();  // closes every connection and joins the threads
  TcpProxy(const TcpProxy&) = delete;
  TcpProxy& operator=(const TcpProxy&) = delete;

  uint16_t port() const { return port_; }
  void Cut() { cut_ = true; }
  void Heal() { cut_ = false; }
  // Connections accepted so far.
  int connections() const { return connections_; }

 private:
  void AcceptLoop();
  void Pump(int a, int b);

  uint16_t target_port_;
  uint16_t port_ = 0;
  int listen_fd_ = -1;
  std::atomic<bool> cut_{false};
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  std::mutex mu_;
  std::vector<std::thread> threads_;  // mu_
  std::thread acceptor_;
};

}  // namespace dwcp::testing
