#include "cli/demo.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "cli/api_client.h"
#include "cli/console.h"
#include "cli/demo_stack.h"
#include "cli/format.h"
#include "common/units.h"

namespace dwcp::cli {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
using SteadyClock = std::chrono::steady_clock;

constexpr auto kReadyTimeout = seconds(20);
constexpr auto kStackReadyTimeout = seconds(60);
constexpr int kDemoPrometheusPort = 9090;
constexpr int kDemoAlertmanagerPort = 9093;
constexpr auto kStopWaitForMigration = seconds(30);
constexpr auto kNodeStopTimeout = seconds(10);
constexpr auto kPollInterval = milliseconds(200);
constexpr auto kGiveUpAfterErrors = seconds(30);
constexpr int kLogTailLines = 20;
constexpr int kMaxRejectedInARow = 5;

volatile std::sig_atomic_t g_stop_signals = 0;

void OnStopSignal(int) { g_stop_signals = g_stop_signals + 1; }

bool IsExecutableFile(const std::string& path) {
  struct stat st {};
  return !path.empty() && stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
         access(path.c_str(), X_OK) == 0;
}

// Binds a TCP socket to 127.0.0.1:port; returns the bound port or 0.
int BindLoopback(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  int bound = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 && listen(fd, 1) == 0) {
    socklen_t len = sizeof addr;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
      bound = ntohs(addr.sin_port);
  }
  close(fd);
  return bound;
}

// Picks a port for one listener: `preferred` when free and unused, else a kernel-picked one.
Result<int> PickPort(int preferred, PortProber& ports, std::set<int>* used) {
  if (!used->contains(preferred) && ports.IsFree(preferred)) {
    used->insert(preferred);
    return preferred;
  }
  for (int attempt = 0; attempt < 32; ++attempt) {
    int port = ports.AnyFreePort();
    if (port > 0 && !used->contains(port)) {
      used->insert(port);
      return port;
    }
  }
  return Status(Unavailable("no free TCP port on 127.0.0.1 (port " + std::to_string(preferred) +
                            " is taken)"));
}

// Starts `args` (argv[0] is the binary) in its own process group with stdin from /dev/null
// and stdout+stderr to `log_path`. The child gets SIGTERM when this process dies.
Result<pid_t> SpawnNode(const std::vector<std::string>& args, const std::string& log_path) {
  int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    return Status(Unavailable("cannot open " + log_path + ": " + std::strerror(errno)));
  }
  int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const std::string exec_failed = "dwcp demo: cannot execute " + args[0] + "\n";
  // The demo's nodes take no API token from the operator's environment: the demo's own calls
  // carry none.
  std::vector<char*> envp;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::strncmp(*e, "DWCP_API_TOKEN=", 15) != 0) envp.push_back(*e);
  }
  envp.push_back(nullptr);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    // Child: only async-signal-safe calls until execv.
    setpgid(0, 0);  // Ctrl-C in the terminal reaches dwcp only; it stops the nodes in order
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    if (null_fd >= 0) dup2(null_fd, STDIN_FILENO);
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    execve(argv[0], argv.data(), envp.data());
    [[maybe_unused]] ssize_t n = write(STDERR_FILENO, exec_failed.data(), exec_failed.size());
    _exit(127);
  }
  int fork_errno = errno;
  close(log_fd);
  if (null_fd >= 0) close(null_fd);
  if (pid < 0) return Status(Unavailable(std::string("fork failed: ") + std::strerror(fork_errno)));
  return pid;
}

class DemoRunner {
 public:
  explicit DemoRunner(const DemoOptions& options)
      : options_(options), console_(options.json), rng_(std::random_device{}()) {}

  int Run();

 private:
  struct Child {
    DemoNode node;
    pid_t pid = -1;
    bool alive = false;
  };
  enum class Ready { kReady, kFailed, kStopped };

  // A server of the --stack (Prometheus, Alertmanager).
  struct StackServer {
    std::string name;
    std::string url;
    std::string log_path;
    pid_t pid = -1;
    bool alive = false;
  };

