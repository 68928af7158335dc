#include "acp/etcd_state_store.h"

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netdb.h>

#include <algorithm>
#include <fstream>
#include <limits>
#include <sstream>
#include <thread>
#include <utility>

#include "acp/record_json.h"
#include "etcdserverpb/rpc.grpc.pb.h"

namespace dwcp::acp {

struct EtcdStateStore::Stubs {
  explicit Stubs(const std::shared_ptr<grpc::Channel>& channel)
      : kv(etcdserverpb::KV::NewStub(channel)),
        lease(etcdserverpb::Lease::NewStub(channel)),
        watch(etcdserverpb::Watch::NewStub(channel)),
        cluster(etcdserverpb::Cluster::NewStub(channel)),
        auth(etcdserverpb::Auth::NewStub(channel)),
        channel(channel) {}
  std::unique_ptr<etcdserverpb::KV::Stub> kv;
  std::unique_ptr<etcdserverpb::Lease::Stub> lease;
  std::unique_ptr<etcdserverpb::Watch::Stub> watch;
  std::unique_ptr<etcdserverpb::Cluster::Stub> cluster;
  std::unique_ptr<etcdserverpb::Auth::Stub> auth;
  std::shared_ptr<grpc::Channel> channel;
};

namespace {

constexpr const char* kNodes = "nodes/";
constexpr const char* kVms = "vms/";
constexpr const char* kMigrations = "migrations/";
constexpr const char* kRollouts = "rollouts/";
constexpr const char* kLeases = "leases/";
// Most CAS attempts one call makes when other writers keep winning the race.
constexpr int kMaxRaces = 1000;

// The end of the key range that holds every key starting with `prefix`.
std::string PrefixEnd(std::string prefix) {
  while (!prefix.empty()) {
    auto& last = prefix.back();
    if (static_cast<unsigned char>(last) < 0xff) {
      ++last;
      return prefix;
    }
    prefix.pop_back();
  }
  return std::string(1, '\0');  // every key
}

Result<std::string> ReadFile(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status(InvalidArgument(std::string("cannot read ") + what + " '" + path + "'"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string DescribeVm(const VmRecord& vm) {
  std::string s = "vm " + vm.id + " changed: owner " + vm.node_id + ", state " + vm.state +
                  ", epoch " + std::to_string(vm.epoch);
  if (!vm.migration_id.empty()) s += ", migration " + vm.migration_id;
  return s;
}

etcdserverpb::Compare ModRevisionIs(const std::string& key, int64_t revision) {
  etcdserverpb::Compare c;
  c.set_result(etcdserverpb::Compare::EQUAL);
  c.set_target(etcdserverpb::Compare::MOD);
  c.set_key(key);
  c.set_mod_revision(revision);  // 0: the key does not exist
  return c;
}

void AddPut(etcdserverpb::TxnRequest* txn, const std::string& key, const std::string& value,
            int64_t lease = 0) {
  auto* put = txn->add_success()->mutable_request_put();
  put->set_key(key);
  put->set_value(value);
  put->set_lease(lease);
}

void AddDelete(etcdserverpb::TxnRequest* txn, const std::string& key) {
  txn->add_success()->mutable_request_delete_range()->set_key(key);
}

int64_t SaturatingAdd(int64_t a, int64_t b) {
  return a > std::numeric_limits<int64_t>::max() - b ? std::numeric_limits<int64_t>::max() : a + b;
}

// "http://127.0.0.1:2379" -> "127.0.0.1:2379".
std::string HostPortOfUrl(const std::string& url) {
  std::string s = url;
  if (auto p = s.find("://"); p != std::string::npos) s = s.substr(p + 3);
  if (auto p = s.find('/'); p != std::string::npos) s = s.substr(0, p);
  return s;
}

}  // namespace

EtcdStateStore::EtcdStateStore(EtcdOptions options, Clock& clock)
    : options_(std::move(options)), clock_(clock) {
  for (size_t i = 0; i < options_.endpoints.size(); ++i) {
    if (i > 0) endpoints_text_ += ",";
    endpoints_text_ += options_.endpoints[i];
  }
}

EtcdStateStore::~EtcdStateStore() = default;

Result<std::unique_ptr<EtcdStateStore>> EtcdStateStore::Open(const EtcdOptions& options,
                                                             Clock& clock) {
  if (options.endpoints.empty()) {
    return Status(InvalidArgument("etcd store: no endpoints (etcd://host:port[,host:port...])"));
  }
  if (options.key_prefix.empty()) return Status(InvalidArgument("etcd store: empty key prefix"));
  if (options.timeout.count() <= 0 || options.health_timeout.count() <= 0) {
    return Status(InvalidArgument("etcd store: timeouts must be positive"));
  }
  if (options.cert_file.empty() != options.key_file.empty()) {
    return Status(InvalidArgument("etcd store: a client certificate needs both a cert and a key"));
  }
  if (!options.cert_file.empty() && options.ca_file.empty()) {
    return Status(InvalidArgument("etcd store: a client certificate needs the CA file (TLS)"));
  }
  std::unique_ptr<EtcdStateStore> store(new EtcdStateStore(options, clock));
  DWCP_RETURN_IF_ERROR(store->Connect());
  return store;
}

Status EtcdStateStore::Connect() {
  // One channel over every endpoint. gRPC's ipv4: resolver takes a list of literal addresses;
  // host names are resolved here, once.
  std::string target = "ipv4:";
  for (size_t i = 0; i < options_.endpoints.size(); ++i) {
    const std::string& ep = options_.endpoints[i];
    auto colon = ep.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == ep.size()) {
      return InvalidArgument("etcd store: endpoint '" + ep + "' is not host:port");
    }
    std::string host = ep.substr(0, colon);
    const std::string port = ep.substr(colon + 1);
    if (port.find_first_not_of("0123456789") != std::string::npos || port.size() > 5 ||
        std::stoi(port) == 0 || std::stoi(port) > 65535) {
      return InvalidArgument("etcd store: endpoint '" + ep + "' has a bad port");
    }
    in_addr addr{};
    if (inet_pton(AF_INET, host.c_str(), &addr) != 1) {
      if (host.find(':') != std::string::npos || host.front() == '[') {
        return InvalidArgument("etcd store: endpoint '" + ep +
                               "': IPv6 endpoints are not supported; use IPv4 or a host name");
      }
      addrinfo hints{};
      hints.ai_family = AF_INET;
      hints.ai_socktype = SOCK_STREAM;
      addrinfo* res = nullptr;
      const int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
      if (rc != 0 || res == nullptr) {
        return Unavailable("etcd store: cannot resolve '" + host + "': " + gai_strerror(rc));
      }
      char text[INET_ADDRSTRLEN] = {};
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr, text,
                sizeof text);
      freeaddrinfo(res);
      if (target_name_override_.empty()) target_name_override_ = host;
      host = text;
    }
    if (i > 0) target += ",";
    target += host + ":" + port;
  }

  if (!options_.ca_file.empty()) {
    grpc::SslCredentialsOptions ssl;
    auto ca = ReadFile(options_.ca_file, "store CA file");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca;
    if (!options_.cert_file.empty()) {
      auto cert = ReadFile(options_.cert_file, "store certificate file");
      if (!cert.ok()) return cert.status();
      auto key = ReadFile(options_.key_file, "store key file");
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *cert;
      ssl.pem_private_key = *key;
    }
    credentials_ = grpc::SslCredentials(ssl);
  } else {
    credentials_ = grpc::InsecureChannelCredentials();
  }

  grpc::ChannelArguments args;
  args.SetLoadBalancingPolicyName("round_robin");
  args.SetMaxReceiveMessageSize(256 << 20);
  // A member that comes back is used again within about a second.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 3000);
  if (!target_name_override_.empty() && !options_.ca_file.empty()) {
    args.SetSslTargetNameOverride(target_name_override_);
  }
  stubs_ = std::make_unique<Stubs>(grpc::CreateCustomChannel(target, credentials_, args));

  const Deadline deadline = CallDeadline();
  if (!options_.username.empty()) DWCP_RETURN_IF_ERROR(Authenticate(deadline));
  // A linearizable read: the cluster is reachable and has a quorum.
  etcdserverpb::RangeRequest req;
  req.set_key(options_.key_prefix);
  req.set_range_end(PrefixEnd(options_.key_prefix));
  req.set_count_only(true);
  etcdserverpb::RangeResponse resp;
  Status st = Call("connect", deadline,
                   [&](grpc::ClientContext* ctx) { return stubs_->kv->Range(ctx, req, &resp); });
  if (!st.ok())
    return Status(st.code(), st.message() + " (is etcd running and does it have a quorum?)");
  return Status::Ok();
}

EtcdStateStore::Deadline EtcdStateStore::CallDeadline() const {
  return std::chrono::system_clock::now() + options_.timeout;
}

Status EtcdStateStore::Error(const std::string& what, int grpc_code,
                             const std::string& message) const {
  std::string msg = "etcd store (" + endpoints_text_ + "): " + what + ": ";
  switch (static_cast<grpc::StatusCode>(grpc_code)) {
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return DeadlineExceeded(msg + "no answer within " + std::to_string(options_.timeout.count()) +
                              " ms (" + message + ")");
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
    case grpc::StatusCode::CANCELLED:
    case grpc::StatusCode::ABORTED:
      return Unavailable(msg + message);
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::PERMISSION_DENIED:
      return Status(StatusCode::kUnauthenticated, msg + message);
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::OUT_OF_RANGE:
      return InvalidArgument(msg + message);
    default:
      return Internal(msg + message);
  }
}

template <typename Rpc>
Status EtcdStateStore::Call(const std::string& what, Deadline deadline, Rpc&& rpc,
                            bool* maybe_applied) {
  std::chrono::milliseconds backoff{20};
  bool reauthenticated = false;
  grpc::Status last;
  for (;;) {
    if (std::chrono::system_clock::now() >= deadline) {
      if (last.ok()) return Error(what, grpc::StatusCode::DEADLINE_EXCEEDED, "budget spent");
      return Error(what,
                   last.error_code() == grpc::StatusCode::UNAVAILABLE
                       ? grpc::StatusCode::UNAVAILABLE
                       : grpc::StatusCode::DEADLINE_EXCEEDED,
                   last.error_message());
    }
    grpc::ClientContext ctx;
    // An attempt gets half the budget (at least 500 ms): a request that a member holds while
    // its leader is gone is abandoned and sent again, likely to another member, instead of
    // spending the whole budget waiting (retrying is safe: see the class comment).
    const auto attempt =
        std::max<std::chrono::milliseconds>(options_.timeout / 2, std::chrono::milliseconds(500));
    ctx.set_deadline(std::min(deadline, std::chrono::system_clock::now() + attempt));
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!token_.empty()) ctx.AddMetadata("token", token_);
    }
    last = rpc(&ctx);
    if (last.ok()) return Status::Ok();
    auto code = last.error_code();
    // A member that gives up first answers its own context's error as UNKNOWN.
    if (code == grpc::StatusCode::UNKNOWN &&
        last.error_message().find("deadline exceeded") != std::string::npos) {
      code = grpc::StatusCode::DEADLINE_EXCEEDED;
    }
    // etcd rejects an expired or unknown token (a restarted member forgets simple tokens).
    if (!options_.username.empty() && !reauthenticated &&
        (code == grpc::StatusCode::UNAUTHENTICATED ||
         last.error_message().find("invalid auth token") != std::string::npos)) {
      reauthenticated = true;
      DWCP_RETURN_IF_ERROR(Authenticate(deadline));
      continue;
    }
    if (maybe_applied != nullptr && code != grpc::StatusCode::UNAUTHENTICATED &&
        code != grpc::StatusCode::PERMISSION_DENIED && code != grpc::StatusCode::INVALID_ARGUMENT) {
      *maybe_applied = true;
    }
    const bool retry = code == grpc::StatusCode::UNAVAILABLE ||
                       code == grpc::StatusCode::RESOURCE_EXHAUSTED ||
                       code == grpc::StatusCode::DEADLINE_EXCEEDED;
    if (!retry || std::chrono::system_clock::now() + backoff >= deadline) {
      return Error(what, code, last.error_message());
    }
    if (code == grpc::StatusCode::DEADLINE_EXCEEDED) continue;  // it has waited already
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(200));
  }
}

