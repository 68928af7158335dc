// Runs the real linkem binary: namespaces, TUN devices, ICMP and TCP through the emulated
// link. Needs root; every namespace name carries this process's pid so parallel runs do not
// collide, and every namespace a test makes is deleted even when the test fails.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

const char* const kAddrA = "10.250.0.1";
const char* const kAddrB = "10.250.0.2";

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool NamespaceListed(const std::string& name) {
  FILE* p = popen("ip netns list", "r");
  if (!p) return false;
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof buf, p)) out += buf;
  pclose(p);
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    if (line.substr(0, line.find(' ')) == name) return true;
  }
  return false;
}

int Shell(const std::string& command) {
  return std::system((command + " >/dev/null 2>&1").c_str());
}

// Joins the calling thread to a named network namespace.
bool EnterNetns(const std::string& ns) {
  int fd = open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = setns(fd, CLONE_NEWNET) == 0;
  close(fd);
  return ok;
}

// A linkem process with its output in a temp directory. The destructor stops it (SIGTERM,
// then SIGKILL) and deletes its namespaces if it could not.
class Linkem {
 public:
  Linkem(std::string ns_a, std::string ns_b) : ns_a_(std::move(ns_a)), ns_b_(std::move(ns_b)) {
    char tmpl[] = "/tmp/linkem_test_XXXXXX";
    dir_ = mkdtemp(tmpl);
    ready_ = dir_ + "/ready";
  }
  ~Linkem() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      if (!WaitExit(5s)) {
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
      }
    }
    for (const auto& ns : owned_) Shell("ip netns del " + ns);
    Shell("rm -rf " + dir_);
  }

  // Starts linkem with the namespace, address and ready-file flags plus `extra`.
  void Start(const std::vector<std::string>& extra) {
    std::vector<std::string> args = {LINKEM_BINARY,
                                     "--ns-a",
                                     ns_a_,
                                     "--ns-b",
                                     ns_b_,
                                     "--addr-a",
                                     std::string(kAddrA) + "/24",
                                     "--addr-b",
                                     std::string(kAddrB) + "/24",
                                     "--ready-file",
                                     ready_};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, (dir_ + "/stdout").c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, (dir_ + "/stderr").c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_EQ(posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&fa);
  }

  // True once the ready file exists; false if linkem exited or 10 s passed.
  bool WaitReady() {
    auto start = Clock::now();
    struct stat st;
    while (SecondsSince(start) < 10) {
      if (stat(ready_.c_str(), &st) == 0) return true;
      int status;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        status_ = status;
        return false;
      }
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }

  // Waits up to `timeout` for linkem to exit by itself.
  bool WaitExit(std::chrono::duration<double> timeout) {
    auto start = Clock::now();
    while (pid_ > 0) {
      int status;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        status_ = status;
        return true;
      }
      if (Clock::now() - start > timeout) return false;
      std::this_thread::sleep_for(20ms);
    }
    return true;
  }

  void Signal(int sig) { kill(pid_, sig); }
  // Exit status once exited; -1 on a signal death or while running.
  int exit_code() const { return WIFEXITED(status_) ? WEXITSTATUS(status_) : -1; }
  std::string err() const { return ReadFile(dir_ + "/stderr"); }
  // The JSON stats line linkem prints on exit.
  nlohmann::json Stats() const {
    return nlohmann::json::parse(ReadFile(dir_ + "/stdout"), nullptr, false);
  }
  const std::string& ready_file() const { return ready_; }
  // Namespaces the destructor deletes if linkem leaves them behind.
  void Own(const std::string& ns) { owned_.push_back(ns); }

 private:
  std::string ns_a_, ns_b_;
  std::string dir_, ready_;
  pid_t pid_ = -1;
  int status_ = -1;
  std::vector<std::string> owned_;
};

uint16_t Checksum(const void* data, size_t len) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < len; i += 2) sum += (p[i] << 8) | p[i + 1];
  if (len & 1) sum += p[len - 1] << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return htons(static_cast<uint16_t>(~sum));
}