  bool stop_requested() const { return g_stop_signals > 0; }
  Ready StartNode(Child& child);
  // The webhook secret the nodes and Alertmanager share; false (reported) on failure.
  bool WriteRollbackToken();
  // Starts Prometheus and Alertmanager; false (reported) when they cannot run.
  bool StartStack(std::set<int>* used_ports);
  void StopStack();
  void PrintBanner(const std::string& dwcpd);
  bool CreateVms();
  // Runs migrations until stopped or `count` is reached; false on a fatal problem.
  bool MigrationLoop();
  // Starts one migration and follows it to the end. Returns true when it was started;
  // `*ok` says whether it succeeded. False when the POST was rejected.
  bool MigrateOnce(const json& vm, bool* ok);
  // Follows a started migration until it ends (or we give up); prints its final line.
  bool Follow(MigrationInfo m);
  // "" when every node runs; else reports the dead node and returns its description.
  std::string CheckNodes();
  // Sleeps `d` unless a stop is requested or a node dies; false in that case.
  bool Pause(milliseconds d);
  void StopNodes();
  // Prints the last lines of a node's log on stderr.
  void ShowLog(const DemoNode& node);

  const DemoOptions& options_;
  Console console_;
  std::mt19937_64 rng_;
  std::vector<Child> children_;
  std::vector<StackServer> stack_;
  std::unique_ptr<ApiClient> api_;
  bool node_died_ = false;
};

int DemoRunner::Run() {
  std::error_code self_ec;
  std::string self = std::filesystem::read_symlink("/proc/self/exe", self_ec).string();
  const char* path_env = std::getenv("PATH");
  Result<std::string> dwcpd = FindDwcpd(options_.dwcpd, self, path_env ? path_env : "");
  if (!dwcpd.ok()) {
    console_.Error("dwcp demo: " + dwcpd.status().message());
    return 1;
  }
  std::error_code ec;
  std::filesystem::create_directories(options_.data_dir, ec);
  if (ec) {
    console_.Error("dwcp demo: cannot create " + options_.data_dir + ": " + ec.message());
    return 1;
  }
  LoopbackPortProber ports;
  Result<std::vector<DemoNode>> plan = PlanDemoNodes(options_.nodes, options_.data_dir, ports);
  if (!plan.ok()) {
    console_.Error("dwcp demo: " + plan.status().message());
    return 1;
  }
  for (DemoNode& node : *plan) children_.push_back(Child{node, -1, false});
  if (!WriteRollbackToken()) return 1;
  console_.Info("dwcp demo: starting " + std::to_string(children_.size()) +
                " dwcpd nodes on 127.0.0.1" +
                (options_.stack ? ", then Prometheus and Alertmanager" : "") + "...");

  g_stop_signals = 0;
  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  struct sigaction old_int = {};
  struct sigaction old_term = {};
  sigaction(SIGINT, &action, &old_int);
  sigaction(SIGTERM, &action, &old_term);

  int exit_code = 0;
  for (Child& child : children_) {
    std::filesystem::create_directories(child.node.data_dir, ec);
    if (ec) {
      console_.Error("dwcp demo: cannot create " + child.node.data_dir + ": " + ec.message());
      exit_code = 1;
      break;
    }
    Result<pid_t> pid =
        SpawnNode(DwcpdArgs(*dwcpd, child.node, options_.data_dir), child.node.log_path);
    if (!pid.ok()) {
      console_.Error("dwcp demo: cannot start " + child.node.id + ": " + pid.status().message());
      exit_code = 1;
      break;
    }
    child.pid = *pid;
    child.alive = true;
    Ready ready = StartNode(child);
    if (ready != Ready::kReady) {
      exit_code = ready == Ready::kFailed ? 1 : 0;
      break;
    }
  }
  bool all_started = exit_code == 0 && !stop_requested();
  if (all_started && options_.stack) {
    std::set<int> used;
    for (const Child& c : children_)
      used.insert({c.node.api_port, c.node.data_port, c.node.pprof_port});
    if (!StartStack(&used)) {
      all_started = false;
      exit_code = 1;
    }
  }
  if (all_started) {
    PrintBanner(*dwcpd);
    api_ = std::make_unique<ApiClient>(children_.front().node.api_url());
    if (!CreateVms() || !MigrationLoop()) exit_code = 1;
  }
  StopNodes();
  StopStack();
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  return exit_code;
}

