#include "migration/migration_engine.h"

#include <algorithm>
#include <asio/experimental/as_tuple.hpp>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <future>
#include <random>

#include "amst/connection.h"
#include "common/failpoint.h"
#include "hde/page_codec.h"
#include "migration/control_checks.h"
#include "obs/log.h"
#include "obs/pprof/task_registry.h"
#include "obs/trace/tracer.h"
#include "vm/synthetic_guest.h"

namespace dwcp::migration {
namespace {

using asio::awaitable;
using asio::use_awaitable;
using asio::experimental::as_tuple;
using Ms = std::chrono::milliseconds;
using SteadyTime = std::chrono::steady_clock::time_point;

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// Accumulates the time a migration spends in each component, to name the dominant one.
struct TimeShares {
  double amst = 0, hde = 0, acp = 0;
  obs::Component Dominant() const {
    if (amst >= hde && amst >= acp) return obs::Component::kAmst;
    return hde >= acp ? obs::Component::kHde : obs::Component::kAcp;
  }
};

// Measures one scope into a TimeShares field.
class ScopedTime {
 public:
  ScopedTime(Clock& clock, double* into) : clock_(clock), into_(into), start_(clock.Now()) {}
  ~ScopedTime() { *into_ += Seconds(clock_.Now() - start_); }

 private:
  Clock& clock_;
  double* into_;
  SteadyTime start_;
};

wire::Control MakeAbort(const std::string& reason) {
  wire::Control c;
  c.mutable_abort()->set_reason(reason);
  return c;
}

// error_type label of a failure: the status code's name, "tls" for a refused handshake.
const char* ErrorTypeOf(StatusCode code) {
  return code == StatusCode::kUnauthenticated ? "tls" : StatusCodeName(code);
}

obs::Component ComponentOfError(StatusCode code) {
  switch (code) {
    case StatusCode::kUnauthenticated:
      return obs::Component::kAmst;
    case StatusCode::kDataLoss:
      return obs::Component::kHde;
    case StatusCode::kFailedPrecondition:
    case StatusCode::kInternal:
      return obs::Component::kAcp;
    default:
      return obs::Component::kAmst;
  }
}

std::string ExceptionMessage(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "unknown exception";
  }
}

uint32_t WorkerThreads(uint32_t configured) {
  return configured > 0 ? configured : std::max(1u, std::thread::hardware_concurrency());
}

// Runs `release` when destroyed (a connection slot's owner).
struct OnRelease {
  std::function<void()> release;
  ~OnRelease() {
    if (release) release();
  }
};

// 32 random hex digits: the secret that lets a data stream join a migration.
std::string NewStreamToken() {
  std::random_device rd;
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08x%08x%08x%08x", rd(), rd(), rd(), rd());
  return buf;
}

// Compares secrets in time independent of where they differ.
bool SameSecret(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

std::string NewMigrationId() {
  static thread_local std::mt19937_64 rng(std::random_device{}() ^ static_cast<uint64_t>(clock())
                                                                       << 32);
  char buf[24];
  std::snprintf(buf, sizeof buf, "mig-%012" PRIx64,
                static_cast<uint64_t>(rng() & 0xffffffffffffULL));
  return buf;
}

// Something the engine must abort on shutdown: a cancel flag and the connection to close.
struct MigrationEngine::Active {
  virtual ~Active() = default;
  std::string key;
  std::atomic<bool> cancel{false};
  std::atomic<bool> committed{false};
  std::mutex mu;
  std::shared_ptr<amst::Connection> conn;                // guarded by mu
  std::shared_ptr<OutgoingPages> pages;                  // guarded by mu; source side
  std::vector<std::shared_ptr<amst::Connection>> extra;  // guarded by mu; joined streams

  void SetConnection(std::shared_ptr<amst::Connection> c) {
    std::lock_guard lock(mu);
    conn = std::move(c);
  }
  void Cancel() {
    cancel = true;
    std::lock_guard lock(mu);
    if (committed) return;
    if (conn) conn->Close();
    if (pages) pages->Close();
    for (auto& c : extra) c->Close();
  }
};

// An incoming migration that additional data streams may join (by migration id).
struct MigrationEngine::IncomingSession {
  std::string token;
  uint8_t version = 0;
  uint32_t max_streams = 1;
  std::atomic<uint32_t> joined{0};
  std::shared_ptr<IncomingPages> pages;
  std::shared_ptr<Active> active;
};

struct MigrationEngine::Outgoing : Active {
  obs::trace::Span root;  // migrate_vm, from admission to the end
  acp::MigrationRecord record;
  acp::VmRecord vm_before;  // the VM record as marked migrating
  std::shared_ptr<vm::Guest> guest;
  MigrationRequest request;
  std::string dest_address;
  std::string dest_host;
  uint16_t dest_port = 0;
  std::shared_ptr<amst::TokenBucket> bucket;  // the per-migration cap
  double handshake_rtt_ms = 0;
  // From the destination's MigrationReady: what a StreamJoin must present, and how many
  // streams it takes.
  std::string stream_token;
  uint32_t max_streams = 1;
  std::atomic<uint32_t> opening{0};       // extra streams being opened
  std::atomic<bool> joins_failed{false};  // stop adding streams after a refused join
  // The commit CAS was sent: from here on only the store can say whether the VM moved.
  bool commit_sent = false;
  // The destination asked for signed round commitments (MigrationReady).
  bool commitments = false;
};

IncomingGuestFactory SyntheticIncomingGuests() {
  return [](const vm::GuestSpec& spec) -> Result<std::shared_ptr<vm::Guest>> {
    auto g = vm::SyntheticGuest::CreateIncoming(spec);
    if (!g.ok()) return g.status();
    return std::shared_ptr<vm::Guest>(std::move(g).value());
  };
}

MigrationEngine::MigrationEngine(EngineConfig config, acp::StateStore& store, vm::VmTable& vms,
                                 obs::Metrics& metrics, Clock& clock, asio::io_context& io,
                                 IncomingGuestFactory incoming_guests, obs::trace::Tracer* tracer)
    : config_(std::move(config)),
      store_(store),
      vms_(vms),
      metrics_(metrics),
      clock_(clock),
      io_(io),
      incoming_guests_(std::move(incoming_guests)),
      tracer_(tracer),
      pool_(WorkerThreads(config_.worker_threads)),
      hde_stats_(metrics),
      pba_(metrics),
      node_bucket_(config_.node_bandwidth_limit),
      buffers_(config_.max_buffer_memory, &metrics) {
  config_.hde.compress_threads = WorkerThreads(config_.worker_threads);
  if (config_.batch_window == 0) config_.batch_window = 1;
}

DataPlaneContext MigrationEngine::DataContext() {
  DataPlaneContext c;
  c.io = io_.get_executor();
  c.pool = &pool_;
  c.metrics = &metrics_;
  c.hde_stats = &hde_stats_;
  c.clock = &clock_;
  c.node_bucket = &node_bucket_;
  c.stream_busy_ns = &stream_busy_ns_;
  c.buffers = &buffers_;
  c.buffer_wait = config_.io_timeout;
  return c;
}

void MigrationEngine::SetNodeBandwidthLimit(uint64_t bytes_per_second) {
  node_bucket_.SetRate(bytes_per_second, clock_.Now());
  obs::LogInfo("amst", "node bandwidth limit changed",
               {{"node", config_.node_id}, {"bandwidth_limit_bytes_per_second", bytes_per_second}});
}

Status MigrationEngine::SetMigrationBandwidthLimit(const std::string& migration_id,
                                                   uint64_t bytes_per_second) {
  std::shared_ptr<Active> a;
  {
    std::lock_guard lock(mu_);
    auto it = active_.find(migration_id);
    if (it != active_.end()) a = it->second;
  }
  auto* out = dynamic_cast<Outgoing*>(a.get());
  if (!out) {
    return NotFound("migration " + migration_id + " is not running from " + config_.node_id);
  }
  out->bucket->SetRate(bytes_per_second, clock_.Now());
  out->request.bandwidth_limit = bytes_per_second;
  obs::LogInfo("amst", "migration bandwidth limit changed",
               {{"migration_id", migration_id},
                {"vm_id", out->record.vm_id},
                {"bandwidth_limit_bytes_per_second", bytes_per_second}});
  return Status::Ok();
}

std::array<uint64_t, 3> MigrationEngine::bytes_by_mode() const {
  return {bytes_by_mode_[0].load(), bytes_by_mode_[1].load(), bytes_by_mode_[2].load()};
}

amst::LinkMode MigrationEngine::LinkModeOf(const std::string& peer) {
  std::lock_guard lock(links_mu_);
  auto it = links_.find(peer);
  return it == links_.end() ? amst::LinkMode::kDatacenter : it->second.mode();
}

obs::trace::Span MigrationEngine::StartSpan(std::string_view name, std::string_view component,
                                            const obs::trace::SpanContext* parent) {
  return tracer_ ? tracer_->StartSpan(name, component, parent) : obs::trace::Span();
}

MigrationEngine::~MigrationEngine() {
  Shutdown(Ms(5000));
  store_pool_.join();
  pool_.join();  // encode/decode tasks use members declared after the pool
}

size_t MigrationEngine::active_migrations() const {
  std::lock_guard lock(mu_);
  return active_.size();
}

void MigrationEngine::Register(const std::shared_ptr<Active>& a) {
  std::lock_guard lock(mu_);
  active_[a->key] = a;
}

void MigrationEngine::Unregister(const std::string& key) {
  std::lock_guard lock(mu_);
  active_.erase(key);
  idle_cv_.notify_all();
}

void MigrationEngine::LogLimited(std::string_view limit, std::string_view message,
                                 nlohmann::json fields) {
  const int64_t now = clock_.WallMillis();
  uint64_t suppressed = 0;
  {
    std::lock_guard lock(limit_log_mu_);
    auto it = limit_log_.find(limit);
    if (it == limit_log_.end()) it = limit_log_.emplace(std::string(limit), std::pair{0, 0}).first;
    auto& [last_ms, since] = it->second;
    if (last_ms != 0 && now - last_ms < 10000) {
      ++since;
      return;
    }
    last_ms = now;
    suppressed = std::exchange(since, 0);
  }
  fields["limit"] = std::string(limit);
  if (suppressed > 0) fields["refused_since_last_log"] = suppressed;
  obs::LogWarn("amst", message, fields);
}

Status MigrationEngine::AdmitMigration(const std::string& peer, bool incoming, std::string* limit) {
  std::string refused;
  Status why;
  {
    std::lock_guard lock(mu_);
    uint32_t& with_peer = peer_migrations_[peer];
    const std::string side = incoming ? "destination " : "";
    if (config_.max_migrations != 0 && migrations_ >= config_.max_migrations) {
      refused = "max_migrations";
      why = FailedPrecondition(side + config_.node_id + " busy: " + std::to_string(migrations_) +
                               " migrations running (max_migrations " +
                               std::to_string(config_.max_migrations) + ")");
    } else if (config_.max_migrations_per_peer != 0 &&
               with_peer >= config_.max_migrations_per_peer) {
      refused = "max_migrations_per_peer";
      why = FailedPrecondition(side + config_.node_id + " busy: " + std::to_string(with_peer) +
                               " migrations running with " + peer + " (max_migrations_per_peer " +
                               std::to_string(config_.max_migrations_per_peer) + ")");
    } else {
      ++migrations_;
      ++with_peer;
      return Status::Ok();
    }
    if (with_peer == 0) peer_migrations_.erase(peer);
  }
  if (limit != nullptr) *limit = refused;
  metrics_.CountLimitRejection(refused == "max_migrations" ? "migrations" : "migrations_per_peer");
  obs::LogWarn("migration", incoming ? "refused an incoming migration" : "refused a migration",
               {{"peer", peer}, {"limit", refused}, {"error", why.message()}});
  return why;
}

void MigrationEngine::ReleaseMigration(const std::string& peer) {
  std::lock_guard lock(mu_);
  if (migrations_ > 0) --migrations_;
  auto it = peer_migrations_.find(peer);
  if (it != peer_migrations_.end() && --it->second == 0) peer_migrations_.erase(it);
}

uint32_t MigrationEngine::limited_migrations() const {
  std::lock_guard lock(mu_);
  return migrations_;
}

uint32_t MigrationEngine::limited_migrations_with(const std::string& peer) const {
  std::lock_guard lock(mu_);
  auto it = peer_migrations_.find(peer);
  return it == peer_migrations_.end() ? 0 : it->second;
}

std::shared_ptr<void> MigrationEngine::AdmitConnection(const std::string& address) {
  const char* refused = nullptr;
  uint32_t open = 0;
  {
    std::lock_guard lock(conn_mu_);
    uint32_t& from_peer = peer_connections_[address];
    if (config_.max_connections != 0 && connections_ >= config_.max_connections) {
      refused = "connections";
      open = connections_;
    } else if (config_.max_connections_per_peer != 0 &&
               from_peer >= config_.max_connections_per_peer) {
      refused = "connections_per_peer";
      open = from_peer;
    } else {
      ++connections_;
      ++from_peer;
    }
    if (refused != nullptr && from_peer == 0) peer_connections_.erase(address);
  }
  if (refused != nullptr) {
    metrics_.CountLimitRejection(refused);
    const bool total = std::string_view(refused) == "connections";
    LogLimited(refused,
               total ? "refused a data connection: too many open (max_connections)"
                     : "refused a data connection: too many open from this address "
                       "(max_connections_per_peer)",
               {{"peer", address},
                {"open", open},
                {"max", total ? config_.max_connections : config_.max_connections_per_peer}});
    return nullptr;
  }
  // The slot: gives the connection back when the last owner drops it.
  auto slot = std::make_shared<OnRelease>();
  slot->release = [this, address] {
    std::lock_guard lock(conn_mu_);
    if (connections_ > 0) --connections_;
    auto it = peer_connections_.find(address);
    if (it != peer_connections_.end() && --it->second == 0) peer_connections_.erase(it);
  };
  return slot;
}

void MigrationEngine::Shutdown(Ms grace) {
  if (!stopping_.exchange(true)) {
    obs::LogInfo("migration", "engine shutting down: aborting uncommitted migrations",
                 {{"active", active_migrations()}});
  }
  if (acceptor_) {
    asio::post(acceptor_->get_executor(), [this] {
      asio::error_code ec;
      acceptor_->close(ec);
    });
  }
  std::unique_lock lock(mu_);
  for (auto& [_, a] : active_) a->Cancel();
  idle_cv_.wait_for(lock, grace, [this] { return active_.empty(); });
}

Status MigrationEngine::Listen(const std::string& host, uint16_t port) {
  asio::error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec) return InvalidArgument("data listen address '" + host + "' is not an IP address");
  acceptor_ = std::make_unique<asio::ip::tcp::acceptor>(io_);
  asio::ip::tcp::endpoint ep(address, port);
  acceptor_->open(ep.protocol(), ec);
  if (!ec) acceptor_->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_->bind(ep, ec);
  if (!ec) acceptor_->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return Unavailable("cannot listen for data on " + host + ":" + std::to_string(port) + ": " +
                       ec.message());
  }
  listen_port_ = acceptor_->local_endpoint().port();
  listening_ = true;
  asio::co_spawn(acceptor_->get_executor(), AcceptLoop(), asio::detached);
  return Status::Ok();
}