// Pings `dst` `count` times, 200 ms apart, from namespace `ns` with a raw ICMP socket;
// returns the round-trip times in ms of the replies that came back within 1 s.
std::vector<double> Ping(const std::string& ns, const char* dst, int count) {
  std::vector<double> rtts;
  std::thread t([&] {
    if (!EnterNetns(ns)) return;
    int s = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP);
    if (s < 0) return;
    timeval tv{0, 100'000};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    inet_pton(AF_INET, dst, &to.sin_addr);
    uint16_t id = static_cast<uint16_t>(getpid());
    for (int seq = 1; seq <= count; ++seq) {
      uint8_t pkt[64] = {};
      auto* icmp = reinterpret_cast<icmphdr*>(pkt);
      icmp->type = ICMP_ECHO;
      icmp->un.echo.id = htons(id);
      icmp->un.echo.sequence = htons(static_cast<uint16_t>(seq));
      icmp->checksum = Checksum(pkt, sizeof pkt);
      auto sent = Clock::now();
      sendto(s, pkt, sizeof pkt, 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
      while (SecondsSince(sent) < 1.0) {
        uint8_t buf[1500];
        ssize_t n = recv(s, buf, sizeof buf, 0);
        if (n < static_cast<ssize_t>(sizeof(iphdr) + sizeof(icmphdr))) continue;
        auto* ip = reinterpret_cast<iphdr*>(buf);
        auto* reply = reinterpret_cast<icmphdr*>(buf + ip->ihl * 4);
        if (reply->type == ICMP_ECHOREPLY && ntohs(reply->un.echo.id) == id &&
            ntohs(reply->un.echo.sequence) == seq) {
          rtts.push_back(SecondsSince(sent) * 1e3);
          break;
        }
      }
      std::this_thread::sleep_until(sent + 200ms);
    }
    close(s);
  });
  t.join();
  return rtts;
}

uint8_t PatternByte(uint64_t offset) { return static_cast<uint8_t>(offset % 251); }

struct Transfer {
  std::string error;   // empty on success
  uint64_t bytes = 0;  // received, in order and intact
  double seconds = 0;  // first to last byte
  // Goodput from first to last byte, slow start included. (A window that starts later can
  // read above the link rate: data held behind a loss at its start is counted in it.)
  double mbit_s() const { return seconds > 0 ? bytes * 8 / seconds / 1e6 : 0; }
};

// Streams a byte pattern over TCP from namespace `ns_a` to a receiver at kAddrB in `ns_b`,
// for `send_s` seconds or until `limit_bytes` were sent, and checks every byte received.
// The sender uses CUBIC (the usual default) whatever this host's default is.
Transfer TcpBulk(const std::string& ns_a, const std::string& ns_b, double send_s,
                 uint64_t limit_bytes) {
  Transfer result;
  std::promise<uint16_t> port_promise;
  auto port_future = port_promise.get_future();
  std::thread receiver([&] {
    auto fail = [&](const char* what) {
      result.error = std::string(what) + ": " + std::strerror(errno);
    };
    if (!EnterNetns(ns_b)) return port_promise.set_value(0), fail("setns B");
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    inet_pton(AF_INET, kAddrB, &addr.sin_addr);  // port 0: the kernel picks
    socklen_t len = sizeof addr;
    if (ls < 0 || bind(ls, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        listen(ls, 1) != 0 || getsockname(ls, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      port_promise.set_value(0);
      return fail("listen");
    }
    port_promise.set_value(ntohs(addr.sin_port));
    timeval tv{10, 0};
    setsockopt(ls, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int s = accept(ls, nullptr, nullptr);
    close(ls);
    if (s < 0) return fail("accept");
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::vector<uint8_t> buf(256 * 1024);
    Clock::time_point first, last;
    while (true) {
      ssize_t n = recv(s, buf.data(), buf.size(), 0);
      if (n < 0) {
        fail("recv");
        break;
      }
      if (n == 0) break;
      last = Clock::now();
      if (result.bytes == 0) first = last;
      for (ssize_t i = 0; i < n; ++i) {
        if (buf[i] != PatternByte(result.bytes + i)) {
          result.error = "corrupt byte at offset " + std::to_string(result.bytes + i);
          close(s);
          return;
        }
      }
      result.bytes += n;
    }
    close(s);
    result.seconds = std::chrono::duration<double>(last - first).count();
  });
  uint16_t port = port_future.get();
  std::string send_error;
  std::thread sender([&] {
    if (port == 0 || !EnterNetns(ns_a)) return;
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval tv{10, 0};
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(s, IPPROTO_TCP, TCP_CONGESTION, "cubic", 5);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    inet_pton(AF_INET, kAddrB, &addr.sin_addr);
    if (connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      send_error = std::string("connect: ") + std::strerror(errno);
      close(s);
      return;
    }
    std::vector<uint8_t> chunk(64 * 1024);
    uint64_t offset = 0;
    auto start = Clock::now();
    while (offset < limit_bytes && SecondsSince(start) < send_s) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(chunk.size(), limit_bytes - offset));
      for (size_t i = 0; i < n; ++i) chunk[i] = PatternByte(offset + i);
      ssize_t w = send(s, chunk.data(), n, MSG_NOSIGNAL);
      if (w <= 0) {
        send_error = std::string("send: ") + std::strerror(errno);
        break;
      }
      offset += w;
    }
    shutdown(s, SHUT_WR);
    close(s);
  });
  sender.join();
  receiver.join();
  if (result.error.empty()) result.error = send_error;
  return result;
}

std::string NsName(const char* test, char side) {
  return "lkm-" + std::to_string(getpid()) + "-" + test + "-" + side;
}

class LinkemIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) {
      GTEST_FAIL() << "linkem integration tests need root (they create network namespaces and "
                      "TUN devices); run them as root, as CI does";
    }
  }
};

