#include "acp/sqlite_state_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <set>
#include <string>
#include <thread>
#include <utility>

namespace dwcp::acp {
namespace {

// Every statement the store runs. Values are always bound, never spliced into the text; the
// cache in SqliteStateStore::Prepare is keyed by these arrays' addresses.
constexpr char kCreateSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS nodes (
  id           TEXT    NOT NULL PRIMARY KEY,
  region       TEXT    NOT NULL,
  api_url      TEXT    NOT NULL,
  data_address TEXT    NOT NULL,
  state        TEXT    NOT NULL,
  version      TEXT    NOT NULL,
  started_ms   INTEGER NOT NULL,
  heartbeat_ms INTEGER NOT NULL,
  public_key   TEXT    NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS vms (
  id           TEXT    NOT NULL PRIMARY KEY,
  node_id      TEXT    NOT NULL,
  state        TEXT    NOT NULL,
  epoch        INTEGER NOT NULL,
  migration_id TEXT    NOT NULL,
  driver       TEXT    NOT NULL,
  memory_bytes INTEGER NOT NULL,
  dirty_rate   INTEGER NOT NULL,
  seed         INTEGER NOT NULL,
  created_ms   INTEGER NOT NULL,
  updated_ms   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS migrations (
  id                TEXT    NOT NULL PRIMARY KEY,
  vm_id             TEXT    NOT NULL,
  source_node       TEXT    NOT NULL,
  dest_node         TEXT    NOT NULL,
  phase             TEXT    NOT NULL,
  error             TEXT    NOT NULL,
  protocol          TEXT    NOT NULL,
  round             INTEGER NOT NULL,
  memory_bytes      INTEGER NOT NULL,
  bytes_transferred INTEGER NOT NULL,
  network_bytes     INTEGER NOT NULL,
  remaining_bytes   INTEGER NOT NULL,
  throughput_bps    REAL    NOT NULL,
  downtime_ms       REAL    NOT NULL,
  total_ms          REAL    NOT NULL,
  epoch_before      INTEGER NOT NULL,
  source_digest     TEXT    NOT NULL,
  dest_digest       TEXT    NOT NULL,
  created_ms        INTEGER NOT NULL,
  updated_ms        INTEGER NOT NULL,
  finished_ms       INTEGER NOT NULL,
  trace_id              TEXT    NOT NULL DEFAULT '',
  precopy_started_ms    INTEGER NOT NULL DEFAULT 0,
  switchover_started_ms INTEGER NOT NULL DEFAULT 0,
  commit_started_ms     INTEGER NOT NULL DEFAULT 0,
  amst_seconds          REAL    NOT NULL DEFAULT 0,
  hde_seconds           REAL    NOT NULL DEFAULT 0,
  acp_seconds           REAL    NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS migrations_by_created ON migrations (created_ms DESC, id DESC);
CREATE TABLE IF NOT EXISTS leases (
  name       TEXT    NOT NULL PRIMARY KEY,
  holder     TEXT    NOT NULL,
  expires_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rollouts (
  region     TEXT    NOT NULL PRIMARY KEY,
  stage      TEXT    NOT NULL,
  percent    REAL    NOT NULL,
  halted     INTEGER NOT NULL,
  version    INTEGER NOT NULL,
  reason     TEXT    NOT NULL,
  detail     TEXT    NOT NULL,
  changed_by TEXT    NOT NULL,
  changed_ms INTEGER NOT NULL
);
)sql";

// Schema 3 added the migration timeline columns; an older file gets those it lacks, with
// their defaults.
constexpr std::pair<const char*, const char*> kMigrationTimelineColumns[] = {
    {"trace_id", "TEXT NOT NULL DEFAULT ''"},
    {"precopy_started_ms", "INTEGER NOT NULL DEFAULT 0"},
    {"switchover_started_ms", "INTEGER NOT NULL DEFAULT 0"},
    {"commit_started_ms", "INTEGER NOT NULL DEFAULT 0"},
    {"amst_seconds", "REAL NOT NULL DEFAULT 0"},
    {"hde_seconds", "REAL NOT NULL DEFAULT 0"},
    {"acp_seconds", "REAL NOT NULL DEFAULT 0"},
};
constexpr char kMigrationColumns[] = "SELECT name FROM pragma_table_info('migrations')";

constexpr char kJournalModeWal[] = "PRAGMA journal_mode = WAL";
constexpr char kGetUserVersion[] = "PRAGMA user_version";

constexpr char kUpsertNode[] =
    "INSERT OR REPLACE INTO nodes (id, region, api_url, data_address, state, version, "
    "started_ms, heartbeat_ms, public_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
constexpr char kGetNode[] =
    "SELECT id, region, api_url, data_address, state, version, started_ms, heartbeat_ms, "
    "public_key FROM nodes WHERE id = ?1";
constexpr char kListNodes[] =
    "SELECT id, region, api_url, data_address, state, version, started_ms, heartbeat_ms, "
    "public_key FROM nodes ORDER BY id";
constexpr char kNodeColumns[] = "SELECT name FROM pragma_table_info('nodes')";

constexpr char kInsertVm[] =
    "INSERT INTO vms (id, node_id, state, epoch, migration_id, driver, memory_bytes, "
    "dirty_rate, seed, created_ms, updated_ms) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
constexpr char kGetVm[] =
    "SELECT id, node_id, state, epoch, migration_id, driver, memory_bytes, dirty_rate, seed, "
    "created_ms, updated_ms FROM vms WHERE id = ?1";
constexpr char kListVms[] =
    "SELECT id, node_id, state, epoch, migration_id, driver, memory_bytes, dirty_rate, seed, "
    "created_ms, updated_ms FROM vms ORDER BY id";
constexpr char kGetVmGuard[] = "SELECT node_id, state, epoch, migration_id FROM vms WHERE id = ?1";
// ?10 = 0 keeps the stored created_ms.
constexpr char kUpdateVm[] =
    "UPDATE vms SET node_id = ?2, state = ?3, epoch = ?4, migration_id = ?5, driver = ?6, "
    "memory_bytes = ?7, dirty_rate = ?8, seed = ?9, "
    "created_ms = CASE WHEN ?10 = 0 THEN created_ms ELSE ?10 END, updated_ms = ?11 "
    "WHERE id = ?1";
constexpr char kDeleteVm[] = "DELETE FROM vms WHERE id = ?1";

// ?19 is the created_ms of a new row; ?22 = 0 keeps the stored created_ms of an existing one.
constexpr char kUpsertMigration[] =
    "INSERT INTO migrations (id, vm_id, source_node, dest_node, phase, error, protocol, round, "
    "memory_bytes, bytes_transferred, network_bytes, remaining_bytes, throughput_bps, "
    "downtime_ms, total_ms, epoch_before, source_digest, dest_digest, created_ms, updated_ms, "
    "finished_ms, trace_id, precopy_started_ms, switchover_started_ms, commit_started_ms, "
    "amst_seconds, hde_seconds, acp_seconds) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, "
    "?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?23, ?24, ?25, ?26, ?27, ?28, ?29) "
    "ON CONFLICT (id) DO UPDATE SET vm_id = excluded.vm_id, "
    "source_node = excluded.source_node, dest_node = excluded.dest_node, "
    "phase = excluded.phase, error = excluded.error, protocol = excluded.protocol, "
    "round = excluded.round, memory_bytes = excluded.memory_bytes, "
    "bytes_transferred = excluded.bytes_transferred, network_bytes = excluded.network_bytes, "
    "remaining_bytes = excluded.remaining_bytes, throughput_bps = excluded.throughput_bps, "
    "downtime_ms = excluded.downtime_ms, total_ms = excluded.total_ms, "
    "epoch_before = excluded.epoch_before, source_digest = excluded.source_digest, "
    "dest_digest = excluded.dest_digest, "
    "created_ms = CASE WHEN ?22 = 0 THEN migrations.created_ms ELSE excluded.created_ms END, "
    "updated_ms = excluded.updated_ms, finished_ms = excluded.finished_ms, "
    "trace_id = excluded.trace_id, precopy_started_ms = excluded.precopy_started_ms, "
    "switchover_started_ms = excluded.switchover_started_ms, "
    "commit_started_ms = excluded.commit_started_ms, amst_seconds = excluded.amst_seconds, "
    "hde_seconds = excluded.hde_seconds, acp_seconds = excluded.acp_seconds";
constexpr char kGetMigration[] =
    "SELECT id, vm_id, source_node, dest_node, phase, error, protocol, round, memory_bytes, "
    "bytes_transferred, network_bytes, remaining_bytes, throughput_bps, downtime_ms, total_ms, "
    "epoch_before, source_digest, dest_digest, created_ms, updated_ms, finished_ms, trace_id, "
    "precopy_started_ms, switchover_started_ms, commit_started_ms, amst_seconds, hde_seconds, "
    "acp_seconds FROM migrations WHERE id = ?1";
constexpr char kListMigrations[] =
    "SELECT id, vm_id, source_node, dest_node, phase, error, protocol, round, memory_bytes, "
    "bytes_transferred, network_bytes, remaining_bytes, throughput_bps, downtime_ms, total_ms, "
    "epoch_before, source_digest, dest_digest, created_ms, updated_ms, finished_ms, trace_id, "
    "precopy_started_ms, switchover_started_ms, commit_started_ms, amst_seconds, hde_seconds, "
    "acp_seconds FROM migrations ORDER BY created_ms DESC, id DESC LIMIT ?1";

constexpr char kGetLease[] = "SELECT holder, expires_ms FROM leases WHERE name = ?1";
constexpr char kPutLease[] =
    "INSERT OR REPLACE INTO leases (name, holder, expires_ms) VALUES (?1, ?2, ?3)";
constexpr char kDeleteLease[] = "DELETE FROM leases WHERE name = ?1";

constexpr char kGetRollout[] =
    "SELECT region, stage, percent, halted, version, reason, detail, changed_by, changed_ms "
    "FROM rollouts WHERE region = ?1";
constexpr char kListRollouts[] =
    "SELECT region, stage, percent, halted, version, reason, detail, changed_by, changed_ms "
    "FROM rollouts ORDER BY region";
constexpr char kGetRolloutVersion[] = "SELECT version, stage FROM rollouts WHERE region = ?1";
constexpr char kPutRollout[] =
    "INSERT OR REPLACE INTO rollouts (region, stage, percent, halted, version, reason, detail, "
    "changed_by, changed_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

bool IsBusy(int rc) {
  const int primary = rc & 0xff;
  return primary == SQLITE_BUSY || primary == SQLITE_LOCKED;
}

// Resets a cached statement when the scope that used it ends, so no read stays open.
class StmtReset {
 public:
  explicit StmtReset(sqlite3_stmt* stmt) : stmt_(stmt) {}
  ~StmtReset() {
    if (stmt_ != nullptr) sqlite3_reset(stmt_);
  }
  StmtReset(const StmtReset&) = delete;
  StmtReset& operator=(const StmtReset&) = delete;

 private:
  sqlite3_stmt* stmt_;
};

// Binds parameters 1, 2, 3, ... in call order; remembers the first failure.
class Binder {
 public:
  explicit Binder(sqlite3_stmt* stmt) : stmt_(stmt) {}
  Binder& Text(const std::string& s) {
    Keep(
        sqlite3_bind_text(stmt_, ++index_, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT));
    return *this;
  }
  Binder& Int(int64_t v) {
    Keep(sqlite3_bind_int64(stmt_, ++index_, v));
    return *this;
  }
  // uint64 fields are stored as the int64 with the same bits, so every value round-trips.
  Binder& Uint(uint64_t v) { return Int(static_cast<int64_t>(v)); }
  Binder& Real(double v) {
    Keep(sqlite3_bind_double(stmt_, ++index_, v));
    return *this;
  }
  int rc() const { return rc_; }

 private:
  void Keep(int rc) {
    if (rc_ == SQLITE_OK) rc_ = rc;
  }
  sqlite3_stmt* stmt_;
  int index_ = 0;
  int rc_ = SQLITE_OK;
};

// Reads columns 0, 1, 2, ... of the current row in call order.
class Reader {
 public:
  explicit Reader(sqlite3_stmt* stmt) : stmt_(stmt) {}
  std::string Text() {
    const int i = index_++;
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, i));
    const int n = sqlite3_column_bytes(stmt_, i);
    return p == nullptr ? std::string() : std::string(p, static_cast<size_t>(n));
  }
  int64_t Int() { return sqlite3_column_int64(stmt_, index_++); }
  uint64_t Uint() { return static_cast<uint64_t>(Int()); }
  double Real() { return sqlite3_column_double(stmt_, index_++); }

 private:
  sqlite3_stmt* stmt_;
  int index_ = 0;
};

NodeRecord ReadNode(sqlite3_stmt* stmt) {
  Reader r(stmt);
  NodeRecord n;
  n.id = r.Text();
  n.region = r.Text();
  n.api_url = r.Text();
  n.data_address = r.Text();
  n.state = r.Text();
  n.version = r.Text();
  n.started_ms = r.Int();
  n.heartbeat_ms = r.Int();
  n.public_key = r.Text();
  return n;
}

VmRecord ReadVm(sqlite3_stmt* stmt) {
  Reader r(stmt);
  VmRecord vm;
  vm.id = r.Text();
  vm.node_id = r.Text();
  vm.state = r.Text();
  vm.epoch = r.Uint();
  vm.migration_id = r.Text();
  vm.driver = r.Text();
  vm.memory_bytes = r.Uint();
  vm.dirty_rate = r.Uint();
  vm.seed = r.Uint();
  vm.created_ms = r.Int();
  vm.updated_ms = r.Int();
  return vm;
}

MigrationRecord ReadMigration(sqlite3_stmt* stmt) {
  Reader r(stmt);
  MigrationRecord m;
  m.id = r.Text();
  m.vm_id = r.Text();
  m.source_node = r.Text();
  m.dest_node = r.Text();
  m.phase = r.Text();
  m.error = r.Text();
  m.protocol = r.Text();
  m.round = static_cast<uint32_t>(r.Int());
  m.memory_bytes = r.Uint();
  m.bytes_transferred = r.Uint();
  m.network_bytes = r.Uint();
  m.remaining_bytes = r.Uint();
  m.throughput_bps = r.Real();
  m.downtime_ms = r.Real();
  m.total_ms = r.Real();
  m.epoch_before = r.Uint();
  m.source_digest = r.Text();
  m.dest_digest = r.Text();
  m.created_ms = r.Int();
  m.updated_ms = r.Int();
  m.finished_ms = r.Int();
  m.trace_id = r.Text();
  m.precopy_started_ms = r.Int();
  m.switchover_started_ms = r.Int();
  m.commit_started_ms = r.Int();
  m.amst_seconds = r.Real();
  m.hde_seconds = r.Real();
  m.acp_seconds = r.Real();
  return m;
}

RolloutRecord ReadRollout(sqlite3_stmt* stmt) {
  Reader r(stmt);
  RolloutRecord o;
  o.region = r.Text();
  o.stage = r.Text();
  o.percent = r.Real();
  o.halted = r.Int() != 0;
  o.version = r.Uint();
  o.reason = r.Text();
  o.detail = r.Text();
  o.changed_by = r.Text();
  o.changed_ms = r.Int();
  return o;
}

std::string DescribeVm(const std::string& id, const std::string& node_id, const std::string& state,
                       uint64_t epoch, const std::string& migration_id) {
  std::string s = "vm " + id + " changed: owner " + node_id + ", state " + state + ", epoch " +
                  std::to_string(epoch);
  if (!migration_id.empty()) s += ", migration " + migration_id;
  return s;
}

}  // namespace

Result<std::unique_ptr<SqliteStateStore>> SqliteStateStore::Open(const std::string& path,
                                                                 Clock& clock) {
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(
      path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close_v2(db);
    return Unavailable("sqlite store " + path + ": cannot open: " + msg);
  }
  // SQLite silently falls back to read-only when the file is write-protected.
  if (sqlite3_db_readonly(db, "main") == 1) {
    sqlite3_close_v2(db);
    return Unavailable("sqlite store " + path + ": cannot open for writing");
  }
  std::unique_ptr<SqliteStateStore> store(new SqliteStateStore(path, clock, db));
  if (Status st = store->Init(); !st.ok()) return st;
  return store;
}

SqliteStateStore::SqliteStateStore(std::string path, Clock& clock, sqlite3* db)
    : path_(std::move(path)), clock_(clock), db_(db) {}

SqliteStateStore::~SqliteStateStore() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [sql, stmt] : statements_) sqlite3_finalize(stmt);
  statements_.clear();
  sqlite3_close_v2(db_);
}