Status EtcdStateStore::Authenticate(Deadline deadline) {
  etcdserverpb::AuthenticateRequest req;
  req.set_name(options_.username);
  req.set_password(options_.password);
  etcdserverpb::AuthenticateResponse resp;
  std::chrono::milliseconds backoff{20};
  for (;;) {
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline);
    grpc::Status st = stubs_->auth->Authenticate(&ctx, req, &resp);
    if (st.ok()) break;
    const auto code = st.error_code();
    if (code != grpc::StatusCode::UNAVAILABLE && code != grpc::StatusCode::DEADLINE_EXCEEDED) {
      // etcd answers a wrong user or password with INVALID_ARGUMENT ("authentication failed").
      return Status(StatusCode::kUnauthenticated, "etcd store (" + endpoints_text_ +
                                                      "): authenticate as " + options_.username +
                                                      ": " + st.error_message());
    }
    if (std::chrono::system_clock::now() + backoff >= deadline) {
      return Error("authenticate as " + options_.username, code, st.error_message());
    }
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(200));
  }
  std::lock_guard<std::mutex> lock(mu_);
  token_ = resp.token();
  return Status::Ok();
}

std::string EtcdStateStore::Key(const char* kind, const std::string& id) const {
  return options_.key_prefix + kind + id;
}

