#include "acp/sqlite_state_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "tests/acp/record_expectations.h"

namespace dwcp::acp {
namespace {

using std::chrono::milliseconds;

constexpr int64_t kT0 = 1'700'000'000'000;

NodeRecord MakeNode(const std::string& id) {
  NodeRecord n;
  n.id = id;
  n.region = "local";
  n.api_url = "http://127.0.0.1:8080/" + id;
  n.data_address = "127.0.0.1:7070";
  n.state = "up";
  n.version = "3.0.0-test";
  n.started_ms = kT0 - 5000;
  n.heartbeat_ms = kT0 - 10;
  return n;
}

VmRecord MakeVm(const std::string& id) {
  VmRecord vm;
  vm.id = id;
  vm.node_id = "node-a";
  vm.state = kVmRunning;
  vm.epoch = 3;
  vm.driver = "synthetic";
  vm.memory_bytes = 4ull << 30;
  vm.dirty_rate = 64ull << 20;
  vm.seed = 0xdeadbeefcafef00dull;  // above 2^63: must round-trip bit for bit
  vm.created_ms = kT0 - 1000;
  return vm;
}

MigrationRecord MakeMigration(const std::string& id, int64_t created_ms = kT0 - 500) {
  MigrationRecord m;
  m.id = id;
  m.vm_id = "vm-1";
  m.source_node = "node-a";
  m.dest_node = "node-b";
  m.phase = kPhasePrecopy;
  m.error = "none yet";
  m.protocol = "v3";
  m.round = 7;
  m.memory_bytes = 4ull << 30;
  m.bytes_transferred = 3ull << 30;
  m.network_bytes = 1ull << 30;
  m.remaining_bytes = 12345;
  m.throughput_bps = 1.25e9;
  m.downtime_ms = 42.5;
  m.total_ms = 1234.75;
  m.epoch_before = 3;
  m.source_digest = "sha256:aaaa";
  m.dest_digest = "sha256:bbbb";
  m.created_ms = created_ms;
  m.finished_ms = kT0 + 99;
  m.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
  m.precopy_started_ms = created_ms + 10;
  m.switchover_started_ms = created_ms + 800;
  m.commit_started_ms = created_ms + 900;
  m.amst_seconds = 0.75;
  m.hde_seconds = 0.125;
  m.acp_seconds = 0.0625;
  return m;
}

// Bumps the VM's epoch by one with CompareAndSwapVm, re-reading after each conflict. Returns
// the number of conflicts, or -1 on any other error.
int IncrementEpoch(StateStore& store, const std::string& id) {
  for (int conflicts = 0;; ++conflicts) {
    Result<VmRecord> vm = store.GetVm(id);
    if (!vm.ok()) return -1;
    VmRecord desired = *vm;
    ++desired.epoch;
    Status st = store.CompareAndSwapVm(*vm, desired);
    if (st.ok()) return conflicts;
    if (st.code() != StatusCode::kFailedPrecondition) return -1;
  }
}

class SqliteStateStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sqlite_state_store_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/state.db";
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::unique_ptr<SqliteStateStore> OpenStore(Clock& clock) {
    Result<std::unique_ptr<SqliteStateStore>> store = SqliteStateStore::Open(path_, clock);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return store.ok() ? std::move(store).value() : nullptr;
  }

