#include "node/node.h"

#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <random>

#include "acp/store_factory.h"
#include "amst/connection.h"
#include "amst/tls.h"
#include "api/api_server.h"
#include "common/units.h"
#include "hde/codec_selector.h"
#include "obs/log.h"
#include "obs/pprof/continuous_profiler.h"
#include "obs/pprof/profiling_server.h"
#include "obs/pprof/task_registry.h"
#include "obs/process_metrics.h"
#include "obs/trace/tracer.h"
#include "vm/synthetic_guest.h"

namespace dwcp::node {
namespace {

using Ms = std::chrono::milliseconds;
using EC = migration::EngineConfig;

bool ValidVmId(const std::string& id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') {
      return false;
    }
  }
  return true;
}

Status MakeDirs(const std::string& path) {
  std::string partial;
  for (size_t i = 0; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') {
      if (!partial.empty() && mkdir(partial.c_str(), 0755) != 0 && errno != EEXIST) {
        return Unavailable("cannot create directory " + partial + ": " + std::strerror(errno));
      }
    }
    if (i < path.size()) partial += path[i];
  }
  return Status::Ok();
}

std::string DirName(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
}

}  // namespace

Node::Node(NodeConfig config, Clock& clock) : config_(std::move(config)), clock_(clock) {}

Result<std::unique_ptr<Node>> Node::Start(NodeConfig config, Clock& clock) {
  std::unique_ptr<Node> node(new Node(std::move(config), clock));
  Status st = node->Init();
  if (!st.ok()) {
    node->Stop();
    return st;
  }
  return node;
}