Result<EtcdStateStore::Kv> EtcdStateStore::Get(const std::string& key, Deadline deadline) {
  etcdserverpb::RangeRequest req;
  req.set_key(key);
  etcdserverpb::RangeResponse resp;
  Status st = Call("get " + key, deadline,
                   [&](grpc::ClientContext* ctx) { return stubs_->kv->Range(ctx, req, &resp); });
  if (!st.ok()) return st;
  Kv kv;
  if (resp.kvs_size() > 0) {
    const auto& e = resp.kvs(0);
    kv.found = true;
    kv.value = e.value();
    kv.mod_revision = e.mod_revision();
    kv.lease = e.lease();
  }
  return kv;
}

Result<std::vector<EtcdStateStore::Kv>> EtcdStateStore::GetPrefix(const std::string& prefix,
                                                                  Deadline deadline) {
  etcdserverpb::RangeRequest req;
  req.set_key(prefix);
  req.set_range_end(PrefixEnd(prefix));
  req.set_sort_order(etcdserverpb::RangeRequest::ASCEND);
  req.set_sort_target(etcdserverpb::RangeRequest::KEY);
  etcdserverpb::RangeResponse resp;
  Status st = Call("list " + prefix, deadline,
                   [&](grpc::ClientContext* ctx) { return stubs_->kv->Range(ctx, req, &resp); });
  if (!st.ok()) return st;
  std::vector<Kv> out;
  out.reserve(resp.kvs_size());
  for (const auto& e : resp.kvs()) {
    Kv kv;
    kv.found = true;
    kv.value = e.value();
    kv.mod_revision = e.mod_revision();
    kv.lease = e.lease();
    out.push_back(std::move(kv));
  }
  return out;
}