  std::string dir_;
  std::string path_;
  FakeClock clock_{kT0};
};

TEST_F(SqliteStateStoreTest, NodeRoundTripAndReplace) {
  auto store = OpenStore(clock_);
  ASSERT_NE(store, nullptr);
  NodeRecord b = MakeNode("node-b");
  NodeRecord a = MakeNode("node-a");
  ASSERT_TRUE(store->UpsertNode(b).ok());
  ASSERT_TRUE(store->UpsertNode(a).ok());

  Result<NodeRecord> got = store->GetNode("node-a");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ExpectNodeEq(*got, a);

  a.state = "down";
  a.heartbeat_ms = kT0 + 1;
  a.version = "3.0.1";
  ASSERT_TRUE(store->UpsertNode(a).ok());
  got = store->GetNode("node-a");
  ASSERT_TRUE(got.ok());
  ExpectNodeEq(*got, a);

  Result<std::vector<NodeRecord>> nodes = store->ListNodes();
  ASSERT_TRUE(nodes.ok());
  ASSERT_EQ(nodes->size(), 2u);
  EXPECT_EQ((*nodes)[0].id, "node-a");
  EXPECT_EQ((*nodes)[1].id, "node-b");

  EXPECT_EQ(store->GetNode("node-z").status().code(), StatusCode::kNotFound);
}

TEST_F(SqliteStateStoreTest, VmRoundTripStampsTimes) {
  auto store = OpenStore(clock_);
  ASSERT_NE(store, nullptr);
  VmRecord vm = MakeVm("vm-2");
  vm.migration_id = "mig-x";
  vm.state = kVmMigrating;
  vm.updated_ms = 5;  // ignored: the store stamps updated_ms
  ASSERT_TRUE(store->CreateVm(vm).ok());

  Result<VmRecord> got = store->GetVm("vm-2");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ExpectVmEq(*got, vm);
  EXPECT_EQ(got->updated_ms, kT0);

  VmRecord fresh = MakeVm("vm-1");
  fresh.created_ms = 0;
  ASSERT_TRUE(store->CreateVm(fresh).ok());
  got = store->GetVm("vm-1");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->created_ms, kT0);
  EXPECT_EQ(got->updated_ms, kT0);

  Result<std::vector<VmRecord>> vms = store->ListVms();
  ASSERT_TRUE(vms.ok());
  ASSERT_EQ(vms->size(), 2u);
  EXPECT_EQ((*vms)[0].id, "vm-1");
  EXPECT_EQ((*vms)[1].id, "vm-2");

  EXPECT_EQ(store->GetVm("vm-404").status().code(), StatusCode::kNotFound);
}

TEST_F(SqliteStateStoreTest, DuplicateVmIsAlreadyExists) {
  auto store = OpenStore(clock_);
  ASSERT_NE(store, nullptr);
  VmRecord vm = MakeVm("vm-1");
  ASSERT_TRUE(store->CreateVm(vm).ok());
  VmRecord other = MakeVm("vm-1");
  other.node_id = "node-b";
  Status st = store->CreateVm(other);
  EXPECT_EQ(st.code(), StatusCode::kAlreadyExists) << st.ToString();
  Result<VmRecord> got = store->GetVm("vm-1");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->node_id, "node-a");
}

TEST_F(SqliteStateStoreTest, MigrationRoundTripAndReplace) {
  auto store = OpenStore(clock_);
  ASSERT_NE(store, nullptr);
  MigrationRecord m = MakeMigration("mig-1");
  ASSERT_TRUE(store->PutMigration(m).ok());
  Result<MigrationRecord> got = store->GetMigration("mig-1");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ExpectMigrationEq(*got, m);
  EXPECT_EQ(got->updated_ms, kT0);

  // A replace with created_ms 0 keeps the stored creation time and restamps updated_ms.
  clock_.Advance(milliseconds(250));
  MigrationRecord update = m;
  update.created_ms = 0;
  update.phase = kPhaseFailed;
  update.error = "peer reset";
  update.round = 9;
  update.throughput_bps = 0.5;
  ASSERT_TRUE(store->PutMigration(update).ok());
  got = store->GetMigration("mig-1");
  ASSERT_TRUE(got.ok());
  update.created_ms = m.created_ms;
  ExpectMigrationEq(*got, update);
  EXPECT_EQ(got->updated_ms, kT0 + 250);

  // A new migration with created_ms 0 gets the clock's time.
  MigrationRecord fresh = MakeMigration("mig-2", 0);
  ASSERT_TRUE(store->PutMigration(fresh).ok());
  got = store->GetMigration("mig-2");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->created_ms, kT0 + 250);

  EXPECT_EQ(store->GetMigration("mig-404").status().code(), StatusCode::kNotFound);
}