awaitable<void> MigrationEngine::AcceptLoop() {
  auto task = obs::pprof::TaskRegistry::Global().Register(
      "amst.accept", "data listener :" + std::to_string(listen_port_));
  task.SetState("accepting");
  while (!stopping_) {
    auto [ec, socket] =
        co_await acceptor_->async_accept(asio::make_strand(io_), as_tuple(use_awaitable));
    if (ec) {
      if (stopping_ || ec == asio::error::operation_aborted) {
        listening_ = false;
        co_return;
      }
      obs::LogWarn("amst", "accept failed", {{"error", ec.message()}});
      continue;
    }
    // Connection limits by remote IP, before TLS or any frame: a refused connection costs
    // the node one accept and one close.
    asio::error_code rec;
    auto remote = socket.remote_endpoint(rec);
    auto slot = AdmitConnection(rec ? std::string("unknown") : remote.address().to_string());
    if (!slot) {
      asio::error_code ignored;
      socket.close(ignored);
      continue;
    }
    auto conn = std::make_shared<amst::Connection>(
        std::move(socket), metrics_, config_.max_frame_bytes, config_.max_control_bytes);
    auto executor = conn->executor();
    // The slot lives until the connection's coroutine ends.
    asio::co_spawn(executor, ServeIncoming(std::move(conn)), [slot](std::exception_ptr e) {
      if (e) {
        obs::LogError("migration", "incoming migration ended with an exception",
                      {{"error", ExceptionMessage(e)}});
      }
    });
  }
}

Result<acp::MigrationRecord> MigrationEngine::Start(const MigrationRequest& req) {
  if (stopping_) return Status(Aborted("node is shutting down"));
  if (active_migrations() >= config_.max_tasks) {
    return Status(FailedPrecondition("node runs " + std::to_string(config_.max_tasks) +
                                     " migration tasks already (max_tasks)"));
  }
  if (req.protocol != 1 && req.protocol != 3) {
    return Status(InvalidArgument("protocol must be v1 or v3"));
  }
  if (req.downtime_budget_ms == 0 || req.downtime_budget_ms < -1) {
    return Status(InvalidArgument("downtime budget must be positive"));
  }
  if (req.max_rounds == 0 || req.max_rounds < -1 || req.max_rounds > 1000) {
    return Status(InvalidArgument("max rounds must be between 1 and 1000"));
  }
  auto vm = store_.GetVm(req.vm_id);
  if (!vm.ok()) return vm.status();
  if (req.dest_node == vm->node_id) {
    return Status(InvalidArgument("vm " + req.vm_id + " already runs on " + req.dest_node +
                                  ": the destination must differ from the source"));
  }
  if (vm->node_id != config_.node_id) {
    return Status(FailedPrecondition("vm " + req.vm_id + " runs on " + vm->node_id + ", not on " +
                                     config_.node_id));
  }
  if (vm->state == acp::kVmMigrating) {
    return Status(
        FailedPrecondition("vm " + req.vm_id + " is already migrating (" + vm->migration_id + ")"));
  }
  if (vm->state != acp::kVmRunning) {
    return Status(FailedPrecondition("vm " + req.vm_id + " is " + vm->state + ", not running"));
  }
  auto dest = store_.GetNode(req.dest_node);
  if (!dest.ok()) {
    if (dest.status().code() == StatusCode::kNotFound) {
      return Status(NotFound("node " + req.dest_node + " does not exist"));
    }
    return dest.status();
  }
  if (dest->state != "up" ||
      clock_.WallMillis() - dest->heartbeat_ms > config_.node_alive_window.count()) {
    return Status(FailedPrecondition("destination node " + req.dest_node + " is down"));
  }
  if (std::string why = QuarantineReason(req.dest_node); !why.empty()) {
    return Status(FailedPrecondition("destination node " + req.dest_node + " is quarantined (" +
                                     why + "); lift it with DELETE /api/v1/quarantine/" +
                                     req.dest_node));
  }
  auto local = vms_.Find(req.vm_id);
  if (!local.guest) {
    return Status(FailedPrecondition("vm " + req.vm_id + " is not running on " + config_.node_id));
  }
  {
    // A migration that failed may still be settling (its record already final): the guest
    // is not free for another until it has. Settling takes moments, so a retry that comes
    // right after the record turned final waits for it (up to 2 s) rather than fail.
    std::unique_lock lock(mu_);
    std::string previous;
    auto settled = [&] {
      for (const auto& [key, a] : active_) {
        auto* out = dynamic_cast<Outgoing*>(a.get());
        if (out != nullptr && out->record.vm_id == req.vm_id) {
          previous = out->record.id;
          return false;
        }
      }
      return true;
    };
    if (!idle_cv_.wait_for(lock, std::chrono::seconds(2), settled)) {
      return Status(FailedPrecondition("vm " + req.vm_id + " is still finishing migration " +
                                       previous));
    }
  }

  // Concurrency limits: refused here, before the store hears of the migration.
  DWCP_RETURN_IF_ERROR(AdmitMigration(req.dest_node, /*incoming=*/false, nullptr));

  auto m = std::make_shared<Outgoing>();
  m->record.id = NewMigrationId();
  m->key = m->record.id;
  m->record.vm_id = req.vm_id;
  m->record.source_node = config_.node_id;
  m->record.dest_node = req.dest_node;
  m->record.phase = acp::kPhasePending;
  m->record.memory_bytes = vm->memory_bytes;
  m->record.remaining_bytes = vm->memory_bytes;
  m->record.epoch_before = vm->epoch;
  m->record.protocol = "v" + std::to_string(req.protocol);  // offered; the handshake may lower it
  m->record.created_ms = clock_.WallMillis();
  m->guest = local.guest;
  m->request = req;
  m->dest_address = dest->data_address;
  m->bucket = std::make_shared<amst::TokenBucket>(req.bandwidth_limit);

  m->root = StartSpan("migrate_vm", "migration", nullptr);
  m->root.SetAttribute("vm.id", req.vm_id);
  m->root.SetAttribute("migration.id", m->record.id);
  m->root.SetAttribute("source.node", config_.node_id);
  m->root.SetAttribute("destination.node", req.dest_node);
  m->root.SetAttribute("memory_bytes", vm->memory_bytes);
  m->root.SetAttribute("phase", acp::kPhasePending);

  acp::VmRecord desired = *vm;
  desired.state = acp::kVmMigrating;
  desired.migration_id = m->record.id;
  // Registered before the record says migrating, so the fencing check never takes it for a
  // migration that ended (RepairStranded).
  Register(m);
  {
    auto span = StartSpan("acp_consensus", "acp", &m->root.context());
    span.SetAttribute("operation", "mark_migrating");
    const SteadyTime c0 = clock_.Now();
    Status st = store_.CompareAndSwapVm(*vm, desired, &m->record);
    metrics_.consensus_latency().Observe(Seconds(clock_.Now() - c0));
    if (!st.ok()) {
      Unregister(m->key);
      ReleaseMigration(req.dest_node);
      span.SetError(st.ToString());
      m->root.SetError(st.ToString());
      return st;
    }
  }
  m->vm_before = desired;

  metrics_.migrations_out.Increment();
  obs::LogInfo("migration", "migration started",
               {{"vm_id", req.vm_id},
                {"migration_id", m->record.id},
                {"trace_id", m->root.context().valid() ? m->root.context().TraceIdHex() : ""},
                {"span_id", m->root.context().valid() ? m->root.context().SpanIdHex() : ""},
                {"source", config_.node_id},
                {"destination", req.dest_node},
                {"memory_bytes", vm->memory_bytes}});
  asio::co_spawn(asio::make_strand(io_), RunOutgoing(m), [](std::exception_ptr e) {
    if (e) {
      obs::LogError("migration", "outgoing migration ended with an exception",
                    {{"error", ExceptionMessage(e)}});
    }
  });
  return m->record;
}

// ---------------------------------------------------------------------------------------
// Source side.