Status Node::Init() {
  started_ms_ = clock_.WallMillis();
  summary_history_.SetOrigin(started_ms_);  // every counter starts at zero here
  DWCP_RETURN_IF_ERROR(MakeDirs(config_.data_dir));
  if (!config_.EtcdStore()) DWCP_RETURN_IF_ERROR(MakeDirs(DirName(config_.StorePath())));
  auto store = acp::OpenStateStore(StoreOptionsOf(config_), clock_);
  if (!store.ok()) return store.status();
  store_ = std::move(store).value();

  if (config_.tracing) {
    obs::trace::TracerConfig tc;
    tc.endpoint = config_.otlp_endpoint;
    tc.node_id = config_.node_id;
    tc.service_version = kVersion;
    tc.resource_attributes = {{"dwcp.region", config_.region}};
    tc.sampling.type = config_.sampling.type;
    tc.sampling.param = config_.sampling.param;
    tc.sampling.always_sample = config_.sampling.always_sample;
    DWCP_RETURN_IF_ERROR(tc.Validate());
    tracer_ = std::make_unique<obs::trace::Tracer>(tc, &metrics_);
  }

  sla_ = std::make_unique<obs::SlaEvaluator>(config_.sla, metrics_, clock_);
  anomaly_ = std::make_unique<obs::AnomalyDetector>(config_.anomaly, metrics_, clock_);
  rollout_ = std::make_unique<rollout::RolloutController>(
      config_.rollout, config_.node_id, config_.region, *store_, metrics_, clock_, [this] {
        std::vector<rollout::AnomalySample> out;
        for (const auto& d : anomaly_->Detections(100)) {
          if (d.severity != obs::AnomalySeverity::kCritical) continue;
          out.push_back({d.wall_millis, obs::AnomalyTypeName(d.type), d.migration_id});
        }
        return out;
      });

  migration::EngineConfig ec;
  ec.on_success = [this](const migration::FinishedMigration& f) {
    anomaly_->ObserveMigration(
        obs::MigrationObservation{f.latency_seconds, f.throughput_bytes_per_second,
                                  f.compression_ratio, f.trace_id, f.vm_id, f.migration_id});
  };
  if (config_.amst_mode != "auto") ec.link_modes.pinned = amst::ParseLinkMode(config_.amst_mode);
  if (config_.tls) {
    amst::TlsConfig tls{true, config_.tls_ca, config_.tls_cert, config_.tls_key};
    auto client = amst::MakeTlsContext(tls, /*server=*/false);
    if (!client.ok()) return client.status();
    auto server = amst::MakeTlsContext(tls, /*server=*/true);
    if (!server.ok()) return server.status();
    ec.tls_client = *client;
    ec.tls_server = *server;
  } else {
    obs::LogWarn("amst", "TLS is off: data connections are neither encrypted nor authenticated");
  }
  ec.node_id = config_.node_id;
  ec.downtime_budget_ms = config_.downtime_budget_ms;
  ec.node_alive_window = Ms(config_.node_lease_ms);
  ec.io_timeout = Ms(config_.peer_timeout_ms);
  // The node's Ed25519 key signs its round commitments; peers find the public key in the
  // store (docs/consensus.md, "Byzantine peers").
  auto key = acp::NodeKey::LoadOrCreate(config_.data_dir + "/node.key");
  if (!key.ok()) return key.status();
  node_key_ = std::make_shared<const acp::NodeKey>(std::move(key).value());
  ec.node_key = node_key_;
  ec.round_commitments = config_.round_commitments == "on"    ? EC::Commitments::kOn
                         : config_.round_commitments == "off" ? EC::Commitments::kOff
                                                              : EC::Commitments::kAuto;
  ec.quarantine = Ms(config_.quarantine_ms);
  ec.max_rounds = config_.max_rounds;
  ec.force_on_round_limit = config_.on_round_limit == "force";
  ec.max_tasks = config_.max_tasks;
  ec.max_frame_bytes = config_.max_frame_bytes_value;
  ec.max_control_bytes = config_.max_control_bytes_value;
  ec.max_migrations = config_.max_migrations;
  ec.max_migrations_per_peer = config_.max_migrations_per_peer;
  ec.max_connections = config_.max_connections;
  ec.max_connections_per_peer = config_.max_connections_per_peer;
  ec.handshake_timeout = Ms(config_.handshake_timeout_ms);
  ec.max_buffer_memory = config_.max_buffer_memory_bytes;
  ec.tls_check_node_id = config_.tls_check_node_id;
  ec.streams.min_streams = config_.min_streams;
  ec.streams.max_streams = config_.max_streams;
  ec.streams.fixed_streams = config_.fixed_streams;
  ec.streams.stream_window_bytes = amst::DefaultStreamWindowBytes();
  ec.node_bandwidth_limit = config_.bandwidth_limit_bps;
  ec.hde.codec = *hde::ParseCodecPolicy(config_.hde_codec);  // validated
  ec.hde.zstd_level = config_.hde_zstd_level;
  ec.hde.delta_cache_bytes = config_.hde_delta_cache_bytes;
  ec.hde.dedup_index_bytes = config_.hde_dedup_index_bytes;
  ec.hde.dedup = config_.hde_dedup;
  ec.hde.delta = config_.hde_delta;
  ec.worker_threads = config_.worker_threads;
  engine_ = std::make_unique<migration::MigrationEngine>(ec, *store_, vms_, metrics_, clock_, io_,
                                                         migration::SyntheticIncomingGuests(),
                                                         tracer_.get());

  std::string host;
  uint16_t port = 0;
  DWCP_RETURN_IF_ERROR(amst::SplitHostPort(config_.data_listen, &host, &port));
  DWCP_RETURN_IF_ERROR(engine_->Listen(host, port));

  api_ = std::make_unique<api::ApiServer>(*this);
  DWCP_RETURN_IF_ERROR(amst::SplitHostPort(config_.api_listen, &host, &port));
  DWCP_RETURN_IF_ERROR(api_->Bind(host, port));

  pprof_ = std::make_unique<obs::pprof::ProfilingServer>();
  if (config_.PprofExposed()) {  // validated: there is a token (docs/security.md)
    pprof_->RequireBearerToken(config_.api_token, [this](std::string_view reason) {
      metrics_.CountAuthFailure("pprof", reason);
    });
  }
  DWCP_RETURN_IF_ERROR(amst::SplitHostPort(config_.pprof_listen, &host, &port));
  DWCP_RETURN_IF_ERROR(pprof_->Bind(host, port));
  if (config_.profiling.enabled) {
    obs::pprof::ContinuousProfilerConfig pc;
    pc.enabled = true;
    pc.interval = std::chrono::milliseconds(*ParseDurationMillis(config_.profiling.interval));
    pc.cpu = config_.profiling.cpu;
    pc.heap = config_.profiling.heap;
    pc.goroutine = config_.profiling.goroutine;
    pc.storage = config_.profiling.storage;
    pc.cpu_duration =
        std::chrono::milliseconds(*ParseDurationMillis(config_.profiling.cpu_duration));
    pc.max_age = std::chrono::milliseconds(*ParseDurationMillis(config_.profiling.max_age));
    pc.keep_last = config_.profiling.keep_last;
    pc.node_id = config_.node_id;
    auto profiler = obs::pprof::ContinuousProfiler::Create(pc, &metrics_);
    if (!profiler.ok()) return profiler.status();
    profiler_ = std::move(profiler).value();
  }

  work_ = std::make_unique<asio::executor_work_guard<asio::io_context::executor_type>>(
      io_.get_executor());
  for (uint32_t i = 0; i < config_.io_threads; ++i) {
    io_threads_.emplace_back([this] {
      pthread_setname_np(pthread_self(), "dwcp-io");  // named in /debug/pprof/goroutine
      io_.run();
    });
  }

  metrics_.AddCollectable(std::make_shared<obs::ProcessCollector>());
  if (!Heartbeat("up")) return Unavailable("cannot register the node in the state store");
  DWCP_RETURN_IF_ERROR(rollout_->Start());
  RecoverOwnedVms();
  SampleHealthAndResources(true, 0);
  api_->Start();
  pprof_->Start();
  if (profiler_) profiler_->Start();
  background_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "dwcp-background");
    BackgroundLoop();
  });
  ready_ = true;
  obs::LogInfo(
      "node", "dwcpd ready",
      {{"api", ApiUrl()},
       {"data", config_.advertise_host + ":" + std::to_string(data_port())},
       {"pprof", "http://" + config_.pprof_listen.substr(0, config_.pprof_listen.rfind(':')) + ":" +
                     std::to_string(pprof_port()) + "/debug/pprof/"},
       {"store", config_.StorePath()},
       {"region", config_.region},
       {"version", kVersion}});
  return Status::Ok();
}

