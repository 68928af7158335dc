// Baseline for the migration benchmarks: copies N bytes from one memory buffer to another
// over TCP, memory to memory, and prints the throughput as one JSON line. With --streams S
// (default 1) the bytes are split into S page-aligned slices sent over S parallel
// connections at once (an iperf3 -P style blast), each with its own sender and receiver
// thread; the time runs from the first connect to the last byte received.
//   tcp_copy_tool [--streams S] BYTES                      both ends here, over 127.0.0.1
//   tcp_copy_tool --serve HOST:PORT [--streams S] BYTES    the receiving end only
//   tcp_copy_tool --connect HOST:PORT [--streams S] BYTES  the sending end only; retries the
//                                                          connect for 10 s, and times from
//                                                          the first connect until the
//                                                          receiver acknowledged all bytes
// The two ends of a --serve/--connect pair take the same BYTES and S (e.g. one in each
// network namespace of tools/linkem, to measure raw TCP across the emulated link).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

void ReceiveAll(int fd, uint8_t* dst, size_t bytes) {
  size_t got = 0;
  while (got < bytes) {
    ssize_t n = read(fd, dst + got, bytes - got);
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
}

void SendAll(int fd, const uint8_t* src, size_t bytes) {
  size_t sent = 0;
  while (sent < bytes) {
    ssize_t n = write(fd, src + sent, std::min<size_t>(bytes - sent, 1 << 20));
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
}

int Usage() {
  std::fprintf(stderr,
               "usage: tcp_copy_tool [--serve HOST:PORT | --connect HOST:PORT] [--streams S] "
               "BYTES   (1 <= S <= 64)\n");
  return 2;
}

// "10.250.0.2:5001" into `addr`; false if it is not an IPv4 address and port.
bool ParseAddress(const std::string& text, sockaddr_in* addr) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos) return false;
  *addr = {};
  addr->sin_family = AF_INET;
  addr->sin_port = htons(static_cast<uint16_t>(std::atoi(text.c_str() + colon + 1)));
  return inet_pton(AF_INET, text.substr(0, colon).c_str(), &addr->sin_addr) == 1 &&
         addr->sin_port != 0;
}

}  // namespace

int main(int argc, char** argv) {
  int streams = 1;
  size_t bytes = 0;
  bool have_bytes = false;
  std::string serve, connect_to;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--serve" && i + 1 < argc) {
      serve = argv[++i];
    } else if (arg == "--connect" && i + 1 < argc) {
      connect_to = argv[++i];
    } else if (arg == "--streams" && i + 1 < argc) {
      streams = std::atoi(argv[++i]);
    } else if (arg.rfind("--streams=", 0) == 0) {
      streams = std::atoi(arg.c_str() + 10);
    } else if (!have_bytes && !arg.empty() && arg[0] != '-') {
      bytes = std::strtoull(arg.c_str(), nullptr, 10);
      have_bytes = true;
    } else {
      return Usage();
    }
  }
  if (!have_bytes || bytes == 0 || streams < 1 || streams > 64) return Usage();
  if (!serve.empty() && !connect_to.empty()) return Usage();
  const bool receive = connect_to.empty(), send = serve.empty();
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (!serve.empty() && !ParseAddress(serve, &addr)) return Usage();
  if (!connect_to.empty() && !ParseAddress(connect_to, &addr)) return Usage();

  auto* src = static_cast<uint8_t*>(
      mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  auto* dst = static_cast<uint8_t*>(
      mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (src == MAP_FAILED || dst == MAP_FAILED) {
    std::perror("mmap");
    return 1;
  }
  for (size_t i = 0; i < bytes; i += 4096) src[i] = static_cast<uint8_t>(i >> 12);  // touch

  // Slice s is [offsets[s], offsets[s + 1]), page-aligned except for the end.
  std::vector<size_t> offsets;
  const size_t pages = (bytes + 4095) / 4096;
  for (int s = 0; s <= streams; ++s) {
    offsets.push_back(std::min(bytes, pages * s / streams * 4096));
  }

  int listener = -1;
  if (receive) {
    listener = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        listen(listener, streams) != 0) {
      std::perror("tcp_copy_tool: listen");
      return 1;
    }
    socklen_t len = sizeof addr;
    getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  }

  // Each connection starts with the index of the slice it carries; the receiver answers one
  // byte once it has the whole slice.
  auto start = std::chrono::steady_clock::now();
  bool first = true;
  std::thread acceptor([&] {
    if (!receive) return;
    std::vector<std::thread> receivers;
    for (int s = 0; s < streams; ++s) {
      int fd = accept(listener, nullptr, nullptr);
      if (fd < 0) break;
      if (std::exchange(first, false) && !send) start = std::chrono::steady_clock::now();
      receivers.emplace_back([&, fd] {
        uint32_t index = 0;
        ReceiveAll(fd, reinterpret_cast<uint8_t*>(&index), sizeof index);
        if (index < static_cast<uint32_t>(streams)) {
          ReceiveAll(fd, dst + offsets[index], offsets[index + 1] - offsets[index]);
        }
        uint8_t ack = 1;
        SendAll(fd, &ack, 1);
        close(fd);
      });
    }
    for (auto& t : receivers) t.join();
  });

  std::vector<std::thread> senders;
  std::atomic<bool> sent_all{true};
  std::once_flag connected;
  for (int s = 0; s < streams && send; ++s) {
    senders.emplace_back([&, s] {
      int fd = -1;
      for (int attempt = 0; attempt < 200; ++attempt) {  // the receiver may still be starting
        fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
          if (!receive)
            std::call_once(connected, [&] { start = std::chrono::steady_clock::now(); });
          break;
        }
        close(fd);
        fd = -1;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      if (fd < 0) {
        sent_all = false;
        return;
      }
      uint32_t index = static_cast<uint32_t>(s);
      SendAll(fd, reinterpret_cast<const uint8_t*>(&index), sizeof index);
      SendAll(fd, src + offsets[s], offsets[s + 1] - offsets[s]);
      uint8_t ack = 0;
      ReceiveAll(fd, &ack, 1);
      if (ack != 1) sent_all = false;
      close(fd);
    });
  }
  for (auto& t : senders) t.join();
  acceptor.join();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (listener >= 0) close(listener);
  std::printf("{\"bytes\": %zu, \"streams\": %d, \"seconds\": %.6f, \"bytes_per_second\": %.1f}\n",
              bytes, streams, secs, bytes / secs);
  if (!send) return 0;
  if (!receive) return sent_all ? 0 : 1;
  return sent_all && std::memcmp(src, dst, bytes) == 0 ? 0 : 1;
}