awaitable<void> MigrationEngine::RunOutgoing(std::shared_ptr<Outgoing> m) {
  auto& rec = m->record;
  auto& guest = *m->guest;
  const SteadyTime t_start = clock_.Now();
  TimeShares shares;
  const int64_t budget_ms = m->request.downtime_budget_ms > 0 ? m->request.downtime_budget_ms
                                                              : config_.downtime_budget_ms;
  const uint32_t max_rounds =
      m->request.max_rounds > 0 ? static_cast<uint32_t>(m->request.max_rounds) : config_.max_rounds;
  const bool force =
      m->request.on_round_limit < 0 ? config_.force_on_round_limit : m->request.on_round_limit == 1;
  bool paused = false;
  SteadyTime t_pause{};
  SteadyTime last_progress{};
  uint64_t logical_sent = 0;    // VM bytes sent in all rounds
  double transfer_seconds = 0;  // time spent sending pages (for the bandwidth estimate)
  std::shared_ptr<amst::Connection> conn;
  auto task = obs::pprof::TaskRegistry::Global().Register(
      "migration.send", rec.vm_id + " " + rec.id + " -> " + rec.dest_node);
  task.SetState("connecting");
  const obs::trace::SpanContext root_ctx = m->root.context();
  const std::string trace_id = root_ctx.valid() ? root_ctx.TraceIdHex() : "";
  const std::string span_id = root_ctx.valid() ? root_ctx.SpanIdHex() : "";
  rec.trace_id = trace_id;
  obs::trace::Span transfer;  // transfer_data: every round, pre-copy and stop-and-copy
  obs::trace::Span step;      // the current step's span, failed with the migration

  // Where the time went so far, for the migration's record.
  auto record_shares = [&] {
    rec.amst_seconds = shares.amst;
    rec.hde_seconds = shares.hde;
    rec.acp_seconds = shares.acp;
  };
  // Writes progress to the store at most four times a second (or when forced); after a
  // failed write, not again for 5 s, so that a silent store slows the transfer only rarely
  // (each attempt may wait up to store_timeout).
  SteadyTime progress_retry_at{};
  auto progress = [&](bool force_write) {
    auto now = clock_.Now();
    if (!force_write && now - last_progress < Ms(250)) return;
    if (!force_write && now < progress_retry_at) return;
    last_progress = now;
    record_shares();
    ScopedTime t(clock_, &shares.acp);
    Status st = store_.PutMigration(rec);
    if (!st.ok()) {
      progress_retry_at = clock_.Now() + Ms(5000);
      metrics_.CountError(obs::Component::kAcp, "store", "warning");
      obs::LogWarn("acp", "cannot record migration progress",
                   {{"migration_id", rec.id}, {"error", st.ToString()}});
    }
  };

  // Ends the migration without moving the VM: it keeps (or resumes) running on the source.
  auto fail = [&](Status why, bool aborted) -> void {
    if (conn && why.code() != StatusCode::kUnavailable) {
      // Best effort: tell the destination to discard what it has (no waiting).
      conn->Close();
    }
    guest.StopDirtyLog();
    acp::VmRecord back = m->vm_before;
    back.state = acp::kVmRunning;
    back.migration_id.clear();
    rec.phase = aborted ? acp::kPhaseAborted : acp::kPhaseFailed;
    rec.error = why.message();
    if (step.recording()) step.SetError(why.ToString());
    if (transfer.recording()) transfer.SetError(why.ToString());
    m->root.SetError(why.ToString());
    m->root.SetAttribute("phase", rec.phase);
    m->root.SetAttribute("rounds", rec.round);
    rec.finished_ms = clock_.WallMillis();
    rec.total_ms = Seconds(clock_.Now() - t_start) * 1e3;
    record_shares();
    Status st;
    {
      ScopedTime t(clock_, &shares.acp);
      const SteadyTime c0 = clock_.Now();
      st = store_.CompareAndSwapVm(m->vm_before, back, &rec);
      metrics_.consensus_latency().Observe(Seconds(clock_.Now() - c0));
    }
    bool resume = st.ok();
    if (!st.ok()) {
      // Someone (the destination resolving an in-doubt migration) already put the VM back, or
      // the store does not answer. Resume only if the store still gives the VM to this node at
      // the same epoch — or, when it cannot be read, if this node never sent its commit: only
      // that commit can move the VM, so it is still ours (the node's fencing check puts the
      // record back to running once the store answers; docs/consensus.md).
      auto now = store_.GetVm(rec.vm_id);
      if (now.ok()) {
        resume = now->node_id == config_.node_id && now->epoch == m->vm_before.epoch &&
                 (now->state == acp::kVmRunning ||
                  (now->state == acp::kVmMigrating && now->migration_id == rec.id &&
                   !m->commit_sent));
      } else {
        resume = !m->commit_sent && now.status().code() != StatusCode::kNotFound;
        if (resume) {
          obs::LogWarn("acp", "store unreachable after a failed migration: the vm resumes on "
                              "the source and its record is repaired when the store answers",
                       {{"vm_id", rec.vm_id}, {"migration_id", rec.id},
                        {"error", now.status().ToString()}});
        }
      }
      Status put = store_.PutMigration(rec);
      (void)put;
    }
    if (resume) {
      if (paused) guest.Resume();
    } else {
      // Fenced: never run a VM the store does not give us.
      vms_.Remove(rec.vm_id);
      metrics_.vms_running.Set(static_cast<double>(vms_.size()));
      obs::LogError("acp", "vm fenced after failed migration: the store no longer gives it to us",
                    {{"vm_id", rec.vm_id}, {"migration_id", rec.id}});
      metrics_.CountError(obs::Component::kAcp, "fenced", "critical");
    }
    auto result = aborted ? obs::MigrationResult::kAborted : obs::MigrationResult::kFailed;
    metrics_.migrations(result, conn ? conn->protocol() : m->request.protocol).Increment();
    metrics_.CountError(ComponentOfError(why.code()), ErrorTypeOf(why.code()),
                        aborted ? "warning" : "critical");
    metrics_.migration_latency(shares.Dominant()).Observe(rec.total_ms / 1e3);
    metrics_.rounds.Observe(rec.round);
    obs::LogError("migration", aborted ? "migration aborted" : "migration failed",
                  {{"vm_id", rec.vm_id},
                   {"migration_id", rec.id},
                   {"trace_id", trace_id},
                   {"span_id", span_id},
                   {"error", why.ToString()},
                   {"latency_ms", rec.total_ms},
                   {"round", rec.round},
                   {"vm_resumed_on_source", resume}});
  };

  auto finish = [&] {
    step.End();
    transfer.End();
    m->root.End();
    metrics_.migrations_out.Decrement();
    ReleaseMigration(rec.dest_node);
    Unregister(m->key);
  };

  // --- connect and handshake
  Status st;
  step = StartSpan("amst_connect", "amst", &root_ctx);
  step.SetAttribute("peer.address", m->dest_address);
  step.SetAttribute("transport", "tcp");
  {
    std::string host;
    uint16_t port = 0;
    Status st = amst::SplitHostPort(m->dest_address, &host, &port);
    if (!st.ok()) {
      fail(st, false);
      finish();
      co_return;
    }
    m->dest_host = host;
    m->dest_port = port;
    Result<std::unique_ptr<amst::Connection>> c = Status(Internal("unset"));
    {
      ScopedTime t(clock_, &shares.amst);
      c = co_await amst::Connect(host, port, metrics_, config_.connect_timeout);
    }
    if (!c.ok()) {
      fail(c.status(), false);
      finish();
      co_return;
    }
    conn = std::shared_ptr<amst::Connection>(std::move(c).value());
    conn->SetFrameLimits(config_.max_frame_bytes, config_.max_control_bytes);
    m->SetConnection(conn);
    if (m->cancel) conn->Close();
    if (config_.tls_client) {
      ScopedTime t(clock_, &shares.amst);
      st = co_await conn->StartTls(*config_.tls_client, /*server=*/false, config_.connect_timeout);
      if (st.ok() && config_.tls_check_node_id && !conn->PeerCertificateNames(rec.dest_node)) {
        metrics_.CountAuthFailure("data", "node_id_mismatch");
        st = Status(StatusCode::kUnauthenticated, "the certificate of " + m->dest_address +
                                                      " does not name node '" + rec.dest_node +
                                                      "' (node_id_mismatch)");
      }
      if (!st.ok()) {
        fail(st, false);
        finish();
        co_return;
      }
    }
    step.SetAttribute("tls", conn->tls());
  }

  auto send_ctl = [&](const wire::Control& msg) -> awaitable<Status> {
    ScopedTime t(clock_, &shares.amst);
    co_return co_await conn->SendControl(msg, config_.io_timeout);
  };
  auto recv_ctl = [&](Ms deadline) -> awaitable<Result<wire::Control>> {
    ScopedTime t(clock_, &shares.amst);
    co_return co_await conn->ReceiveControl(deadline);
  };
  // Converts a control reply that is an Abort, or not the expected message, into an error.
  auto expect = [&](const Result<wire::Control>& r, wire::Control::MsgCase want) -> Status {
    if (!r.ok()) return r.status();
    if (r->msg_case() == wire::Control::kAbort) {
      return Aborted("destination aborted: " + r->abort().reason());
    }
    if (r->msg_case() != want)
      return ProtocolError("out-of-order control message from destination");
    return Status::Ok();
  };
  auto abort_out = [&](Status why) -> awaitable<void> {
    if (why.code() != StatusCode::kUnavailable && why.code() != StatusCode::kProtocol) {
      Status ignored = co_await conn->SendControl(MakeAbort(why.message()), Ms(1000));
      (void)ignored;
    }
    fail(why, m->cancel || why.code() == StatusCode::kAborted);
    finish();
  };

  {
    wire::Control hello;
    hello.mutable_hello()->set_node_id(config_.node_id);
    for (uint32_t v : config_.protocols) {
      if (v <= m->request.protocol) hello.mutable_hello()->add_versions(v);
    }
    SteadyTime sent_at = clock_.Now();
    st = co_await send_ctl(hello);
    auto ack = co_await recv_ctl(config_.io_timeout);
    // The handshake is the first measurement of the link; rounds add the delivery rate. Its
    // mode comes from the kernel's minimum RTT (SYN and hello exchanges), not the wall time
    // of the exchange, which on a busy host includes scheduling delay: a loaded LAN is not
    // a WAN.
    double rtt_ms = Seconds(clock_.Now() - sent_at) * 1e3;
    m->handshake_rtt_ms = rtt_ms;
    step.SetAttribute("net.rtt_ms", rtt_ms);
    amst::LinkSample first = conn->SampleLink();
    first.bandwidth_bytes_per_second = 0;  // nothing sent yet: only the RTT says something
    first.loss_ratio = 0;
    if (first.rtt_ms <= 0) first.rtt_ms = rtt_ms;
    m->root.SetAttribute("mode", amst::LinkModeName(ObserveLink(rec.dest_node, first, true)));
    if (st.ok()) st = expect(ack, wire::Control::kHelloAck);
    uint8_t version = 0;
    if (st.ok()) {
      std::vector<uint32_t> offered(hello.hello().versions().begin(),
                                    hello.hello().versions().end());
      auto accepted = AcceptedVersion(ack->hello_ack(), offered);
      if (accepted.ok()) {
        version = *accepted;
      } else {
        st = accepted.status();
      }
    }
    if (!st.ok()) {
      co_await abort_out(st);
      co_return;
    }
    conn->set_protocol(version);
    rec.protocol = "v" + std::to_string(conn->protocol());
    m->root.SetAttribute("protocol", rec.protocol);
  }
  {
    wire::Control begin;
    auto* b = begin.mutable_begin();
    b->set_migration_id(rec.id);
    b->set_vm_id(rec.vm_id);
    b->set_memory_bytes(guest.spec().memory_bytes);
    b->set_page_size(vm::kPageSize);
    b->set_dirty_rate(guest.spec().dirty_rate);
    b->set_seed(guest.spec().seed);
    b->set_epoch(m->vm_before.epoch);
    b->set_source_node(config_.node_id);
    if (root_ctx.valid()) b->set_traceparent(root_ctx.ToTraceparent());
    st = co_await send_ctl(begin);
    auto ready = co_await recv_ctl(config_.io_timeout);
    if (st.ok()) st = expect(ready, wire::Control::kReady);
    if (st.ok() && !ready->ready().ok()) {
      // A destination at one of its limits says so, and which (MigrationReady.limit): the VM
      // stays here and a later attempt may succeed.
      st = FailedPrecondition("destination refused: " + ready->ready().error());
    }
    if (st.ok()) {
      m->stream_token = ready->ready().stream_token();
      m->max_streams = std::max(1u, ready->ready().max_streams());
      m->commitments = ready->ready().round_commitments();
      if (m->commitments && (!config_.node_key || conn->protocol() < 3)) {
        st = FailedPrecondition("destination requires signed round commitments, which this "
                                "node cannot send (no node key, or protocol v1)");
      }
    }
    if (!st.ok()) {
      co_await abort_out(st);
      co_return;
    }
  }

  // --- pre-copy rounds
  // The data plane: batches planned here, encoded on the pool, written by one writer per
  // stream (data_plane.h). v3 adds streams as the controller asks; v1 keeps one.
  const bool v3 = conn->protocol() >= 3;
  OutgoingPages::Options popts;
  popts.protocol = conn->protocol();
  popts.hde = config_.hde;
  popts.batch_pages = config_.batch_pages;
  popts.window = config_.batch_window;
  popts.io_timeout = config_.io_timeout;
  popts.migration_bucket = m->bucket;
  popts.hde.commit_leaves = m->commitments;
  auto pages = std::make_shared<OutgoingPages>(DataContext(), popts, guest);
  const SteadyTime t_transfer_start = clock_.Now();
  {
    std::lock_guard lock(m->mu);
    m->pages = pages;
  }
  if (m->cancel) pages->Close();
  pages->AddStream(conn, /*primary=*/true);
  amst::StreamControllerConfig stream_cfg = config_.streams;
  if (!v3) stream_cfg.fixed_streams = 1;
  stream_cfg.max_streams = std::min(stream_cfg.max_streams, std::max(1u, m->max_streams));
  stream_cfg.min_streams = std::min(stream_cfg.min_streams, stream_cfg.max_streams);
  if (stream_cfg.fixed_streams > stream_cfg.max_streams) {
    stream_cfg.fixed_streams = stream_cfg.max_streams;
  }
  amst::StreamController streams(
      stream_cfg, amst::StreamController::InitialStreams(stream_cfg, m->handshake_rtt_ms,
                                                         pba_.Forecast(rec.dest_node)));
  uint32_t next_stream_index = 1;
  uint32_t streams_used = 1;
  SteadyTime last_control{};
  uint64_t mode_bytes_seen = 0;
  // Opens or retires streams toward the controller's target.
  auto steer_streams = [&] {
    if (!v3 || m->joins_failed) return;
    // `opening` first: a stream that joins in between is then counted twice (no spawn),
    // never zero times (one spawn too many).
    const uint32_t opening = m->opening;
    const uint32_t open = pages->streams();
    const uint32_t want = streams.Observe(clock_.Now(), pages->payload_bytes(), open);
    for (uint32_t n = open + opening; n < want; ++n) {
      ++m->opening;
      asio::co_spawn(asio::make_strand(io_), OpenExtraStream(m, next_stream_index++),
                     asio::detached);
    }
    if (open > want && opening == 0) pages->RetireStream();
  };
  steer_streams();
  // The link rate the codec choice assumes. The kernel's delivery rate only measures the link while
  // the streams are busy: when the writers wait for batches, the encoder is the bottleneck and the
  // measurement is just our own output rate, and believing it would make HDE squeeze harder and run
  // slower still. So: start from PBA's forecast for the peer (or, with none, the encoder's
  // optimistic default), trust a measurement only when the writers were busy most of the last
  // interval, and otherwise raise the estimate (x1.5 per interval) until they are. Capped
  // by the bandwidth caps.
  double link_estimate = pba_.Forecast(rec.dest_node);
  uint64_t last_busy_ns = 0;
  SteadyTime last_estimate_at = clock_.Now();
  auto link_rate = [&]() -> double {
    const SteadyTime now = clock_.Now();
    const double interval = Seconds(now - last_estimate_at);
    const uint64_t busy = pages->busy_ns();
    const double saturation =
        interval > 0 ? (busy - last_busy_ns) / 1e9 / interval / std::max(1u, pages->streams()) : 0;
    last_busy_ns = busy;
    last_estimate_at = now;
    const double measured = pages->LinkBandwidth();
    if (saturation >= 0.8 && measured > 0) {
      link_estimate = measured;
    } else if (link_estimate > 0) {
      link_estimate = std::max(measured, link_estimate * 1.5);
    }
    double rate = link_estimate;
    for (uint64_t cap : {m->bucket->rate(), node_bucket_.rate()}) {
      if (cap > 0 && (rate <= 0 || rate > static_cast<double>(cap)))
        rate = static_cast<double>(cap);
    }
    return rate;  // <= 0: the encoder's configured default
  };
  double current_link_rate = link_rate();
  uint64_t batches_in_round = 0;
  amst::LinkMode mode = LinkModeOf(rec.dest_node);
  // Called after every planned batch: progress, stream steering, the link rate.
  auto after_batch = [&]() -> double {
    logical_sent = pages->logical_bytes();
    const uint64_t payload = pages->payload_bytes();
    bytes_by_mode_[static_cast<int>(mode)] += payload - mode_bytes_seen;
    mode_bytes_seen = payload;
    rec.bytes_transferred = logical_sent;
    rec.network_bytes = conn->wire_bytes_sent() + pages->extra_wire_bytes();
    double elapsed = Seconds(clock_.Now() - t_transfer_start);
    rec.throughput_bps = elapsed > 0 ? logical_sent / elapsed : 0;
    streams_used = std::max(streams_used, pages->streams());
    progress(false);
    auto now = clock_.Now();
    if (now - last_control >= Ms(100)) {
      last_control = now;
      steer_streams();
    }
    if (++batches_in_round % 32 == 0) current_link_rate = link_rate();
    return current_link_rate;
  };

  // Sends `round` (all pages when `all_pages`, else `dirty`). Rounds 1..kTracedRounds and the
  // stop-and-copy round get amst_transfer + hde_compress spans; the rest are counted on
  // transfer_data, so a trace stays under 50 spans whatever the round count.
  constexpr uint32_t kTracedRounds = 10;
  std::vector<uint64_t> dirty;
  auto send_round = [&](uint32_t round, bool all_pages, bool last) -> awaitable<Status> {
    const uint64_t count = all_pages ? guest.page_count() : dirty.size();
    obs::trace::Span round_span, hde_span;
    if (round <= kTracedRounds || last) {
      round_span = StartSpan("amst_transfer", "amst", &transfer.context());
      round_span.SetAttribute("round", round);
      round_span.SetAttribute("pages", count);
      round_span.SetAttribute("stop_and_copy", last);
      round_span.SetAttribute("transport", "tcp");
      // Encoding overlaps sending: the span covers the round, its attributes say what HDE did.
      hde_span = StartSpan("hde_compress", "hde", &round_span.context());
    }
    wire::Control rb;
    rb.mutable_round_begin()->set_round(round);
    rb.mutable_round_begin()->set_pages(count);
    DWCP_CO_RETURN_IF_ERROR(co_await send_ctl(rb));
    const SteadyTime t0 = clock_.Now();
    batches_in_round = 0;
    Status st = co_await pages->SendRound(round, all_pages ? nullptr : &dirty, current_link_rate,
                                          after_batch);
    after_batch();
    const double wall = Seconds(clock_.Now() - t0);
    transfer_seconds += wall;
    // Encoding runs on the pool beside the network: its share of the round is its time
    // spread over the workers, the rest is AMST's.
    const RoundTotals t = pages->round_totals();
    const double hde_share =
        std::min(wall, t.encode_seconds / std::max(1u, config_.hde.compress_threads));
    shares.hde += hde_share;
    shares.amst += wall - hde_share;
    if (hde_span.recording()) {
      hde_span.SetAttribute("algorithm", t.main_algorithm(v3));
      hde_span.SetAttribute("encode_seconds", t.encode_seconds);
      hde_span.SetAttribute("zero_pages", static_cast<int64_t>(t.zero_pages));
      hde_span.SetAttribute("dedup_pages", static_cast<int64_t>(t.dedup_pages));
      hde_span.SetAttribute("delta_pages", static_cast<int64_t>(t.delta_pages));
      hde_span.SetAttribute(
          "ratio", t.payload_bytes > 0 ? double(t.logical_bytes) / double(t.payload_bytes) : 0.0);
      if (!st.ok()) hde_span.SetError(st.ToString());
      hde_span.End();
    }
    DWCP_CO_RETURN_IF_ERROR(st);
    if (m->commitments) {
      // Every batch of the round is written: commit to them (docs/consensus.md).
      const OutgoingPages::RoundLeaves rl = pages->round_leaves();
      acp::Hash256 root = acp::MerkleRoot(rl.leaves);
      if (Failpoints::Armed("migration.source.tamper_commitment")) root[0] ^= 1;
      std::string signature = config_.node_key->Sign(acp::RoundCommitmentMessage(
          rec.id, rec.vm_id, m->vm_before.epoch, round, rl.first_seq, rl.leaves.size(), root));
      if (Failpoints::Armed("migration.source.forge_signature")) signature[0] ^= 1;
      wire::Control rc;
      auto* c = rc.mutable_round_commitment();
      c->set_round(round);
      c->set_first_seq(rl.first_seq);
      c->set_batches(rl.leaves.size());
      c->set_root(root.data(), root.size());
      c->set_signature(signature);
      DWCP_CO_RETURN_IF_ERROR(co_await send_ctl(rc));
    }
    round_span.SetAttribute("bytes", t.logical_bytes);
    round_span.SetAttribute("wire_bytes", t.payload_bytes);
    round_span.SetAttribute("streams", pages->streams());
    amst::LinkSample link = pages->SampleLink();
    const double aggregate = pages->LinkBandwidth();  // all streams together
    if (aggregate > link.bandwidth_bytes_per_second) link.bandwidth_bytes_per_second = aggregate;
    // PBA scores its forecast for this link against the measurement, and learns from it.
    pba_.Observe(rec.dest_node, link.bandwidth_bytes_per_second,
                 wall > 0 ? static_cast<double>(t.payload_bytes) / wall : 0);
    mode = ObserveLink(rec.dest_node, link, true);
    round_span.SetAttribute("mode", amst::LinkModeName(mode));
    round_span.SetAttribute("net.rtt_ms", link.rtt_ms);
    m->root.SetAttribute("mode", amst::LinkModeName(mode));
    co_return Status::Ok();
  };
  // Ends the data plane, then the migration. Writers that are idle at a round barrier end
  // cleanly, so the Abort reaches the destination; after a stream failure everything closes.
  auto abort_pages = [&](Status why) -> awaitable<void> {
    if (pages->error().ok()) {
      co_await pages->Finish();
    } else {
      pages->Close();
    }
    co_await abort_out(std::move(why));
    pages->Close();
  };

  step.End();
  transfer = StartSpan("transfer_data", "migration", &root_ctx);
  rec.phase = acp::kPhasePrecopy;
  rec.precopy_started_ms = clock_.WallMillis();
  task.SetState("precopy round 1");
  progress(true);
  guest.StartDirtyLog();
  uint32_t round = 1;
  rec.round = round;
  st = co_await send_round(round, /*all_pages=*/true, /*last=*/false);
  if (st.ok()) {
    // Warm the guest's page-hash cache while it still runs, so the digest at the pause only
    // re-hashes the pages written after this point.
    ScopedTime t(clock_, &shares.hde);
    (void)guest.Digest();
  }
  while (st.ok()) {
    co_await FailpointWait("migration.source.precopy_round");
    uint64_t remaining = guest.DirtyPageCount() * vm::kPageSize;
    double bw = transfer_seconds > 0 ? logical_sent / transfer_seconds : 0;
    const uint64_t limit = m->bucket->rate();
    if (limit > 0 && bw > static_cast<double>(limit)) bw = static_cast<double>(limit);
    double predicted_ms = bw > 0 ? remaining / bw * 1e3 : 1e18;
    rec.remaining_bytes = remaining;
    if (predicted_ms <= static_cast<double>(budget_ms)) break;
    if (round >= max_rounds) {
      if (!force) {
        st = Aborted("did not converge in " + std::to_string(max_rounds) + " rounds (" +
                     std::to_string(remaining) + " bytes dirty, predicted downtime " +
                     std::to_string(static_cast<int64_t>(predicted_ms)) + " ms)");
        break;
      }
      obs::LogWarn("migration", "round limit reached: forcing switchover",
                   {{"vm_id", rec.vm_id},
                    {"migration_id", rec.id},
                    {"predicted_downtime_ms", predicted_ms}});
      break;
    }
    ++round;
    rec.round = round;
    task.SetState("precopy round " + std::to_string(round));
    dirty.clear();
    guest.CollectDirtyPages(&dirty);
    st = co_await send_round(round, false, false);
  }
  if (!st.ok()) {
    co_await abort_pages(st);
    co_return;
  }

  // --- stop and copy
  rec.phase = acp::kPhaseSwitchover;
  rec.switchover_started_ms = clock_.WallMillis();
  task.SetState("switchover: guest paused, sending the last pages");
  progress(true);
  guest.Pause();
  paused = true;
  t_pause = clock_.Now();
  co_await FailpointWait("migration.source.paused");
  ++round;
  rec.round = round;
  dirty.clear();
  guest.CollectDirtyPages(&dirty);
  st = co_await send_round(round, false, true);
  if (st.ok()) {
    // Every batch is written: the additional streams say goodbye and close.
    co_await pages->Finish();
    rec.network_bytes = conn->wire_bytes_sent() + pages->extra_wire_bytes();
  }
  transfer.SetAttribute("rounds", round);
  transfer.SetAttribute("bytes", logical_sent);
  transfer.SetAttribute("streams", streams_used);
  transfer.End();
  std::string digest;
  if (st.ok()) {
    {
      step = StartSpan("hde_digest", "hde", &root_ctx);
      ScopedTime t(clock_, &shares.hde);
      digest = guest.Digest();
      step.SetAttribute("digest", digest);
    }
    rec.source_digest = digest;
    wire::Control done;
    done.mutable_complete()->set_digest(digest);
    done.mutable_complete()->set_rounds(round);
    done.mutable_complete()->set_pages_sent(logical_sent / vm::kPageSize);
    done.mutable_complete()->set_batches(pages->batches());
    st = co_await send_ctl(done);
  }
  Result<wire::Control> verified = Status(Internal("unset"));
  if (st.ok()) {
    step = StartSpan("await_verification", "hde", &root_ctx);
    verified = co_await recv_ctl(config_.verify_timeout);
    st = expect(verified, wire::Control::kVerified);
  }
  if (st.ok()) {
    rec.dest_digest = verified->verified().digest();
    if (!verified->verified().ok()) {
      ++digest_mismatches_;  // counted in errors_total by fail() (source) and the destination
      st = DataLoss("destination digest " + rec.dest_digest + " does not match source " + digest +
                    ": " + verified->verified().error());
    }
  }
  if (st.ok() && m->cancel) st = Aborted("migration cancelled (node shutting down)");
  if (!st.ok()) {
    co_await abort_pages(st);
    co_return;
  }

  // --- commit the ownership change (the point of no return)
  rec.phase = acp::kPhaseCommitting;
  rec.commit_started_ms = clock_.WallMillis();
  record_shares();
  task.SetState("committing ownership");
  acp::VmRecord moved = m->vm_before;
  moved.node_id = rec.dest_node;
  moved.state = acp::kVmRunning;
  moved.migration_id.clear();
  moved.epoch = m->vm_before.epoch + 1;
  co_await FailpointWait("migration.source.before_commit");
  step = StartSpan("acp_consensus", "acp", &root_ctx);
  step.SetAttribute("operation", "commit_ownership");
  step.SetAttribute("epoch", moved.epoch);
  {
    ScopedTime t(clock_, &shares.acp);
    SteadyTime c0 = clock_.Now();
    m->commit_sent = true;
    st = co_await Blocking([&] { return store_.CompareAndSwapVm(m->vm_before, moved, &rec); });
    metrics_.commit_latency.Observe(Seconds(clock_.Now() - c0));
    metrics_.consensus_latency().Observe(Seconds(clock_.Now() - c0));
  }
  if (!st.ok() && st.code() != StatusCode::kFailedPrecondition) {
    // The answer was lost: the commit may or may not have landed. The guest stays paused
    // until the store decides (docs/consensus.md, "the source's commit is in doubt").
    step.SetAttribute("in_doubt", true);
    if (co_await ResolveOwnCommit(rec, m->vm_before, moved)) st = Status::Ok();
  }
  if (!st.ok()) {
    // A named value, not a conditional in the co_await expression: GCC 12 destroys a
    // temporary of `c ? prvalue : lvalue` inside co_await twice (a double free that corrupted
    // the heap whenever a commit lost its race).
    Status why = st;
    if (st.code() == StatusCode::kFailedPrecondition) {
      why = FailedPrecondition("commit lost: " + st.message());
    }
    co_await abort_out(std::move(why));
    co_return;
  }
  {
    std::lock_guard lock(m->mu);
    m->committed = true;
  }
  // The store now gives the VM to the destination: this node must never run it again.
  guest.StopDirtyLog();
  vms_.Remove(rec.vm_id);
  metrics_.vms_running.Set(static_cast<double>(vms_.size()));
  co_await FailpointWait("migration.source.after_commit");

  step = StartSpan("resume_vm", "migration", &root_ctx);
  wire::Control commit;
  commit.mutable_commit()->set_epoch(moved.epoch);
  st = co_await send_ctl(commit);
  Result<wire::Control> resumed = Status(Internal("unset"));
  if (st.ok()) {
    resumed = co_await recv_ctl(config_.io_timeout);
    st = expect(resumed, wire::Control::kResumed);
  }
  SteadyTime t_resume = clock_.Now();
  rec.downtime_ms = Seconds(t_resume - t_pause) * 1e3;
  if (!st.ok()) {
    // Committed: the destination resumes from the store on its own (ResolveInDoubt).
    obs::LogWarn("migration", "destination did not confirm resume; it owns the vm per the store",
                 {{"vm_id", rec.vm_id}, {"migration_id", rec.id}, {"error", st.ToString()}});
    metrics_.CountError(obs::Component::kAmst, "resume_unconfirmed", "warning");
    rec.error = "destination did not confirm resume: " + st.message();
    step.SetError(rec.error);
  }
  step.End();
  rec.phase = acp::kPhaseCompleted;
  rec.finished_ms = clock_.WallMillis();
  rec.total_ms = Seconds(clock_.Now() - t_start) * 1e3;
  rec.remaining_bytes = 0;
  rec.network_bytes = conn->wire_bytes_sent() + pages->extra_wire_bytes();
  double elapsed = Seconds(clock_.Now() - t_transfer_start);
  rec.throughput_bps = elapsed > 0 ? logical_sent / elapsed : 0;
  record_shares();
  // The final record: nothing else would end it, so keep trying while the store is silent.
  for (int attempt = 0;; ++attempt) {
    Status put = co_await Blocking([&] { return store_.PutMigration(rec); });
    if (put.ok() || stopping_) break;
    if (attempt == 0) {
      metrics_.CountError(obs::Component::kAcp, "store", "warning");
      obs::LogWarn("acp", "cannot record the completed migration; retrying",
                   {{"migration_id", rec.id}, {"error", put.ToString()}});
    }
    co_await StoreRetryDelay(attempt);
  }

  metrics_.migrations(obs::MigrationResult::kSuccess, conn->protocol()).Increment();
  metrics_.migration_latency(shares.Dominant()).Observe(rec.total_ms / 1e3);
  metrics_.downtime.Observe(rec.downtime_ms / 1e3);
  if (config_.on_success) {
    config_.on_success(
        {rec.total_ms / 1e3, rec.throughput_bps,
         rec.network_bytes > 0 ? double(rec.bytes_transferred) / rec.network_bytes : 0, trace_id,
         rec.vm_id, rec.id});
  }
  metrics_.rounds.Observe(round);
  m->root.SetAttribute("phase", rec.phase);
  m->root.SetAttribute("rounds", round);
  m->root.SetAttribute("downtime_ms", rec.downtime_ms);
  m->root.SetAttribute("bytes_transferred", rec.bytes_transferred);
  m->root.SetAttribute("network_bytes", rec.network_bytes);
  obs::LogInfo("migration", "Migration completed",
               {{"vm_id", rec.vm_id},
                {"migration_id", rec.id},
                {"trace_id", trace_id},
                {"span_id", span_id},
                {"destination", rec.dest_node},
                {"latency_ms", rec.total_ms},
                {"downtime_ms", rec.downtime_ms},
                {"rounds", round},
                {"bytes_transferred", rec.bytes_transferred},
                {"network_bytes", rec.network_bytes},
                {"throughput_gbps", rec.throughput_bps * 8 / 1e9},
                {"dominant_component", obs::ComponentName(shares.Dominant())}});
  conn->Close();
  finish();
}