uint16_t Node::api_port() const { return api_ ? api_->port() : 0; }

std::string Node::ApiUrl() const {
  return std::string(config_.ApiTls() ? "https://" : "http://") + config_.advertise_host + ":" +
         std::to_string(api_port());
}
uint16_t Node::pprof_port() const { return pprof_ ? pprof_->port() : 0; }

bool Node::Heartbeat(const std::string& state) {
  if (!store_) return false;
  acp::NodeRecord rec;
  rec.id = config_.node_id;
  rec.region = config_.region;
  rec.api_url = ApiUrl();
  rec.data_address = !config_.data_advertise.empty()
                         ? config_.data_advertise
                         : config_.advertise_host + ":" + std::to_string(data_port());
  rec.state = state;
  rec.version = kVersion;
  rec.started_ms = started_ms_;
  rec.heartbeat_ms = clock_.WallMillis();
  if (node_key_) rec.public_key = node_key_->public_key_hex();
  Status st = store_->UpsertNode(rec);
  if (!st.ok()) {
    metrics_.CountError(obs::Component::kAcp, "store", "warning");
    obs::LogWarn("acp", "heartbeat failed", {{"error", st.ToString()}});
  }
  return st.ok();
}

void Node::RecoverOwnedVms() {
  auto vms = store_->ListVms();
  if (!vms.ok()) {
    obs::LogError("acp", "cannot list vms to recover", {{"error", vms.status().ToString()}});
    return;
  }
  // Migrations this node was sending when it stopped end now: completed if their commit
  // landed (the VM record names the destination at the next epoch), failed otherwise.
  auto migrations = store_->ListMigrations(1000);
  if (migrations.ok()) {
    for (auto m : *migrations) {
      if (m.source_node != config_.node_id || m.finished_ms != 0) continue;
      bool committed = false;
      for (const auto& vm : *vms) {
        committed |= vm.id == m.vm_id && vm.node_id == m.dest_node &&
                     vm.epoch == m.epoch_before + 1;
      }
      m.phase = committed ? acp::kPhaseCompleted : acp::kPhaseFailed;
      m.error = committed ? "" : "source node restarted during the migration";
      m.finished_ms = clock_.WallMillis();
      (void)store_->PutMigration(m);
      obs::LogWarn("migration", "ended a migration this node was sending when it stopped",
                   {{"migration_id", m.id}, {"vm_id", m.vm_id}, {"phase", m.phase}});
    }
  }
  for (const auto& vm : *vms) {
    if (vm.node_id != config_.node_id) continue;
    if (vm.driver == "qemu") {
      RecoverQemuVm(vm);
      continue;
    }
    acp::VmRecord desired = vm;
    desired.state = acp::kVmRunning;
    desired.migration_id.clear();
    Status st = store_->CompareAndSwapVm(vm, desired);
    if (!st.ok()) continue;  // changed meanwhile: not ours to boot
    vm::GuestSpec spec{vm.id, vm.memory_bytes, vm.dirty_rate, vm.seed};
    auto guest = vm::SyntheticGuest::Boot(spec);
    if (!guest.ok()) {
      obs::LogError("vm", "cannot boot owned vm",
                    {{"vm_id", vm.id}, {"error", guest.status().ToString()}});
      continue;
    }
    vms_.Add(vm.id, std::shared_ptr<vm::Guest>(std::move(guest).value()), vm.epoch);
    obs::LogWarn("vm", "cold-booted an owned vm: guest memory does not survive a node restart",
                 {{"vm_id", vm.id}, {"epoch", vm.epoch}, {"previous_state", vm.state}});
  }
  metrics_.vms_running.Set(static_cast<double>(vms_.size()));
}

