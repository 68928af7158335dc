#include "tests/integration/cluster.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace dwcp::testing {

uint16_t FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

namespace {

HttpReply ToReply(const httplib::Result& r) {
  HttpReply out;
  if (!r) return out;
  out.status = r->status;
  out.text = r->body;
  out.body = nlohmann::json::parse(r->body, nullptr, false);
  return out;
}

}  // namespace

HttpReply HttpGet(uint16_t port, const std::string& path) {
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(2);
  c.set_read_timeout(30);
  return ToReply(c.Get(path));
}

HttpReply HttpPost(uint16_t port, const std::string& path, const nlohmann::json& body) {
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(2);
  c.set_read_timeout(120);
  return ToReply(c.Post(path, body.dump(), "application/json"));
}

RawReply RawHttp(const std::string& source, uint16_t port, const std::string& request,
                 int timeout_ms) {
  RawReply out;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in from{};
  from.sin_family = AF_INET;
  inet_pton(AF_INET, source.c_str(), &from.sin_addr);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof from) != 0 ||
      connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
    close(fd);
    return out;
  }
  (void)!send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  char buf[4096];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof buf, 0)) > 0) out.text.append(buf, static_cast<size_t>(n));
  close(fd);
  if (out.text.rfind("HTTP/1.1 ", 0) == 0 && out.text.size() >= 12) {
    out.status = std::atoi(out.text.substr(9, 3).c_str());
  }
  size_t body = out.text.find("\r\n\r\n");
  if (body != std::string::npos) {
    out.body = nlohmann::json::parse(out.text.substr(body + 4), nullptr, false);
  }
  return out;
}

CommandResult RunCommand(const std::string& binary, const std::string& args) {
  CommandResult r;
  std::string cmd = binary + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

double MetricValue(const std::string& text, const std::string& name, const std::string& labels) {
  std::istringstream in(text);
  std::string line;
  double sum = 0;
  bool found = false;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    auto space = line.rfind(' ');
    if (space == std::string::npos) continue;
    std::string series = line.substr(0, space);
    if (series != name && series.rfind(name + "{", 0) != 0) continue;
    // Every requested label must appear in the series.
    bool all = true;
    std::istringstream ls(labels);
    std::string one;
    while (std::getline(ls, one, ',')) {
      if (series.find(one) == std::string::npos) all = false;
    }
    if (!all) continue;
    sum += std::stod(line.substr(space + 1));
    found = true;
  }
  return found ? sum : std::nan("");
}

double Metric(Cluster& c, const std::string& node, const std::string& name,
              const std::string& labels) {
  double v = MetricValue(c.Metrics(node), name, labels);
  return std::isnan(v) ? 0 : v;
}

Cluster::Cluster() {
  char tmpl[] = "/tmp/dwcp-it-XXXXXX";
  dir_ = mkdtemp(tmpl);
}

Cluster::~Cluster() {
  for (auto& [id, n] : nodes_) {
    if (n.pid > 0) {
      kill(n.pid, SIGKILL);
      waitpid(n.pid, nullptr, 0);
    }
  }
  if (std::getenv("DWCP_KEEP_TEST_DIR") == nullptr) std::filesystem::remove_all(dir_);
}

NodeProcess& Cluster::StartNode(const std::string& id, std::vector<std::string> extra,
                                std::vector<std::string> env) {
  NodeProcess n = Prepare(id);
  return Spawn(n, std::move(extra), std::move(env));
}

NodeProcess& Cluster::Prepare(const std::string& id) {
  auto it = nodes_.find(id);
  if (it != nodes_.end()) return it->second;
  NodeProcess n;
  n.id = id;
  n.api_port = FreePort();
  n.data_port = FreePort();
  return nodes_[id] = n;
}

NodeProcess& Cluster::Restart(const std::string& id, std::vector<std::string> env) {
  NodeProcess n = nodes_.at(id);
  EXPECT_LE(n.pid, 0) << id << " is still running";
  return Spawn(n, n.extra_flags, std::move(env));
}

void Cluster::Pause(const std::string& id) {
  if (nodes_.at(id).pid > 0) kill(nodes_.at(id).pid, SIGSTOP);
}

