// dwcp_load_client: abuses a dwcpd from a second process for tests/integration/load_test.cc.
// Each kind of abuse comes from its own loopback address (127.0.0.3-7), so that dwcpd's
// per-client limits hit each one separately and the test's own calls (127.0.0.1) are spared:
//
//   idle       (127.0.0.3)  many API connections held open without a byte sent (reopened
//                           when the server refuses or closes them)
//   slow       (127.0.0.4)  requests whose headers arrive one byte at a time (slowloris)
//   oversized  (127.0.0.5)  POSTs announcing and sending bodies far over api_max_body
//   flood      (127.0.0.6)  GETs as fast as the connection allows
//   data       (127.0.0.7)  connections to the data port that send garbage or nothing
//
// Usage: dwcp_load_client --api-port P --data-port D [--seconds 15] [--idle 300] [--slow 8]
//        [--oversized 2] [--flood 4] [--data 16]
// Prints one JSON object: for each kind, the HTTP statuses it got back and how many
// connections the server closed without an answer.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Tally {
  std::mutex mu;
  std::map<std::string, std::map<std::string, long>> counts;  // kind -> outcome -> count
  void Add(const std::string& kind, const std::string& outcome) {
    std::lock_guard lock(mu);
    ++counts[kind][outcome];
  }
};

int Connect(const char* source, uint16_t port, int timeout_ms = 2000) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in from{}, to{};
  from.sin_family = to.sin_family = AF_INET;
  inet_pton(AF_INET, source, &from.sin_addr);
  inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  to.sin_port = htons(port);
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof from) != 0 ||
      connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

bool SendAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// The status of the answer on `fd` ("413"), "closed" when the server closed without one.
std::string ReadStatus(int fd) {
  char buf[512];
  std::string got;
  while (got.size() < 12) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  if (got.rfind("HTTP/1.", 0) == 0 && got.size() >= 12) return got.substr(9, 3);
  return got.empty() ? "closed" : "garbage";
}

}  // namespace

int main(int argc, char** argv) {
  int api_port = 0, data_port = 0, seconds = 15, idle = 300, slow = 8, oversized = 2, flood = 4,
      data = 16;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    int v = std::atoi(argv[i + 1]);
    if (flag == "--api-port")
      api_port = v;
    else if (flag == "--data-port")
      data_port = v;
    else if (flag == "--seconds")
      seconds = v;
    else if (flag == "--idle")
      idle = v;
    else if (flag == "--slow")
      slow = v;
    else if (flag == "--oversized")
      oversized = v;
    else if (flag == "--flood")
      flood = v;
    else if (flag == "--data")
      data = v;
    else {
      std::fprintf(stderr, "dwcp_load_client: unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  if (api_port == 0) {
    std::fprintf(stderr, "usage: dwcp_load_client --api-port P --data-port D [...]\n");
    return 2;
  }
  const auto end = Clock::now() + std::chrono::seconds(seconds);
  auto running = [&] { return Clock::now() < end; };
  Tally tally;
  std::vector<std::thread> threads;

  // idle: hold `idle` connections (ten threads); reopen the ones the server closes.
  for (int t = 0; t < 10; ++t) {
    threads.emplace_back([&, t] {
      std::vector<int> fds(idle / 10 + (t < idle % 10 ? 1 : 0), -1);
      while (running()) {
        for (int& fd : fds) {
          if (!running()) break;
          if (fd >= 0) {
            pollfd p{fd, POLLIN, 0};
            if (poll(&p, 1, 0) == 1) {  // refused (an answer, then closed) or timed out
              const std::string status = ReadStatus(fd);
              tally.Add("idle", status == "closed" ? "closed_by_server" : status);
              close(fd);
              fd = -1;
            }
          }
          if (fd < 0) {
            fd = Connect("127.0.0.3", api_port, 500);
            tally.Add("idle", fd >= 0 ? "opened" : "connect_failed");
          }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
      }
      for (int fd : fds) {
        if (fd >= 0) close(fd);
      }
    });
  }
  // slow: headers one byte every 200 ms, until the server gives up on them.
  for (int t = 0; t < slow; ++t) {
    threads.emplace_back([&] {
      while (running()) {
        int fd = Connect("127.0.0.4", api_port, 200);
        if (fd < 0) {
          tally.Add("slow", "connect_failed");
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
          continue;
        }
        SendAll(fd, "POST /api/v1/vms HTTP/1.1\r\nHost: dwcp\r\n");
        std::string outcome = "still_open_at_end";
        while (running()) {
          if (!SendAll(fd, "X")) {
            outcome = "closed";
            break;
          }
          pollfd p{fd, POLLIN, 0};
          if (poll(&p, 1, 200) == 1) {
            outcome = ReadStatus(fd);
            break;
          }
        }
        tally.Add("slow", outcome);
        close(fd);
      }
    });
  }
  // oversized: announce 64 MiB, send 256 KiB of it.
  for (int t = 0; t < oversized; ++t) {
    threads.emplace_back([&] {
      const std::string chunk(256 * 1024, 'x');
      while (running()) {
        int fd = Connect("127.0.0.5", api_port);
        if (fd < 0) {
          tally.Add("oversized", "connect_failed");
          continue;
        }
        SendAll(fd,
                "POST /api/v1/vms HTTP/1.1\r\nHost: dwcp\r\nContent-Type: application/json\r\n"
                "Content-Length: 67108864\r\n\r\n");
        SendAll(fd, chunk);
        tally.Add("oversized", ReadStatus(fd));
        close(fd);
      }
    });
  }
  // flood: back-to-back GETs.
  for (int t = 0; t < flood; ++t) {
    threads.emplace_back([&] {
      while (running()) {
        int fd = Connect("127.0.0.6", api_port);
        if (fd < 0) {
          tally.Add("flood", "connect_failed");
          continue;
        }
        SendAll(fd, "GET /api/v1/vms HTTP/1.1\r\nHost: dwcp\r\nConnection: close\r\n\r\n");
        tally.Add("flood", ReadStatus(fd));
        close(fd);
      }
    });
  }
  // data: half send garbage, half connect and say nothing.
  if (data_port != 0) {
    for (int t = 0; t < data; ++t) {
      threads.emplace_back([&, t] {
        std::mt19937 rng(t);
        std::string garbage(4096, '\0');
        while (running()) {
          int fd = Connect("127.0.0.7", data_port, 1000);
          if (fd < 0) {
            tally.Add("data", "connect_failed");
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            continue;
          }
          if (t % 2 == 0) {
            for (char& ch : garbage) ch = static_cast<char>(rng());
            tally.Add("data", SendAll(fd, garbage) ? "garbage_sent" : "send_failed");
            char b[256];
            tally.Add("data", recv(fd, b, sizeof b, 0) > 0 ? "answered" : "closed");
          } else {
            pollfd p{fd, POLLIN, 0};
            int left = static_cast<int>(
                std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count());
            tally.Add("data", poll(&p, 1, std::max(left, 0)) == 1 ? "closed" : "held_silent");
          }
          close(fd);
        }
      });
    }
  }
  for (auto& t : threads) t.join();

  std::string out = "{";
  bool first_kind = true;
  for (const auto& [kind, outcomes] : tally.counts) {
    out += std::string(first_kind ? "" : ",") + "\"" + kind + "\":{";
    first_kind = false;
    bool first = true;
    for (const auto& [outcome, n] : outcomes) {
      out += std::string(first ? "" : ",") + "\"" + outcome + "\":" + std::to_string(n);
      first = false;
    }
    out += "}";
  }
  std::printf("%s}\n", out.c_str());
  return 0;
}