// ---------------------------------------------------------------------------------------
// Destination side.

awaitable<void> MigrationEngine::ServeIncoming(std::shared_ptr<amst::Connection> conn) {
  auto task = obs::pprof::TaskRegistry::Global().Register("migration.receive", conn->peer());
  task.SetState("handshake");
  auto a = std::make_shared<Active>();
  a->key = "incoming-" + std::to_string(next_incoming_++);
  a->SetConnection(conn);
  Register(a);
  if (stopping_) a->Cancel();

  std::string vm_id, migration_id, source_node;
  uint64_t epoch = 0;
  bool counted = false;
  std::shared_ptr<vm::Guest> guest;
  bool verified = false;
  obs::trace::Span span;  // receive_migration, continuing the source's trace
  std::string trace_id, span_id;

  // Logs and counts a failed incoming migration (or a bad connection) and discards state.
  auto reject = [&](const Status& why) {
    bool protocol = why.code() == StatusCode::kProtocol;
    bool tls = why.code() == StatusCode::kUnauthenticated;
    if (protocol) ++protocol_errors_;
    metrics_.CountError(protocol || tls ? obs::Component::kAmst : ComponentOfError(why.code()),
                        protocol ? "protocol"
                        : tls    ? "tls"
                                 : StatusCodeName(why.code()),
                        protocol || tls ? "critical" : "warning");
    span.SetError(why.ToString());
    obs::LogError(protocol ? "amst" : "migration",
                  protocol ? "closing connection after a bad frame" : "incoming migration failed",
                  {{"peer", conn->peer()},
                   {"trace_id", trace_id},
                   {"span_id", span_id},
                   {"error", why.ToString()},
                   {"vm_id", vm_id},
                   {"migration_id", migration_id}});
  };
  std::string admitted_peer;  // counted against max_migrations (ReleaseMigration)
  bool admitted = false;
  auto done = [&] {
    conn->Close();
    if (counted) metrics_.migrations_in.Decrement();
    if (admitted) ReleaseMigration(admitted_peer);
    Unregister(a->key);
  };

  // The handshake (TLS, then Hello or StreamJoin) must complete within handshake_timeout
  // of the accept: a peer that connects and stalls holds a slot no longer than that.
  const auto handshake_deadline = std::chrono::steady_clock::now() + config_.handshake_timeout;
  auto handshake_left = [&] {
    return std::max(Ms(1), std::chrono::duration_cast<Ms>(handshake_deadline -
                                                          std::chrono::steady_clock::now()));
  };
  auto handshake_timed_out = [&](const Status& why) {
    metrics_.CountLimitRejection("handshake_timeout");
    LogLimited("handshake_timeout",
               "closing a data connection that did not complete its handshake in time "
               "(handshake_timeout)",
               {{"peer", conn->peer()},
                {"handshake_timeout_ms", config_.handshake_timeout.count()},
                {"error", why.ToString()}});
  };
  if (config_.tls_server) {
    Status tls = co_await conn->StartTls(*config_.tls_server, /*server=*/true, handshake_left());
    if (!tls.ok()) {
      if (tls.code() == StatusCode::kDeadlineExceeded) {
        handshake_timed_out(tls);
      } else {
        metrics_.CountByzantine("bad_certificate");
        metrics_.CountAuthFailure("data", conn->tls_failure());
        reject(Status(StatusCode::kUnauthenticated,
                      "refused peer: " + tls.message() + " (" + conn->tls_failure() + ")"));
      }
      done();
      co_return;
    }
  }
  // Handshake: a new migration starts with Hello; an additional data stream of a running
  // one with StreamJoin.
  auto hello = co_await conn->ReceiveControl(handshake_left());
  if (!hello.ok() && hello.status().code() == StatusCode::kDeadlineExceeded) {
    handshake_timed_out(hello.status());
    done();
    co_return;
  }
  if (hello.ok() && hello->msg_case() == wire::Control::kStreamJoin) {
    co_await ServeJoinedStream(conn, hello->stream_join());
    done();
    co_return;
  }
  if (!hello.ok() || hello->msg_case() != wire::Control::kHello) {
    reject(hello.ok() ? ProtocolError("first frame is not a hello") : hello.status());
    done();
    co_return;
  }
  const std::string peer = hello->hello().node_id();
  if (conn->tls() && config_.tls_check_node_id && !conn->PeerCertificateNames(peer)) {
    // A cluster certificate lets its holder in, but only as the node it names.
    metrics_.CountAuthFailure("data", "node_id_mismatch");
    wire::Control ack;
    ack.mutable_hello_ack()->set_node_id(config_.node_id);
    ack.mutable_hello_ack()->set_error("the peer's certificate does not name node '" + peer + "'");
    Status ignored = co_await conn->SendControl(ack, config_.io_timeout);
    (void)ignored;
    reject(Status(StatusCode::kUnauthenticated,
                  "refused peer: its certificate does not name node '" + peer +
                      "', which its hello claims (node_id_mismatch)"));
    done();
    co_return;
  }
  const std::string quarantined = QuarantineReason(peer);
  const uint32_t version =
      quarantined.empty() ? NegotiateVersion(hello->hello(), config_.protocols) : 0;
  {
    wire::Control ack;
    ack.mutable_hello_ack()->set_node_id(config_.node_id);
    ack.mutable_hello_ack()->set_version(version);
    if (!quarantined.empty()) {
      ack.mutable_hello_ack()->set_error("node " + config_.node_id + " has quarantined " + peer +
                                         ": " + quarantined);
    } else if (version == 0) {
      ack.mutable_hello_ack()->set_error("no common protocol version");
    }
    Status st = co_await conn->SendControl(ack, config_.io_timeout);
    if (version == 0 || !st.ok()) {
      if (!quarantined.empty()) {
        metrics_.CountError(obs::Component::kAcp, "quarantined", "warning");
        obs::LogWarn("acp", "refused a connection from a quarantined peer",
                     {{"peer", peer}, {"reason", quarantined}, {"address", conn->peer()}});
      } else {
        reject(version == 0 ? FailedPrecondition("no common protocol version with " + peer) : st);
      }
      done();
      co_return;
    }
    conn->set_protocol(static_cast<uint8_t>(version));
  }

  auto begin = co_await conn->ReceiveControl(config_.io_timeout);
  if (!begin.ok() || begin->msg_case() != wire::Control::kBegin) {
    reject(begin.ok() ? ProtocolError("out-of-order control message: expected begin")
                      : begin.status());
    done();
    co_return;
  }
  const auto& b = begin->begin();
  vm_id = b.vm_id();
  migration_id = b.migration_id();
  source_node = b.source_node();
  epoch = b.epoch();
  {
    auto remote = obs::trace::SpanContext::FromTraceparent(b.traceparent());
    span = StartSpan("receive_migration", "migration", remote ? &*remote : nullptr);
    span.SetAttribute("vm.id", vm_id);
    span.SetAttribute("migration.id", migration_id);
    span.SetAttribute("source.node", source_node);
    span.SetAttribute("destination.node", config_.node_id);
    if (span.context().valid()) {
      trace_id = span.context().TraceIdHex();
      span_id = span.context().SpanIdHex();
    }
  }
  metrics_.migrations_in.Increment();
  counted = true;

  // Concurrency limits first: a busy destination refuses in the handshake, before it looks
  // at the store or makes a guest, so the source fails cleanly and keeps the VM.
  Status st;
  std::string refused_limit;
  st = AdmitMigration(peer, /*incoming=*/true, &refused_limit);
  if (st.ok()) {
    admitted = true;
    admitted_peer = peer;
  }
  // Check the request against the store: the VM must be migrating to us under this id.
  if (st.ok()) {
    auto vm = co_await Blocking([&] { return store_.GetVm(vm_id); });
    auto mig = co_await Blocking([&] { return store_.GetMigration(migration_id); });
    if (!vm.ok()) {
      st = vm.status();
    } else if (!mig.ok()) {
      st = mig.status();
    } else if (Status checked = CheckMigrationBegin(b, *vm, *mig, config_.node_id);
               !checked.ok()) {
      st = checked;
      // The source marked the VM migrating before it connected: a begin the store
      // contradicts is a peer that lies or replays (docs/consensus.md, "Byzantine peers").
      if (vm->node_id != b.source_node() || vm->node_id != peer) {
        Quarantine(peer, "owner_mismatch",
                   "claims to own vm " + vm_id + ", which the store gives to " + vm->node_id);
      } else if (vm->epoch != b.epoch()) {
        Quarantine(peer, "stale_epoch",
                   "sent vm " + vm_id + " at epoch " + std::to_string(b.epoch()) +
                       "; the store is at " + std::to_string(vm->epoch));
      }
    } else if (vms_.Find(vm_id).guest) {
      st = AlreadyExists("vm " + vm_id + " already runs here");
    } else if (stopping_) {
      st = Aborted("node is shutting down");
    }
  }
  if (st.ok()) {
    vm::GuestSpec spec{vm_id, b.memory_bytes(), b.dirty_rate(), b.seed()};
    auto g = incoming_guests_(spec);
    if (g.ok()) {
      guest = std::move(g).value();
    } else {
      st = g.status();
    }
  }
  // Signed round commitments (docs/consensus.md): asked for when configured, or (auto) when
  // the link to the source is in internet mode; verified with the key the store holds.
  bool commitments = false;
  std::string source_key;
  if (st.ok()) ObserveLink(source_node, conn->SampleLink(), false);  // the handshake's RTT
  if (st.ok() && version >= 3 && config_.round_commitments != EngineConfig::Commitments::kOff) {
    commitments = config_.round_commitments == EngineConfig::Commitments::kOn ||
                  LinkModeOf(source_node) == amst::LinkMode::kInternet;
  }
  if (commitments) {
    auto node = co_await Blocking([&] { return store_.GetNode(source_node); });
    if (node.ok()) source_key = node->public_key;
    if (source_key.empty()) {
      if (config_.round_commitments == EngineConfig::Commitments::kOn) {
        st = FailedPrecondition("source node " + source_node +
                                " has published no public key: its round commitments cannot be "
                                "verified");
      } else {
        obs::LogWarn("acp", "source has no public key: receiving without round commitments",
                     {{"source", source_node}, {"migration_id", migration_id}});
      }
      commitments = false;
    }
  }
  // The data plane, and the session additional streams join (v3).
  std::shared_ptr<IncomingPages> pages;
  std::shared_ptr<IncomingSession> session;
  if (st.ok()) {
    pages = std::make_shared<IncomingPages>(
        DataContext(), static_cast<uint8_t>(version), guest,
        [conn](const Status&) { conn->Close(); });  // wakes the primary reader
    if (commitments) pages->KeepLeaves();
    session = std::make_shared<IncomingSession>();
    session->token = NewStreamToken();
    session->version = static_cast<uint8_t>(version);
    session->max_streams = version >= 3 ? std::max(1u, config_.streams.max_streams) : 1;
    session->pages = pages;
    session->active = a;
    std::lock_guard lock(mu_);
    sessions_[migration_id] = session;
  }
  auto end_session = [&] {
    if (!session) return;
    std::lock_guard lock(mu_);
    auto it = sessions_.find(migration_id);
    if (it != sessions_.end() && it->second == session) sessions_.erase(it);
  };
  {
    wire::Control ready;
    ready.mutable_ready()->set_ok(st.ok());
    if (!st.ok()) ready.mutable_ready()->set_error(st.message());
    if (!refused_limit.empty()) ready.mutable_ready()->set_limit(refused_limit);
    if (st.ok() && version >= 3) {
      ready.mutable_ready()->set_stream_token(session->token);
      ready.mutable_ready()->set_max_streams(session->max_streams);
      ready.mutable_ready()->set_round_commitments(commitments);
    }
    Status sent = co_await conn->SendControl(ready, config_.io_timeout);
    if (st.ok()) st = sent;
  }
  if (!st.ok()) {
    end_session();
    if (refused_limit.empty()) {
      reject(st);
    } else {
      span.SetError(st.ToString());  // AdmitMigration logged and counted it
    }
    done();
    co_return;
  }
  task.SetState("receiving " + vm_id + " " + migration_id + " from " + source_node);
  obs::LogInfo("migration", "receiving vm",
               {{"vm_id", vm_id},
                {"migration_id", migration_id},
                {"trace_id", trace_id},
                {"span_id", span_id},
                {"source", source_node},
                {"memory_bytes", b.memory_bytes()},
                {"protocol", "v" + std::to_string(version)},
                {"round_commitments", commitments}});

  // Pages until MigrationComplete. Batches on this stream and on joined ones all go through
  // `pages`, which applies them in sequence.
  uint32_t current_round = 0;
  uint32_t committed_round = 0;  // with commitments: the last round verified
  uint64_t next_first_seq = 0;   // the first batch of the next round to commit
  // With commitments, a round must be committed before the next round or the end.
  auto missing_commitment = [&]() -> Status {
    if (!commitments || committed_round == current_round) return Status::Ok();
    Quarantine(peer, "missing_commitment",
               "round " + std::to_string(current_round) + " of " + migration_id +
                   " ended without a round commitment");
    return DataLoss("round " + std::to_string(current_round) + " has no round commitment");
  };
  // Checks a round commitment against the pages received and the source's key.
  auto verify_commitment = [&](const wire::RoundCommitment& rc) -> awaitable<Status> {
    if (!commitments) co_return ProtocolError("unexpected round commitment");
    if (rc.round() != current_round || committed_round == current_round ||
        rc.first_seq() != next_first_seq) {
      co_return ProtocolError("out-of-order round commitment for round " +
                              std::to_string(rc.round()));
    }
    DWCP_CO_RETURN_IF_ERROR(co_await pages->WaitApplied(rc.first_seq() + rc.batches(),
                                                        config_.io_timeout, /*at_least=*/true));
    auto leaves = pages->Leaves(rc.first_seq(), rc.batches());
    if (!leaves.ok()) co_return leaves.status();
    const std::string& claimed = rc.root();
    acp::Hash256 root{};
    if (claimed.size() == root.size()) std::memcpy(root.data(), claimed.data(), root.size());
    const std::string message = acp::RoundCommitmentMessage(
        migration_id, vm_id, epoch, rc.round(), rc.first_seq(), rc.batches(), root);
    if (claimed.size() != root.size() ||
        !acp::NodeKey::Verify(source_key, message, rc.signature())) {
      Quarantine(peer, "bad_signature",
                 "round " + std::to_string(rc.round()) + " commitment of " + migration_id +
                     " is not signed by " + source_node + "'s key");
      co_return DataLoss("round " + std::to_string(rc.round()) +
                         " commitment signature does not verify with " + source_node + "'s key");
    }
    if (acp::MerkleRoot(*leaves) != root) {
      Quarantine(peer, "merkle_mismatch",
                 "round " + std::to_string(rc.round()) + " of " + migration_id +
                     ": the pages received do not match the signed Merkle root");
      co_return DataLoss("round " + std::to_string(rc.round()) +
                         " pages do not match the source's signed Merkle root");
    }
    committed_round = current_round;
    next_first_seq += rc.batches();
    co_return Status::Ok();
  };
  std::future<void> warm_digest;  // fills the page-hash cache once round 1 has landed
  std::string source_digest;
  uint64_t mode_bytes_seen = 0;
  amst::LinkMode mode = LinkModeOf(source_node);
  auto count_mode_bytes = [&] {
    const uint64_t received = pages->payload_bytes();
    bytes_by_mode_[static_cast<int>(mode)] += received - mode_bytes_seen;
    mode_bytes_seen = received;
  };
  while (st.ok()) {
    auto frame = co_await conn->Receive(config_.io_timeout);
    if (!frame.ok()) {
      st = pages->error().ok() ? frame.status() : pages->error();
      break;
    }
    if (frame->header.type == amst::FrameType::kPages) {
      if (current_round == 0) {
        st = ProtocolError("out-of-order frame: pages before a round began");
        break;
      }
      st = co_await pages->Deliver(std::move(frame->payload));
      continue;
    }
    wire::Control c;
    if (!c.ParseFromArray(frame->payload.data(), static_cast<int>(frame->payload.size()))) {
      st = ProtocolError("control message does not parse");
      break;
    }
    if (c.msg_case() == wire::Control::kRoundCommitment) {
      st = co_await verify_commitment(c.round_commitment());
    } else if (c.msg_case() == wire::Control::kRoundBegin) {
      if (st = missing_commitment(); !st.ok()) break;
      if (c.round_begin().round() != current_round + 1) {
        st = ProtocolError("out-of-order round " + std::to_string(c.round_begin().round()));
      }
      current_round = c.round_begin().round();
      count_mode_bytes();
      mode = ObserveLink(source_node, conn->SampleLink(), false);
      if (current_round == 2 && !warm_digest.valid()) {
        // Round 1 (every page) has been sent: hash it while the next rounds arrive.
        warm_digest = std::async(std::launch::async, [guest] { (void)guest->Digest(); });
      }
    } else if (c.msg_case() == wire::Control::kComplete) {
      if (st = missing_commitment(); !st.ok()) break;
      source_digest = c.complete().digest();
      // Batches on joined streams may still be arriving: wait until all are applied.
      const uint64_t batches = version >= 3 ? c.complete().batches() : pages->applied();
      st = co_await pages->WaitApplied(batches, config_.verify_timeout);
      count_mode_bytes();
      break;
    } else if (c.msg_case() == wire::Control::kAbort) {
      st = Aborted("source aborted: " + c.abort().reason());
    } else {
      st = ProtocolError("out-of-order control message during pre-copy");
    }
  }
  if (!st.ok() && pages) pages->Fail(st);  // ends the joined streams' work
  if (warm_digest.valid()) warm_digest.wait();
  span.SetAttribute("rounds", current_round);
  if (st.ok()) {
    auto verify_span = StartSpan("hde_verify", "hde", &span.context());
    std::string digest = guest->Digest();
    verify_span.SetAttribute("digest", digest);
    if (digest != source_digest) verify_span.SetError("content digest mismatch");
    verified = digest == source_digest;
    wire::Control v;
    v.mutable_verified()->set_ok(verified);
    v.mutable_verified()->set_digest(digest);
    if (!verified) {
      v.mutable_verified()->set_error("content digest mismatch");
      metrics_.CountError(obs::Component::kHde, "digest_mismatch", "critical");
      metrics_.CountByzantine("digest_mismatch");
      ++digest_mismatches_;
    }
    st = co_await conn->SendControl(v, config_.io_timeout);
    if (st.ok() && !verified)
      st = DataLoss("content digest mismatch: got " + digest + ", source has " + source_digest);
  }
  bool commit_received = false;
  if (st.ok()) {
    // Only the source's commit CAS is left: a source silent for io_timeout is settled
    // through the store (ResolveInDoubt) instead.
    auto c = co_await conn->ReceiveControl(config_.io_timeout);
    if (!c.ok()) {
      st = c.status();
    } else if (c->msg_case() == wire::Control::kCommit) {
      commit_received = c->commit().epoch() == epoch + 1;
      if (!commit_received) st = ProtocolError("commit at an unexpected epoch");
    } else if (c->msg_case() == wire::Control::kAbort) {
      st = Aborted("source aborted: " + c->abort().reason());
    } else {
      st = ProtocolError("out-of-order control message: expected commit");
    }
  }

  // Resume only what the store gives us.
  bool resume = false;
  if (verified) resume = co_await ResolveInDoubt(vm_id, migration_id, source_node, epoch);
  if (resume) co_await FailpointWait("migration.dest.before_resume");
  if (resume) {
    auto resume_span = StartSpan("resume_vm", "migration", &span.context());
    vms_.Add(vm_id, guest, epoch + 1);
    guest->Resume();
    metrics_.vms_running.Set(static_cast<double>(vms_.size()));
    obs::LogInfo("migration", "vm resumed on destination",
                 {{"vm_id", vm_id},
                  {"migration_id", migration_id},
                  {"trace_id", trace_id},
                  {"span_id", span_id},
                  {"epoch", epoch + 1}});
    if (commit_received) {
      wire::Control r;
      r.mutable_resumed()->set_ok(true);
      Status ignored = co_await conn->SendControl(r, config_.io_timeout);
      (void)ignored;
    } else {
      // The source went quiet after its commit (it may be dead): end the record here. A
      // source that is alive writes its own, fuller, final record too.
      auto mig = co_await Blocking([&] { return store_.GetMigration(migration_id); });
      if (mig.ok() && mig->finished_ms == 0) {
        mig->phase = acp::kPhaseCompleted;
        mig->finished_ms = clock_.WallMillis();
        (void)co_await Blocking([&] { return store_.PutMigration(*mig); });
      }
    }
  } else if (!st.ok()) {
    reject(st);
  }
  end_session();
  done();
}