void Cluster::Continue(const std::string& id) {
  if (nodes_.at(id).pid > 0) kill(nodes_.at(id).pid, SIGCONT);
}

NodeProcess& Cluster::Spawn(NodeProcess n, std::vector<std::string> extra,
                            std::vector<std::string> env) {
  const std::string id = n.id;
  n.extra_flags = extra;
  n.log_path = dir_ + "/" + id + ".log";
  std::vector<std::string> args = {DWCPD_BINARY,
                                   "--node-id",
                                   id,
                                   "--api-listen",
                                   "127.0.0.1:" + std::to_string(n.api_port),
                                   "--data-listen",
                                   "127.0.0.1:" + std::to_string(n.data_port),
                                   "--data-dir",
                                   dir_ + "/" + id,
                                   "--io-threads",
                                   "2"};
  // pprof on a free loopback port unless the test places it itself.
  if (std::find(extra.begin(), extra.end(), "--pprof-listen") == extra.end()) {
    args.insert(args.end(), {"--pprof-listen", "127.0.0.1:0"});
  }
  // The shared SQLite file unless the test names a store itself (etcd://...).
  if (std::find(extra.begin(), extra.end(), "--store") == extra.end()) {
    args.insert(args.end(), {"--store", dir_ + "/state.db"});
  }
  // Plain TCP unless the test sets up TLS itself.
  if (std::find(extra.begin(), extra.end(), "--tls") == extra.end()) {
    args.insert(args.end(), {"--tls", "false"});
  }
  for (auto& e : extra) args.push_back(e);
  // Built before fork(): the child only execs.
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> environment;
  for (char** e = environ; *e != nullptr; ++e) environment.emplace_back(*e);
  for (auto& e : env) environment.push_back(e);
  std::vector<char*> envp;
  for (auto& e : environment) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(n.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  n.pid = pid;
  n.api_tls = std::find(extra.begin(), extra.end(), "--api-tls-cert") != extra.end();
  auto ready_now = [&] {
    if (!n.api_tls) return HttpGet(n.api_port, "/readyz").status == 200;
    httplib::Client tls("https://127.0.0.1:" + std::to_string(n.api_port));
    tls.enable_server_certificate_verification(false);  // only asks whether it serves
    tls.set_connection_timeout(2);
    auto r = tls.Get("/readyz");
    return r && r->status == 200;
  };
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  bool ready = false;
  while (std::chrono::steady_clock::now() < deadline) {
    if (ready_now()) {
      ready = true;
      break;
    }
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      n.pid = -1;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  nodes_[id] = n;
  EXPECT_TRUE(ready) << "node " << id << " did not become ready; log:\n" << ReadLog(id);
  return nodes_[id];
}

void Cluster::Kill(const std::string& id) {
  auto& n = nodes_.at(id);
  if (n.pid <= 0) return;
  kill(n.pid, SIGKILL);
  waitpid(n.pid, nullptr, 0);
  n.pid = -1;
}

int Cluster::Terminate(const std::string& id, int timeout_ms) {
  auto& n = nodes_.at(id);
  if (n.pid <= 0) return -1;
  kill(n.pid, SIGTERM);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    if (waitpid(n.pid, &status, WNOHANG) == n.pid) {
      n.pid = -1;
      return status;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ADD_FAILURE() << "node " << id << " did not exit within " << timeout_ms << " ms";
  Kill(id);
  return -1;
}

std::string Cluster::Metrics(const std::string& id) {
  return HttpGet(nodes_.at(id).api_port, "/metrics").text;
}

std::string Cluster::ReadLog(const std::string& id) {
  std::ifstream in(dir_ + "/" + id + ".log");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

nlohmann::json Cluster::WaitForMigration(const std::string& via, const std::string& mig,
                                         int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  nlohmann::json last;
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = HttpGet(nodes_.at(via).api_port, "/api/v1/migrations/" + mig);
    if (r.status == 200) {
      last = r.body;
      if (!last["result"].get<std::string>().empty()) return last;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ADD_FAILURE() << "migration " << mig << " did not finish; last: " << last.dump();
  return last;
}

}  // namespace dwcp::testing