// Once a second: heartbeat, fencing check, health and resource sampling.
void Node::BackgroundLoop() {
  std::unique_lock lock(stop_mu_);
  while (!stopping_) {
    stop_cv_.wait_for(lock, Ms(1000));
    if (stopping_) break;
    lock.unlock();
    auto t0 = clock_.Now();
    bool store_ok = Heartbeat("up");
    double store_seconds = std::chrono::duration<double>(clock_.Now() - t0).count();
    metrics_.store_latency.Observe(store_seconds);
    CheckFencing();
    CheckQemuVms();
    LeaderDuties();
    SampleHealthAndResources(store_ok, store_seconds);
    auto families = metrics_.Collect();  // one scrape feeds both
    sla_->Tick(obs::SlaInputs::FromFamilies(families));
    obs::AnomalyTick tick = obs::AnomalyTick::FromFamilies(families);
    tick.prediction_error = engine_->bandwidth_predictor().mean_error();
    anomaly_->Tick(tick);
    summary_history_.Offer(families, clock_.WallMillis());
    rollout_->Tick();
    lock.lock();
  }
}

void Node::LeaderDuties() {
  constexpr int64_t kLeaseMs = 5000;      // renewed every second: a dead leader is replaced
  const int64_t node_dead_ms = config_.node_lease_ms;  // the engine's node_alive_window
  auto lease = store_->AcquireLease("cluster-leader", config_.node_id, kLeaseMs);
  const bool leader = lease.ok();
  if (leader != leader_) {
    if (leader) metrics_.leader_elections().Increment();
    obs::LogInfo("acp", leader ? "became the cluster leader" : "no longer the cluster leader",
                 {{"node", config_.node_id}, {"lease", "cluster-leader"}});
  }
  leader_ = leader;
  metrics_.leader().Set(leader ? 1 : 0);
  if (!leader) return;
  auto nodes = store_->ListNodes();
  if (!nodes.ok()) return;
  const int64_t now = clock_.WallMillis();
  for (auto n : *nodes) {
    if (n.state != "up" || now - n.heartbeat_ms <= node_dead_ms) continue;
    const int64_t silent = now - n.heartbeat_ms;
    n.state = "down";
    if (store_->UpsertNode(n).ok()) {
      obs::LogWarn("acp", "node stopped heartbeating: marked down",
                   {{"node", n.id}, {"silent_ms", silent}});
    }
  }
}