awaitable<void> MigrationEngine::OpenExtraStream(std::shared_ptr<Outgoing> m, uint32_t index) {
  std::shared_ptr<OutgoingPages> pages;
  {
    std::lock_guard lock(m->mu);
    pages = m->pages;
  }
  auto give_up = [&](const Status& why) {
    --m->opening;
    // The migration ended meanwhile: the stream is simply not needed.
    if (pages->closing() || m->cancel) return;
    // The migration goes on with the streams it has; no more are tried.
    m->joins_failed = true;
    metrics_.CountError(obs::Component::kAmst, ErrorTypeOf(why.code()), "warning");
    obs::LogWarn("amst", "cannot open an additional data stream; continuing with fewer",
                 {{"migration_id", m->record.id},
                  {"vm_id", m->record.vm_id},
                  {"stream", index},
                  {"error", why.ToString()}});
  };
  if (!pages || m->cancel || pages->closing()) {
    --m->opening;
    co_return;
  }
  auto c = co_await amst::Connect(m->dest_host, m->dest_port, metrics_, config_.connect_timeout,
                                  co_await asio::this_coro::executor);
  if (!c.ok()) {
    give_up(c.status());
    co_return;
  }
  std::shared_ptr<amst::Connection> conn(std::move(c).value());
  conn->SetFrameLimits(config_.max_frame_bytes, config_.max_control_bytes);
  if (config_.tls_client) {
    Status st =
        co_await conn->StartTls(*config_.tls_client, /*server=*/false, config_.connect_timeout);
    if (!st.ok()) {
      give_up(st);
      co_return;
    }
  }
  wire::Control join;
  join.mutable_stream_join()->set_migration_id(m->record.id);
  join.mutable_stream_join()->set_stream_token(m->stream_token);
  join.mutable_stream_join()->set_stream_index(index);
  join.mutable_stream_join()->set_version(3);  // extra streams exist in v3 only
  Status st = co_await conn->SendControl(join, config_.connect_timeout);
  Result<wire::Control> ack = Status(Internal("unset"));
  if (st.ok()) ack = co_await conn->ReceiveControl(config_.connect_timeout);
  if (st.ok() && !ack.ok()) st = ack.status();
  if (st.ok() && ack->msg_case() != wire::Control::kStreamJoinAck) {
    st = ProtocolError("expected a stream join ack");
  }
  if (st.ok() && !ack->stream_join_ack().ok()) {
    st = FailedPrecondition("destination refused the stream: " + ack->stream_join_ack().error());
  }
  if (!st.ok()) {
    conn->Close();
    give_up(st);
    co_return;
  }
  conn->set_protocol(3);
  {
    std::lock_guard lock(m->mu);
    if (m->cancel || !pages->error().ok()) {
      conn->Close();
      --m->opening;
      co_return;
    }
    pages->AddStream(conn, /*primary=*/false);
  }
  --m->opening;
}