DemoRunner::Ready DemoRunner::StartNode(Child& child) {
  ApiClientOptions probe_options;
  probe_options.connect_timeout = milliseconds(1000);
  probe_options.read_timeout = milliseconds(2000);
  ApiClient probe(child.node.api_url(), probe_options);
  console_.Info("starting " + child.node.id + " (pid " + std::to_string(child.pid) + ", API " +
                child.node.api_url() + ", data 127.0.0.1:" + std::to_string(child.node.data_port) +
                ")");
  auto deadline = SteadyClock::now() + kReadyTimeout;
  std::string last_answer;  // the last non-ready /readyz answer; empty while nothing answers
  while (SteadyClock::now() < deadline) {
    if (stop_requested()) return Ready::kStopped;
    int status = 0;
    if (waitpid(child.pid, &status, WNOHANG) == child.pid) {
      child.alive = false;
      console_.Error("dwcp demo: " + child.node.id + " " + DescribeWaitStatus(status) +
                     " during startup");
      ShowLog(child.node);
      return Ready::kFailed;
    }
    Result<json> ready = probe.Get("/readyz");
    if (ready.ok()) return Ready::kReady;
    if (ready.status().code() != StatusCode::kUnavailable ||
        ready.status().message().rfind("cannot reach", 0) != 0) {
      last_answer = ready.status().message();
    }
    std::this_thread::sleep_for(milliseconds(100));
  }
  console_.Error("dwcp demo: " + child.node.id + " did not become ready within " +
                 std::to_string(kReadyTimeout.count()) + " s (" +
                 (last_answer.empty() ? "nothing answered on " + child.node.api_url()
                                      : "/readyz: " + last_answer) +
                 ")");
  ShowLog(child.node);
  return Ready::kFailed;
}

bool DemoRunner::WriteRollbackToken() {
  const std::string path = options_.data_dir + "/rollback-token";
  if (std::filesystem::exists(path)) return true;  // an earlier run's: the nodes still use it
  std::random_device random;
  std::string token;
  for (int i = 0; i < 4; ++i) token += fmt::format("{:08x}", random());
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  bool ok = fd >= 0 && write(fd, token.data(), token.size()) == static_cast<ssize_t>(token.size());
  if (fd >= 0) close(fd);
  if (!ok) console_.Error("dwcp demo: cannot write " + path + ": " + std::strerror(errno));
  return ok;
}

