// ACP's StateStore: the cluster's source of truth for nodes, VM ownership, migrations and
// the v1→v3 rollout.
// SQLite (sqlite_state_store.h) for one host, etcd (etcd_state_store.h) for a real cluster;
// store_factory.h opens the one a configuration names.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace dwcp::acp {

struct NodeRecord {
  std::string id;            // "node-a"
  std::string region;        // "local"
  std::string api_url;       // "http://127.0.0.1:8080"
  std::string data_address;  // "127.0.0.1:7070"
  std::string state;         // "up" | "down"
  std::string version;       // dwcpd version string
  int64_t started_ms = 0;    // wall ms when the node last started
  int64_t heartbeat_ms = 0;  // wall ms of the node's last heartbeat
  // Hex Ed25519 public key that verifies the node's round commitments (docs/consensus.md);
  // empty for nodes that never published one.
  std::string public_key;
};

// VM states.
inline constexpr const char* kVmRunning = "running";
inline constexpr const char* kVmMigrating = "migrating";
inline constexpr const char* kVmStopped = "stopped";

struct VmRecord {
  std::string id;            // "vm-12345"
  std::string node_id;       // owner: the only node allowed to run the VM
  std::string state;         // kVmRunning | kVmMigrating | kVmStopped
  uint64_t epoch = 0;        // fencing epoch; +1 on every ownership change
  std::string migration_id;  // set while state == kVmMigrating
  std::string driver = "synthetic";
  uint64_t memory_bytes = 0;
  uint64_t dirty_rate = 0;  // bytes per second the guest dirties
  uint64_t seed = 0;        // content-model seed of the synthetic driver
  int64_t created_ms = 0;
  int64_t updated_ms = 0;
};

// Migration phases, in order; a migration ends in completed, failed or aborted.
inline constexpr const char* kPhasePending = "pending";
inline constexpr const char* kPhasePrecopy = "precopy";
inline constexpr const char* kPhaseSwitchover = "switchover";
inline constexpr const char* kPhaseCommitting = "committing";
inline constexpr const char* kPhaseCompleted = "completed";
inline constexpr const char* kPhaseFailed = "failed";
inline constexpr const char* kPhaseAborted = "aborted";

struct MigrationRecord {
  std::string id;  // "mig-<hex>"
  std::string vm_id;
  std::string source_node;
  std::string dest_node;
  std::string phase = kPhasePending;
  std::string error;     // human-readable reason when failed/aborted
  std::string protocol;  // negotiated wire protocol: "v1" | "v3"
  uint32_t round = 0;    // current (or final) pre-copy round, 1-based
  uint64_t memory_bytes = 0;
  uint64_t bytes_transferred = 0;  // logical VM bytes sent so far
  uint64_t network_bytes = 0;      // bytes on the wire so far
  uint64_t remaining_bytes = 0;    // dirty bytes still to send (estimate)
  double throughput_bps = 0;       // current transfer rate, logical bytes/s
  double downtime_ms = 0;          // pause to resume, once switched over
  double total_ms = 0;             // creation to end, once ended
  uint64_t epoch_before = 0;       // VM epoch when the migration started
  std::string source_digest;       // content digest computed on the source at pause
  std::string dest_digest;         // content digest computed on the destination
  int64_t created_ms = 0;
  int64_t updated_ms = 0;
  int64_t finished_ms = 0;  // 0 while running
  // The timeline and where the time went, for a migration's detail view.
  std::string trace_id;               // trace of the migrate_vm span (32 hex digits)
  int64_t precopy_started_ms = 0;     // wall ms when each phase began; 0 until it does
  int64_t switchover_started_ms = 0;  // the VM paused
  int64_t commit_started_ms = 0;      // the ownership commit began
  double amst_seconds = 0;            // time in AMST (sending and waiting on the link)
  double hde_seconds = 0;             // time in HDE (encoding and decoding)
  double acp_seconds = 0;             // time in ACP (store transactions)
};