TEST_F(SqliteStateStoreTest, CompareAndSwapReplacesEveryField) {
  auto store = OpenStore(clock_);
  ASSERT_NE(store, nullptr);
  VmRecord vm = MakeVm("vm-1");
  ASSERT_TRUE(store->CreateVm(vm).ok());

  clock_.Advance(milliseconds(10));
  VmRecord desired = vm;
  desired.node_id = "node-b";
  desired.state = kVmStopped;
  desired.epoch = 4;
  desired.migration_id = "mig-9";
  desired.driver = "qemu";
  desired.memory_bytes = 1;
  desired.dirty_rate = 2;
  desired.seed = 3;
  desired.created_ms = 0;  // keeps the stored creation time
  Status st = store->CompareAndSwapVm(vm, desired);
  ASSERT_TRUE(st.ok()) << st.ToString();

  Result<VmRecord> got = store->GetVm("vm-1");
  ASSERT_TRUE(got.ok());
  desired.created_ms = vm.created_ms;
  ExpectVmEq(*got, desired);
  EXPECT_EQ(got->updated_ms, kT0 + 10);
}

TEST_F(SqliteStateStoreTest, CompareAndSwapMismatchOnEachFieldWritesNothing) {
  const std::vector<std::pair<const char*, std::function<void(VmRecord&)>>> mutations = {
      {"node_id", [](VmRecord& v) { v.node_id = "node-b"; }},
      {"state", [](VmRecord& v) { v.state = kVmMigrating; }},
      {"epoch", [](VmRecord& v) { v.epoch = 2; }},
      {"migration_id", [](VmRecord& v) { v.migration_id = "mig-old"; }},
  };
  auto store = OpenStore(clock_);
  ASSERT_NE(store, nullptr);
  VmRecord vm = MakeVm("vm-1");
  ASSERT_TRUE(store->CreateVm(vm).ok());

  for (const auto& [field, mutate] : mutations) {
    SCOPED_TRACE(field);
    VmRecord expected = vm;
    mutate(expected);
    VmRecord desired = vm;
    desired.node_id = "node-c";
    desired.epoch = 99;
    MigrationRecord m = MakeMigration(std::string("mig-") + field);
    Status st = store->CompareAndSwapVm(expected, desired, &m);
    EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition) << st.ToString();
    EXPECT_EQ(st.message(), "vm vm-1 changed: owner node-a, state running, epoch 3");

    Result<VmRecord> got = store->GetVm("vm-1");
    ASSERT_TRUE(got.ok());
    ExpectVmEq(*got, vm);
    EXPECT_EQ(store->GetMigration(m.id).status().code(), StatusCode::kNotFound);
  }

  // The message also names a stored migration id.
  VmRecord migrating = vm;
  migrating.state = kVmMigrating;
  migrating.migration_id = "mig-7";
  ASSERT_TRUE(store->CompareAndSwapVm(vm, migrating).ok());
  Status st = store->CompareAndSwapVm(vm, vm);
  EXPECT_EQ(st.message(),
            "vm vm-1 changed: owner node-a, state migrating, epoch 3, migration mig-7");
}

TEST_F(SqliteStateStoreTest, CompareAndSwapWritesMigrationAtomically) {
  auto store = OpenStore(clock_);
  ASSERT_NE(store, nullptr);
  VmRecord vm = MakeVm("vm-1");
  ASSERT_TRUE(store->CreateVm(vm).ok());

  clock_.Advance(milliseconds(7));
  VmRecord desired = vm;
  desired.state = kVmMigrating;
  desired.migration_id = "mig-1";
  MigrationRecord m = MakeMigration("mig-1");
  ASSERT_TRUE(store->CompareAndSwapVm(vm, desired, &m).ok());

  Result<MigrationRecord> got = store->GetMigration("mig-1");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ExpectMigrationEq(*got, m);
  EXPECT_EQ(got->updated_ms, kT0 + 7);
  Result<VmRecord> got_vm = store->GetVm("vm-1");
  ASSERT_TRUE(got_vm.ok());
  EXPECT_EQ(got_vm->migration_id, "mig-1");
  EXPECT_EQ(got_vm->state, kVmMigrating);

  // A stale CAS (expected still says running) leaves both the VM and the migration as they were.
  MigrationRecord stale = m;
  stale.phase = kPhaseAborted;
  VmRecord stale_desired = vm;
  stale_desired.node_id = "node-x";
  EXPECT_EQ(store->CompareAndSwapVm(vm, stale_desired, &stale).code(),
            StatusCode::kFailedPrecondition);
  got = store->GetMigration("mig-1");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->phase, kPhasePrecopy);
}

