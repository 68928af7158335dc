// Live migrations across an emulated WAN. tools/linkem joins two network namespaces made for
// each test (named after the test process's pid) through TUN devices with a 25 ms one-way
// delay; one dwcpd runs in each namespace (`ip netns exec`), both on one SQLite store file,
// so every byte from one node to the other crosses the emulated link and real TCP sees a
// 50 ms RTT. Needs root (namespaces, TUN devices): skipped otherwise, and failing (not
// skipped) wherever root is there but something else is missing.
//
// Management traffic: a node's API listens on its linkem address, the address it
// advertises (so node-to-node API calls cross the WAN, as in a real deployment). The test
// talks to a node from a short-lived thread that has joined that node's namespace (setns),
// where the node's address is local: the test's requests and polling never cross the
// emulated link, and nothing is added to the root namespace (no veth, no addresses, no
// routes) that a crashed test could leave behind. The namespaces themselves are deleted by
// linkem on every exit path, by the test's destructors when linkem could not, and — because
// linkem gets SIGTERM when the test process dies (PR_SET_PDEATHSIG) — even after a crash.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/cluster.h"

namespace dwcp::testing {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr char kAddrA[] = "10.250.0.1";
constexpr char kAddrB[] = "10.250.0.2";
// Each node has a network namespace of its own, so the default ports cannot collide.
constexpr uint16_t kApiPort = 8080;
constexpr uint16_t kDataPort = 7070;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int Shell(const std::string& command) {
  return std::system((command + " >/dev/null 2>&1").c_str());
}

bool NamespaceListed(const std::string& name) {
  FILE* p = popen("ip netns list 2>/dev/null", "r");
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

// Joins the calling thread to a named network namespace.
bool EnterNetns(const std::string& ns) {
  int fd = open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = setns(fd, CLONE_NEWNET) == 0;
  close(fd);
  return ok;
}

// One HTTP request to `host`:kApiPort made from inside namespace `ns`. Status 0 when it
// could not be sent.
HttpReply NsHttp(const std::string& ns, const std::string& host, const std::string& method,
                 const std::string& path, const json& body = nullptr) {
  HttpReply out;
  std::thread t([&] {
    if (!EnterNetns(ns)) return;
    httplib::Client c(host, kApiPort);
    c.set_connection_timeout(2);
    c.set_read_timeout(120);
    auto r = method == "GET" ? c.Get(path) : c.Post(path, body.dump(), "application/json");
    if (!r) return;
    out.status = r->status;
    out.text = r->body;
    out.body = json::parse(r->body, nullptr, false);
  });
  t.join();
  return out;
}

// Milliseconds a TCP connect from namespace `ns` to `host`:`port` takes to be answered
// (accepted or refused): one round trip of the link. -1 if no answer came within 2 s.
double ConnectRoundTripMs(const std::string& ns, const std::string& host, uint16_t port) {
  double ms = -1;
  std::thread t([&] {
    if (!EnterNetns(ns)) return;
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval tv{2, 0};
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
    auto start = Clock::now();
    int rc = connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    if (rc == 0 || errno == ECONNREFUSED) ms = SecondsSince(start) * 1e3;
    close(s);
  });
  t.join();
  return ms;
}

// Median of `n` ConnectRoundTripMs samples.
double MedianRoundTripMs(const std::string& ns, const std::string& host, int n = 5) {
  std::vector<double> v;
  for (int i = 0; i < n; ++i) v.push_back(ConnectRoundTripMs(ns, host, 9));  // nobody listens
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Forks a child that dies with this process (`death_signal` when the parent exits), with
// stdout and stderr to `out` and `err`, and execs `args` (searched on PATH).
pid_t Spawn(const std::vector<std::string>& args, const std::string& out, const std::string& err,
            int death_signal) {
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, death_signal);
    if (getppid() != parent) _exit(127);  // the parent died before prctl
    int o = open(out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    int e = err == out ? o : open(err.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(o, 1);
    dup2(e, 2);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execvp(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

// Sends `sig`, waits up to `timeout` for the exit, then SIGKILLs. Returns the wait status.
int StopProcess(pid_t pid, int sig, std::chrono::milliseconds timeout) {
  int status = -1;
  kill(pid, sig);
  auto start = Clock::now();
  while (Clock::now() - start < timeout) {
    if (waitpid(pid, &status, WNOHANG) == pid) return status;
    std::this_thread::sleep_for(10ms);
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return status;
}

struct WanNode {
  std::string id, ns, addr;
  pid_t pid = -1;
  std::string log;
};

// Two namespaces joined by linkem, and a dwcpd in each: node "wan-a" at kAddrA in the first,
// "wan-b" at kAddrB in the second. The link's settings come from a --link-file that Relink()
// rewrites while everything runs. The destructor kills the nodes, stops linkem, deletes the
// namespaces if linkem could not, and removes the temp directory (kept with
// DWCP_KEEP_TEST_DIR).
class WanTestbed {
 public:
  explicit WanTestbed(const std::string& name) {
    std::string base = "dwcpw-" + std::to_string(getpid()) + "-" + name;
    ns_a_ = base + "-a";
    ns_b_ = base + "-b";
    char tmpl[] = "/tmp/dwcp-wan-XXXXXX";
    dir_ = mkdtemp(tmpl);
  }

  ~WanTestbed() {
    for (auto* n : {&a_, &b_}) {
      if (n->pid > 0) StopProcess(n->pid, SIGKILL, 0ms);
    }
    StopLink();
    for (const auto& ns : {ns_a_, ns_b_}) {
      if (NamespaceListed(ns)) Shell("ip netns del " + ns);
    }
    if (std::getenv("DWCP_KEEP_TEST_DIR") == nullptr) std::filesystem::remove_all(dir_);
  }

  // Starts linkem with `link` (its link settings, e.g. {"--delay", "25ms"}) and waits until
  // both namespaces are up; raises their TCP buffer limits so one flow can fill a 50 ms
  // path (docs/linkem.md).
  void StartLink(const std::vector<std::string>& link) {
    WriteLinkFile("");
    std::vector<std::string> args = {LINKEM_BINARY,
                                     "--ns-a",
                                     ns_a_,
                                     "--ns-b",
                                     ns_b_,
                                     "--addr-a",
                                     std::string(kAddrA) + "/24",
                                     "--addr-b",
                                     std::string(kAddrB) + "/24",
                                     "--link-file",
                                     link_file(),
                                     "--duration",
                                     "20m",
                                     "--ready-file",
                                     ready_file()};
    args.insert(args.end(), link.begin(), link.end());
    linkem_pid_ = Spawn(args, dir_ + "/linkem.out", dir_ + "/linkem.err", SIGTERM);
    auto start = Clock::now();
    struct stat st;
    while (stat(ready_file().c_str(), &st) != 0) {
      int status;
      if (waitpid(linkem_pid_, &status, WNOHANG) == linkem_pid_) {
        linkem_pid_ = -1;
        FAIL() << "linkem exited during setup: " << ReadFile(dir_ + "/linkem.err");
      }
      ASSERT_LT(SecondsSince(start), 15) << "linkem not ready: " << ReadFile(dir_ + "/linkem.err");
      std::this_thread::sleep_for(10ms);
    }
    for (const auto& ns : {ns_a_, ns_b_}) {
      ASSERT_EQ(Shell("ip netns exec " + ns +
                      " sysctl -qw net.ipv4.tcp_wmem='4096 16384 67108864'"
                      " net.ipv4.tcp_rmem='4096 131072 67108864'"),
                0);
    }
  }

  // Replaces the link's settings with `settings` (link flags as on linkem's command line, on
  // top of StartLink's) and waits until linkem has applied them.
  void Relink(const std::string& settings) {
    ASSERT_GT(linkem_pid_, 0);
    WriteLinkFile(settings);
    kill(linkem_pid_, SIGHUP);
    ++reloads_;
    auto start = Clock::now();
    while (true) {
      auto ready = json::parse(ReadFile(ready_file()), nullptr, false);
      if (ready.is_object() && ready.value("reloads", uint64_t{0}) == reloads_) break;
      ASSERT_EQ(ready.is_object() ? ready.value("reload_errors", uint64_t{0}) : 0u, 0u)
          << ReadFile(dir_ + "/linkem.err");
      ASSERT_LT(SecondsSince(start), 5)
          << "linkem did not reload: " << ReadFile(dir_ + "/linkem.err");
      std::this_thread::sleep_for(10ms);
    }
  }

  // SIGTERM to linkem; returns its JSON stats line (null if it was not running).
  json StopLink() {
    if (linkem_pid_ <= 0) return nullptr;
    StopProcess(linkem_pid_, SIGTERM, 10s);
    linkem_pid_ = -1;
    return json::parse(ReadFile(dir_ + "/linkem.out"), nullptr, false);
  }

  // Starts wan-a and wan-b and waits until both answer /readyz.
  void StartNodes(const std::vector<std::string>& extra = {}) {
    a_.id = "wan-a";
    a_.ns = ns_a_;
    a_.addr = kAddrA;
    b_.id = "wan-b";
    b_.ns = ns_b_;
    b_.addr = kAddrB;
    for (WanNode* n : {&a_, &b_}) {
      n->log = dir_ + "/" + n->id + ".log";
      std::vector<std::string> args = {"ip",
                                       "netns",
                                       "exec",
                                       n->ns,
                                       DWCPD_BINARY,
                                       "--node-id",
                                       n->id,
                                       "--api-listen",
                                       n->addr + ":" + std::to_string(kApiPort),
                                       "--data-listen",
                                       n->addr + ":" + std::to_string(kDataPort),
                                       "--data-dir",
                                       dir_ + "/" + n->id,
                                       "--store",
                                       dir_ + "/state.db",
                                       "--pprof-listen",
                                       "127.0.0.1:0",
                                       "--io-threads",
                                       "2",
                                       "--tracing",
                                       "false",
                                       "--tls",
                                       "false"};
      args.insert(args.end(), extra.begin(), extra.end());
      n->pid = Spawn(args, n->log, n->log, SIGKILL);
    }
    for (WanNode* n : {&a_, &b_}) {
      auto start = Clock::now();
      while (Get(*n, "/readyz").status != 200) {
        int status;
        if (waitpid(n->pid, &status, WNOHANG) == n->pid) {
          n->pid = -1;
          FAIL() << n->id << " exited at start: " << ReadFile(n->log);
        }
        ASSERT_LT(SecondsSince(start), 20) << n->id << " not ready: " << ReadFile(n->log);
        std::this_thread::sleep_for(50ms);
      }
    }
  }

  HttpReply Get(const WanNode& n, const std::string& path) {
    return NsHttp(n.ns, n.addr, "GET", path);
  }
  HttpReply Post(const WanNode& n, const std::string& path, const json& body) {
    return NsHttp(n.ns, n.addr, "POST", path, body);
  }
  // The value of a metric on `n` summed over the series matching `labels`; 0 if none.
  double Metric(const WanNode& n, const std::string& name, const std::string& labels = "") {
    double v = MetricValue(Get(n, "/metrics").text, name, labels);
    return std::isnan(v) ? 0 : v;
  }

  // Polls the migration until it has a result; returns the final record.
  json WaitForMigration(const WanNode& via, const std::string& id, int timeout_s = 240) {
    auto start = Clock::now();
    json last;
    while (SecondsSince(start) < timeout_s) {
      auto r = Get(via, "/api/v1/migrations/" + id);
      if (r.status == 200) {
        last = r.body;
        if (!last.value("result", "").empty()) return last;
      }
      std::this_thread::sleep_for(100ms);
    }
    ADD_FAILURE() << "migration " << id << " did not finish; last: " << last.dump();
    return last;
  }

  // Migrates `vm` from `from` to `to` with `protocol` and returns the final record.
  json Migrate(const WanNode& from, const WanNode& to, const std::string& vm,
               const std::string& protocol) {
    auto r = Post(from, "/api/v1/migrations", {{"vm", vm}, {"to", to.id}, {"protocol", protocol}});
    EXPECT_EQ(r.status, 202) << r.text;
    if (r.status != 202) return json::object();
    return WaitForMigration(from, r.body["id"]);
  }

  // The JSON log lines of `n` whose message is `message`.
  std::vector<json> LogLines(const WanNode& n, const std::string& message) {
    std::vector<json> out;
    std::istringstream in(ReadFile(n.log));
    for (std::string line; std::getline(in, line);) {
      auto j = json::parse(line, nullptr, false);
      if (j.is_object() && j.value("message", "") == message) out.push_back(j);
    }
    return out;
  }

  const WanNode& a() const { return a_; }
  const WanNode& b() const { return b_; }
  const std::string& ns_a() const { return ns_a_; }

 private:
  std::string link_file() const { return dir_ + "/link"; }
  std::string ready_file() const { return dir_ + "/linkem.ready"; }
  void WriteLinkFile(const std::string& text) {
    std::ofstream(link_file() + ".tmp") << text << "\n";
    std::rename((link_file() + ".tmp").c_str(), link_file().c_str());
  }

  std::string ns_a_, ns_b_, dir_;
  pid_t linkem_pid_ = -1;
  uint64_t reloads_ = 0;
  WanNode a_, b_;
};

class WanMigrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) {
      GTEST_SKIP() << "WAN migration tests need root: they create network namespaces and TUN "
                      "devices through tools/linkem (CI runs them as root)";
    }
  }
};

json CreateVm(WanTestbed& wan, const WanNode& on, const std::string& id, const std::string& memory,
              const std::string& dirty_rate) {
  auto r = wan.Post(on, "/api/v1/vms",
                    {{"id", id}, {"node", on.id}, {"memory", memory}, {"dirty_rate", dirty_rate}});
  EXPECT_EQ(r.status, 201) << r.text;
  return r.body;
}

// The VM runs on `owner` only, at `epoch`, as both nodes see it.
void ExpectRunsOnlyOn(WanTestbed& wan, const std::string& vm, const WanNode& owner,
                      const WanNode& other, int epoch) {
  json on_owner = wan.Get(owner, "/api/v1/vms/" + vm).body;
  json on_other = wan.Get(other, "/api/v1/vms/" + vm).body;
  EXPECT_EQ(on_owner["node"], owner.id) << on_owner.dump();
  EXPECT_EQ(on_owner["state"], "running");
  EXPECT_EQ(on_owner["epoch"], epoch);
  EXPECT_TRUE(on_owner["runs_here"].get<bool>());
  EXPECT_EQ(on_other["node"], owner.id) << on_other.dump();
  EXPECT_FALSE(on_other["runs_here"].get<bool>());
}

void ExpectVerified(const json& m, const std::string& protocol) {
  ASSERT_TRUE(m.is_object()) << m.dump();
  EXPECT_EQ(m.value("result", ""), "success") << m.dump();
  EXPECT_EQ(m.value("phase", ""), "completed");
  EXPECT_EQ(m.value("protocol", ""), protocol);
  EXPECT_EQ(m.value("source_digest", "").size(), 32u) << m.dump();
  EXPECT_EQ(m.value("source_digest", ""), m.value("dest_digest", "-"));
}

// Mode of the (only) peer link of `n` as dwcp_v3_amst_links{mode} shows it; "" unless
// exactly one link is counted.
std::string PeerMode(WanTestbed& wan, const WanNode& n) {
  std::string mode;
  int links = 0;
  for (const char* m : {"datacenter", "hybrid", "internet"}) {
    double v = wan.Metric(n, "dwcp_v3_amst_links", std::string("mode=\"") + m + "\"");
    links += static_cast<int>(v);
    if (v == 1) mode = m;
  }
  return links == 1 ? mode : "";
}

// A 256 MiB guest that keeps dirtying memory moves over a 50 ms RTT link with v3, and back
// with v1; each time the digests match, the guest runs on the destination only, the bytes
// crossed linkem, and the source's link to its peer is detected as `internet`.
TEST_F(WanMigrationTest, MigratesADirtyingVmOverA50msRttLinkWithV3AndV1) {
  WanTestbed wan("rtt");
  ASSERT_NO_FATAL_FAILURE(wan.StartLink({"--delay", "25ms"}));
  double rtt = MedianRoundTripMs(wan.ns_a(), kAddrB);
  EXPECT_GE(rtt, 49.5);
  EXPECT_LT(rtt, 60);
  ASSERT_NO_FATAL_FAILURE(wan.StartNodes());
  const WanNode &a = wan.a(), &b = wan.b();
  CreateVm(wan, a, "vm-wan", "256MiB", "20MB/s");
  std::this_thread::sleep_for(300ms);  // some dirtying before pre-copy starts

  json v3 = wan.Migrate(a, b, "vm-wan", "v3");
  ExpectVerified(v3, "v3");
  EXPECT_EQ(v3["source"], "wan-a");
  EXPECT_EQ(v3["destination"], "wan-b");
  EXPECT_GE(v3["bytes_transferred"].get<uint64_t>(), 256ull << 20);
  // At least the TCP handshake, the hello and the final resume crossed the 50 ms link.
  EXPECT_GE(v3["total_ms"].get<double>(), 150) << v3.dump();
  ExpectRunsOnlyOn(wan, "vm-wan", b, a, 2);
  EXPECT_EQ(wan.Metric(a, "dwcp_v3_vms_running"), 0);
  EXPECT_EQ(wan.Metric(b, "dwcp_v3_vms_running"), 1);

  // The source measured its link to wan-b: internet, from the first measurement on.
  EXPECT_EQ(PeerMode(wan, a), "internet");
  EXPECT_EQ(wan.Metric(a, "dwcp_v3_amst_mode_switches_total", "mode=\"internet\""), 1);
  auto changes = wan.LogLines(a, "link mode changed");
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].value("peer", ""), "wan-b");
  EXPECT_EQ(changes[0].value("to", ""), "internet");
  EXPECT_GT(changes[0].value("rtt_ms", 0.0), 30);

  json v1 = wan.Migrate(b, a, "vm-wan", "v1");
  ExpectVerified(v1, "v1");
  EXPECT_GT(v1["network_bytes"].get<uint64_t>(), v1["bytes_transferred"].get<uint64_t>());
  ExpectRunsOnlyOn(wan, "vm-wan", a, b, 3);
  EXPECT_EQ(PeerMode(wan, b), "internet");
  EXPECT_EQ(wan.Metric(a, "dwcp_v3_errors_total"), 0);
  EXPECT_EQ(wan.Metric(b, "dwcp_v3_errors_total"), 0);

  // Every wire byte of both migrations went through the emulated link, none was lost.
  json stats = wan.StopLink();
  ASSERT_TRUE(stats.is_object()) << "no linkem stats";
  const json& ab = stats["linkem"]["a_to_b"];
  const json& ba = stats["linkem"]["b_to_a"];
  EXPECT_GE(ab["tx_bytes"].get<uint64_t>(), v3["network_bytes"].get<uint64_t>());
  EXPECT_GE(ba["tx_bytes"].get<uint64_t>(), v1["network_bytes"].get<uint64_t>());
  for (const json* d : {&ab, &ba}) {
    EXPECT_EQ((*d)["drop_loss"], 0);
    EXPECT_EQ((*d)["drop_overflow"], 0);
    EXPECT_EQ((*d)["tx_errors"], 0);
  }
}

// One live link goes from a LAN (no added delay) to a 50 ms RTT WAN while the nodes keep
// running: migrations over it make the source switch its peer's mode to `internet`, and the
// switch is logged and counted (docs/amst.md).
TEST_F(WanMigrationTest, LinkModeSwitchesWhenTheLinkBecomesAWan) {
  WanTestbed wan("mode");
  ASSERT_NO_FATAL_FAILURE(wan.StartLink({}));
  EXPECT_LT(MedianRoundTripMs(wan.ns_a(), kAddrB), 5);
  ASSERT_NO_FATAL_FAILURE(wan.StartNodes());
  const WanNode &a = wan.a(), &b = wan.b();
  const std::vector<std::string> vms = {"vm-1", "vm-2", "vm-3"};
  for (const auto& vm : vms) CreateVm(wan, a, vm, "32MiB", "5MB/s");
  auto internet_switches = [&] {
    return wan.Metric(a, "dwcp_v3_amst_mode_switches_total", "mode=\"internet\"");
  };

  // LAN: the first measurement (the handshake's sub-millisecond round trip) decides at once.
  ExpectVerified(wan.Migrate(a, b, "vm-1", "v3"), "v3");
  std::string lan_mode = PeerMode(wan, a);
  EXPECT_TRUE(lan_mode == "datacenter" || lan_mode == "hybrid") << lan_mode;
  EXPECT_EQ(internet_switches(), 0);

  // WAN: each migration adds the handshake's RTT and one TCP_INFO sample per round, all
  // above 30 ms now; the third consecutive one at the latest switches the mode.
  ASSERT_NO_FATAL_FAILURE(wan.Relink("--delay 25ms"));
  EXPECT_GE(MedianRoundTripMs(wan.ns_a(), kAddrB), 49.5);
  for (const char* vm : {"vm-2", "vm-3"}) ExpectVerified(wan.Migrate(a, b, vm, "v3"), "v3");
  EXPECT_EQ(PeerMode(wan, a), "internet");
  EXPECT_EQ(internet_switches(), 1);
  std::vector<json> to_internet;
  for (const auto& line : wan.LogLines(a, "link mode changed")) {
    if (line.value("to", "") == "internet") to_internet.push_back(line);
  }
  ASSERT_EQ(to_internet.size(), 1u) << "expected one \"link mode changed\" line to internet";
  EXPECT_EQ(to_internet[0].value("peer", ""), "wan-b");
  EXPECT_EQ(to_internet[0].value("from", ""), lan_mode);
  EXPECT_GT(to_internet[0].value("rtt_ms", 0.0), 30);
  for (const auto& vm : vms) ExpectRunsOnlyOn(wan, vm, b, a, 2);
  EXPECT_EQ(wan.Metric(a, "dwcp_v3_errors_total"), 0);
  EXPECT_EQ(wan.Metric(b, "dwcp_v3_errors_total"), 0);
}

}  // namespace
}  // namespace dwcp::testing