Status SqliteStateStore::Init() {
  std::lock_guard<std::mutex> lock(mu_);
  sqlite3_extended_result_codes(db_, 1);
  sqlite3_busy_timeout(db_, static_cast<int>(kBusyTimeout.count()));

  std::string journal_mode;
  DWCP_RETURN_IF_ERROR(WithBusyRetry([&]() -> Status {
    Status st;
    sqlite3_stmt* stmt = Prepare(kJournalModeWal, &st);
    if (stmt == nullptr) return st;
    StmtReset reset(stmt);
    const int rc = sqlite3_step(stmt);
    if (rc != SQLITE_ROW) return SqlError(rc, "enable WAL");
    journal_mode = Reader(stmt).Text();
    return Status::Ok();
  }));
  if (journal_mode != "wal" && path_ != ":memory:" && !path_.empty()) {
    return Unavailable("sqlite store " + path_ + ": cannot enable WAL, journal mode is " +
                       journal_mode);
  }
  DWCP_RETURN_IF_ERROR(Exec("PRAGMA synchronous = NORMAL"));

  return RunTxn(TxnKind::kWrite, [&]() -> Status {
    Status st;
    sqlite3_stmt* stmt = Prepare(kGetUserVersion, &st);
    if (stmt == nullptr) return st;
    int64_t version = 0;
    {
      StmtReset reset(stmt);
      const int rc = sqlite3_step(stmt);
      if (rc != SQLITE_ROW) return SqlError(rc, "read schema version");
      version = Reader(stmt).Int();
    }
    if (version > kSchemaVersion) {
      return FailedPrecondition("sqlite store " + path_ + ": schema version " +
                                std::to_string(version) + " is newer than supported " +
                                std::to_string(kSchemaVersion));
    }
    if (version == kSchemaVersion) return Status::Ok();
    // Every statement is CREATE ... IF NOT EXISTS: a new file gets every table, an older one
    // the tables added since its version (2: rollouts) ...
    DWCP_RETURN_IF_ERROR(Exec(kCreateSchema));
    // ... and the columns added since (3: the migration timeline).
    std::set<std::string> columns;
    {
      sqlite3_stmt* list = Prepare(kMigrationColumns, &st);
      if (list == nullptr) return st;
      StmtReset reset(list);
      int rc;
      while ((rc = sqlite3_step(list)) == SQLITE_ROW) columns.insert(Reader(list).Text());
      if (rc != SQLITE_DONE) return SqlError(rc, "read migration columns");
    }
    for (const auto& [name, declaration] : kMigrationTimelineColumns) {
      if (columns.count(name) != 0) continue;
      const std::string add =
          std::string("ALTER TABLE migrations ADD COLUMN ") + name + " " + declaration;
      DWCP_RETURN_IF_ERROR(Exec(add.c_str()));
    }
    // (4: the nodes' public keys.)
    {
      std::set<std::string> node_columns;
      sqlite3_stmt* list = Prepare(kNodeColumns, &st);
      if (list == nullptr) return st;
      StmtReset reset(list);
      int rc;
      while ((rc = sqlite3_step(list)) == SQLITE_ROW) node_columns.insert(Reader(list).Text());
      if (rc != SQLITE_DONE) return SqlError(rc, "read node columns");
      if (node_columns.count("public_key") == 0) {
        DWCP_RETURN_IF_ERROR(
            Exec("ALTER TABLE nodes ADD COLUMN public_key TEXT NOT NULL DEFAULT ''"));
      }
    }
    // A constant, not a value: PRAGMA arguments cannot be bound.
    const std::string set_version = "PRAGMA user_version = " + std::to_string(kSchemaVersion);
    return Exec(set_version.c_str());
  });
}

