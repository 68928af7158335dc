// StateStore on one SQLite file, shared by every dwcpd process on a host.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "acp/state_store.h"
#include "common/clock.h"
#include "common/status.h"

struct sqlite3;
struct sqlite3_stmt;

namespace dwcp::acp {

// A StateStore on a SQLite database in WAL mode. Several processes may open the same file at
// once: every write is a BEGIN IMMEDIATE transaction, retried while SQLite reports the file
// busy (each attempt waits up to kBusyTimeout inside SQLite, all attempts together at most
// kBusyRetryDeadline of real time, after which the call fails with Unavailable).
//
// The store stamps updated_ms from `clock` on every write of a VM or migration, and
// created_ms when the caller leaves it 0 (on a replace, 0 keeps the stored created_ms).
// Lease expiry is measured against clock.WallMillis().
//
// Thread-safe: one connection per object, guarded by a mutex. I/O and SQLite failures are
// Unavailable (busy, I/O, cannot open, read-only, disk full) or Internal, with SQLite's
// message and the file's path.
class SqliteStateStore final : public StateStore {
 public:
  // 1: nodes, vms, migrations, leases. 2: rollouts (a version 1 file gains the table on open).
  static constexpr int kSchemaVersion = 4;
  static constexpr std::chrono::milliseconds kBusyTimeout{10'000};
  static constexpr std::chrono::milliseconds kBusyRetryDeadline{30'000};

  // Opens (creating if needed) the database at `path` and brings its schema up to
  // kSchemaVersion. `clock` must outlive the store. Fails with Unavailable when the file cannot
  // be opened or written, FailedPrecondition when it has a newer schema than this build.
  static Result<std::unique_ptr<SqliteStateStore>> Open(const std::string& path, Clock& clock);

  ~SqliteStateStore() override;
  SqliteStateStore(const SqliteStateStore&) = delete;
  SqliteStateStore& operator=(const SqliteStateStore&) = delete;

  Status UpsertNode(const NodeRecord& node) override;
  Result<NodeRecord> GetNode(const std::string& id) override;
  Result<std::vector<NodeRecord>> ListNodes() override;

  Status CreateVm(const VmRecord& vm) override;
  Result<VmRecord> GetVm(const std::string& id) override;
  Result<std::vector<VmRecord>> ListVms() override;
  // InvalidArgument if desired.id differs from expected.id.
  Status CompareAndSwapVm(const VmRecord& expected, const VmRecord& desired,
                          const MigrationRecord* migration = nullptr) override;
  // NotFound if the VM is gone; FailedPrecondition naming the stored epoch on a mismatch.
  Status DeleteVm(const std::string& id, uint64_t expected_epoch) override;

  Status PutMigration(const MigrationRecord& migration) override;
  Result<MigrationRecord> GetMigration(const std::string& id) override;
  Result<std::vector<MigrationRecord>> ListMigrations(size_t limit) override;

  Result<RolloutRecord> GetRollout(const std::string& region) override;
  Result<std::vector<RolloutRecord>> ListRollouts() override;
  // InvalidArgument for an empty region.
  Result<RolloutRecord> CompareAndSwapRollout(uint64_t expected_version,
                                              const RolloutRecord& desired) override;

  // InvalidArgument if ttl_ms <= 0. A lease whose expires_ms <= now is free.
  Result<Lease> AcquireLease(const std::string& name, const std::string& holder,
                             int64_t ttl_ms) override;
  // FailedPrecondition (releasing nothing) if another holder has an unexpired lease.
  Status ReleaseLease(const std::string& name, const std::string& holder) override;

  // {1, 1, "", "sqlite"} while the file can be read and written; Unavailable (naming the
  // path) otherwise. Defined in sqlite_state_store_health.cc.
  Result<StoreHealth> Health() override;

  const std::string& path() const { return path_; }

 private:
  enum class TxnKind { kRead, kWrite };

  SqliteStateStore(std::string path, Clock& clock, sqlite3* db);

  Status Init();
  // Calls `attempt` until it succeeds, fails for a reason other than SQLite reporting busy,
  // or kBusyRetryDeadline of real time has passed. Requires mu_.
  Status WithBusyRetry(const std::function<Status()>& attempt);
  // Runs `body` inside BEGIN (kRead) or BEGIN IMMEDIATE (kWrite) and commits when it returns
  // OK, rolls back otherwise. Retries the whole transaction while SQLite reports busy, so
  // `body` must reset its outputs on entry. Requires mu_.
  Status RunTxn(TxnKind kind, const std::function<Status()>& body);
  Status Exec(const char* sql);
  // Returns the cached statement for `sql`, reset and with bindings cleared; null (and
  // `*status` set) on failure. Requires mu_.
  sqlite3_stmt* Prepare(const char* sql, Status* status);
  // Maps a SQLite result code to a Status naming `what` and the path; records whether the
  // failure is worth retrying.
  Status SqlError(int rc, const char* what);

  Status WriteMigration(const MigrationRecord& m, int64_t now);

  const std::string path_;
  Clock& clock_;
  std::mutex mu_;
  sqlite3* db_;                                                // guarded by mu_
  std::unordered_map<const char*, sqlite3_stmt*> statements_;  // guarded by mu_
  bool busy_ = false;  // last SqlError was SQLITE_BUSY/LOCKED; guarded by mu_
};

}  // namespace dwcp::acp