TEST_F(SqliteStateStoreTest, CompareAndSwapUnknownOrRenamedVm) {
  auto store = OpenStore(clock_);
  ASSERT_NE(store, nullptr);
  VmRecord ghost = MakeVm("vm-ghost");
  EXPECT_EQ(store->CompareAndSwapVm(ghost, ghost).code(), StatusCode::kNotFound);

  VmRecord vm = MakeVm("vm-1");
  ASSERT_TRUE(store->CreateVm(vm).ok());
  VmRecord renamed = vm;
  renamed.id = "vm-2";
  EXPECT_EQ(store->CompareAndSwapVm(vm, renamed).code(), StatusCode::kInvalidArgument);
}

TEST_F(SqliteStateStoreTest, DeleteVmChecksEpoch) {
  auto store = OpenStore(clock_);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateVm(MakeVm("vm-1")).ok());

  Status st = store->DeleteVm("vm-1", 2);
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("epoch 3"), std::string::npos) << st.message();
  EXPECT_TRUE(store->GetVm("vm-1").ok());

  EXPECT_TRUE(store->DeleteVm("vm-1", 3).ok());
  EXPECT_EQ(store->GetVm("vm-1").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store->DeleteVm("vm-1", 3).code(), StatusCode::kNotFound);
}

TEST_F(SqliteStateStoreTest, LeaseAcquireRenewConflictExpiry) {
  auto store = OpenStore(clock_);
  ASSERT_NE(store, nullptr);

  Result<Lease> lease = store->AcquireLease("scheduler", "node-a", 1000);
  ASSERT_TRUE(lease.ok()) << lease.status().ToString();
  EXPECT_EQ(lease->name, "scheduler");
  EXPECT_EQ(lease->holder, "node-a");
  EXPECT_EQ(lease->expires_ms, kT0 + 1000);

  clock_.Advance(milliseconds(600));
  lease = store->AcquireLease("scheduler", "node-a", 1000);  // renew
  ASSERT_TRUE(lease.ok());
  EXPECT_EQ(lease->expires_ms, kT0 + 1600);

  clock_.Advance(milliseconds(900));  // kT0 + 1500: still held
  Result<Lease> other = store->AcquireLease("scheduler", "node-b", 1000);
  EXPECT_EQ(other.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(other.status().message().find("node-a"), std::string::npos);
  EXPECT_EQ(store->ReleaseLease("scheduler", "node-b").code(), StatusCode::kFailedPrecondition);

  clock_.Advance(milliseconds(100));  // kT0 + 1600: expired
  other = store->AcquireLease("scheduler", "node-b", 500);
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  EXPECT_EQ(other->holder, "node-b");
  EXPECT_EQ(other->expires_ms, kT0 + 2100);
  EXPECT_EQ(store->AcquireLease("scheduler", "node-a", 1000).status().code(),
            StatusCode::kFailedPrecondition);

  // Other names are independent.
  EXPECT_TRUE(store->AcquireLease("gc", "node-a", 1000).ok());

  EXPECT_TRUE(store->ReleaseLease("scheduler", "node-b").ok());
  EXPECT_TRUE(store->AcquireLease("scheduler", "node-a", 1000).ok());
  EXPECT_TRUE(store->ReleaseLease("never-held", "node-a").ok());
  EXPECT_EQ(store->AcquireLease("scheduler", "node-a", 0).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(SqliteStateStoreTest, ListMigrationsNewestFirstWithLimit) {
  auto store = OpenStore(clock_);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->PutMigration(MakeMigration("mig-a", kT0 + 1)).ok());
  ASSERT_TRUE(store->PutMigration(MakeMigration("mig-b", kT0 + 3)).ok());
  ASSERT_TRUE(store->PutMigration(MakeMigration("mig-c", kT0 + 2)).ok());
  ASSERT_TRUE(store->PutMigration(MakeMigration("mig-d", kT0 + 3)).ok());  // ties mig-b

  Result<std::vector<MigrationRecord>> all = store->ListMigrations(100);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  std::vector<std::string> ids;
  for (const auto& m : *all) ids.push_back(m.id);
  EXPECT_EQ(ids, (std::vector<std::string>{"mig-d", "mig-b", "mig-c", "mig-a"}));

  Result<std::vector<MigrationRecord>> two = store->ListMigrations(2);
  ASSERT_TRUE(two.ok());
  ASSERT_EQ(two->size(), 2u);
  EXPECT_EQ((*two)[0].id, "mig-d");
  EXPECT_EQ((*two)[1].id, "mig-b");
  ExpectMigrationEq((*two)[1], MakeMigration("mig-b", kT0 + 3));

  Result<std::vector<MigrationRecord>> none = store->ListMigrations(0);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  Result<std::vector<MigrationRecord>> huge = store->ListMigrations(SIZE_MAX);
  ASSERT_TRUE(huge.ok());
  EXPECT_EQ(huge->size(), 4u);
}

TEST_F(SqliteStateStoreTest, DataSurvivesReopen) {
  {
    auto store = OpenStore(clock_);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->UpsertNode(MakeNode("node-a")).ok());
    ASSERT_TRUE(store->CreateVm(MakeVm("vm-1")).ok());
    ASSERT_TRUE(store->PutMigration(MakeMigration("mig-1")).ok());
    ASSERT_TRUE(store->AcquireLease("scheduler", "node-a", 1000).ok());
  }
  auto store = OpenStore(clock_);
  ASSERT_NE(store, nullptr);
  Result<NodeRecord> node = store->GetNode("node-a");
  ASSERT_TRUE(node.ok());
  ExpectNodeEq(*node, MakeNode("node-a"));
  Result<VmRecord> vm = store->GetVm("vm-1");
  ASSERT_TRUE(vm.ok());
  ExpectVmEq(*vm, MakeVm("vm-1"));
  Result<MigrationRecord> m = store->GetMigration("mig-1");
  ASSERT_TRUE(m.ok());
  ExpectMigrationEq(*m, MakeMigration("mig-1"));
  EXPECT_EQ(store->AcquireLease("scheduler", "node-b", 1000).status().code(),
            StatusCode::kFailedPrecondition);
}

TEST_F(SqliteStateStoreTest, OpensInWalMode) {
  auto store = OpenStore(clock_);
  ASSERT_NE(store, nullptr);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2(path_.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &stmt, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0)), "wal");
  sqlite3_finalize(stmt);
  sqlite3_close(db);
}