Status EtcdStateStore::Put(const std::string& key, const std::string& value, Deadline deadline) {
  etcdserverpb::PutRequest req;
  req.set_key(key);
  req.set_value(value);
  etcdserverpb::PutResponse resp;
  return Call("put " + key, deadline,
              [&](grpc::ClientContext* ctx) { return stubs_->kv->Put(ctx, req, &resp); });
}

Status EtcdStateStore::UpsertNode(const NodeRecord& node) {
  return Put(Key(kNodes, node.id), NodeToJson(node), CallDeadline());
}

Result<NodeRecord> EtcdStateStore::GetNode(const std::string& id) {
  const std::string key = Key(kNodes, id);
  auto kv = Get(key, CallDeadline());
  if (!kv.ok()) return kv.status();
  if (!kv->found) return Status(NotFound("node " + id + " does not exist"));
  return NodeFromJson(kv->value, key);
}

Result<std::vector<NodeRecord>> EtcdStateStore::ListNodes() {
  const std::string prefix = options_.key_prefix + kNodes;
  auto kvs = GetPrefix(prefix, CallDeadline());
  if (!kvs.ok()) return kvs.status();
  std::vector<NodeRecord> out;
  for (const auto& kv : *kvs) {
    auto n = NodeFromJson(kv.value, prefix);
    if (!n.ok()) return n.status();
    out.push_back(std::move(n).value());
  }
  return out;
}

Status EtcdStateStore::CreateVm(const VmRecord& vm) {
  const std::string key = Key(kVms, vm.id);
  const int64_t now = clock_.WallMillis();
  VmRecord w = vm;
  if (w.created_ms == 0) w.created_ms = now;
  w.updated_ms = now;
  etcdserverpb::TxnRequest txn;
  *txn.add_compare() = ModRevisionIs(key, 0);
  AddPut(&txn, key, VmToJson(w));
  etcdserverpb::TxnResponse resp;
  bool maybe_applied = false;
  Status st = Call(
      "create " + key, CallDeadline(),
      [&](grpc::ClientContext* ctx) { return stubs_->kv->Txn(ctx, txn, &resp); }, &maybe_applied);
  if (!st.ok()) return st;
  if (resp.succeeded()) return Status::Ok();
  // A retried create whose first attempt was applied finds its own record.
  if (maybe_applied) {
    auto kv = Get(key, CallDeadline());
    if (kv.ok() && kv->found && kv->value == VmToJson(w)) return Status::Ok();
  }
  return AlreadyExists("vm " + vm.id + " already exists");
}

Result<VmRecord> EtcdStateStore::GetVm(const std::string& id) {
  const std::string key = Key(kVms, id);
  auto kv = Get(key, CallDeadline());
  if (!kv.ok()) return kv.status();
  if (!kv->found) return Status(NotFound("vm " + id + " does not exist"));
  return VmFromJson(kv->value, key);
}

Result<std::vector<VmRecord>> EtcdStateStore::ListVms() {
  const std::string prefix = options_.key_prefix + kVms;
  auto kvs = GetPrefix(prefix, CallDeadline());
  if (!kvs.ok()) return kvs.status();
  std::vector<VmRecord> out;
  for (const auto& kv : *kvs) {
    auto vm = VmFromJson(kv.value, prefix);
    if (!vm.ok()) return vm.status();
    out.push_back(std::move(vm).value());
  }
  return out;
}