Status SqliteStateStore::SqlError(int rc, const char* what) {
  busy_ = IsBusy(rc);
  std::string msg = "sqlite store " + path_ + ": " + what + ": ";
  // errmsg describes the most recent failure on this connection; fall back to the code's text.
  const char* detail = sqlite3_errmsg(db_);
  msg += (detail != nullptr && sqlite3_extended_errcode(db_) == rc) ? detail : sqlite3_errstr(rc);
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_FULL:
    case SQLITE_PROTOCOL:
    case SQLITE_NOLFS:
    case SQLITE_PERM:
      return Unavailable(std::move(msg));
    default:
      return Internal(std::move(msg));
  }
}

Status SqliteStateStore::Exec(const char* sql) {
  char* err = nullptr;
  const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
  sqlite3_free(err);  // SqlError reads the same text from sqlite3_errmsg.
  if (rc != SQLITE_OK) return SqlError(rc, "exec");
  return Status::Ok();
}

sqlite3_stmt* SqliteStateStore::Prepare(const char* sql, Status* status) {
  if (auto it = statements_.find(sql); it != statements_.end()) {
    sqlite3_reset(it->second);
    sqlite3_clear_bindings(it->second);
    return it->second;
  }
  sqlite3_stmt* stmt = nullptr;
  const int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(stmt);
    *status = SqlError(rc, "prepare");
    return nullptr;
  }
  statements_.emplace(sql, stmt);
  return stmt;
}