bool DemoRunner::StartStack(std::set<int>* used_ports) {
  const char* path_env = std::getenv("PATH");
  const std::string prometheus = FindOnPath("prometheus", path_env ? path_env : "");
  const std::string alertmanager = FindOnPath("prometheus-alertmanager", path_env ? path_env : "");
  if (prometheus.empty() || alertmanager.empty()) {
    console_.Error(std::string("dwcp demo: --stack needs ") +
                   (prometheus.empty() ? "prometheus" : "prometheus-alertmanager") +
                   " on $PATH (Debian packages prometheus and prometheus-alertmanager; "
                   "scripts/install-deps.sh installs them)");
    return false;
  }
  LoopbackPortProber ports;
  Result<int> prom_port = PickPort(kDemoPrometheusPort, ports, used_ports);
  Result<int> am_port = PickPort(kDemoAlertmanagerPort, ports, used_ports);
  if (!prom_port.ok() || !am_port.ok()) {
    console_.Error("dwcp demo: " + (prom_port.ok() ? am_port : prom_port).status().message());
    return false;
  }
  DemoStackPlan plan;
  plan.deploy_dir = options_.deploy_dir;
  plan.dir = options_.data_dir + "/stack";
  plan.prometheus_port = *prom_port;
  plan.alertmanager_port = *am_port;
  plan.rollback_token_file = options_.data_dir + "/rollback-token";
  std::vector<DemoNode> nodes;
  for (const Child& c : children_) nodes.push_back(c.node);
  if (Status st = WriteDemoStackConfig(plan, nodes); !st.ok()) {
    console_.Error("dwcp demo: " + st.message());
    return false;
  }
  const std::vector<std::pair<std::string, std::vector<std::string>>> servers = {
      {"alertmanager", AlertmanagerArgs(alertmanager, plan)},
      {"prometheus", PrometheusArgs(prometheus, plan)}};
  for (const auto& [name, args] : servers) {
    StackServer server;
    server.name = name;
    server.log_path = plan.dir + "/" + name + ".log";
    server.url =
        "http://127.0.0.1:" +
        std::to_string(name == "prometheus" ? plan.prometheus_port : plan.alertmanager_port);
    Result<pid_t> pid = SpawnNode(args, server.log_path);
    if (!pid.ok()) {
      console_.Error("dwcp demo: cannot start " + name + ": " + pid.status().message());
      return false;
    }
    server.pid = *pid;
    server.alive = true;
    stack_.push_back(server);
    console_.Info("starting " + name + " (pid " + std::to_string(server.pid) + ", " + server.url +
                  ", log " + server.log_path + ")");
  }
  // Both answer /-/ready with 200 once their configuration is loaded.
  auto deadline = SteadyClock::now() + kStackReadyTimeout;
  for (StackServer& server : stack_) {
    httplib::Client probe(server.url);
    probe.set_connection_timeout(0, 500'000);
    probe.set_read_timeout(2);
    while (true) {
      if (stop_requested()) return false;
      int status = 0;
      if (waitpid(server.pid, &status, WNOHANG) == server.pid) {
        server.alive = false;
        console_.Error("dwcp demo: " + server.name + " " + DescribeWaitStatus(status) +
                       "; last lines of " + server.log_path + ":\n" +
                       TailFile(server.log_path, kLogTailLines));
        return false;
      }
      if (auto ready = probe.Get("/-/ready"); ready && ready->status == 200) break;
      if (SteadyClock::now() > deadline) {
        console_.Error("dwcp demo: " + server.name + " did not become ready within " +
                       std::to_string(kStackReadyTimeout.count()) + " s; see " + server.log_path);
        return false;
      }
      std::this_thread::sleep_for(milliseconds(200));
    }
  }
  return true;
}

void DemoRunner::StopStack() {
  for (StackServer& server : stack_) {
    if (server.alive) kill(server.pid, SIGTERM);
  }
  for (StackServer& server : stack_) {
    if (!server.alive) continue;
    auto deadline = SteadyClock::now() + kNodeStopTimeout;
    int status = 0;
    while (waitpid(server.pid, &status, WNOHANG) == 0 && SteadyClock::now() < deadline) {
      std::this_thread::sleep_for(milliseconds(50));
    }
    if (kill(server.pid, 0) == 0) {
      kill(server.pid, SIGKILL);
      while (waitpid(server.pid, &status, 0) < 0 && errno == EINTR) {
      }
    }
    server.alive = false;
  }
}

void DemoRunner::PrintBanner(const std::string& dwcpd) {
  const DemoNode& first = children_.front().node;
  const std::string api = first.api_url();
  console_.Info("");
  console_.Info("DWCP v3 demo: " + std::to_string(children_.size()) +
                " dwcpd nodes on 127.0.0.1 live-migrating " + std::to_string(options_.vms) +
                " synthetic VMs (" + FormatBytes(options_.memory_bytes) +
                " each), v1 and v3 "
                "side by side; state and logs in " +
                options_.data_dir);
  console_.Info("");
  console_.Info("  Dashboard     " + api + "/");
  console_.Info("  Metrics       " + api + "/metrics   (JSON: " + api + "/metrics/summary)");
  console_.Info("  Profiles      http://127.0.0.1:" + std::to_string(first.pprof_port) +
                "/debug/pprof/   (google-pprof reads them)");
  if (stack_.empty()) {
    console_.Info(
        "  Prometheus    not started (make demo STACK=1 adds Prometheus and "
        "Alertmanager with the shipped rules)");
  } else {
    for (const char* name : {"prometheus", "alertmanager"}) {
      for (const StackServer& server : stack_) {
        if (server.name != name) continue;
        console_.Info(server.name == "prometheus"
                          ? "  Prometheus    " + server.url + "/alerts   (rules from " +
                                options_.deploy_dir + "/prometheus/rules)"
                          : "  Alertmanager  " + server.url + "/");
      }
    }
  }
  console_.Info("");
  std::vector<std::vector<std::string>> rows;
  for (const Child& c : children_) {
    rows.push_back({c.node.id, c.node.api_url(),
                    "http://127.0.0.1:" + std::to_string(c.node.pprof_port) + "/debug/pprof/",
                    c.node.log_path});
  }
  std::string table =
      RenderTable({"NODE", "API and /metrics", "PROFILES", "LOG (JSON lines)"}, rows);
  table.pop_back();
  console_.Info(table);
  std::string flag = api == kDefaultApiUrl ? "" : " --api " + api;
  const std::string& other = children_.size() > 1 ? children_[1].node.id : children_[0].node.id;
  // This dwcp as the user can type it from here (build/dwcp after `make demo`).
  std::error_code ec;
  std::string dwcp = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  std::string relative = std::filesystem::relative(dwcp, ec).string();
  if (!ec && !relative.empty() && relative.rfind("..", 0) != 0) dwcp = relative;
  if (ec || dwcp.empty()) dwcp = "dwcp";
  console_.Info("");
  console_.Info("Try, in another terminal:");
  console_.Info("  " + dwcp + " status" + flag);
  console_.Info("  " + dwcp + " vm create" + flag + " --vm vm-100 --node " + other +
                " --memory 512MiB --dirty-rate 20MB/s");
  console_.Info("  " + dwcp + " migrate" + flag + " --vm vm-100 --to " + children_[0].node.id);
  console_.Info("Ctrl-C stops the demo (dwcpd: " + dwcpd + ").");
  console_.Info("");
}

bool DemoRunner::CreateVms() {
  for (int i = 1; i <= options_.vms && !stop_requested(); ++i) {
    std::string id = "vm-" + std::to_string(i);
    const DemoNode& node = children_[(i - 1) % children_.size()].node;
    json body = {{"id", id},
                 {"node", node.id},
                 {"memory", options_.memory_bytes},
                 {"dirty_rate", options_.dirty_rate}};
    Result<json> vm = api_->Post("/api/v1/vms", body);
    if (vm.ok()) {
      console_.Info("created " + id + " on " + node.id + " (" +
                    FormatBytes(JsonUint(*vm, "memory_bytes", options_.memory_bytes)) +
                    ", dirtying " + FormatRate(JsonDouble(*vm, "dirty_rate")) + ")");
    } else if (vm.status().code() == StatusCode::kAlreadyExists) {
      console_.Info(id + " exists already (from an earlier run in " + options_.data_dir + ")");
    } else {
      std::string dead = CheckNodes();
      if (dead.empty())
        console_.Error("dwcp demo: cannot create " + id + ": " + vm.status().message());
      return false;
    }
  }
  return true;
}

bool DemoRunner::MigrationLoop() {
  int64_t done = 0;
  bool all_ok = true;
  int rejected_in_a_row = 0;
  auto last_progress = SteadyClock::now();  // last time a migration could be started
  bool said_waiting = false;
  while (!stop_requested() && (options_.count == 0 || done < options_.count)) {
    if (!CheckNodes().empty()) return false;
    Result<json> list = api_->Get("/api/v1/vms");
    std::vector<json> running;
    if (list.ok()) {
      const json& vms = (*list)["vms"];
      if (vms.is_array()) {
        for (const json& vm : vms) {
          if (JsonString(vm, "state") == "running") running.push_back(vm);
        }
      }
    } else if (!CheckNodes().empty()) {
      return false;
    }
    if (running.empty()) {
      if (SteadyClock::now() - last_progress > kGiveUpAfterErrors) {
        console_.Error("dwcp demo: no running VM to migrate for " +
                       std::to_string(kGiveUpAfterErrors.count()) + " s" +
                       (list.ok() ? "" : " (" + list.status().message() + ")") + "; stopping");
        return false;
      }
      if (!said_waiting) {
        console_.Info(list.ok() ? "waiting for a running VM..."
                                : "cannot list VMs: " + list.status().message());
        said_waiting = true;
      }
      if (!Pause(milliseconds(500))) break;
      continue;
    }
    said_waiting = false;
    std::uniform_int_distribution<size_t> pick_vm(0, running.size() - 1);
    bool ok = false;
    if (MigrateOnce(running[pick_vm(rng_)], &ok)) {
      ++done;
      all_ok = all_ok && ok;
      rejected_in_a_row = 0;
    } else if (++rejected_in_a_row >= kMaxRejectedInARow) {
      console_.Error("dwcp demo: " + std::to_string(kMaxRejectedInARow) +
                     " migrations in a row were rejected; stopping");
      return false;
    }
    if (node_died_) return false;
    last_progress = SteadyClock::now();
    if (options_.count > 0 && done >= options_.count) break;
    if (!Pause(milliseconds(options_.interval_ms))) break;
  }
  if (node_died_) return false;
  return options_.count == 0 || all_ok;
}

bool DemoRunner::MigrateOnce(const json& vm, bool* ok) {
  *ok = false;
  std::string vm_id = JsonString(vm, "id");
  std::string source = JsonString(vm, "node");
  std::vector<std::string> destinations;
  for (const Child& c : children_) {
    if (c.node.id != source) destinations.push_back(c.node.id);
  }
  if (destinations.empty()) return false;
  std::uniform_int_distribution<size_t> pick(0, destinations.size() - 1);
  std::string destination = destinations[pick(rng_)];
  json body = {{"vm", vm_id}, {"to", destination}};
  if (options_.bandwidth_limit > 0) body["bandwidth_limit"] = options_.bandwidth_limit;
  Result<json> started = api_->Post("/api/v1/migrations", body);
  if (!started.ok()) {
    if (CheckNodes().empty()) {
      console_.Info(vm_id + " " + FormatRoute(source, destination) +
                    "  not started: " + started.status().message());
    }
    return false;
  }
  MigrationInfo m = ParseMigration(*started);
  if (m.vm.empty()) m.vm = vm_id;
  if (m.source.empty()) m.source = source;
  if (m.destination.empty()) m.destination = destination;
  *ok = Follow(std::move(m));
  return true;
}

bool DemoRunner::Follow(MigrationInfo m) {
  ProgressTracker tracker;
  const std::string id = m.id;
  std::optional<SteadyClock::time_point> stop_deadline;
  auto last_ok = SteadyClock::now();
  Status last_error;
  json last_json;
  while (true) {
    if (!CheckNodes().empty()) return false;
    Result<json> polled = api_->Get("/api/v1/migrations/" + id);
    if (polled.ok()) {
      last_ok = SteadyClock::now();
      last_json = *polled;
      m = ParseMigration(*polled);
      if (m.finished()) break;
      console_.Progress(RenderDemoProgressLine(m, tracker.Update(m)));
    } else if (SteadyClock::now() - last_ok > kGiveUpAfterErrors) {
      console_.Error("dwcp demo: lost track of " + id + ": " + polled.status().message());
      return false;
    }
    if (stop_requested()) {
      if (!stop_deadline) {
        stop_deadline = SteadyClock::now() + kStopWaitForMigration;
        console_.Info("stopping: waiting up to " + std::to_string(kStopWaitForMigration.count()) +
                      " s for " + id + " to finish (Ctrl-C again to stop now)");
      }
      if (g_stop_signals > 1 || SteadyClock::now() > *stop_deadline) {
        console_.Info("stopped waiting for " + id + " (phase " + m.phase + ")");
        return false;
      }
    }
    std::this_thread::sleep_for(kPollInterval);
  }
  if (options_.json) {
    console_.Data(last_json.dump(-1, ' ', false, json::error_handler_t::replace));
  } else {
    console_.Info(RenderDemoResultLine(m));
  }
  return m.succeeded();
}

std::string DemoRunner::CheckNodes() {
  if (node_died_) return "a node died";
  for (Child& c : children_) {
    if (!c.alive) continue;
    int status = 0;
    if (waitpid(c.pid, &status, WNOHANG) == c.pid) {
      c.alive = false;
      node_died_ = true;
      std::string what = c.node.id + " (pid " + std::to_string(c.pid) + ") " +
                         DescribeWaitStatus(status) + " unexpectedly";
      console_.Error("dwcp demo: " + what);
      ShowLog(c.node);
      return what;
    }
  }
  return "";
}

bool DemoRunner::Pause(milliseconds d) {
  auto until = SteadyClock::now() + d;
  while (SteadyClock::now() < until) {
    if (stop_requested() || !CheckNodes().empty()) return false;
    std::this_thread::sleep_for(std::min<milliseconds>(
        milliseconds(50),
        std::chrono::duration_cast<milliseconds>(until - SteadyClock::now()) + milliseconds(1)));
  }
  return !stop_requested();
}

void DemoRunner::ShowLog(const DemoNode& node) {
  std::string tail = TailFile(node.log_path, kLogTailLines);
  if (tail.empty()) {
    console_.Error("(" + node.log_path + " is empty)");
    return;
  }
  console_.Error("last lines of " + node.log_path + ":");
  console_.Error(tail);
}

void DemoRunner::StopNodes() {
  console_.KeepProgress();
  int running = 0;
  for (Child& c : children_) {
    if (c.alive && kill(c.pid, SIGTERM) == 0) ++running;
  }
  if (running > 0) console_.Info("stopping " + std::to_string(running) + " dwcpd...");
  auto deadline = SteadyClock::now() + kNodeStopTimeout;
  while (true) {
    bool any = false;
    for (Child& c : children_) {
      if (!c.alive) continue;
      int status = 0;
      pid_t r = waitpid(c.pid, &status, WNOHANG);
      if (r == c.pid || (r < 0 && errno == ECHILD)) {
        c.alive = false;
      } else {
        any = true;
      }
    }
    if (!any || SteadyClock::now() > deadline) break;
    std::this_thread::sleep_for(milliseconds(50));
  }
  for (Child& c : children_) {
    if (!c.alive) continue;
    console_.Error("dwcp demo: " + c.node.id + " did not stop within " +
                   std::to_string(kNodeStopTimeout.count()) + " s; killing it");
    kill(c.pid, SIGKILL);
    int status = 0;
    while (waitpid(c.pid, &status, 0) < 0 && errno == EINTR) {
    }
    c.alive = false;
  }
  console_.Info("stopped");
}

}  // namespace