Status EtcdStateStore::CompareAndSwapVm(const VmRecord& expected, const VmRecord& desired,
                                        const MigrationRecord* migration) {
  if (desired.id != expected.id) {
    return InvalidArgument("compare-and-swap of vm " + expected.id + " names vm " + desired.id);
  }
  const Deadline deadline = CallDeadline();
  const std::string key = Key(kVms, expected.id);
  const std::string mig_key = migration != nullptr ? Key(kMigrations, migration->id) : "";
  bool maybe_applied = false;
  std::string written;  // the VM value of the last attempt
  for (int attempt = 0; attempt < kMaxRaces; ++attempt) {
    auto kv = Get(key, deadline);
    if (!kv.ok()) return kv.status();
    if (maybe_applied && kv->found && kv->value == written) return Status::Ok();
    if (!kv->found) return NotFound("vm " + expected.id + " does not exist");
    auto stored = VmFromJson(kv->value, key);
    if (!stored.ok()) return stored.status();
    if (stored->node_id != expected.node_id || stored->state != expected.state ||
        stored->epoch != expected.epoch || stored->migration_id != expected.migration_id) {
      return FailedPrecondition(DescribeVm(*stored));
    }
    const int64_t now = clock_.WallMillis();
    VmRecord w = desired;
    if (w.created_ms == 0) w.created_ms = stored->created_ms;
    w.updated_ms = now;
    written = VmToJson(w);

    etcdserverpb::TxnRequest txn;
    *txn.add_compare() = ModRevisionIs(key, kv->mod_revision);
    AddPut(&txn, key, written);
    if (migration != nullptr) {
      MigrationRecord m = *migration;
      if (m.created_ms == 0) {
        // 0 keeps the stored creation time: read it, and guard it in the same Txn.
        auto prev = Get(mig_key, deadline);
        if (!prev.ok()) return prev.status();
        m.created_ms = now;
        if (prev->found) {
          auto pm = MigrationFromJson(prev->value, mig_key);
          if (!pm.ok()) return pm.status();
          m.created_ms = pm->created_ms;
        }
        *txn.add_compare() = ModRevisionIs(mig_key, prev->mod_revision);
      }
      m.updated_ms = now;
      AddPut(&txn, mig_key, MigrationToJson(m));
    }
    etcdserverpb::TxnResponse resp;
    Status st = Call(
        "compare-and-swap " + key, deadline,
        [&](grpc::ClientContext* ctx) { return stubs_->kv->Txn(ctx, txn, &resp); }, &maybe_applied);
    if (!st.ok()) return st;
    if (resp.succeeded()) return Status::Ok();
    // Another writer changed the record since the read: compare again.
  }
  return Unavailable("etcd store (" + endpoints_text_ + "): compare-and-swap " + key +
                     ": lost the race " + std::to_string(kMaxRaces) + " times");
}

Status EtcdStateStore::DeleteVm(const std::string& id, uint64_t expected_epoch) {
  const Deadline deadline = CallDeadline();
  const std::string key = Key(kVms, id);
  bool maybe_applied = false;
  for (int attempt = 0; attempt < kMaxRaces; ++attempt) {
    auto kv = Get(key, deadline);
    if (!kv.ok()) return kv.status();
    if (!kv->found) {
      if (maybe_applied) return Status::Ok();  // our own delete, answered late
      return NotFound("vm " + id + " does not exist");
    }
    auto stored = VmFromJson(kv->value, key);
    if (!stored.ok()) return stored.status();
    if (stored->epoch != expected_epoch) return FailedPrecondition(DescribeVm(*stored));
    etcdserverpb::TxnRequest txn;
    *txn.add_compare() = ModRevisionIs(key, kv->mod_revision);
    AddDelete(&txn, key);
    etcdserverpb::TxnResponse resp;
    Status st = Call(
        "delete " + key, deadline,
        [&](grpc::ClientContext* ctx) { return stubs_->kv->Txn(ctx, txn, &resp); }, &maybe_applied);
    if (!st.ok()) return st;
    if (resp.succeeded()) return Status::Ok();
  }
  return Unavailable("etcd store (" + endpoints_text_ + "): delete " + key + ": lost the race " +
                     std::to_string(kMaxRaces) + " times");
}

Status EtcdStateStore::PutMigration(const MigrationRecord& migration) {
  const Deadline deadline = CallDeadline();
  const std::string key = Key(kMigrations, migration.id);
  if (migration.created_ms != 0) {
    MigrationRecord m = migration;
    m.updated_ms = clock_.WallMillis();
    return Put(key, MigrationToJson(m), deadline);
  }
  // created_ms 0 keeps the stored creation time (now for a new record): read, then a Txn
  // guarded by the read's revision.
  bool maybe_applied = false;
  std::string written;
  for (int attempt = 0; attempt < kMaxRaces; ++attempt) {
    auto kv = Get(key, deadline);
    if (!kv.ok()) return kv.status();
    if (maybe_applied && kv->found && kv->value == written) return Status::Ok();
    MigrationRecord m = migration;
    const int64_t now = clock_.WallMillis();
    m.created_ms = now;
    if (kv->found) {
      auto stored = MigrationFromJson(kv->value, key);
      if (!stored.ok()) return stored.status();
      m.created_ms = stored->created_ms;
    }
    m.updated_ms = now;
    written = MigrationToJson(m);
    etcdserverpb::TxnRequest txn;
    *txn.add_compare() = ModRevisionIs(key, kv->mod_revision);
    AddPut(&txn, key, written);
    etcdserverpb::TxnResponse resp;
    Status st = Call(
        "put " + key, deadline,
        [&](grpc::ClientContext* ctx) { return stubs_->kv->Txn(ctx, txn, &resp); }, &maybe_applied);
    if (!st.ok()) return st;
    if (resp.succeeded()) return Status::Ok();
  }
  return Unavailable("etcd store (" + endpoints_text_ + "): put " + key + ": lost the race " +
                     std::to_string(kMaxRaces) + " times");
}

Result<MigrationRecord> EtcdStateStore::GetMigration(const std::string& id) {
  const std::string key = Key(kMigrations, id);
  auto kv = Get(key, CallDeadline());
  if (!kv.ok()) return kv.status();
  if (!kv->found) return Status(NotFound("migration " + id + " does not exist"));
  return MigrationFromJson(kv->value, key);
}