TEST(LinkemCliTest, RejectsBadFlagsWithExitStatus2) {
  struct Case {
    std::string args, mention;
  };
  std::vector<Case> cases = {
      {"--loss 1", "--loss"},
      {"--loss-ba 150%", "--loss-ba"},
      {"--delay 5parsec", "--delay"},
      {"--jitter-ab -1ms", "--jitter-ab"},
      {"--rate fast", "--rate"},
      {"--queue 100ms", "--queue"},  // a time needs a rate
      {"--addr-a 10.250.0.1", "--addr-a"},
      {"--addr-b 10.250.0.1/24", "must differ"},
      {"--ns-a same --ns-b same", "must differ"},
      {"--ns-a 'bad name'", "--ns-a"},
      {"--ns-b ..", "--ns-b"},
      {"--dev waytoolongdevicename", "--dev"},
      {"--duration 0", "--duration"},
      {"--mtu 100", "--mtu"},
      {"--no-such-flag", "no-such-flag"},
      {"--link-file /nonexistent/linkem-link", "--link-file"},
  };
  for (const auto& c : cases) {
    std::string out = "/tmp/linkem_cli_" + std::to_string(getpid());
    int rc =
        std::system((std::string(LINKEM_BINARY) + " " + c.args + " >" + out + " 2>&1").c_str());
    std::string text = ReadFile(out);
    std::remove(out.c_str());
    EXPECT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 2) << c.args << " -> " << rc << ": " << text;
    EXPECT_NE(text.find(c.mention), std::string::npos) << c.args << ": " << text;
  }
  std::string out = "/tmp/linkem_help_" + std::to_string(getpid());
  int rc = std::system((std::string(LINKEM_BINARY) + " --help >" + out + " 2>&1").c_str());
  std::string help = ReadFile(out);
  std::remove(out.c_str());
  EXPECT_EQ(rc, 0);
  for (const char* flag : {"--delay-ba", "--rate", "--loss", "--duration", "--ready-file"}) {
    EXPECT_NE(help.find(flag), std::string::npos) << flag;
  }
}

