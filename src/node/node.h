// The composition root of dwcpd: one node agent with its store, guests, migration engine,
// HTTP API and background duties (heartbeat, fencing check, throughput sampling).
#pragma once

#include <asio.hpp>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "acp/state_store.h"
#include "common/clock.h"
#include "common/status.h"
#include "migration/migration_engine.h"
#include "node/config.h"
#include "obs/anomaly.h"
#include "obs/sla.h"
#include "obs/summary_history.h"
#include "obs/metrics.h"
#include "rollout/controller.h"
#include "vm/qemu_guest.h"
#include "vm/vm_table.h"

namespace dwcp::api {
class ApiServer;
}
namespace dwcp::obs::trace {
class Tracer;
}
namespace dwcp::obs::pprof {
class ProfilingServer;
class ContinuousProfiler;
}  // namespace dwcp::obs::pprof

namespace dwcp::node {

struct VmCreateRequest {
  std::string id;
  std::string driver = "synthetic";  // synthetic | qemu
  uint64_t memory_bytes = 256ull << 20;
  uint64_t dirty_rate = 0;  // synthetic only
  uint64_t seed = 0;        // synthetic only; 0: pick one
  // qemu only (docs/qemu.md): boot a kernel, or adopt the QEMU behind qmp_socket.
  std::string kernel, initrd, append;
  std::string qmp_socket;
  std::string accel = "auto";  // auto | kvm | tcg
  std::string boot_marker;     // console text that shows the guest booted (KVM probe)
};

inline constexpr const char* kVersion = "3.0.0";
inline constexpr uint64_t kMaxVmMemory = 64ull << 30;

// Thread-safe.
class Node {
 public:
  // Opens the store, binds both listeners, registers the node, boots the VMs it owns (a
  // restarted node cold-boots them: synthetic guest memory does not survive the process),
  // and starts serving. Errors name what failed (port in use, unwritable store, ...).
  static Result<std::unique_ptr<Node>> Start(NodeConfig config,
                                             Clock& clock = RealClock::Instance());
  ~Node();

  // Graceful shutdown: not ready, abort uncommitted migrations, record VMs as stopped and the
  // node as down, stop serving. Idempotent; safe from a signal-watching thread.
  void Stop();
  // Blocks until Stop() has completed.
  void WaitForStop();

  // Boots a guest here with the request's driver (a synthetic guest, or a QEMU guest that
  // this node starts or adopts) and records it (owner this node, epoch 1).
  Result<acp::VmRecord> CreateVm(const VmCreateRequest& request);
  // The QEMU guest of a qemu VM that runs here; null otherwise.
  std::shared_ptr<vm::QemuGuest> FindQemuVm(const std::string& id) const;
  // Starts a migration of a VM this node owns. Unless `protocol_pinned` (the request named
  // its protocol), the rollout controller picks request.protocol from the region's stage.
  Result<acp::MigrationRecord> StartMigration(const migration::MigrationRequest& request,
                                              bool protocol_pinned = true);

  bool ready() const { return ready_; }
  const obs::SlaEvaluator& sla() const { return *sla_; }
  const obs::AnomalyDetector& anomaly() const { return *anomaly_; }
  // The last 15 minutes of the summary, one point per 5 s (GET /metrics/summary/history).
  const obs::SummaryHistory& summary_history() const { return summary_history_; }
  rollout::RolloutController& rollout() { return *rollout_; }
  // Finished migrations (this node as source) over the last minute.
  double migrations_per_minute() const { return migrations_per_minute_.load(); }
  const NodeConfig& config() const { return config_; }
  uint16_t api_port() const;
  // How peers and clients reach this node's API: http[s]://advertise_host:port.
  std::string ApiUrl() const;
  uint16_t data_port() const { return engine_->listen_port(); }
  migration::MigrationEngine& engine() { return *engine_; }
  uint16_t pprof_port() const;
  acp::StateStore& store() { return *store_; }
  vm::VmTable& vms() { return vms_; }
  obs::Metrics& metrics() { return metrics_; }
  Clock& clock() { return clock_; }
  int64_t node_alive_window_ms() const { return config_.node_lease_ms; }

 private:
  Node(NodeConfig config, Clock& clock);
  Status Init();
  void RecoverOwnedVms();
  // The qemu driver's part of the node (node_qemu.cc).
  Result<acp::VmRecord> CreateQemuVm(const VmCreateRequest& request);
  void RecoverQemuVm(const acp::VmRecord& vm);
  // Once a second: drops qemu VMs whose QEMU exited, and stops those the store gave away.
  void CheckQemuVms();
  // Quits the QEMU guests this node started (adopted ones keep running).
  void StopQemuVms();
  std::string QemuRunDir(const std::string& id) const;
  void BackgroundLoop();
  // Writes the heartbeat; false when the store did not take it.
  bool Heartbeat(const std::string& state);
  void CheckFencing();
  // Once a second: component health, resource utilization, throughput gauges, rates.
  // Takes or renews the cluster leader lease; the leader marks nodes whose heartbeat
  // stopped as down (docs/acp.md).
  void LeaderDuties();
  void SampleHealthAndResources(bool store_ok, double store_seconds);

  NodeConfig config_;
  Clock& clock_;
  obs::Metrics metrics_;
  std::unique_ptr<obs::trace::Tracer> tracer_;  // null when tracing is off
  std::unique_ptr<acp::StateStore> store_;
  std::unique_ptr<obs::SlaEvaluator> sla_;
  std::unique_ptr<obs::AnomalyDetector> anomaly_;
  obs::SummaryHistory summary_history_;
  std::unique_ptr<rollout::RolloutController> rollout_;
  vm::VmTable vms_;
  // qemu VMs: not page-level guests, so not in vms_ (vm/qemu_guest.h).
  struct LocalQemuVm {
    std::shared_ptr<vm::QemuGuest> guest;
    uint64_t epoch = 0;
  };
  vm::AccelSelector accel_selector_;
  mutable std::mutex qemu_mu_;
  std::map<std::string, LocalQemuVm> qemu_vms_;
  asio::io_context io_;
  std::unique_ptr<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::vector<std::thread> io_threads_;
  std::shared_ptr<const acp::NodeKey> node_key_;  // <data_dir>/node.key
  std::unique_ptr<migration::MigrationEngine> engine_;
  std::unique_ptr<api::ApiServer> api_;
  std::unique_ptr<obs::pprof::ProfilingServer> pprof_;
  std::unique_ptr<obs::pprof::ContinuousProfiler> profiler_;  // null unless profiling.enabled
  std::thread background_;
  int64_t started_ms_ = 0;

  // Background sampler state (only the background thread touches it).
  struct Sample {
    std::chrono::steady_clock::time_point at;
    double cpu_seconds = 0, logical_bytes = 0, wire_bytes = 0, migrations = 0;
    uint64_t protocol_errors = 0, digest_mismatches = 0;
    std::array<uint64_t, 3> bytes_by_mode{};  // page data per link mode (engine)
    uint64_t stream_busy_ns = 0;
  };
  Sample last_sample_;
  std::vector<std::pair<std::chrono::steady_clock::time_point, double>> migration_history_;
  std::chrono::steady_clock::time_point amst_degraded_until_{}, hde_degraded_until_{};
  bool leader_ = false;  // holds the cluster leader lease (background thread only)
  std::atomic<double> migrations_per_minute_{0};

  std::atomic<bool> ready_{false};
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  bool stopped_ = false;
};

}  // namespace dwcp::node