Result<std::vector<MigrationRecord>> EtcdStateStore::ListMigrations(size_t limit) {
  const std::string prefix = options_.key_prefix + kMigrations;
  auto kvs = GetPrefix(prefix, CallDeadline());
  if (!kvs.ok()) return kvs.status();
  std::vector<MigrationRecord> out;
  out.reserve(kvs->size());
  for (const auto& kv : *kvs) {
    auto m = MigrationFromJson(kv.value, prefix);
    if (!m.ok()) return m.status();
    out.push_back(std::move(m).value());
  }
  // Newest first by created_ms, then id, as SQLite's index orders them.
  std::sort(out.begin(), out.end(), [](const MigrationRecord& a, const MigrationRecord& b) {
    if (a.created_ms != b.created_ms) return a.created_ms > b.created_ms;
    return a.id > b.id;
  });
  if (out.size() > limit) out.resize(limit);
  return out;
}

Result<RolloutRecord> EtcdStateStore::GetRollout(const std::string& region) {
  const std::string key = Key(kRollouts, region);
  auto kv = Get(key, CallDeadline());
  if (!kv.ok()) return kv.status();
  if (!kv->found) return Status(NotFound("region " + region + " has no rollout record"));
  return RolloutFromJson(kv->value, key);
}

Result<std::vector<RolloutRecord>> EtcdStateStore::ListRollouts() {
  const std::string prefix = options_.key_prefix + kRollouts;
  auto kvs = GetPrefix(prefix, CallDeadline());
  if (!kvs.ok()) return kvs.status();
  std::vector<RolloutRecord> out;
  for (const auto& kv : *kvs) {
    auto r = RolloutFromJson(kv.value, prefix);
    if (!r.ok()) return r.status();
    out.push_back(std::move(r).value());
  }
  return out;
}

Result<RolloutRecord> EtcdStateStore::CompareAndSwapRollout(uint64_t expected_version,
                                                            const RolloutRecord& desired) {
  if (desired.region.empty()) return Status(InvalidArgument("rollout record without a region"));
  const Deadline deadline = CallDeadline();
  const std::string key = Key(kRollouts, desired.region);
  RolloutRecord written = desired;
  written.version = expected_version + 1;
  const std::string value = RolloutToJson(written);
  bool maybe_applied = false;
  for (int attempt = 0; attempt < kMaxRaces; ++attempt) {
    auto kv = Get(key, deadline);
    if (!kv.ok()) return kv.status();
    if (maybe_applied && kv->found && kv->value == value) return written;
    uint64_t stored = 0;
    std::string stage;
    if (kv->found) {
      auto r = RolloutFromJson(kv->value, key);
      if (!r.ok()) return r.status();
      stored = r->version;
      stage = r->stage;
    }
    if (stored != expected_version) {
      return Status(
          FailedPrecondition("rollout of region " + desired.region + " changed: " +
                             (kv->found ? "version " + std::to_string(stored) + ", stage " + stage
                                        : std::string("no record")) +
                             " (expected version " + std::to_string(expected_version) + ")"));
    }
    etcdserverpb::TxnRequest txn;
    *txn.add_compare() = ModRevisionIs(key, kv->mod_revision);
    AddPut(&txn, key, value);
    etcdserverpb::TxnResponse resp;
    Status st = Call(
        "compare-and-swap " + key, deadline,
        [&](grpc::ClientContext* ctx) { return stubs_->kv->Txn(ctx, txn, &resp); }, &maybe_applied);
    if (!st.ok()) return st;
    if (resp.succeeded()) return written;
  }
  return Status(Unavailable("etcd store (" + endpoints_text_ + "): compare-and-swap " + key +
                            ": lost the race " + std::to_string(kMaxRaces) + " times"));
}

Result<int64_t> EtcdStateStore::GrantLease(int64_t ttl_s, Deadline deadline) {
  etcdserverpb::LeaseGrantRequest req;
  req.set_ttl(ttl_s);
  etcdserverpb::LeaseGrantResponse resp;
  Status st = Call("grant a lease", deadline, [&](grpc::ClientContext* ctx) {
    return stubs_->lease->LeaseGrant(ctx, req, &resp);
  });
  if (!st.ok()) return st;
  if (!resp.error().empty()) {
    return Status(
        Unavailable("etcd store (" + endpoints_text_ + "): grant a lease: " + resp.error()));
  }
  return resp.id();
}

Result<bool> EtcdStateStore::KeepAlive(int64_t id, Deadline deadline) {
  etcdserverpb::LeaseKeepAliveResponse resp;
  bool answered = false;
  Status st = Call("keep lease alive", deadline, [&](grpc::ClientContext* ctx) {
    answered = false;
    auto stream = stubs_->lease->LeaseKeepAlive(ctx);
    etcdserverpb::LeaseKeepAliveRequest req;
    req.set_id(id);
    if (stream->Write(req)) answered = stream->Read(&resp);
    ctx->TryCancel();  // one renewal: the stream ends here
    grpc::Status fin = stream->Finish();
    if (answered) return grpc::Status::OK;
    return fin.ok() ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "keep-alive stream closed") : fin;
  });
  if (!st.ok()) return st;
  return resp.ttl() > 0;
}