awaitable<void> MigrationEngine::ServeJoinedStream(std::shared_ptr<amst::Connection> conn,
                                                   wire::StreamJoin join) {
  auto task = obs::pprof::TaskRegistry::Global().Register(
      "migration.stream", join.migration_id() + " #" + std::to_string(join.stream_index()));
  std::shared_ptr<IncomingSession> session;
  {
    std::lock_guard lock(mu_);
    auto it = sessions_.find(join.migration_id());
    if (it != sessions_.end()) session = it->second;
  }
  Status st;
  if (!session) {
    // Usually a stream that was still joining when its migration ended: refused, not counted.
    wire::Control ack;
    ack.mutable_stream_join_ack()->set_ok(false);
    ack.mutable_stream_join_ack()->set_error("migration " + join.migration_id() +
                                             " is not being received here");
    (void)co_await conn->SendControl(ack, config_.io_timeout);
    obs::LogInfo("amst", "data stream for a migration that is not being received",
                 {{"peer", conn->peer()}, {"migration_id", join.migration_id()}});
    conn->Close();
    co_return;
  }
  if (!SameSecret(session->token, join.stream_token())) {
    st = Status(StatusCode::kUnauthenticated, "stream join with a wrong token");
  } else if (join.version() != session->version || session->version < 3) {
    st = ProtocolError("stream join with protocol version " + std::to_string(join.version()));
  } else if (join.stream_index() == 0 || session->joined + 1 >= session->max_streams) {
    st = FailedPrecondition("no more than " + std::to_string(session->max_streams) +
                            " streams per migration");
  }
  wire::Control ack;
  ack.mutable_stream_join_ack()->set_ok(st.ok());
  if (!st.ok()) ack.mutable_stream_join_ack()->set_error(st.message());
  Status sent = co_await conn->SendControl(ack, config_.io_timeout);
  if (st.ok()) st = sent;
  if (!st.ok()) {
    ++protocol_errors_;
    metrics_.CountError(obs::Component::kAmst, ErrorTypeOf(st.code()), "warning");
    if (st.code() == StatusCode::kUnauthenticated) metrics_.CountByzantine("bad_stream_token");
    obs::LogWarn(
        "amst", "data stream refused",
        {{"peer", conn->peer()}, {"migration_id", join.migration_id()}, {"error", st.ToString()}});
    conn->Close();
    co_return;
  }
  ++session->joined;
  ++streams_joined_;
  conn->set_protocol(session->version);
  obs::LogInfo("amst", "data stream joined",
               {{"migration_id", join.migration_id()},
                {"stream", join.stream_index()},
                {"peer", conn->peer()},
                {"streams", session->joined + 1}});
  {
    std::lock_guard lock(session->active->mu);
    session->active->extra.push_back(conn);
    if (session->active->cancel) conn->Close();
  }
  task.SetState("receiving pages");
  auto& pages = *session->pages;
  const std::string name = "data stream " + std::to_string(join.stream_index());
  for (;;) {
    // A stream may idle while the source waits at a round barrier: the verify timeout,
    // not the per-frame one, bounds that.
    auto frame = co_await conn->Receive(config_.verify_timeout);
    if (!frame.ok()) {
      pages.Fail(Status(frame.status().code() == StatusCode::kProtocol ? StatusCode::kProtocol
                                                                       : StatusCode::kUnavailable,
                        name + " lost: " + frame.status().message()));
      break;
    }
    if (frame->header.type == amst::FrameType::kPages) {
      if (!(co_await pages.Deliver(std::move(frame->payload))).ok()) break;
      continue;
    }
    wire::Control c;
    if (!c.ParseFromArray(frame->payload.data(), static_cast<int>(frame->payload.size()))) {
      pages.Fail(ProtocolError(name + ": control message does not parse"));
      break;
    }
    if (c.msg_case() == wire::Control::kStreamEnd) break;  // clean end
    pages.Fail(ProtocolError(name + ": unexpected control message"));
    break;
  }
  conn->Close();
}

