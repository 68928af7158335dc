// Test helper: real etcd members (Debian's /usr/bin/etcd, or $DWCP_ETCD_BINARY) on 127.0.0.1
// with free ports and a temp data directory; can kill and restart members. Used by the store
// conformance tests and the integration tests.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace dwcp::testing {

struct EtcdTestOptions {
  int members = 1;
  // When set: every member serves TLS with certificates made by scripts/make-certs.sh in this
  // directory (ca.pem, etcd.pem, etcd.key) and requires client certificates.
  std::string tls_dir;
};

// Not thread-safe. Kills its members (by pid) and removes its directory on destruction, unless
// DWCP_KEEP_TEST_DIR is set.
class EtcdTestCluster {
 public:
  // Starts the members and waits (up to 30 s) until each answers a linearizable read.
  // Unavailable with the tail of the members' logs when they do not.
  static Result<std::unique_ptr<EtcdTestCluster>> Start(const EtcdTestOptions& options);
  static Result<std::unique_ptr<EtcdTestCluster>> Start(int members) {
    return Start(EtcdTestOptions{members, ""});
  }
  ~EtcdTestCluster();
  EtcdTestCluster(const EtcdTestCluster&) = delete;
  EtcdTestCluster& operator=(const EtcdTestCluster&) = delete;

  int size() const { return static_cast<int>(members_.size()); }
  // "127.0.0.1:PORT" client endpoints of every member, running or not.
  std::vector<std::string> Endpoints() const;
  std::string Endpoint(int i) const;
  // etcd://127.0.0.1:P1,127.0.0.1:P2,... (every member).
  std::string Url() const;
  std::string Name(int i) const { return members_[i].name; }
  bool Running(int i) const { return members_[i].pid > 0; }

  // SIGKILL the member and reap it.
  void Kill(int i);
  // Starts a killed member again on its data directory and waits until it answers Status.
  Status Restart(int i);
  // The member the running members say leads, or -1 when they name none (asked with a short
  // deadline).
  int Leader() const;
  // Waits until the running members agree on a leader (up to `timeout_ms`); returns it or -1.
  int WaitForLeader(int timeout_ms = 15000) const;
  // Runs etcdctl (v3 API) against the running members with `args`; returns its exit code and
  // puts stdout+stderr in *output.
  int Etcdctl(const std::string& args, std::string* output) const;

  const std::string& dir() const { return dir_; }
  std::string LogTail(int i, size_t bytes = 2000) const;

 private:
  struct Member {
    std::string name;
    uint16_t client_port = 0;
    uint16_t peer_port = 0;
    pid_t pid = -1;
  };
  EtcdTestCluster() = default;
  Status Spawn(int i, bool initial);
  // A linearizable read on member i answers (quorum) or, with `status_only`, Status answers.
  bool Answers(int i, bool status_only) const;
  std::string Scheme() const { return tls_dir_.empty() ? "http://" : "https://"; }

  std::string dir_;
  std::string tls_dir_;
  std::string initial_cluster_;
  std::vector<Member> members_;
};

}  // namespace dwcp::testing