int RunDemo(const DemoOptions& options) {
  DemoRunner runner(options);
  return runner.Run();
}

std::string DemoNodeId(int index) {
  std::string suffix;
  for (int n = index + 1; n > 0; n = (n - 1) / 26) {
    suffix.insert(suffix.begin(), static_cast<char>('a' + (n - 1) % 26));
  }
  return "node-" + suffix;
}

bool LoopbackPortProber::IsFree(int port) { return BindLoopback(port) == port; }

int LoopbackPortProber::AnyFreePort() { return BindLoopback(0); }

Result<std::vector<DemoNode>> PlanDemoNodes(int count, const std::string& data_dir,
                                            PortProber& ports) {
  std::vector<DemoNode> nodes;
  std::set<int> used;
  for (int i = 0; i < count; ++i) {
    DemoNode node;
    node.id = DemoNodeId(i);
    Result<int> api = PickPort(kDemoApiPortBase + i, ports, &used);
    if (!api.ok()) return api.status();
    Result<int> data = PickPort(kDemoDataPortBase + i, ports, &used);
    if (!data.ok()) return data.status();
    Result<int> pprof = PickPort(kDemoPprofPortBase + i, ports, &used);
    if (!pprof.ok()) return pprof.status();
    node.api_port = *api;
    node.data_port = *data;
    node.pprof_port = *pprof;
    node.data_dir = data_dir + "/" + node.id;
    node.log_path = data_dir + "/" + node.id + ".log";
    nodes.push_back(std::move(node));
  }
  return nodes;
}