void Node::SampleHealthAndResources(bool store_ok, double store_seconds) {
  using obs::Component;
  const auto now = clock_.Now();
  Sample s;
  s.at = now;
  s.cpu_seconds = obs::ReadProcessSample().cpu_seconds;
  s.logical_bytes = metrics_.bytes_sent.Value() + metrics_.bytes_received.Value();
  s.wire_bytes = metrics_.wire_sent.Value() + metrics_.wire_received.Value();
  s.bytes_by_mode = engine_->bytes_by_mode();
  s.stream_busy_ns = engine_->stream_busy_ns();
  for (auto r : {obs::MigrationResult::kSuccess, obs::MigrationResult::kFailed,
                 obs::MigrationResult::kAborted}) {
    s.migrations += metrics_.migrations(r, 1).Value() + metrics_.migrations(r, 3).Value();
  }
  s.protocol_errors = engine_->protocol_errors();
  s.digest_mismatches = engine_->digest_mismatches();

  if (last_sample_.at != std::chrono::steady_clock::time_point{}) {
    const double secs = std::chrono::duration<double>(now - last_sample_.at).count();
    if (secs > 0) {
      metrics_.throughput.Set((s.logical_bytes - last_sample_.logical_bytes) / secs);
      for (int m = 0; m < 3; ++m) {
        metrics_.amst_throughput(m).Set(
            static_cast<double>(s.bytes_by_mode[m] - last_sample_.bytes_by_mode[m]) / secs);
      }
      const double streams = std::max(1.0, metrics_.amst_streams.Value());
      metrics_.stream_saturation().Set(
          std::min(1.0, static_cast<double>(s.stream_busy_ns - last_sample_.stream_busy_ns) / 1e9 /
                            secs / streams));
      const double cores = std::max(1u, std::thread::hardware_concurrency());
      metrics_.cpu_percent.Set(100.0 * (s.cpu_seconds - last_sample_.cpu_seconds) / secs / cores);
    }
    // A component with recent errors is degraded for a minute after the last one.
    if (s.protocol_errors > last_sample_.protocol_errors)
      amst_degraded_until_ = now + std::chrono::seconds(60);
    if (s.digest_mismatches > last_sample_.digest_mismatches)
      hde_degraded_until_ = now + std::chrono::seconds(60);
  }
  last_sample_ = s;

  // Finished migrations over the last minute.
  migration_history_.emplace_back(now, s.migrations);
  while (migration_history_.size() > 1 &&
         now - migration_history_.front().first > std::chrono::seconds(60)) {
    migration_history_.erase(migration_history_.begin());
  }
  migrations_per_minute_ = s.migrations - migration_history_.front().second;

  // Health: ACP = the store takes writes and its members have a quorum (slow = degraded);
  // AMST = the data listener accepts (recent protocol errors = degraded); HDE = content
  // verifies (recent mismatches = degraded). The quorum gauge is the share of the store's
  // members that answer: SQLite has one, the file; etcd reports its members (docs/acp.md).
  bool quorum = store_ok;
  double healthy_ratio = store_ok ? 1 : 0;
  if (store_) {
    auto health = store_->Health();
    if (health.ok() && health->members > 0) {
      healthy_ratio = static_cast<double>(health->healthy) / health->members;
      quorum = health->quorum();
      if (!store_ok && health->backend == "sqlite") healthy_ratio = 0;  // the file took no write
    } else {
      healthy_ratio = 0;
      quorum = false;
    }
  }
  metrics_.quorum_healthy().Set(healthy_ratio);
  metrics_.SetHealth(Component::kAcp, !store_ok || !quorum  ? obs::kHealthDown
                                      : store_seconds > 1.0 ? obs::kHealthDegraded
                                                            : obs::kHealthy);
  metrics_.SetHealth(Component::kAmst, !engine_->listening()        ? obs::kHealthDown
                                       : now < amst_degraded_until_ ? obs::kHealthDegraded
                                                                    : obs::kHealthy);
  metrics_.SetHealth(Component::kHde,
                     now < hde_degraded_until_ ? obs::kHealthDegraded : obs::kHealthy);

  const uint64_t host = obs::HostMemoryBytes();
  if (host > 0) {
    metrics_.memory_percent.Set(100.0 * obs::ReadProcessSample().resident_bytes / host);
  }
  const double tasks = static_cast<double>(obs::pprof::TaskRegistry::Global().Count());
  metrics_.tasks.Set(tasks);
  metrics_.tasks_percent.Set(100.0 * tasks / config_.max_tasks);
}

