#include "tests/integration/tcp_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

namespace dwcp::testing {
namespace {

constexpr int kPollMs = 20;

void SleepPoll() { std::this_thread::sleep_for(std::chrono::milliseconds(kPollMs)); }

sockaddr_in Loopback(uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  return addr;
}

}  // namespace

TcpProxy::TcpProxy(uint16_t target_port) : target_port_(target_port) {
  listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr = Loopback(0);
  bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  listen(listen_fd_, 64);
  socklen_t len = sizeof addr;
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  acceptor_ = std::thread([this] { AcceptLoop(); });
}

TcpProxy::~TcpProxy() {
  stop_ = true;
  acceptor_.join();
  std::lock_guard lock(mu_);
  for (auto& t : threads_) t.join();
  close(listen_fd_);
}

void TcpProxy::AcceptLoop() {
  while (!stop_) {
    if (cut_) {
      SleepPoll();
      continue;
    }
    pollfd p{listen_fd_, POLLIN, 0};
    if (poll(&p, 1, kPollMs) <= 0) continue;
    int client = accept(listen_fd_, nullptr, nullptr);
    if (client < 0) continue;
    int upstream = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in target = Loopback(target_port_);
    if (connect(upstream, reinterpret_cast<sockaddr*>(&target), sizeof target) != 0) {
      close(client);
      close(upstream);
      continue;
    }
    ++connections_;
    std::lock_guard lock(mu_);
    threads_.emplace_back([this, client, upstream] { Pump(client, upstream); });
  }
}

// Copies bytes both ways until either side closes (or the proxy stops); not while cut.
void TcpProxy::Pump(int a, int b) {
  char buf[64 * 1024];
  bool open = true;
  while (open && !stop_) {
    if (cut_) {
      SleepPoll();
      continue;
    }
    pollfd fds[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
    if (poll(fds, 2, kPollMs) <= 0) continue;
    for (int i = 0; i < 2 && open; ++i) {
      if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const int from = fds[i].fd, to = i == 0 ? b : a;
      ssize_t n = read(from, buf, sizeof buf);
      if (n <= 0) {
        open = false;
        break;
      }
      // A receiver that does not read (paused) must not block the proxy's shutdown.
      for (ssize_t off = 0; off < n && open && !stop_;) {
        ssize_t w = send(to, buf + off, n - off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w > 0) {
          off += w;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
          pollfd out{to, POLLOUT, 0};
          poll(&out, 1, kPollMs);
        } else {
          open = false;
        }
      }
    }
  }
  close(a);
  close(b);
}

}  // namespace dwcp::testing