TEST_F(SqliteStateStoreTest, RejectsNewerSchema) {
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, "PRAGMA user_version = 99", nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(db);
  }
  Result<std::unique_ptr<SqliteStateStore>> store = SqliteStateStore::Open(path_, clock_);
  EXPECT_EQ(store.status().code(), StatusCode::kFailedPrecondition) << store.status().ToString();
}

TEST_F(SqliteStateStoreTest, AVersionTwoFileGainsTheMigrationTimeline) {
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(
        sqlite3_exec(db,
                     "CREATE TABLE migrations (id TEXT NOT NULL PRIMARY KEY, vm_id TEXT NOT NULL, "
                     "source_node TEXT NOT NULL, dest_node TEXT NOT NULL, phase TEXT NOT NULL, "
                     "error TEXT NOT NULL, protocol TEXT NOT NULL, round INTEGER NOT NULL, "
                     "memory_bytes INTEGER NOT NULL, bytes_transferred INTEGER NOT NULL, "
                     "network_bytes INTEGER NOT NULL, remaining_bytes INTEGER NOT NULL, "
                     "throughput_bps REAL NOT NULL, downtime_ms REAL NOT NULL, "
                     "total_ms REAL NOT NULL, epoch_before INTEGER NOT NULL, "
                     "source_digest TEXT NOT NULL, dest_digest TEXT NOT NULL, "
                     "created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL, "
                     "finished_ms INTEGER NOT NULL);"
                     "INSERT INTO migrations VALUES ('mig-old', 'vm-1', 'node-a', 'node-b', "
                     "'completed', '', 'v3', 3, 4096, 4096, 2048, 0, 1.0, 2.0, 3.0, 1, 'x', 'x', "
                     "10, 20, 30);"
                     "PRAGMA user_version = 2;",
                     nullptr, nullptr, nullptr),
        SQLITE_OK);
    sqlite3_close(db);
  }
  auto store = OpenStore(clock_);
  ASSERT_NE(store, nullptr);
  auto old = store->GetMigration("mig-old");
  ASSERT_TRUE(old.ok()) << old.status().ToString();  // kept, with empty timeline fields
  EXPECT_EQ(old->phase, kPhaseCompleted);
  EXPECT_EQ(old->trace_id, "");
  EXPECT_EQ(old->commit_started_ms, 0);
  MigrationRecord m = MakeMigration("mig-new");
  ASSERT_TRUE(store->PutMigration(m).ok());
  auto got = store->GetMigration("mig-new");
  ASSERT_TRUE(got.ok());
  ExpectMigrationEq(*got, m);
}