// A guest runs here only while the store names this node its owner at the same epoch.
void Node::CheckFencing() {
  for (const auto& id : vms_.Ids()) {
    auto local = vms_.Find(id);
    if (!local.guest) continue;
    auto rec = store_->GetVm(id);
    if (!rec.ok() && rec.status().code() != StatusCode::kNotFound) continue;  // store hiccup
    bool ours = rec.ok() && rec->node_id == config_.node_id && rec->epoch == local.epoch;
    if (ours) {
      // A migration that ended while the store was unreachable left the record migrating.
      if (rec->state == acp::kVmMigrating) (void)engine_->RepairStranded(*rec);
      continue;
    }
    vms_.Remove(id);
    metrics_.vms_running.Set(static_cast<double>(vms_.size()));
    metrics_.CountError(obs::Component::kAcp, "fenced", "critical");
    obs::LogError("acp", "stopped a guest the store does not give to this node",
                  {{"vm_id", id},
                   {"local_epoch", local.epoch},
                   {"store_owner", rec.ok() ? rec->node_id : ""},
                   {"store_epoch", rec.ok() ? rec->epoch : 0}});
  }
}

Result<acp::VmRecord> Node::CreateVm(const VmCreateRequest& req) {
  if (!ready_) return Status(Unavailable("node is not ready"));
  if (!ValidVmId(req.id)) {
    return Status(
        InvalidArgument("vm id '" + req.id + "' must be 1-64 letters, digits, '-', '_' or '.'"));
  }
  if (req.driver == "qemu") return CreateQemuVm(req);
  if (req.driver != "synthetic") {
    return Status(InvalidArgument("driver must be \"synthetic\" or \"qemu\""));
  }
  if (req.memory_bytes == 0 || req.memory_bytes % vm::kPageSize != 0) {
    return Status(InvalidArgument("memory must be a positive multiple of 4 KiB"));
  }
  if (req.memory_bytes > kMaxVmMemory)
    return Status(InvalidArgument("memory is larger than 64 GiB"));
  if (req.dirty_rate > 10'000'000'000ull) {
    return Status(InvalidArgument("dirty rate is above 10 GB/s"));
  }
  if (store_->GetVm(req.id).ok()) return Status(AlreadyExists("vm " + req.id + " already exists"));
  uint64_t seed = req.seed ? req.seed : std::random_device{}() | 1;
  vm::GuestSpec spec{req.id, req.memory_bytes, req.dirty_rate, seed};
  auto guest = vm::SyntheticGuest::Boot(spec);
  if (!guest.ok()) return guest.status();
  acp::VmRecord rec;
  rec.id = req.id;
  rec.node_id = config_.node_id;
  rec.state = acp::kVmRunning;
  rec.epoch = 1;
  rec.memory_bytes = req.memory_bytes;
  rec.dirty_rate = req.dirty_rate;
  rec.seed = seed;
  rec.created_ms = clock_.WallMillis();
  DWCP_RETURN_IF_ERROR(store_->CreateVm(rec));
  vms_.Add(rec.id, std::shared_ptr<vm::Guest>(std::move(guest).value()), rec.epoch);
  metrics_.vms_running.Set(static_cast<double>(vms_.size()));
  obs::LogInfo(
      "vm", "vm created",
      {{"vm_id", rec.id}, {"memory_bytes", rec.memory_bytes}, {"dirty_rate", rec.dirty_rate}});
  return store_->GetVm(rec.id);
}