std::vector<std::string> DwcpdArgs(const std::string& dwcpd, const DemoNode& node,
                                   const std::string& data_dir) {
  return {dwcpd, "--node-id", node.id, "--region", "local", "--api-listen",
          "127.0.0.1:" + std::to_string(node.api_port), "--data-listen",
          "127.0.0.1:" + std::to_string(node.data_port), "--pprof-listen",
          "127.0.0.1:" + std::to_string(node.pprof_port), "--advertise-host", "127.0.0.1", "--tls",
          "false",
          // Half the migrations v1, half v3: the rollout compares real migrations of both
          // and decides GO / NO-GO (docs/rollout.md) for the dashboard's v1 vs v3 panel.
          "--rollout-initial-stage", "majority", "--data-dir", node.data_dir, "--store",
          data_dir + "/state.db",
          // Alertmanager's NO-GO rollbacks (make demo STACK=1) authenticate with it.
          "--rollout-webhook-token-file", data_dir + "/rollback-token"};
}

Result<std::string> FindDwcpd(const std::string& explicit_path, const std::string& self_exe,
                              const std::string& path_env) {
  if (!explicit_path.empty()) {
    if (IsExecutableFile(explicit_path)) return explicit_path;
    return Status(NotFound("--dwcpd " + explicit_path + " is not an executable file"));
  }
  if (!self_exe.empty()) {
    std::string beside = std::filesystem::path(self_exe).parent_path().string() + "/dwcpd";
    if (IsExecutableFile(beside)) return beside;
  }
  if (std::string found = FindOnPath("dwcpd", path_env); !found.empty()) return found;
  return Status(
      NotFound("cannot find dwcpd next to this dwcp or on $PATH; build it (`make build`) or pass "
               "--dwcpd PATH"));
}