// 25 ms each way and 100 Mbit/s: ping RTT near 50 ms, TCP near the rate, and linkem stops by
// itself at --duration, deleting both namespaces.
TEST_F(LinkemIntegrationTest, DelayAndRateThenStopsAtDuration) {
  std::string a = NsName("rate", 'a'), b = NsName("rate", 'b');
  Linkem linkem(a, b);
  linkem.Own(a);
  linkem.Own(b);
  auto start = Clock::now();
  linkem.Start({"--delay", "25ms", "--rate", "100Mbit", "--duration", "8s"});
  ASSERT_TRUE(linkem.WaitReady()) << linkem.err();
  EXPECT_TRUE(NamespaceListed(a));
  EXPECT_TRUE(NamespaceListed(b));

  auto rtts = Ping(a, kAddrB, 5);
  ASSERT_EQ(rtts.size(), 5u) << linkem.err();
  double avg = 0;
  for (double r : rtts) avg += r / rtts.size();
  std::printf("ping rtt ms: %.2f %.2f %.2f %.2f %.2f (avg %.2f)\n", rtts[0], rtts[1], rtts[2],
              rtts[3], rtts[4], avg);
  EXPECT_NEAR(avg, 50, 10);
  for (double r : rtts) EXPECT_GE(r, 49.5);  // never faster than the configured delay

  Transfer t = TcpBulk(a, b, 4.0, UINT64_MAX);
  ASSERT_EQ(t.error, "");
  std::printf("tcp at 100Mbit: %.1f MB in %.2f s: %.1f Mbit/s\n", t.bytes / 1e6, t.seconds,
              t.mbit_s());
  EXPECT_GE(t.mbit_s(), 70);
  EXPECT_LE(t.mbit_s(), 100);

  ASSERT_TRUE(linkem.WaitExit(6s)) << "linkem did not stop at --duration";
  double elapsed = SecondsSince(start);
  EXPECT_EQ(linkem.exit_code(), 0) << linkem.err();
  EXPECT_GE(elapsed, 8.0);
  EXPECT_LT(elapsed, 11.0);
  EXPECT_FALSE(NamespaceListed(a));
  EXPECT_FALSE(NamespaceListed(b));
  struct stat st;
  EXPECT_NE(stat(linkem.ready_file().c_str(), &st), 0) << "ready file left behind";
  auto stats = linkem.Stats();
  ASSERT_TRUE(stats.is_object()) << "no JSON stats line";
  EXPECT_EQ(stats["linkem"]["stop"], "duration");
  const auto& ab = stats["linkem"]["a_to_b"];
  EXPECT_GE(ab["tx_bytes"].get<uint64_t>(), t.bytes);
  EXPECT_EQ(ab["drop_loss"], 0);
  EXPECT_GE(stats["linkem"]["b_to_a"]["tx_packets"].get<uint64_t>(), 5u);  // the echo replies
}