// The rollout of v3 over v1 in one region (src/rollout, docs/rollout.md): which stage every
// node of the region applies. The record is authoritative: `percent` is the v3 share every
// node uses, even while nodes disagree about the configured stage list.
struct RolloutRecord {
  std::string region;
  std::string stage;       // stage name: "v1" (0 %) or one of the configured stages
  double percent = 0;      // share of unpinned migrations that use v3, 0..100
  bool halted = false;     // automatic advance is off until an operator advances
  uint64_t version = 0;    // 1 on creation, +1 on every write; the compare-and-swap key
  std::string reason;      // why the stage last changed: initial, go, no_go, manual, alert
  std::string detail;      // human-readable: NO-GO reasons, alert names, the operator's note
  std::string changed_by;  // node id that wrote the record
  int64_t changed_ms = 0;  // wall ms when the current stage began
};

struct Lease {
  std::string name;
  std::string holder;
  int64_t expires_ms = 0;  // wall ms
};

// What the store's members say about themselves, for the quorum gauge and `acp` health.
struct StoreHealth {
  int members = 0;      // members the store has (SQLite: 1, the file)
  int healthy = 0;      // members that answer and take part in a quorum
  std::string leader;   // name of the member that leads ("" when none or not applicable)
  std::string backend;  // "sqlite" | "etcd"

  // A majority of the members is healthy: writes can commit.
  bool quorum() const { return members > 0 && healthy > members / 2; }
};

// Thread-safe. Every method is one linearizable transaction against the store.
class StateStore {
 public:
  virtual ~StateStore() = default;

  // Inserts or replaces a node.
  virtual Status UpsertNode(const NodeRecord& node) = 0;
  virtual Result<NodeRecord> GetNode(const std::string& id) = 0;  // NotFound
  virtual Result<std::vector<NodeRecord>> ListNodes() = 0;        // ordered by id

  // Inserts a VM; AlreadyExists if the id is taken.
  virtual Status CreateVm(const VmRecord& vm) = 0;
  virtual Result<VmRecord> GetVm(const std::string& id) = 0;  // NotFound
  virtual Result<std::vector<VmRecord>> ListVms() = 0;        // ordered by id
  // Replaces the VM record by `desired` iff the stored record's node_id, state, epoch and
  // migration_id all equal `expected`'s; when `migration` is non-null it is upserted in the
  // same transaction. NotFound if the VM is gone; FailedPrecondition (naming the stored
  // owner, state and epoch) when the comparison fails, in which case nothing is written.
  virtual Status CompareAndSwapVm(const VmRecord& expected, const VmRecord& desired,
                                  const MigrationRecord* migration = nullptr) = 0;
  // Deletes a VM iff its epoch equals `expected_epoch`.
  virtual Status DeleteVm(const std::string& id, uint64_t expected_epoch) = 0;

  // Inserts or replaces a migration.
  virtual Status PutMigration(const MigrationRecord& migration) = 0;
  virtual Result<MigrationRecord> GetMigration(const std::string& id) = 0;  // NotFound
  // Newest first (by created_ms, then id), at most `limit`.
  virtual Result<std::vector<MigrationRecord>> ListMigrations(size_t limit) = 0;

  // The rollout record of `region`; NotFound when the region has none yet.
  virtual Result<RolloutRecord> GetRollout(const std::string& region) = 0;
  // Every region's rollout record, ordered by region.
  virtual Result<std::vector<RolloutRecord>> ListRollouts() = 0;
  // Writes `desired` iff the stored record of desired.region has version `expected_version`
  // (0: iff the region has no record yet). The written record gets version
  // expected_version + 1 (desired.version is ignored) and is returned. FailedPrecondition
  // (naming the stored version and stage) when the comparison fails, in which case nothing
  // is written: two nodes racing to advance the same stage advance it once.
  virtual Result<RolloutRecord> CompareAndSwapRollout(uint64_t expected_version,
                                                      const RolloutRecord& desired) = 0;

  // Takes or renews the named lease for `holder` until now + ttl_ms. FailedPrecondition if
  // another holder has it and it has not expired.
  virtual Result<Lease> AcquireLease(const std::string& name, const std::string& holder,
                                     int64_t ttl_ms) = 0;
  // Releases the lease if `holder` has it; OK if it is not held at all.
  virtual Status ReleaseLease(const std::string& name, const std::string& holder) = 0;

  // Asks every member whether it answers (each with a short deadline of its own); an error
  // only when no member can be asked at all (Unavailable, naming what was tried).
  virtual Result<StoreHealth> Health() = 0;
};

}  // namespace dwcp::acp