amst::LinkMode MigrationEngine::ObserveLink(const std::string& peer, const amst::LinkSample& sample,
                                            bool outgoing) {
  std::lock_guard lock(links_mu_);
  auto& [last, at] = link_samples_[{peer, outgoing}];
  const double bandwidth = last.bandwidth_bytes_per_second;
  last = sample;
  // An RTT-only sample (the handshake) keeps the last measured bandwidth.
  if (sample.bandwidth_bytes_per_second == 0) last.bandwidth_bytes_per_second = bandwidth;
  at = clock_.WallMillis();
  auto [it, added] = links_.try_emplace(peer, config_.link_modes);
  amst::ModeDetector& d = it->second;
  const amst::LinkMode before = d.mode();
  if (added) metrics_.links_in_mode(static_cast<int>(before)).Increment();
  if (d.Observe(sample)) {
    const amst::LinkMode after = d.mode();
    metrics_.links_in_mode(static_cast<int>(before)).Decrement();
    metrics_.links_in_mode(static_cast<int>(after)).Increment();
    metrics_.mode_switches(static_cast<int>(after)).Increment();
    obs::LogInfo("amst", "link mode changed",
                 {{"peer", peer},
                  {"from", amst::LinkModeName(before)},
                  {"to", amst::LinkModeName(after)},
                  {"rtt_ms", sample.rtt_ms},
                  {"bandwidth_bytes_per_second", sample.bandwidth_bytes_per_second},
                  {"loss_ratio", sample.loss_ratio}});
  }
  return d.mode();
}