Status SqliteStateStore::WithBusyRetry(const std::function<Status()>& attempt) {
  // Real time, not clock_: a FakeClock does not move while another process holds the lock.
  const auto deadline = std::chrono::steady_clock::now() + kBusyRetryDeadline;
  std::chrono::milliseconds backoff{1};
  for (int attempts = 1;; ++attempts) {
    busy_ = false;
    Status st = attempt();
    if (st.ok() || !busy_) return st;
    if (std::chrono::steady_clock::now() + backoff >= deadline) {
      return Unavailable(st.message() + " (gave up after " + std::to_string(attempts) +
                         " attempts)");
    }
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(100));
  }
}

Status SqliteStateStore::RunTxn(TxnKind kind, const std::function<Status()>& body) {
  return WithBusyRetry([&]() -> Status {
    Status st = Exec(kind == TxnKind::kWrite ? "BEGIN IMMEDIATE" : "BEGIN");
    if (!st.ok()) return st;
    st = body();
    if (st.ok()) st = Exec("COMMIT");
    if (!st.ok() && sqlite3_get_autocommit(db_) == 0) {
      const bool busy = busy_;
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      busy_ = busy;
    }
    return st;
  });
}

Status SqliteStateStore::UpsertNode(const NodeRecord& node) {
  std::lock_guard<std::mutex> lock(mu_);
  return RunTxn(TxnKind::kWrite, [&]() -> Status {
    Status st;
    sqlite3_stmt* stmt = Prepare(kUpsertNode, &st);
    if (stmt == nullptr) return st;
    StmtReset reset(stmt);
    Binder b(stmt);
    b.Text(node.id)
        .Text(node.region)
        .Text(node.api_url)
        .Text(node.data_address)
        .Text(node.state)
        .Text(node.version)
        .Int(node.started_ms)
        .Int(node.heartbeat_ms)
        .Text(node.public_key);
    if (b.rc() != SQLITE_OK) return SqlError(b.rc(), "bind node");
    const int rc = sqlite3_step(stmt);
    if (rc != SQLITE_DONE) return SqlError(rc, "upsert node");
    return Status::Ok();
  });
}