void EtcdStateStore::RevokeLease(int64_t id, Deadline deadline) {
  etcdserverpb::LeaseRevokeRequest req;
  req.set_id(id);
  etcdserverpb::LeaseRevokeResponse resp;
  (void)Call("revoke a lease", deadline,
             [&](grpc::ClientContext* ctx) { return stubs_->lease->LeaseRevoke(ctx, req, &resp); });
}

Result<Lease> EtcdStateStore::AcquireLease(const std::string& name, const std::string& holder,
                                           int64_t ttl_ms) {
  if (ttl_ms <= 0) {
    return Status(InvalidArgument("lease " + name + ": ttl " + std::to_string(ttl_ms) + " ms"));
  }
  const Deadline deadline = CallDeadline();
  const std::string key = Key(kLeases, name);
  // The etcd lease outlives the wall-clock one by a second, so the recorded expiry decides.
  const int64_t ttl_s = std::min<int64_t>(ttl_ms / 1000 + (ttl_ms % 1000 != 0) + 1,
                                          std::numeric_limits<int32_t>::max());
  for (int attempt = 0; attempt < kMaxRaces; ++attempt) {
    auto kv = Get(key, deadline);
    if (!kv.ok()) return kv.status();
    const int64_t now = clock_.WallMillis();
    int64_t etcd_lease = 0;
    bool ours = false;
    if (kv->found) {
      auto current = LeaseFromJson(kv->value, key);
      if (!current.ok()) return current.status();
      if (current->holder != holder && current->expires_ms > now) {
        return Status(FailedPrecondition("lease " + name + " held by " + current->holder +
                                         " until " + std::to_string(current->expires_ms)));
      }
      ours = current->holder == holder;
      if (ours && kv->lease != 0) {
        auto alive = KeepAlive(kv->lease, deadline);
        if (!alive.ok()) return alive.status();
        if (*alive) etcd_lease = kv->lease;
      }
    }
    const bool granted = etcd_lease == 0;
    if (granted) {
      auto id = GrantLease(ttl_s, deadline);
      if (!id.ok()) return id.status();
      etcd_lease = *id;
    }
    Lease lease{name, holder, SaturatingAdd(now, ttl_ms)};
    etcdserverpb::TxnRequest txn;
    *txn.add_compare() = ModRevisionIs(key, kv->mod_revision);
    AddPut(&txn, key, LeaseToJson(lease), etcd_lease);
    etcdserverpb::TxnResponse resp;
    Status st = Call("acquire " + key, deadline,
                     [&](grpc::ClientContext* ctx) { return stubs_->kv->Txn(ctx, txn, &resp); });
    if (!st.ok()) return st;
    if (resp.succeeded()) {
      // Our previous etcd lease (expired meanwhile or replaced) holds nothing now.
      if (granted && ours && kv->lease != 0) RevokeLease(kv->lease, deadline);
      return lease;
    }
    if (granted) RevokeLease(etcd_lease, deadline);
  }
  return Status(Unavailable("etcd store (" + endpoints_text_ + "): acquire " + key +
                            ": lost the race " + std::to_string(kMaxRaces) + " times"));
}

Status EtcdStateStore::ReleaseLease(const std::string& name, const std::string& holder) {
  const Deadline deadline = CallDeadline();
  const std::string key = Key(kLeases, name);
  for (int attempt = 0; attempt < kMaxRaces; ++attempt) {
    auto kv = Get(key, deadline);
    if (!kv.ok()) return kv.status();
    if (!kv->found) return Status::Ok();
    auto current = LeaseFromJson(kv->value, key);
    if (!current.ok()) return current.status();
    if (current->holder != holder && current->expires_ms > clock_.WallMillis()) {
      return FailedPrecondition("lease " + name + " held by " + current->holder + ", not " +
                                holder);
    }
    // Ours, or someone else's that has expired: either way it is free afterwards.
    etcdserverpb::TxnRequest txn;
    *txn.add_compare() = ModRevisionIs(key, kv->mod_revision);
    AddDelete(&txn, key);
    etcdserverpb::TxnResponse resp;
    Status st = Call("release " + key, deadline,
                     [&](grpc::ClientContext* ctx) { return stubs_->kv->Txn(ctx, txn, &resp); });
    if (!st.ok()) return st;
    if (resp.succeeded()) {
      if (current->holder == holder && kv->lease != 0) RevokeLease(kv->lease, deadline);
      return Status::Ok();
    }
  }
  return Unavailable("etcd store (" + endpoints_text_ + "): release " + key + ": lost the race " +
                     std::to_string(kMaxRaces) + " times");
}