// Per-direction delays add up in the RTT; with 1% loss each way a transfer still completes
// intact; SIGTERM stops linkem cleanly and it deletes the namespaces.
TEST_F(LinkemIntegrationTest, AsymmetricDelayLossAndSigterm) {
  std::string a = NsName("loss", 'a'), b = NsName("loss", 'b');
  Linkem linkem(a, b);
  linkem.Own(a);
  linkem.Own(b);
  linkem.Start({"--delay-ab", "5ms", "--delay-ba", "15ms", "--rate", "100Mbit", "--loss", "1%",
                "--seed", "7", "--duration", "60s"});
  ASSERT_TRUE(linkem.WaitReady()) << linkem.err();

  auto rtts = Ping(a, kAddrB, 5);
  ASSERT_GE(rtts.size(), 3u);  // 1% loss each way may cost a reply
  for (double r : rtts) {
    EXPECT_GE(r, 19.5);
    EXPECT_LT(r, 25);
  }

  constexpr uint64_t kBytes = 4'000'000;
  Transfer t = TcpBulk(a, b, 20.0, kBytes);
  ASSERT_EQ(t.error, "");
  EXPECT_EQ(t.bytes, kBytes);
  std::printf("tcp with 1%% loss: %.1f MB in %.2f s\n", t.bytes / 1e6, t.seconds);

  linkem.Signal(SIGTERM);
  ASSERT_TRUE(linkem.WaitExit(5s));
  EXPECT_EQ(linkem.exit_code(), 0) << linkem.err();
  EXPECT_FALSE(NamespaceListed(a));
  EXPECT_FALSE(NamespaceListed(b));
  auto stats = linkem.Stats();
  ASSERT_TRUE(stats.is_object());
  EXPECT_EQ(stats["linkem"]["stop"], "signal");
  for (const char* dir : {"a_to_b", "b_to_a"}) {
    const auto& d = stats["linkem"][dir];
    uint64_t accounted = d["tx_packets"].get<uint64_t>() + d["drop_loss"].get<uint64_t>() +
                         d["drop_queue"].get<uint64_t>() + d["drop_overflow"].get<uint64_t>() +
                         d["tx_errors"].get<uint64_t>() + d["in_flight_at_exit"].get<uint64_t>();
    EXPECT_EQ(d["rx_packets"].get<uint64_t>(), accounted) << dir;
  }
  const auto& ab = stats["linkem"]["a_to_b"];
  double lost = double(ab["drop_loss"].get<uint64_t>()) / ab["rx_packets"].get<uint64_t>();
  EXPECT_NEAR(lost, 0.01, 0.006);
}

// Reads the ready file's JSON (an empty object while it is missing or being replaced).
nlohmann::json ReadyJson(const Linkem& linkem) {
  auto j = nlohmann::json::parse(ReadFile(linkem.ready_file()), nullptr, false);
  return j.is_object() ? j : nlohmann::json::object();
}