Result<acp::MigrationRecord> Node::StartMigration(const migration::MigrationRequest& request,
                                                  bool protocol_pinned) {
  if (!ready_) return Status(Unavailable("node is not ready"));
  if (auto vm = store_->GetVm(request.vm_id); vm.ok() && vm->driver == "qemu") {
    return Status(Unimplemented("live migration of qemu guests is not implemented yet (vm " +
                                request.vm_id + " runs on the qemu driver; docs/qemu.md)"));
  }
  if (protocol_pinned) {
    auto started = engine_->Start(request);
    if (started.ok()) {
      obs::LogInfo("rollout", "migration protocol pinned by the request",
                   {{"vm_id", request.vm_id},
                    {"migration_id", started->id},
                    {"protocol", "v" + std::to_string(request.protocol)},
                    {"region", config_.region}});
    }
    return started;
  }
  // The region's rollout stage decides (docs/rollout.md).
  migration::MigrationRequest chosen = request;
  const rollout::ProtocolChoice choice = rollout_->ChooseProtocol(request.vm_id);
  chosen.protocol = choice.protocol;
  auto started = engine_->Start(chosen);
  if (started.ok()) {
    obs::LogInfo("rollout", "migration protocol chosen by the rollout",
                 {{"vm_id", request.vm_id},
                  {"migration_id", started->id},
                  {"protocol", "v" + std::to_string(choice.protocol)},
                  {"region", choice.region},
                  {"stage", choice.stage},
                  {"percent", choice.percent},
                  {"bucket", choice.bucket},
                  {"from_store", choice.from_store}});
  }
  return started;
}

void Node::Stop() {
  {
    std::lock_guard lock(stop_mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  stop_cv_.notify_all();
  bool was_ready = ready_.exchange(false);
  if (was_ready) obs::LogInfo("node", "dwcpd stopping");
  if (engine_) engine_->Shutdown(Ms(30000));
  if (background_.joinable()) background_.join();
  StopQemuVms();
  if (profiler_) profiler_->Stop();
  if (pprof_) pprof_->Stop();
  if (api_) api_->Stop();
  if (store_ && was_ready) {
    // Our guests stop with the process; the store says so, and a restart boots them again.
    for (const auto& id : vms_.Ids()) {
      auto rec = store_->GetVm(id);
      if (!rec.ok() || rec->node_id != config_.node_id || rec->state != acp::kVmRunning) continue;
      acp::VmRecord stopped = *rec;
      stopped.state = acp::kVmStopped;
      (void)store_->CompareAndSwapVm(*rec, stopped);
    }
    Heartbeat("down");
    if (leader_) (void)store_->ReleaseLease("cluster-leader", config_.node_id);
  }
  for (const auto& id : vms_.Ids()) vms_.Remove(id);
  work_.reset();
  io_.stop();
  for (auto& t : io_threads_) {
    if (t.joinable()) t.join();
  }
  if (tracer_) tracer_->Shutdown();  // flush the last spans
  {
    std::lock_guard lock(stop_mu_);
    stopped_ = true;
  }
  stop_cv_.notify_all();
  if (was_ready) obs::LogInfo("node", "dwcpd stopped");
}

void Node::WaitForStop() {
  std::unique_lock lock(stop_mu_);
  stop_cv_.wait(lock, [this] { return stopped_; });
}

Node::~Node() {
  Stop();
  engine_.reset();
}

}  // namespace dwcp::node