TEST_F(SqliteStateStoreTest, OpenOnUnwritablePathFails) {
  const std::string bad = "/proc/nonexistent/x.db";
  Result<std::unique_ptr<SqliteStateStore>> store = SqliteStateStore::Open(bad, clock_);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(store.status().message().find(bad), std::string::npos) << store.status().ToString();
}

TEST_F(SqliteStateStoreTest, TwoStoresOnOneFileSeeEachOther) {
  FakeClock clock_b{kT0 + 1};
  auto a = OpenStore(clock_);
  auto b = OpenStore(clock_b);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);

  VmRecord vm = MakeVm("vm-1");
  ASSERT_TRUE(a->CreateVm(vm).ok());
  Result<VmRecord> seen = b->GetVm("vm-1");
  ASSERT_TRUE(seen.ok()) << seen.status().ToString();
  ExpectVmEq(*seen, vm);
  EXPECT_EQ(b->CreateVm(vm).code(), StatusCode::kAlreadyExists);

  // b moves the VM; a's CAS from the old record then loses.
  VmRecord moved = *seen;
  moved.node_id = "node-b";
  moved.epoch = 4;
  ASSERT_TRUE(b->CompareAndSwapVm(*seen, moved).ok());
  VmRecord a_desired = vm;
  a_desired.state = kVmStopped;
  Status st = a->CompareAndSwapVm(vm, a_desired);
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(st.message(), "vm vm-1 changed: owner node-b, state running, epoch 4");
  Result<VmRecord> now = a->GetVm("vm-1");
  ASSERT_TRUE(now.ok());
  EXPECT_EQ(now->node_id, "node-b");
  EXPECT_EQ(now->updated_ms, kT0 + 1);  // stamped by b's clock

  ASSERT_TRUE(a->AcquireLease("scheduler", "node-a", 1000).ok());
  EXPECT_EQ(b->AcquireLease("scheduler", "node-b", 1000).status().code(),
            StatusCode::kFailedPrecondition);
}

TEST_F(SqliteStateStoreTest, WriteWaitsForAnotherWriter) {
  auto store = OpenStore(clock_);
  ASSERT_NE(store, nullptr);
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  std::thread holder([other] {
    std::this_thread::sleep_for(milliseconds(300));
    sqlite3_exec(other, "COMMIT", nullptr, nullptr, nullptr);
  });
  const auto start = std::chrono::steady_clock::now();
  Status st = store->CreateVm(MakeVm("vm-1"));
  const auto waited = std::chrono::steady_clock::now() - start;
  holder.join();
  sqlite3_close(other);
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_GE(waited, milliseconds(250));
  EXPECT_TRUE(store->GetVm("vm-1").ok());
}

TEST_F(SqliteStateStoreTest, ThreadsShareOneStore) {
  auto store = OpenStore(clock_);
  ASSERT_NE(store, nullptr);
  VmRecord vm = MakeVm("vm-1");
  vm.epoch = 0;
  ASSERT_TRUE(store->CreateVm(vm).ok());
  constexpr int kThreads = 4;
  constexpr int kIncrements = 50;
  std::vector<int> failures(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kIncrements; ++i) {
        if (IncrementEpoch(*store, "vm-1") < 0) ++failures[t];
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int f : failures) EXPECT_EQ(f, 0);
  Result<VmRecord> got = store->GetVm("vm-1");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->epoch, static_cast<uint64_t>(kThreads * kIncrements));
}

// Forks a child that runs `body` and exits with its return value via _exit, so nothing of the
// parent's (gtest, fixtures, open stores) runs or is torn down in the child.
pid_t ForkChild(const std::function<int()>& body) {
  const pid_t pid = fork();
  if (pid == 0) _exit(body());
  return pid;
}

