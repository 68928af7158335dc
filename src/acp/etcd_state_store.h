// StateStore on an etcd v3 cluster (gRPC), for a real multi-host DWCP cluster.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "acp/state_store.h"
#include "common/clock.h"
#include "common/status.h"

namespace grpc {
class Channel;
class ChannelCredentials;
}  // namespace grpc

namespace dwcp::acp {

struct EtcdOptions {
  std::vector<std::string> endpoints;  // client endpoints, "host:port"
  std::string key_prefix = "/dwcp/v3/";
  // TLS: the connection uses TLS when ca_file is set; cert_file + key_file add a client
  // certificate (both or neither).
  std::string ca_file, cert_file, key_file;
  // etcd authentication: when username is set, Authenticate's token goes with every call.
  std::string username, password;
  // Budget of one StateStore call, retries included; each RPC's deadline is what is left.
  std::chrono::milliseconds timeout{2000};
  // Deadline of MemberList and of each member's Status in Health().
  std::chrono::milliseconds health_timeout{500};
};

// A StateStore whose records are JSON values (record_json.h) under options.key_prefix:
// nodes/<id>, vms/<id>, migrations/<id>, rollouts/<region>, leases/<name>. Every
// compare-and-swap reads the record, compares in C++ and writes with one Txn guarded by the
// record's mod_revision; a lost race re-reads and compares again, so the error a caller sees
// is the one SQLite gives (docs/acp.md has the mapping of each method to its Txn).
//
// One gRPC channel over every endpoint with the round_robin policy: calls go to members that
// are connected, and an attempt that fails with UNAVAILABLE (member gone, no leader, leader
// changed) or gets no answer within half the budget (a member holding a request while its
// leader is gone) is sent again until the call's budget (options.timeout) is spent. The result
// is then DeadlineExceeded or Unavailable, naming the operation and the endpoints. Sending a
// request again is safe: every conditional write is guarded by the revision it read.
// A write whose answer was lost may have been applied; the retry recognizes its own write
// (the stored value is byte for byte what it wrote) and reports success.
//
// Timestamps and lease expiry follow SqliteStateStore exactly (updated_ms from `clock`,
// created_ms kept when 0, wall-clock lease expiry). A lease's key is also bound to an etcd
// lease of ceil(ttl)+1 s, renewed with LeaseKeepAlive, so a dead holder's key disappears.
//
// Thread-safe; every method blocks the calling thread (never call from a coroutine).
class EtcdStateStore final : public StateStore {
 public:
  // Connects and checks that the cluster answers a linearizable read within options.timeout.
  // InvalidArgument for bad options (no endpoints, unreadable TLS files), Unauthenticated for
  // rejected credentials, Unavailable/DeadlineExceeded when the cluster does not answer.
  static Result<std::unique_ptr<EtcdStateStore>> Open(const EtcdOptions& options, Clock& clock);

  ~EtcdStateStore() override;
  EtcdStateStore(const EtcdStateStore&) = delete;
  EtcdStateStore& operator=(const EtcdStateStore&) = delete;

  Status UpsertNode(const NodeRecord& node) override;
  Result<NodeRecord> GetNode(const std::string& id) override;
  Result<std::vector<NodeRecord>> ListNodes() override;

  Status CreateVm(const VmRecord& vm) override;
  Result<VmRecord> GetVm(const std::string& id) override;
  Result<std::vector<VmRecord>> ListVms() override;
  Status CompareAndSwapVm(const VmRecord& expected, const VmRecord& desired,
                          const MigrationRecord* migration = nullptr) override;
  Status DeleteVm(const std::string& id, uint64_t expected_epoch) override;

  Status PutMigration(const MigrationRecord& migration) override;
  Result<MigrationRecord> GetMigration(const std::string& id) override;
  // Ranges over every migration record and sorts in memory: cost grows with the number of
  // stored migrations (about 1 KiB each; the channel accepts answers up to 256 MiB).
  Result<std::vector<MigrationRecord>> ListMigrations(size_t limit) override;