Result<NodeRecord> SqliteStateStore::GetNode(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  NodeRecord node;
  Status st = RunTxn(TxnKind::kRead, [&]() -> Status {
    Status pst;
    sqlite3_stmt* stmt = Prepare(kGetNode, &pst);
    if (stmt == nullptr) return pst;
    StmtReset reset(stmt);
    Binder b(stmt);
    if (b.Text(id).rc() != SQLITE_OK) return SqlError(b.rc(), "bind node id");
    const int rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) return NotFound("node " + id + " does not exist");
    if (rc != SQLITE_ROW) return SqlError(rc, "get node");
    node = ReadNode(stmt);
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return node;
}

Result<std::vector<NodeRecord>> SqliteStateStore::ListNodes() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<NodeRecord> nodes;
  Status st = RunTxn(TxnKind::kRead, [&]() -> Status {
    nodes.clear();
    Status pst;
    sqlite3_stmt* stmt = Prepare(kListNodes, &pst);
    if (stmt == nullptr) return pst;
    StmtReset reset(stmt);
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) nodes.push_back(ReadNode(stmt));
    if (rc != SQLITE_DONE) return SqlError(rc, "list nodes");
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return nodes;
}

Status SqliteStateStore::CreateVm(const VmRecord& vm) {
  std::lock_guard<std::mutex> lock(mu_);
  return RunTxn(TxnKind::kWrite, [&]() -> Status {
    const int64_t now = clock_.WallMillis();
    Status st;
    sqlite3_stmt* stmt = Prepare(kInsertVm, &st);
    if (stmt == nullptr) return st;
    StmtReset reset(stmt);
    Binder b(stmt);
    b.Text(vm.id)
        .Text(vm.node_id)
        .Text(vm.state)
        .Uint(vm.epoch)
        .Text(vm.migration_id)
        .Text(vm.driver)
        .Uint(vm.memory_bytes)
        .Uint(vm.dirty_rate)
        .Uint(vm.seed)
        .Int(vm.created_ms != 0 ? vm.created_ms : now)
        .Int(now);
    if (b.rc() != SQLITE_OK) return SqlError(b.rc(), "bind vm");
    const int rc = sqlite3_step(stmt);
    if (rc == SQLITE_CONSTRAINT_PRIMARYKEY) return AlreadyExists("vm " + vm.id + " already exists");
    if (rc != SQLITE_DONE) return SqlError(rc, "create vm");
    return Status::Ok();
  });
}

Result<VmRecord> SqliteStateStore::GetVm(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  VmRecord vm;
  Status st = RunTxn(TxnKind::kRead, [&]() -> Status {
    Status pst;
    sqlite3_stmt* stmt = Prepare(kGetVm, &pst);
    if (stmt == nullptr) return pst;
    StmtReset reset(stmt);
    Binder b(stmt);
    if (b.Text(id).rc() != SQLITE_OK) return SqlError(b.rc(), "bind vm id");
    const int rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) return NotFound("vm " + id + " does not exist");
    if (rc != SQLITE_ROW) return SqlError(rc, "get vm");
    vm = ReadVm(stmt);
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return vm;
}

Result<std::vector<VmRecord>> SqliteStateStore::ListVms() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<VmRecord> vms;
  Status st = RunTxn(TxnKind::kRead, [&]() -> Status {
    vms.clear();
    Status pst;
    sqlite3_stmt* stmt = Prepare(kListVms, &pst);
    if (stmt == nullptr) return pst;
    StmtReset reset(stmt);
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) vms.push_back(ReadVm(stmt));
    if (rc != SQLITE_DONE) return SqlError(rc, "list vms");
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return vms;
}

Status SqliteStateStore::CompareAndSwapVm(const VmRecord& expected, const VmRecord& desired,
                                          const MigrationRecord* migration) {
  if (desired.id != expected.id) {
    return InvalidArgument("compare-and-swap of vm " + expected.id + " names vm " + desired.id);
  }
  std::lock_guard<std::mutex> lock(mu_);
  return RunTxn(TxnKind::kWrite, [&]() -> Status {
    const int64_t now = clock_.WallMillis();
    Status st;
    sqlite3_stmt* guard = Prepare(kGetVmGuard, &st);
    if (guard == nullptr) return st;
    {
      StmtReset reset(guard);
      Binder b(guard);
      if (b.Text(expected.id).rc() != SQLITE_OK) return SqlError(b.rc(), "bind vm id");
      const int rc = sqlite3_step(guard);
      if (rc == SQLITE_DONE) return NotFound("vm " + expected.id + " does not exist");
      if (rc != SQLITE_ROW) return SqlError(rc, "read vm");
      Reader r(guard);
      const std::string node_id = r.Text();
      const std::string state = r.Text();
      const uint64_t epoch = r.Uint();
      const std::string migration_id = r.Text();
      if (node_id != expected.node_id || state != expected.state || epoch != expected.epoch ||
          migration_id != expected.migration_id) {
        return FailedPrecondition(DescribeVm(expected.id, node_id, state, epoch, migration_id));
      }
    }
    sqlite3_stmt* update = Prepare(kUpdateVm, &st);
    if (update == nullptr) return st;
    {
      StmtReset reset(update);
      Binder b(update);
      b.Text(desired.id)
          .Text(desired.node_id)
          .Text(desired.state)
          .Uint(desired.epoch)
          .Text(desired.migration_id)
          .Text(desired.driver)
          .Uint(desired.memory_bytes)
          .Uint(desired.dirty_rate)
          .Uint(desired.seed)
          .Int(desired.created_ms)
          .Int(now);
      if (b.rc() != SQLITE_OK) return SqlError(b.rc(), "bind vm");
      const int rc = sqlite3_step(update);
      if (rc != SQLITE_DONE) return SqlError(rc, "update vm");
    }
    if (migration != nullptr) return WriteMigration(*migration, now);
    return Status::Ok();
  });
}

Status SqliteStateStore::DeleteVm(const std::string& id, uint64_t expected_epoch) {
  std::lock_guard<std::mutex> lock(mu_);
  return RunTxn(TxnKind::kWrite, [&]() -> Status {
    Status st;
    sqlite3_stmt* guard = Prepare(kGetVmGuard, &st);
    if (guard == nullptr) return st;
    {
      StmtReset reset(guard);
      Binder b(guard);
      if (b.Text(id).rc() != SQLITE_OK) return SqlError(b.rc(), "bind vm id");
      const int rc = sqlite3_step(guard);
      if (rc == SQLITE_DONE) return NotFound("vm " + id + " does not exist");
      if (rc != SQLITE_ROW) return SqlError(rc, "read vm");
      Reader r(guard);
      const std::string node_id = r.Text();
      const std::string state = r.Text();
      const uint64_t epoch = r.Uint();
      const std::string migration_id = r.Text();
      if (epoch != expected_epoch) {
        return FailedPrecondition(DescribeVm(id, node_id, state, epoch, migration_id));
      }
    }
    sqlite3_stmt* del = Prepare(kDeleteVm, &st);
    if (del == nullptr) return st;
    StmtReset reset(del);
    Binder b(del);
    if (b.Text(id).rc() != SQLITE_OK) return SqlError(b.rc(), "bind vm id");
    const int rc = sqlite3_step(del);
    if (rc != SQLITE_DONE) return SqlError(rc, "delete vm");
    return Status::Ok();
  });
}

Status SqliteStateStore::WriteMigration(const MigrationRecord& m, int64_t now) {
  Status st;
  sqlite3_stmt* stmt = Prepare(kUpsertMigration, &st);
  if (stmt == nullptr) return st;
  StmtReset reset(stmt);
  Binder b(stmt);
  b.Text(m.id)
      .Text(m.vm_id)
      .Text(m.source_node)
      .Text(m.dest_node)
      .Text(m.phase)
      .Text(m.error)
      .Text(m.protocol)
      .Int(m.round)
      .Uint(m.memory_bytes)
      .Uint(m.bytes_transferred)
      .Uint(m.network_bytes)
      .Uint(m.remaining_bytes)
      .Real(m.throughput_bps)
      .Real(m.downtime_ms)
      .Real(m.total_ms)
      .Uint(m.epoch_before)
      .Text(m.source_digest)
      .Text(m.dest_digest)
      .Int(m.created_ms != 0 ? m.created_ms : now)
      .Int(now)
      .Int(m.finished_ms)
      .Int(m.created_ms)
      .Text(m.trace_id)
      .Int(m.precopy_started_ms)
      .Int(m.switchover_started_ms)
      .Int(m.commit_started_ms)
      .Real(m.amst_seconds)
      .Real(m.hde_seconds)
      .Real(m.acp_seconds);
  if (b.rc() != SQLITE_OK) return SqlError(b.rc(), "bind migration");
  const int rc = sqlite3_step(stmt);
  if (rc != SQLITE_DONE) return SqlError(rc, "put migration");
  return Status::Ok();
}

Status SqliteStateStore::PutMigration(const MigrationRecord& migration) {
  std::lock_guard<std::mutex> lock(mu_);
  return RunTxn(TxnKind::kWrite,
                [&]() -> Status { return WriteMigration(migration, clock_.WallMillis()); });
}

Result<MigrationRecord> SqliteStateStore::GetMigration(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  MigrationRecord m;
  Status st = RunTxn(TxnKind::kRead, [&]() -> Status {
    Status pst;
    sqlite3_stmt* stmt = Prepare(kGetMigration, &pst);
    if (stmt == nullptr) return pst;
    StmtReset reset(stmt);
    Binder b(stmt);
    if (b.Text(id).rc() != SQLITE_OK) return SqlError(b.rc(), "bind migration id");
    const int rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) return NotFound("migration " + id + " does not exist");
    if (rc != SQLITE_ROW) return SqlError(rc, "get migration");
    m = ReadMigration(stmt);
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return m;
}

Result<std::vector<MigrationRecord>> SqliteStateStore::ListMigrations(size_t limit) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<MigrationRecord> migrations;
  const auto max_limit = static_cast<size_t>(std::numeric_limits<int64_t>::max());
  const auto bound = static_cast<int64_t>(std::min(limit, max_limit));
  Status st = RunTxn(TxnKind::kRead, [&]() -> Status {
    migrations.clear();
    Status pst;
    sqlite3_stmt* stmt = Prepare(kListMigrations, &pst);
    if (stmt == nullptr) return pst;
    StmtReset reset(stmt);
    Binder b(stmt);
    if (b.Int(bound).rc() != SQLITE_OK) return SqlError(b.rc(), "bind limit");
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) migrations.push_back(ReadMigration(stmt));
    if (rc != SQLITE_DONE) return SqlError(rc, "list migrations");
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return migrations;
}

Result<RolloutRecord> SqliteStateStore::GetRollout(const std::string& region) {
  std::lock_guard<std::mutex> lock(mu_);
  RolloutRecord rollout;
  Status st = RunTxn(TxnKind::kRead, [&]() -> Status {
    Status pst;
    sqlite3_stmt* stmt = Prepare(kGetRollout, &pst);
    if (stmt == nullptr) return pst;
    StmtReset reset(stmt);
    Binder b(stmt);
    if (b.Text(region).rc() != SQLITE_OK) return SqlError(b.rc(), "bind region");
    const int rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) return NotFound("region " + region + " has no rollout record");
    if (rc != SQLITE_ROW) return SqlError(rc, "get rollout");
    rollout = ReadRollout(stmt);
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return rollout;
}

Result<std::vector<RolloutRecord>> SqliteStateStore::ListRollouts() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<RolloutRecord> rollouts;
  Status st = RunTxn(TxnKind::kRead, [&]() -> Status {
    rollouts.clear();
    Status pst;
    sqlite3_stmt* stmt = Prepare(kListRollouts, &pst);
    if (stmt == nullptr) return pst;
    StmtReset reset(stmt);
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) rollouts.push_back(ReadRollout(stmt));
    if (rc != SQLITE_DONE) return SqlError(rc, "list rollouts");
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return rollouts;
}

Result<RolloutRecord> SqliteStateStore::CompareAndSwapRollout(uint64_t expected_version,
                                                              const RolloutRecord& desired) {
  if (desired.region.empty()) return Status(InvalidArgument("rollout record without a region"));
  std::lock_guard<std::mutex> lock(mu_);
  RolloutRecord written = desired;
  written.version = expected_version + 1;
  Status st = RunTxn(TxnKind::kWrite, [&]() -> Status {
    Status pst;
    sqlite3_stmt* guard = Prepare(kGetRolloutVersion, &pst);
    if (guard == nullptr) return pst;
    {
      StmtReset reset(guard);
      Binder b(guard);
      if (b.Text(desired.region).rc() != SQLITE_OK) return SqlError(b.rc(), "bind region");
      const int rc = sqlite3_step(guard);
      uint64_t stored = 0;
      std::string stage;
      if (rc == SQLITE_ROW) {
        Reader r(guard);
        stored = r.Uint();
        stage = r.Text();
      } else if (rc != SQLITE_DONE) {
        return SqlError(rc, "read rollout");
      }
      if (stored != expected_version) {
        return FailedPrecondition("rollout of region " + desired.region + " changed: " +
                                  (rc == SQLITE_ROW
                                       ? "version " + std::to_string(stored) + ", stage " + stage
                                       : std::string("no record")) +
                                  " (expected version " + std::to_string(expected_version) + ")");
      }
    }
    sqlite3_stmt* put = Prepare(kPutRollout, &pst);
    if (put == nullptr) return pst;
    StmtReset reset(put);
    Binder b(put);
    b.Text(written.region)
        .Text(written.stage)
        .Real(written.percent)
        .Int(written.halted ? 1 : 0)
        .Uint(written.version)
        .Text(written.reason)
        .Text(written.detail)
        .Text(written.changed_by)
        .Int(written.changed_ms);
    if (b.rc() != SQLITE_OK) return SqlError(b.rc(), "bind rollout");
    const int rc = sqlite3_step(put);
    if (rc != SQLITE_DONE) return SqlError(rc, "put rollout");
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return written;
}

Result<Lease> SqliteStateStore::AcquireLease(const std::string& name, const std::string& holder,
                                             int64_t ttl_ms) {
  if (ttl_ms <= 0) {
    return InvalidArgument("lease " + name + ": ttl " + std::to_string(ttl_ms) + " ms");
  }
  std::lock_guard<std::mutex> lock(mu_);
  Lease lease;
  Status st = RunTxn(TxnKind::kWrite, [&]() -> Status {
    const int64_t now = clock_.WallMillis();
    Status pst;
    sqlite3_stmt* get = Prepare(kGetLease, &pst);
    if (get == nullptr) return pst;
    {
      StmtReset reset(get);
      Binder b(get);
      if (b.Text(name).rc() != SQLITE_OK) return SqlError(b.rc(), "bind lease name");
      const int rc = sqlite3_step(get);
      if (rc == SQLITE_ROW) {
        Reader r(get);
        const std::string current = r.Text();
        const int64_t expires_ms = r.Int();
        if (current != holder && expires_ms > now) {
          return FailedPrecondition("lease " + name + " held by " + current + " until " +
                                    std::to_string(expires_ms));
        }
      } else if (rc != SQLITE_DONE) {
        return SqlError(rc, "read lease");
      }
    }
    lease.name = name;
    lease.holder = holder;
    lease.expires_ms = now > std::numeric_limits<int64_t>::max() - ttl_ms
                           ? std::numeric_limits<int64_t>::max()
                           : now + ttl_ms;
    sqlite3_stmt* put = Prepare(kPutLease, &pst);
    if (put == nullptr) return pst;
    StmtReset reset(put);
    Binder b(put);
    if (b.Text(name).Text(holder).Int(lease.expires_ms).rc() != SQLITE_OK) {
      return SqlError(b.rc(), "bind lease");
    }
    const int rc = sqlite3_step(put);
    if (rc != SQLITE_DONE) return SqlError(rc, "put lease");
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return lease;
}

Status SqliteStateStore::ReleaseLease(const std::string& name, const std::string& holder) {
  std::lock_guard<std::mutex> lock(mu_);
  return RunTxn(TxnKind::kWrite, [&]() -> Status {
    const int64_t now = clock_.WallMillis();
    Status pst;
    sqlite3_stmt* get = Prepare(kGetLease, &pst);
    if (get == nullptr) return pst;
    {
      StmtReset reset(get);
      Binder b(get);
      if (b.Text(name).rc() != SQLITE_OK) return SqlError(b.rc(), "bind lease name");
      const int rc = sqlite3_step(get);
      if (rc == SQLITE_DONE) return Status::Ok();
      if (rc != SQLITE_ROW) return SqlError(rc, "read lease");
      Reader r(get);
      const std::string current = r.Text();
      const int64_t expires_ms = r.Int();
      if (current != holder && expires_ms > now) {
        return FailedPrecondition("lease " + name + " held by " + current + ", not " + holder);
      }
    }
    // Ours, or someone else's that has expired: either way it is free afterwards.
    sqlite3_stmt* del = Prepare(kDeleteLease, &pst);
    if (del == nullptr) return pst;
    StmtReset reset(del);
    Binder b(del);
    if (b.Text(name).rc() != SQLITE_OK) return SqlError(b.rc(), "bind lease name");
    const int rc = sqlite3_step(del);
    if (rc != SQLITE_DONE) return SqlError(rc, "delete lease");
    return Status::Ok();
  });
}

}  // namespace dwcp::acp