std::string FindOnPath(const std::string& name, const std::string& path_env) {
  std::stringstream dirs(path_env);
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (IsExecutableFile(candidate)) return candidate;
  }
  return "";
}

std::string DescribeWaitStatus(int wait_status) {
  if (WIFEXITED(wait_status))
    return "exited with status " + std::to_string(WEXITSTATUS(wait_status));
  if (WIFSIGNALED(wait_status)) {
    int sig = WTERMSIG(wait_status);
    const char* name = strsignal(sig);
    return "was killed by signal " + std::to_string(sig) +
           (name ? " (" + std::string(name) + ")" : "");
  }
  return "changed state (wait status " + std::to_string(wait_status) + ")";
}

std::string TailFile(const std::string& path, int lines) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  std::streamoff size = in.tellg();
  std::streamoff start = size > 65536 ? size - 65536 : 0;
  in.seekg(start);
  std::vector<std::string> all;
  std::string line;
  while (std::getline(in, line)) all.push_back(line);
  if (start > 0 && !all.empty()) all.erase(all.begin());  // a partial first line
  size_t first = all.size() > static_cast<size_t>(lines) ? all.size() - lines : 0;
  std::string out;
  for (size_t i = first; i < all.size(); ++i) {
    out += all[i];
    if (i + 1 < all.size()) out += "\n";
  }
  return out;
}

}  // namespace dwcp::cli