  Result<RolloutRecord> GetRollout(const std::string& region) override;
  Result<std::vector<RolloutRecord>> ListRollouts() override;
  Result<RolloutRecord> CompareAndSwapRollout(uint64_t expected_version,
                                              const RolloutRecord& desired) override;

  Result<Lease> AcquireLease(const std::string& name, const std::string& holder,
                             int64_t ttl_ms) override;
  Status ReleaseLease(const std::string& name, const std::string& holder) override;

  // MemberList, then Maintenance.Status of each member on a channel of its own. A member is
  // healthy when it answers, reports no errors and knows a leader.
  Result<StoreHealth> Health() override;

  // One change of a record, as a watch reports it.
  struct Event {
    enum class Type { kPut, kDelete };
    Type type = Type::kPut;
    std::string id;        // the record's id (the key below its kind's prefix)
    std::string value;     // the record's JSON (record_json.h) after a put; "" after a delete
    int64_t revision = 0;  // the store revision of the change
  };
  // Streams the changes of one kind of record ("nodes", "vms", "migrations", "rollouts",
  // "leases") since `start_revision` (0: from now; 1: the whole retained history) to
  // `on_event`, in revision order, until on_event returns false (OK) or `max_duration` has
  // passed (DeadlineExceeded). Unavailable when the stream breaks, FailedPrecondition when
  // etcd cancels the watch (e.g. the start revision was compacted). Blocks the calling thread.
  Status Watch(const std::string& kind, int64_t start_revision,
               const std::function<bool(const Event&)>& on_event,
               std::chrono::milliseconds max_duration);

  // "127.0.0.1:2379,127.0.0.1:22379", as configured.
  const std::string& endpoints() const { return endpoints_text_; }

 private:
  struct Stubs;
  struct Kv {
    bool found = false;
    std::string value;
    int64_t mod_revision = 0;  // 0 when not found
    int64_t lease = 0;
  };
  using Deadline = std::chrono::system_clock::time_point;

  EtcdStateStore(EtcdOptions options, Clock& clock);
  Status Connect();
  Deadline CallDeadline() const;
  // Runs `rpc` with the deadline and the auth token, retrying as described above. Sets
  // *maybe_applied when an attempt failed in a way that leaves its effect unknown.
  template <typename Rpc>
  Status Call(const std::string& what, Deadline deadline, Rpc&& rpc, bool* maybe_applied = nullptr);
  Status Authenticate(Deadline deadline);
  Status Error(const std::string& what, int grpc_code, const std::string& message) const;

  Result<Kv> Get(const std::string& key, Deadline deadline);
  Result<std::vector<Kv>> GetPrefix(const std::string& prefix, Deadline deadline);
  Status Put(const std::string& key, const std::string& value, Deadline deadline);
  // Grants an etcd lease of `ttl_s` seconds; returns its id.
  Result<int64_t> GrantLease(int64_t ttl_s, Deadline deadline);
  // One keep-alive of an etcd lease; false when etcd no longer has it.
  Result<bool> KeepAlive(int64_t id, Deadline deadline);
  void RevokeLease(int64_t id, Deadline deadline);  // best effort

  std::string Key(const char* kind, const std::string& id) const;
  std::shared_ptr<grpc::Channel> MemberChannel(const std::string& address);

  const EtcdOptions options_;
  Clock& clock_;
  std::string endpoints_text_;
  std::shared_ptr<grpc::ChannelCredentials> credentials_;
  std::string target_name_override_;  // TLS server name when endpoints were host names
  std::unique_ptr<Stubs> stubs_;
  std::mutex mu_;
  std::string token_;                                                      // guarded by mu_
  std::map<std::string, std::shared_ptr<grpc::Channel>> member_channels_;  // guarded by mu_
};

}  // namespace dwcp::acp