std::vector<MigrationEngine::LinkReport> MigrationEngine::Links() {
  std::vector<LinkReport> out;
  std::lock_guard lock(links_mu_);
  for (const auto& [key, value] : link_samples_) {
    LinkReport r;
    r.peer = key.first;
    r.outgoing = key.second;
    auto it = links_.find(r.peer);
    if (it != links_.end()) r.mode = it->second.mode();
    r.sample = value.first;
    r.updated_ms = value.second;
    if (r.outgoing) r.forecast = pba_.Describe(r.peer);
    out.push_back(std::move(r));
  }
  return out;
}

awaitable<void> MigrationEngine::FailpointWait(const char* name) {
  const Ms wait = Failpoints::Hit(name);
  if (wait.count() <= 0) co_return;
  asio::steady_timer timer(co_await asio::this_coro::executor, wait);
  co_await timer.async_wait(as_tuple(use_awaitable));
}

awaitable<void> MigrationEngine::StoreRetryDelay(int attempt) {
  asio::steady_timer timer(co_await asio::this_coro::executor,
                           Ms(std::min(1000, 100 * (1 << std::min(attempt, 4)))));
  co_await timer.async_wait(as_tuple(use_awaitable));
}

awaitable<bool> MigrationEngine::ResolveInDoubt(const std::string& vm_id,
                                                const std::string& migration_id,
                                                const std::string& source_node, uint64_t epoch) {
  bool logged = false;
  for (int attempt = 0;; ++attempt) {
    if (stopping_) {
      // The guest goes with the process; the store's answer decides at the next start.
      obs::LogWarn("migration", "node stopping with a verified migration in doubt",
                   {{"vm_id", vm_id}, {"migration_id", migration_id}});
      co_return false;
    }
    auto vm = co_await Blocking([&] { return store_.GetVm(vm_id); });
    if (vm.ok()) {
      if (vm->node_id == config_.node_id && vm->epoch == epoch + 1) co_return true;
      if (vm->state != acp::kVmMigrating || vm->migration_id != migration_id) co_return false;
      // Still migrating and the source went quiet: cancel it in the store. If the source's
      // commit lands first, this CAS fails and the next read shows us as the owner.
      acp::VmRecord back = *vm;
      back.state = acp::kVmRunning;
      back.migration_id.clear();
      auto mig = co_await Blocking([&] { return store_.GetMigration(migration_id); });
      std::optional<acp::MigrationRecord> rec;
      if (mig.ok()) {
        rec = *mig;
        rec->phase = acp::kPhaseAborted;
        rec->error = "destination lost the source before the commit";
        rec->finished_ms = clock_.WallMillis();
      }
      const SteadyTime c0 = clock_.Now();
      Status st = co_await Blocking(
          [&] { return store_.CompareAndSwapVm(*vm, back, rec ? &*rec : nullptr); });
      metrics_.consensus_latency().Observe(Seconds(clock_.Now() - c0));
      if (st.ok()) {
        obs::LogWarn("migration", "in-doubt migration cancelled: vm stays on source",
                     {{"vm_id", vm_id}, {"migration_id", migration_id}, {"source", source_node}});
        co_return false;
      }
      if (st.code() == StatusCode::kFailedPrecondition) continue;  // changed: read again
    } else if (vm.status().code() == StatusCode::kNotFound) {
      co_return false;
    }
    if (!logged) {
      logged = true;
      metrics_.CountError(obs::Component::kAcp, "in_doubt", "critical");
      obs::LogError("migration",
                    "migration in doubt and the store does not answer: the verified guest stays "
                    "paused here until it does",
                    {{"vm_id", vm_id},
                     {"migration_id", migration_id},
                     {"source", source_node},
                     {"error", vm.ok() ? "" : vm.status().ToString()}});
    }
    co_await StoreRetryDelay(attempt);
  }
}

awaitable<bool> MigrationEngine::ResolveOwnCommit(const acp::MigrationRecord& rec,
                                                  const acp::VmRecord& before,
                                                  const acp::VmRecord& moved) {
  // Deciding means writing: an abort CAS that succeeds guarantees the lost commit can never
  // apply later (both are guarded by the record's revision); one that fails with
  // failed_precondition leaves a record that says which happened.
  acp::VmRecord back = before;
  back.state = acp::kVmRunning;
  back.migration_id.clear();
  metrics_.CountError(obs::Component::kAcp, "in_doubt", "critical");
  obs::LogError("migration",
                "commit outcome unknown: the guest stays paused until the store decides",
                {{"vm_id", rec.vm_id}, {"migration_id", rec.id}, {"epoch", moved.epoch}});
  for (int attempt = 0;; ++attempt) {
    Status st = co_await Blocking([&] { return store_.CompareAndSwapVm(before, back); });
    if (st.ok()) {
      obs::LogWarn("migration", "in-doubt commit decided: aborted, the vm stays on the source",
                   {{"vm_id", rec.vm_id}, {"migration_id", rec.id}});
      co_return false;
    }
    if (st.code() == StatusCode::kFailedPrecondition || st.code() == StatusCode::kNotFound) {
      auto now = co_await Blocking([&] { return store_.GetVm(rec.vm_id); });
      if (now.ok()) {
        const bool committed = now->node_id == moved.node_id && now->epoch == moved.epoch;
        obs::LogWarn("migration",
                     committed ? "in-doubt commit decided: it landed, the vm belongs to the "
                                 "destination"
                               : "in-doubt commit decided: it did not land",
                     {{"vm_id", rec.vm_id},
                      {"migration_id", rec.id},
                      {"owner", now->node_id},
                      {"epoch", now->epoch}});
        co_return committed;
      }
      if (now.status().code() == StatusCode::kNotFound) co_return false;
    }
    if (stopping_) co_return false;  // the caller fences: never resume without an answer
    co_await StoreRetryDelay(attempt);
  }
}

bool MigrationEngine::IsActive(const std::string& migration_id) const {
  std::lock_guard lock(mu_);
  return active_.count(migration_id) > 0 || sessions_.count(migration_id) > 0;
}

Status MigrationEngine::RepairStranded(const acp::VmRecord& vm) {
  if (vm.node_id != config_.node_id || vm.state != acp::kVmMigrating ||
      IsActive(vm.migration_id)) {
    return Status::Ok();
  }
  acp::VmRecord back = vm;
  back.state = acp::kVmRunning;
  back.migration_id.clear();
  std::optional<acp::MigrationRecord> rec;
  auto mig = store_.GetMigration(vm.migration_id);
  if (mig.ok() && mig->finished_ms == 0) {
    rec = *mig;
    rec->phase = acp::kPhaseFailed;
    rec->error = "migration ended while the store was unreachable; the vm stayed on its source";
    rec->finished_ms = clock_.WallMillis();
  }
  const SteadyTime c0 = clock_.Now();
  Status st = store_.CompareAndSwapVm(vm, back, rec ? &*rec : nullptr);
  metrics_.consensus_latency().Observe(Seconds(clock_.Now() - c0));
  if (st.ok()) {
    obs::LogWarn("acp", "repaired a vm record left migrating by a migration that ended",
                 {{"vm_id", vm.id}, {"migration_id", vm.migration_id}});
  }
  return st;
}

void MigrationEngine::Quarantine(const std::string& peer, std::string_view reason,
                                 const std::string& detail) {
  metrics_.CountByzantine(reason);
  const int64_t now = clock_.WallMillis();
  QuarantineEntry e{peer, std::string(reason), detail, now, now + config_.quarantine.count()};
  size_t count = 0;
  {
    std::lock_guard lock(quarantine_mu_);
    quarantine_[peer] = e;
    count = quarantine_.size();
  }
  metrics_.quarantined_peers().Set(static_cast<double>(count));
  obs::LogError("acp", "Byzantine peer detected: quarantined",
                {{"peer", peer},
                 {"reason", e.reason},
                 {"detail", detail},
                 {"until_ms", e.until_ms}});
}

std::vector<QuarantineEntry> MigrationEngine::Quarantined() {
  const int64_t now = clock_.WallMillis();
  std::vector<QuarantineEntry> out;
  {
    std::lock_guard lock(quarantine_mu_);
    for (auto it = quarantine_.begin(); it != quarantine_.end();) {
      if (it->second.until_ms <= now) {
        it = quarantine_.erase(it);
      } else {
        out.push_back(it->second);
        ++it;
      }
    }
  }
  metrics_.quarantined_peers().Set(static_cast<double>(out.size()));
  return out;
}

bool MigrationEngine::LiftQuarantine(const std::string& peer) {
  bool lifted = false;
  {
    std::lock_guard lock(quarantine_mu_);
    lifted = quarantine_.erase(peer) > 0;
  }
  if (lifted) obs::LogWarn("acp", "quarantine lifted", {{"peer", peer}});
  (void)Quarantined();  // refreshes the gauge
  return lifted;
}

std::string MigrationEngine::QuarantineReason(const std::string& peer) {
  for (const auto& e : Quarantined()) {
    if (e.peer == peer) return e.reason + ": " + e.detail;
  }
  return "";
}

}  // namespace dwcp::migration