// Waits for `pid`; returns its exit code, or -1 if it did not exit normally.
int WaitChild(pid_t pid) {
  int wstatus = 0;
  if (waitpid(pid, &wstatus, 0) != pid || !WIFEXITED(wstatus)) return -1;
  return WEXITSTATUS(wstatus);
}

TEST_F(SqliteStateStoreTest, TwoProcessesIncrementEpochWithCas) {
  constexpr int kIncrements = 200;
  {
    auto store = OpenStore(clock_);
    ASSERT_NE(store, nullptr);
    VmRecord vm = MakeVm("vm-1");
    vm.epoch = 0;
    ASSERT_TRUE(store->CreateVm(vm).ok());
  }  // closed: no connection crosses fork()

  // Both sides open their store, then start incrementing together.
  int ready[2];
  int go[2];
  ASSERT_EQ(pipe(ready), 0);
  ASSERT_EQ(pipe(go), 0);
  const pid_t child = ForkChild([&]() -> int {
    close(ready[0]);
    close(go[1]);
    FakeClock clock;
    Result<std::unique_ptr<SqliteStateStore>> store = SqliteStateStore::Open(path_, clock);
    const char byte = store.ok() ? 'y' : 'n';
    if (write(ready[1], &byte, 1) != 1 || !store.ok()) return 2;
    char start = 0;
    if (read(go[0], &start, 1) != 1) return 3;
    for (int i = 0; i < kIncrements; ++i) {
      if (IncrementEpoch(**store, "vm-1") < 0) return 4;
    }
    return 0;
  });
  ASSERT_GE(child, 0);
  close(ready[1]);
  close(go[0]);

  auto store = OpenStore(clock_);
  char byte = 0;
  EXPECT_EQ(read(ready[0], &byte, 1), 1);
  EXPECT_EQ(byte, 'y');
  EXPECT_EQ(write(go[1], "g", 1), 1);
  close(ready[0]);
  close(go[1]);
  int conflicts = 0;
  int failures = 0;
  if (store != nullptr) {
    for (int i = 0; i < kIncrements; ++i) {
      const int c = IncrementEpoch(*store, "vm-1");
      if (c < 0) {
        ++failures;
      } else {
        conflicts += c;
      }
    }
  }
  EXPECT_EQ(WaitChild(child), 0);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(failures, 0);
  Result<VmRecord> got = store->GetVm("vm-1");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->epoch, static_cast<uint64_t>(2 * kIncrements));
  RecordProperty("cas_conflicts", conflicts);
}

// Like the demo: several dwcpd processes start at once on a file none of them has created.
TEST_F(SqliteStateStoreTest, ProcessesOpenFreshFileConcurrently) {
  constexpr int kProcesses = 3;
  constexpr int kIncrements = 50;
  std::vector<pid_t> children;
  for (int p = 0; p < kProcesses; ++p) {
    children.push_back(ForkChild([&, p]() -> int {
      FakeClock clock;
      Result<std::unique_ptr<SqliteStateStore>> store = SqliteStateStore::Open(path_, clock);
      if (!store.ok()) return 2;
      NodeRecord node = MakeNode("node-" + std::to_string(p));
      if (!(*store)->UpsertNode(node).ok()) return 3;
      VmRecord vm = MakeVm("vm-shared");
      vm.epoch = 0;
      const Status created = (*store)->CreateVm(vm);
      if (!created.ok() && created.code() != StatusCode::kAlreadyExists) return 4;
      for (int i = 0; i < kIncrements; ++i) {
        if (IncrementEpoch(**store, "vm-shared") < 0) return 5;
      }
      return 0;
    }));
    ASSERT_GE(children.back(), 0);
  }
  for (pid_t child : children) EXPECT_EQ(WaitChild(child), 0);

  auto store = OpenStore(clock_);
  ASSERT_NE(store, nullptr);
  Result<std::vector<NodeRecord>> nodes = store->ListNodes();
  ASSERT_TRUE(nodes.ok());
  EXPECT_EQ(nodes->size(), static_cast<size_t>(kProcesses));
  Result<VmRecord> vm = store->GetVm("vm-shared");
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  EXPECT_EQ(vm->epoch, static_cast<uint64_t>(kProcesses * kIncrements));
}

}  // namespace
}  // namespace dwcp::acp
