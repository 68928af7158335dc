// Baseline for the migration benchmark: copies N bytes from one memory buffer to another
// over a single loopback TCP stream (what a plain `cat | nc` copy of guest memory would do)
// and prints the throughput. Usage: tcp_copy_tool BYTES
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: tcp_copy_tool BYTES\n");
    return 2;
  }
  const size_t bytes = std::strtoull(argv[1], nullptr, 10);
  auto* src = static_cast<uint8_t*>(
      mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  auto* dst = static_cast<uint8_t*>(
      mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (src == MAP_FAILED || dst == MAP_FAILED) {
    std::perror("mmap");
    return 1;
  }
  for (size_t i = 0; i < bytes; i += 4096) src[i] = static_cast<uint8_t>(i >> 12);  // touch

  int listener = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  listen(listener, 1);

  std::thread receiver([&] {
    int fd = accept(listener, nullptr, nullptr);
    size_t got = 0;
    while (got < bytes) {
      ssize_t n = read(fd, dst + got, bytes - got);
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    close(fd);
  });
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  auto start = std::chrono::steady_clock::now();
  connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  size_t sent = 0;
  while (sent < bytes) {
    ssize_t n = write(fd, src + sent, std::min<size_t>(bytes - sent, 1 << 20));
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  close(fd);
  receiver.join();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("{\"bytes\": %zu, \"seconds\": %.6f, \"bytes_per_second\": %.1f}\n", bytes, secs,
              bytes / secs);
  return std::memcmp(src, dst, bytes) == 0 ? 0 : 1;
}