Status EtcdStateStore::Watch(const std::string& kind, int64_t start_revision,
                             const std::function<bool(const Event&)>& on_event,
                             std::chrono::milliseconds max_duration) {
  const std::string prefix = options_.key_prefix + kind + "/";
  grpc::ClientContext ctx;
  const Deadline end = std::chrono::system_clock::now() + max_duration;
  ctx.set_deadline(end);
  ctx.set_wait_for_ready(true);  // a member reconnecting is waited for, not failed fast
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!token_.empty()) ctx.AddMetadata("token", token_);
  }
  auto stream = stubs_->watch->Watch(&ctx);
  etcdserverpb::WatchRequest req;
  auto* create = req.mutable_create_request();
  create->set_key(prefix);
  create->set_range_end(PrefixEnd(prefix));
  create->set_start_revision(start_revision);
  if (!stream->Write(req)) {
    grpc::Status st = stream->Finish();
    return Error("watch " + prefix, st.error_code(), st.error_message());
  }
  etcdserverpb::WatchResponse resp;
  while (stream->Read(&resp)) {
    if (resp.canceled()) {
      ctx.TryCancel();
      (void)stream->Finish();
      return FailedPrecondition(
          "etcd store (" + endpoints_text_ + "): watch " + prefix +
          " canceled by etcd: " + resp.cancel_reason() +
          (resp.compact_revision() != 0
               ? " (compacted at revision " + std::to_string(resp.compact_revision()) + ")"
               : ""));
    }
    for (const auto& e : resp.events()) {
      Event event;
      event.type = e.type() == mvccpb::Event::DELETE ? Event::Type::kDelete : Event::Type::kPut;
      event.id = e.kv().key().substr(prefix.size());
      if (event.type == Event::Type::kPut) event.value = e.kv().value();
      event.revision = e.kv().mod_revision();
      if (!on_event(event)) {
        ctx.TryCancel();
        (void)stream->Finish();
        return Status::Ok();
      }
    }
  }
  grpc::Status st = stream->Finish();
  // The server may end the stream first, with "context deadline exceeded" as UNKNOWN.
  if (st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ||
      (!st.ok() && std::chrono::system_clock::now() + std::chrono::milliseconds(100) >= end &&
       st.error_message().find("deadline exceeded") != std::string::npos)) {
    return DeadlineExceeded("etcd store (" + endpoints_text_ + "): watch " + prefix +
                            " ended after " + std::to_string(max_duration.count()) + " ms");
  }
  return Error("watch " + prefix, st.ok() ? grpc::StatusCode::UNAVAILABLE : st.error_code(),
               st.ok() ? "stream ended" : st.error_message());
}

std::shared_ptr<grpc::Channel> EtcdStateStore::MemberChannel(const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& channel = member_channels_[address];
  if (!channel) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    if (!target_name_override_.empty() && !options_.ca_file.empty()) {
      args.SetSslTargetNameOverride(target_name_override_);
    }
    channel = grpc::CreateCustomChannel(address, credentials_, args);
  }
  return channel;
}

Result<StoreHealth> EtcdStateStore::Health() {
  const Deadline deadline = std::chrono::system_clock::now() + options_.health_timeout;
  etcdserverpb::MemberListRequest req;
  etcdserverpb::MemberListResponse members;
  Status st = Call("member list", deadline, [&](grpc::ClientContext* ctx) {
    return stubs_->cluster->MemberList(ctx, req, &members);
  });
  if (!st.ok()) return st;

  struct Answer {
    bool ok = false;
    uint64_t leader = 0;
  };
  std::vector<Answer> answers(members.members_size());
  std::vector<std::thread> askers;
  std::string token;
  {
    std::lock_guard<std::mutex> lock(mu_);
    token = token_;
  }
  for (int i = 0; i < members.members_size(); ++i) {
    const auto& m = members.members(i);
    if (m.clienturls_size() == 0) continue;  // added but never started
    auto channel = MemberChannel(HostPortOfUrl(m.clienturls(0)));
    askers.emplace_back([&, i, channel] {
      auto stub = etcdserverpb::Maintenance::NewStub(channel);
      grpc::ClientContext ctx;
      ctx.set_deadline(deadline);
      // A member that just came back is reconnected within the deadline, not failed fast.
      ctx.set_wait_for_ready(true);
      if (!token.empty()) ctx.AddMetadata("token", token);
      etcdserverpb::StatusRequest sreq;
      etcdserverpb::StatusResponse sresp;
      grpc::Status s = stub->Status(&ctx, sreq, &sresp);
      answers[i].ok = s.ok() && sresp.errors_size() == 0 && sresp.leader() != 0;
      answers[i].leader = s.ok() ? sresp.leader() : 0;
    });
  }
  for (auto& t : askers) t.join();

  StoreHealth health;
  health.backend = "etcd";
  health.members = members.members_size();
  std::map<uint64_t, int> votes;
  for (const auto& a : answers) {
    if (!a.ok) continue;
    ++health.healthy;
    ++votes[a.leader];
  }
  uint64_t leader = 0;
  int most = 0;
  for (const auto& [id, n] : votes) {
    if (n > most) leader = id, most = n;
  }
  for (const auto& m : members.members()) {
    if (leader != 0 && m.id() == leader) health.leader = m.name();
  }
  return health;
}

}  // namespace dwcp::acp