// Waits up to 5 s for the ready file's `key` to reach `value`.
bool WaitReadyCount(const Linkem& linkem, const char* key, uint64_t value) {
  auto start = Clock::now();
  while (SecondsSince(start) < 5) {
    if (ReadyJson(linkem).value(key, uint64_t{0}) == value) return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

double AverageMs(const std::vector<double>& v) {
  double sum = 0;
  for (double x : v) sum += x;
  return v.empty() ? 0 : sum / v.size();
}

// --link-file: SIGHUP re-reads the link settings while traffic flows; a bad file is refused
// and the link keeps its settings; an empty file returns to the command line's link.
TEST_F(LinkemIntegrationTest, LinkFileReloadsChangeTheRunningLink) {
  std::string a = NsName("hup", 'a'), b = NsName("hup", 'b');
  Linkem linkem(a, b);
  linkem.Own(a);
  linkem.Own(b);
  std::string file = linkem.ready_file() + ".link";
  auto write = [&](const std::string& text) {
    std::ofstream(file + ".tmp") << text;
    ASSERT_EQ(std::rename((file + ".tmp").c_str(), file.c_str()), 0);
  };
  write("# nothing yet\n");
  linkem.Start({"--delay", "1ms", "--link-file", file, "--duration", "60s"});
  ASSERT_TRUE(linkem.WaitReady()) << linkem.err();
  EXPECT_EQ(ReadyJson(linkem).value("reloads", uint64_t{99}), 0u);
  double before = AverageMs(Ping(a, kAddrB, 3));
  EXPECT_GE(before, 1.9);
  EXPECT_LT(before, 8);

  write("--delay 20ms   # a WAN\n--jitter-ab=0\n");
  linkem.Signal(SIGHUP);
  ASSERT_TRUE(WaitReadyCount(linkem, "reloads", 1)) << linkem.err();
  double wan = AverageMs(Ping(a, kAddrB, 3));
  EXPECT_GE(wan, 39.9);
  EXPECT_LT(wan, 48);

  write("--delay 5ms --duration 1s\n");  // not a link setting: refused as a whole
  linkem.Signal(SIGHUP);
  ASSERT_TRUE(WaitReadyCount(linkem, "reload_errors", 1)) << linkem.err();
  EXPECT_NE(linkem.err().find("--duration"), std::string::npos) << linkem.err();
  EXPECT_GE(AverageMs(Ping(a, kAddrB, 3)), 39.9);

  write("");
  linkem.Signal(SIGHUP);
  ASSERT_TRUE(WaitReadyCount(linkem, "reloads", 2)) << linkem.err();
  double back = AverageMs(Ping(a, kAddrB, 3));
  EXPECT_GE(back, 1.9);
  EXPECT_LT(back, 8);

  linkem.Signal(SIGTERM);
  ASSERT_TRUE(linkem.WaitExit(5s));
  EXPECT_EQ(linkem.exit_code(), 0) << linkem.err();
  EXPECT_FALSE(NamespaceListed(a));
  EXPECT_FALSE(NamespaceListed(b));
  auto stats = linkem.Stats();
  ASSERT_TRUE(stats.is_object());
  EXPECT_EQ(stats["linkem"]["stop"], "signal");
  EXPECT_EQ(stats["linkem"]["reloads"], 2);
  EXPECT_EQ(stats["linkem"]["reload_errors"], 1);
}

// linkem refuses to take over a namespace it did not create (and leaves it alone), and with
// --use-existing-ns works in given namespaces without deleting them.
TEST_F(LinkemIntegrationTest, ExistingNamespacesAreNeverDeleted) {
  std::string a = NsName("own", 'a'), b = NsName("own", 'b');
  Linkem refused(a, b);
  refused.Own(a);
  refused.Own(b);
  ASSERT_EQ(Shell("ip netns add " + a), 0);
  refused.Start({"--duration", "5s"});
  ASSERT_TRUE(refused.WaitExit(5s));
  EXPECT_EQ(refused.exit_code(), 1);
  EXPECT_NE(refused.err().find("already exists"), std::string::npos) << refused.err();
  EXPECT_TRUE(NamespaceListed(a));
  EXPECT_FALSE(NamespaceListed(b));

  ASSERT_EQ(Shell("ip netns add " + b), 0);
  Linkem reused(a, b);
  reused.Start({"--use-existing-ns", "--duration", "1s"});
  ASSERT_TRUE(reused.WaitReady()) << reused.err();
  EXPECT_EQ(Ping(a, kAddrB, 1).size(), 1u);
  ASSERT_TRUE(reused.WaitExit(5s));
  EXPECT_EQ(reused.exit_code(), 0) << reused.err();
  EXPECT_TRUE(NamespaceListed(a));
  EXPECT_TRUE(NamespaceListed(b));
  // The TUN devices went away with linkem.
  EXPECT_NE(Shell("ip -n " + a + " link show linkem0"), 0);
}

// A failure half-way through setup (here: `ip addr add`, refused by a wrapper that shadows
// `ip` on PATH) still deletes both namespaces linkem had created.
TEST_F(LinkemIntegrationTest, SetupFailureDeletesTheNamespacesItCreated) {
  std::string a = NsName("fail", 'a'), b = NsName("fail", 'b');
  Linkem linkem(a, b);
  linkem.Own(a);
  linkem.Own(b);
  std::string bin = "/tmp/linkem_fake_ip_" + std::to_string(getpid());
  ASSERT_EQ(Shell("mkdir -p " + bin), 0);
  std::string real_ip = "/usr/sbin/ip";
  if (access(real_ip.c_str(), X_OK) != 0) real_ip = "/sbin/ip";
  {
    std::ofstream script(bin + "/ip");
    script << "#!/bin/sh\ncase \"$*\" in *\"addr add\"*) exit 1;; esac\nexec " << real_ip
           << " \"$@\"\n";
  }
  ASSERT_EQ(chmod((bin + "/ip").c_str(), 0755), 0);
  std::string path = getenv("PATH") ? getenv("PATH") : "/usr/sbin:/usr/bin:/sbin:/bin";
  setenv("PATH", (bin + ":" + path).c_str(), 1);
  linkem.Start({"--duration", "10s"});
  setenv("PATH", path.c_str(), 1);
  ASSERT_TRUE(linkem.WaitExit(5s));
  Shell("rm -rf " + bin);
  EXPECT_EQ(linkem.exit_code(), 1);
  EXPECT_NE(linkem.err().find("addr add"), std::string::npos) << linkem.err();
  EXPECT_FALSE(NamespaceListed(a));
  EXPECT_FALSE(NamespaceListed(b));
  auto stats = linkem.Stats();
  ASSERT_TRUE(stats.is_object());
  EXPECT_EQ(stats["linkem"]["stop"], "error");
}

// Sends `payload`-byte UDP datagrams from `ns_a` to kAddrB as fast as one thread can for
// `seconds`; returns how many the receiver in `ns_b` got.
uint64_t UdpFlood(const std::string& ns_a, const std::string& ns_b, size_t payload,
                  double seconds) {
  std::atomic<uint64_t> received{0};
  std::atomic<bool> done{false};
  std::promise<uint16_t> port_promise;
  auto port_future = port_promise.get_future();
  std::thread receiver([&] {
    int s = EnterNetns(ns_b) ? socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0) : -1;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    inet_pton(AF_INET, kAddrB, &addr.sin_addr);
    socklen_t len = sizeof addr;
    if (s < 0 || bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      return port_promise.set_value(0);
    }
    int rcvbuf = 8 << 20;
    setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf);
    timeval tv{0, 200'000};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    port_promise.set_value(ntohs(addr.sin_port));
    char buf[2048];
    while (true) {
      ssize_t n = recv(s, buf, sizeof buf, 0);
      if (n > 0) {
        ++received;
      } else if (done) {
        break;
      }
    }
    close(s);
  });
  uint16_t port = port_future.get();
  std::thread sender([&] {
    if (port == 0 || !EnterNetns(ns_a)) return;
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    inet_pton(AF_INET, kAddrB, &addr.sin_addr);
    std::vector<char> buf(payload, 'x');
    auto start = Clock::now();
    while (SecondsSince(start) < seconds) {
      for (int i = 0; i < 256; ++i) {
        sendto(s, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
      }
    }
    close(s);
  });
  sender.join();
  done = true;
  receiver.join();
  return received;
}

// Not a correctness test: the forwarding ceiling with no emulation, reported in
// docs/linkem.md. Run with --gtest_also_run_disabled_tests.
TEST_F(LinkemIntegrationTest, DISABLED_ThroughputCeiling) {
  std::string a = NsName("ceil", 'a'), b = NsName("ceil", 'b');
  Linkem linkem(a, b);
  linkem.Own(a);
  linkem.Own(b);
  linkem.Start({"--duration", "60s"});
  ASSERT_TRUE(linkem.WaitReady()) << linkem.err();
  Transfer t = TcpBulk(a, b, 6.0, UINT64_MAX);
  ASSERT_EQ(t.error, "");
  std::printf("unlimited tcp: %.1f MB in %.2f s: %.0f Mbit/s, %.0f data packets/s\n", t.bytes / 1e6,
              t.seconds, t.mbit_s(), t.bytes / 1448.0 / t.seconds);
  for (size_t payload : {64, 1472}) {
    constexpr double kSeconds = 3;
    uint64_t got = UdpFlood(a, b, payload, kSeconds);
    std::printf("udp flood, %zu-byte datagrams: %.0f packets/s received (%.0f Mbit/s of IP)\n",
                payload, got / kSeconds, got * (payload + 28) * 8 / kSeconds / 1e6);
  }
  linkem.Signal(SIGTERM);
  ASSERT_TRUE(linkem.WaitExit(5s));
  std::printf("%s\n", linkem.Stats().dump().c_str());
}

}  // namespace
