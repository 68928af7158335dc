#include "tests/acp/etcd_test_cluster.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "etcdserverpb/rpc.grpc.pb.h"

namespace dwcp::testing {
namespace {

using Clock = std::chrono::steady_clock;

std::string EtcdBinary() {
  const char* env = std::getenv("DWCP_ETCD_BINARY");
  return env != nullptr ? env : "/usr/bin/etcd";
}

std::string EtcdctlBinary() {
  const char* env = std::getenv("DWCP_ETCDCTL_BINARY");
  return env != nullptr ? env : "/usr/bin/etcdctl";
}

uint16_t FreeLoopbackPort() {
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

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

Result<std::unique_ptr<EtcdTestCluster>> EtcdTestCluster::Start(const EtcdTestOptions& options) {
  if (access(EtcdBinary().c_str(), X_OK) != 0) {
    return Status(Unavailable(EtcdBinary() + " is not installed (scripts/install-deps.sh)"));
  }
  std::unique_ptr<EtcdTestCluster> c(new EtcdTestCluster());
  char tmpl[] = "/tmp/dwcp-etcd-XXXXXX";
  c->dir_ = mkdtemp(tmpl);
  c->tls_dir_ = options.tls_dir;
  for (int i = 0; i < options.members; ++i) {
    Member m;
    m.name = "etcd-" + std::to_string(i);
    m.client_port = FreeLoopbackPort();
    m.peer_port = FreeLoopbackPort();
    c->members_.push_back(m);
    if (i > 0) c->initial_cluster_ += ",";
    c->initial_cluster_ += m.name + "=" + c->Scheme() + "127.0.0.1:" + std::to_string(m.peer_port);
  }
  for (int i = 0; i < options.members; ++i) DWCP_RETURN_IF_ERROR(c->Spawn(i, true));
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  for (int i = 0; i < options.members; ++i) {
    while (!c->Answers(i, false)) {
      int status = 0;
      if (waitpid(c->members_[i].pid, &status, WNOHANG) == c->members_[i].pid) {
        c->members_[i].pid = -1;
        return Status(Unavailable("etcd member " + c->Name(i) + " exited; log:\n" + c->LogTail(i)));
      }
      if (Clock::now() > deadline) {
        return Status(
            Unavailable("etcd member " + c->Name(i) + " did not answer; log:\n" + c->LogTail(i)));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  return c;
}

EtcdTestCluster::~EtcdTestCluster() {
  for (int i = 0; i < size(); ++i) Kill(i);
  if (std::getenv("DWCP_KEEP_TEST_DIR") == nullptr && !dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

Status EtcdTestCluster::Spawn(int i, bool initial) {
  Member& m = members_[i];
  const std::string client = Scheme() + "127.0.0.1:" + std::to_string(m.client_port);
  const std::string peer = Scheme() + "127.0.0.1:" + std::to_string(m.peer_port);
  std::vector<std::string> args = {
      EtcdBinary(),
      "--name=" + m.name,
      "--data-dir=" + dir_ + "/" + m.name,
      "--listen-client-urls=" + client,
      "--advertise-client-urls=" + client,
      "--listen-peer-urls=" + peer,
      "--initial-advertise-peer-urls=" + peer,
      "--initial-cluster=" + initial_cluster_,
      std::string("--initial-cluster-state=") + (initial ? "new" : "existing"),
      "--initial-cluster-token=" + dir_,
      "--heartbeat-interval=100",
      "--election-timeout=1000",
      "--enable-pprof=false"};
  if (!tls_dir_.empty()) {
    for (const char* side : {"", "peer-"}) {
      args.push_back(std::string("--") + side + "cert-file=" + tls_dir_ + "/etcd.pem");
      args.push_back(std::string("--") + side + "key-file=" + tls_dir_ + "/etcd.key");
      args.push_back(std::string("--") + side + "trusted-ca-file=" + tls_dir_ + "/ca.pem");
      args.push_back(std::string("--") + side + "client-cert-auth=true");
    }
  }
  const std::string log = dir_ + "/" + m.name + ".log";
  pid_t pid = fork();
  if (pid < 0) return Unavailable("fork failed");
  if (pid == 0) {
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  m.pid = pid;
  return Status::Ok();
}

bool EtcdTestCluster::Answers(int i, bool status_only) const {
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (!tls_dir_.empty()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadAll(tls_dir_ + "/ca.pem");
    ssl.pem_cert_chain = ReadAll(tls_dir_ + "/etcd.pem");
    ssl.pem_private_key = ReadAll(tls_dir_ + "/etcd.key");
    creds = grpc::SslCredentials(ssl);
  }
  auto channel = grpc::CreateChannel(Endpoint(i), creds);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  if (status_only) {
    auto stub = etcdserverpb::Maintenance::NewStub(channel);
    etcdserverpb::StatusRequest req;
    etcdserverpb::StatusResponse resp;
    return stub->Status(&ctx, req, &resp).ok();
  }
  auto stub = etcdserverpb::KV::NewStub(channel);
  etcdserverpb::RangeRequest req;
  req.set_key("health");
  etcdserverpb::RangeResponse resp;
  return stub->Range(&ctx, req, &resp).ok();
}

std::vector<std::string> EtcdTestCluster::Endpoints() const {
  std::vector<std::string> out;
  for (int i = 0; i < size(); ++i) out.push_back(Endpoint(i));
  return out;
}

std::string EtcdTestCluster::Endpoint(int i) const {
  return "127.0.0.1:" + std::to_string(members_[i].client_port);
}

std::string EtcdTestCluster::Url() const {
  std::string url = "etcd://";
  for (int i = 0; i < size(); ++i) url += (i > 0 ? "," : "") + Endpoint(i);
  return url;
}

void EtcdTestCluster::Kill(int i) {
  Member& m = members_[i];
  if (m.pid <= 0) return;
  kill(m.pid, SIGKILL);
  waitpid(m.pid, nullptr, 0);
  m.pid = -1;
}

Status EtcdTestCluster::Restart(int i) {
  if (Running(i)) return Status::Ok();
  DWCP_RETURN_IF_ERROR(Spawn(i, false));
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  while (!Answers(i, true)) {
    if (Clock::now() > deadline) {
      return Unavailable("etcd member " + Name(i) + " did not come back; log:\n" + LogTail(i));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return Status::Ok();
}

int EtcdTestCluster::Leader() const {
  std::map<uint64_t, int> index_of;  // member id -> index
  std::map<uint64_t, int> votes;     // leader id -> members naming it
  for (int i = 0; i < size(); ++i) {
    if (!Running(i)) continue;
    std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
    if (!tls_dir_.empty()) {
      grpc::SslCredentialsOptions ssl;
      ssl.pem_root_certs = ReadAll(tls_dir_ + "/ca.pem");
      ssl.pem_cert_chain = ReadAll(tls_dir_ + "/etcd.pem");
      ssl.pem_private_key = ReadAll(tls_dir_ + "/etcd.key");
      creds = grpc::SslCredentials(ssl);
    }
    auto stub = etcdserverpb::Maintenance::NewStub(grpc::CreateChannel(Endpoint(i), creds));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    etcdserverpb::StatusRequest req;
    etcdserverpb::StatusResponse resp;
    if (!stub->Status(&ctx, req, &resp).ok()) continue;
    index_of[resp.header().member_id()] = i;
    if (resp.leader() != 0) ++votes[resp.leader()];
  }
  int running = 0;
  for (int i = 0; i < size(); ++i) running += Running(i) ? 1 : 0;
  for (const auto& [leader, n] : votes) {
    if (n == running && index_of.count(leader) > 0) return index_of[leader];
  }
  return -1;
}

int EtcdTestCluster::WaitForLeader(int timeout_ms) const {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    int leader = Leader();
    if (leader >= 0 || Clock::now() > deadline) return leader;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

int EtcdTestCluster::Etcdctl(const std::string& args, std::string* output) const {
  std::string endpoints;
  for (int i = 0; i < size(); ++i) {
    if (!Running(i)) continue;
    endpoints += (endpoints.empty() ? "" : ",") + Scheme() + Endpoint(i);
  }
  std::string cmd =
      "ETCDCTL_API=3 " + EtcdctlBinary() + " --endpoints=" + endpoints + " --command-timeout=5s";
  if (!tls_dir_.empty()) {
    cmd += " --cacert=" + tls_dir_ + "/ca.pem --cert=" + tls_dir_ + "/etcd.pem --key=" + tls_dir_ +
           "/etcd.key";
  }
  cmd += " " + args + " 2>&1";
  output->clear();
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) output->append(buf, n);
  const int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string EtcdTestCluster::LogTail(int i, size_t bytes) const {
  std::string log = ReadAll(dir_ + "/" + members_[i].name + ".log");
  return log.size() > bytes ? log.substr(log.size() - bytes) : log;
}

}  // namespace dwcp::testing
