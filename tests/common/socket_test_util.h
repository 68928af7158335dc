// Socket helpers shared by unit and integration tests that play a raw peer.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>

namespace dwcp::testing {

// True once the other end closed (or reset) the connection on `fd`, within `within`; what it
// sends meanwhile is read and dropped.
inline bool ClosedWithin(int fd, std::chrono::milliseconds within) {
  timeval tv{static_cast<time_t>(within.count() / 1000),
             static_cast<suseconds_t>(within.count() % 1000 * 1000)};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char buf[256];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n == 0) return true;
    if (n < 0) return errno == ECONNRESET;
  }
}

// A TCP socket bound to `source` (any 127/8 address: loopback answers them all, so a second
// address stands for a second host) and connecting to 127.0.0.1:`port`. -1 when it cannot be
// made or bound; *connected says whether the connect succeeded.
inline int ConnectFrom(const char* source, uint16_t port, bool* connected) {
  *connected = false;
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in from{};
  from.sin_family = AF_INET;
  inet_pton(AF_INET, source, &from.sin_addr);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof from) != 0) {
    if (fd >= 0) ::close(fd);
    return -1;
  }
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  *connected = ::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) == 0;
  return fd;
}

}  // namespace dwcp::testing
