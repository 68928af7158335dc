// One behaviour, two backends: every StateStore method against SQLite and against a real etcd
// member (tests/acp/etcd_test_cluster.h). The etcd-only faults (members killed, quorum lost,
// a dead holder's lease key) are at the end.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "acp/etcd_state_store.h"
#include "acp/record_json.h"
#include "acp/sqlite_state_store.h"
#include "acp/store_factory.h"
#include "common/clock.h"
#include "common/status.h"
#include "tests/acp/etcd_test_cluster.h"
#include "tests/acp/record_expectations.h"

namespace dwcp::acp {
namespace {

using testing::EtcdTestCluster;

constexpr int64_t kT0 = 1'700'000'000'000;

NodeRecord MakeNode(const std::string& id) {
  NodeRecord n;
  n.id = id;
  n.region = "eu-west";
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
  m.error = "none yet \"quoted\" \n newline";
  m.protocol = "v3";
  m.round = 7;
  m.memory_bytes = 4ull << 30;
  m.bytes_transferred = 0xfffffffffffffff0ull;
  m.network_bytes = 1ull << 30;
  m.remaining_bytes = 12345;
  m.throughput_bps = 1.25e9 + 0.1;
  m.downtime_ms = 42.5;
  m.total_ms = 1234.75;
  m.epoch_before = 3;
  m.source_digest = "sha256:aaaa";
  m.dest_digest = "sha256:bbbb";
  m.created_ms = created_ms;
  m.finished_ms = kT0 + 99;
  m.trace_id = "0af7651916cd43dd8448eb211c80319c";
  m.precopy_started_ms = kT0 - 400;
  m.switchover_started_ms = kT0 - 100;
  m.commit_started_ms = kT0 - 50;
  m.amst_seconds = 0.1 + 0.2;  // not exactly representable: must round-trip exactly
  m.hde_seconds = 0.125;
  m.acp_seconds = 1.0 / 3;
  return m;
}

RolloutRecord MakeRollout(const std::string& region, const std::string& stage, double percent) {
  RolloutRecord r;
  r.region = region;
  r.stage = stage;
  r.percent = percent;
  r.reason = "go";
  r.detail = "v3 p99 within 1.2x of v1";
  r.changed_by = "node-a";
  r.changed_ms = kT0;
  return r;
}

// ---------------------------------------------------------------------------------------------
// The conformance suite: parameterized over "sqlite" and "etcd".

class StateStoreConformanceTest : public ::testing::TestWithParam<std::string> {
 protected:
  // One etcd member per test process, started by the first etcd test (ctest runs every test
  // in a process of its own; the SQLite tests need none).
  static void StartEtcd() {
    if (etcd_ != nullptr) return;
    auto cluster = EtcdTestCluster::Start(1);
    ASSERT_TRUE(cluster.ok()) << cluster.status().ToString();
    etcd_ = std::move(cluster).value().release();
  }
  static void TearDownTestSuite() {
    delete etcd_;
    etcd_ = nullptr;
  }

  void SetUp() override {
    char tmpl[] = "/tmp/dwcp-conformance-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    static std::atomic<int> next{0};
    // Each test has a key prefix of its own on the shared member.
    prefix_ = "/test/" + std::to_string(getpid()) + "-" + std::to_string(next++) + "/";
    if (etcd()) {
      StartEtcd();
      ASSERT_NE(etcd_, nullptr);
    }
    store_ = Open(clock_);
    ASSERT_NE(store_, nullptr);
  }
  void TearDown() override {
    store_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  bool etcd() const { return GetParam() == "etcd"; }

  // Another handle on the same store (its own SQLite connection, or its own gRPC channel).
  std::unique_ptr<StateStore> Open(Clock& clock) {
    if (!etcd()) {
      auto s = SqliteStateStore::Open(dir_ + "/state.db", clock);
      EXPECT_TRUE(s.ok()) << s.status().ToString();
      return s.ok() ? std::move(s).value() : nullptr;
    }
    if (etcd_ == nullptr) return nullptr;
    EtcdOptions o;
    o.endpoints = etcd_->Endpoints();
    o.key_prefix = prefix_;
    o.timeout = std::chrono::milliseconds(5000);
    auto s = EtcdStateStore::Open(o, clock);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? std::move(s).value() : nullptr;
  }

  static EtcdTestCluster* etcd_;
  std::string dir_;
  std::string prefix_;
  FakeClock clock_{kT0};
  std::unique_ptr<StateStore> store_;
};

EtcdTestCluster* StateStoreConformanceTest::etcd_ = nullptr;

TEST_P(StateStoreConformanceTest, NodesRoundTripReplaceAndListById) {
  StateStore& s = *store_;
  NodeRecord c = MakeNode("node-c"), a = MakeNode("node-a"), b = MakeNode("node-b");
  for (const auto& n : {c, a, b}) ASSERT_TRUE(s.UpsertNode(n).ok());
  auto got = s.GetNode("node-a");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ExpectNodeEq(*got, a);

  a.state = "down";
  a.heartbeat_ms = kT0 + 1;
  ASSERT_TRUE(s.UpsertNode(a).ok());
  ExpectNodeEq(*s.GetNode("node-a"), a);

  auto nodes = s.ListNodes();
  ASSERT_TRUE(nodes.ok());
  ASSERT_EQ(nodes->size(), 3u);
  EXPECT_EQ((*nodes)[0].id, "node-a");
  EXPECT_EQ((*nodes)[1].id, "node-b");
  EXPECT_EQ((*nodes)[2].id, "node-c");
  EXPECT_EQ((*nodes)[0].state, "down");

  auto missing = s.GetNode("node-x");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("node-x"), std::string::npos);
}

TEST_P(StateStoreConformanceTest, VmCreateStampsTimesAndRefusesDuplicates) {
  StateStore& s = *store_;
  VmRecord vm = MakeVm("vm-2");
  ASSERT_TRUE(s.CreateVm(vm).ok());
  VmRecord fresh = MakeVm("vm-1");
  fresh.created_ms = 0;  // the store stamps it
  ASSERT_TRUE(s.CreateVm(fresh).ok());

  auto got = s.GetVm("vm-2");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ExpectVmEq(*got, vm);
  EXPECT_EQ(got->updated_ms, kT0);
  auto stamped = s.GetVm("vm-1");
  ASSERT_TRUE(stamped.ok());
  EXPECT_EQ(stamped->created_ms, kT0);

  VmRecord dup = MakeVm("vm-2");
  dup.node_id = "node-z";
  Status st = s.CreateVm(dup);
  EXPECT_EQ(st.code(), StatusCode::kAlreadyExists) << st.ToString();
  EXPECT_EQ(s.GetVm("vm-2")->node_id, "node-a");  // untouched

  auto vms = s.ListVms();
  ASSERT_TRUE(vms.ok());
  ASSERT_EQ(vms->size(), 2u);
  EXPECT_EQ((*vms)[0].id, "vm-1");
  EXPECT_EQ((*vms)[1].id, "vm-2");
  EXPECT_EQ(s.GetVm("vm-9").status().code(), StatusCode::kNotFound);
}

TEST_P(StateStoreConformanceTest, CompareAndSwapVmReplacesEveryFieldWithItsMigration) {
  StateStore& s = *store_;
  VmRecord vm = MakeVm("vm-1");
  ASSERT_TRUE(s.CreateVm(vm).ok());
  VmRecord desired = vm;
  desired.state = kVmMigrating;
  desired.migration_id = "mig-1";
  desired.memory_bytes = 8ull << 30;
  desired.dirty_rate = 1;
  desired.seed = 7;
  desired.driver = "qemu";
  desired.created_ms = 0;  // keeps the stored one
  MigrationRecord m = MakeMigration("mig-1");
  clock_.Advance(std::chrono::milliseconds(5));
  Status st = s.CompareAndSwapVm(vm, desired, &m);
  ASSERT_TRUE(st.ok()) << st.ToString();

  auto got = s.GetVm("vm-1");
  ASSERT_TRUE(got.ok());
  VmRecord want = desired;
  want.created_ms = vm.created_ms;
  ExpectVmEq(*got, want);
  EXPECT_EQ(got->updated_ms, kT0 + 5);
  auto mig = s.GetMigration("mig-1");
  ASSERT_TRUE(mig.ok()) << mig.status().ToString();
  ExpectMigrationEq(*mig, m);
  EXPECT_EQ(mig->updated_ms, kT0 + 5);

  // The commit: owner and epoch change, the migration record ends in the same transaction.
  VmRecord committed = *got;
  committed.node_id = "node-b";
  committed.epoch = 4;
  committed.state = kVmRunning;
  committed.migration_id.clear();
  MigrationRecord done = m;
  done.phase = kPhaseCompleted;
  done.created_ms = 0;  // keeps the stored creation time
  ASSERT_TRUE(s.CompareAndSwapVm(*got, committed, &done).ok());
  EXPECT_EQ(s.GetVm("vm-1")->node_id, "node-b");
  EXPECT_EQ(s.GetMigration("mig-1")->phase, kPhaseCompleted);
  EXPECT_EQ(s.GetMigration("mig-1")->created_ms, m.created_ms);
}

TEST_P(StateStoreConformanceTest, CompareAndSwapVmMismatchOnEachFieldWritesNothing) {
  StateStore& s = *store_;
  VmRecord vm = MakeVm("vm-1");
  vm.migration_id = "mig-0";
  vm.state = kVmMigrating;
  ASSERT_TRUE(s.CreateVm(vm).ok());
  VmRecord desired = vm;
  desired.node_id = "node-b";
  desired.epoch = 4;
  MigrationRecord m = MakeMigration("mig-x");
  auto mutations = std::vector<std::function<void(VmRecord&)>>{
      [](VmRecord& v) { v.node_id = "node-z"; }, [](VmRecord& v) { v.state = kVmRunning; },
      [](VmRecord& v) { v.epoch = 2; }, [](VmRecord& v) { v.migration_id = "mig-9"; }};
  for (const auto& mutate : mutations) {
    VmRecord expected = vm;
    mutate(expected);
    Status st = s.CompareAndSwapVm(expected, desired, &m);
    ASSERT_EQ(st.code(), StatusCode::kFailedPrecondition) << st.ToString();
    // Names the stored owner, state and epoch.
    EXPECT_NE(st.message().find("owner node-a"), std::string::npos) << st.message();
    EXPECT_NE(st.message().find("state migrating"), std::string::npos) << st.message();
    EXPECT_NE(st.message().find("epoch 3"), std::string::npos) << st.message();
  }
  ExpectVmEq(*s.GetVm("vm-1"), vm);
  EXPECT_EQ(s.GetMigration("mig-x").status().code(), StatusCode::kNotFound);

  VmRecord other = desired;
  other.id = "vm-2";
  EXPECT_EQ(s.CompareAndSwapVm(vm, other).code(), StatusCode::kInvalidArgument);
  VmRecord gone = MakeVm("vm-gone");
  EXPECT_EQ(s.CompareAndSwapVm(gone, gone).code(), StatusCode::kNotFound);
}

TEST_P(StateStoreConformanceTest, DeleteVmChecksEpoch) {
  StateStore& s = *store_;
  ASSERT_TRUE(s.CreateVm(MakeVm("vm-1")).ok());
  Status st = s.DeleteVm("vm-1", 2);
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("epoch 3"), std::string::npos) << st.message();
  EXPECT_TRUE(s.GetVm("vm-1").ok());
  EXPECT_TRUE(s.DeleteVm("vm-1", 3).ok());
  EXPECT_EQ(s.GetVm("vm-1").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(s.DeleteVm("vm-1", 3).code(), StatusCode::kNotFound);
}

TEST_P(StateStoreConformanceTest, MigrationsRoundTripEveryFieldNewestFirst) {
  StateStore& s = *store_;
  MigrationRecord m = MakeMigration("mig-b", kT0 - 500);
  ASSERT_TRUE(s.PutMigration(m).ok());
  auto got = s.GetMigration("mig-b");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ExpectMigrationEq(*got, m);
  EXPECT_EQ(got->updated_ms, kT0);

  // created_ms 0: a new record gets now, a replaced one keeps its own.
  MigrationRecord fresh = MakeMigration("mig-new", 0);
  clock_.Advance(std::chrono::milliseconds(10));
  ASSERT_TRUE(s.PutMigration(fresh).ok());
  EXPECT_EQ(s.GetMigration("mig-new")->created_ms, kT0 + 10);
  MigrationRecord replace = MakeMigration("mig-b", 0);
  replace.phase = kPhaseFailed;
  ASSERT_TRUE(s.PutMigration(replace).ok());
  EXPECT_EQ(s.GetMigration("mig-b")->created_ms, kT0 - 500);
  EXPECT_EQ(s.GetMigration("mig-b")->phase, kPhaseFailed);
  EXPECT_EQ(s.GetMigration("mig-b")->updated_ms, kT0 + 10);

  // Ordered by created_ms, then id, newest first.
  ASSERT_TRUE(s.PutMigration(MakeMigration("mig-a", kT0 - 500)).ok());
  ASSERT_TRUE(s.PutMigration(MakeMigration("mig-old", kT0 - 9000)).ok());
  auto list = s.ListMigrations(10);
  ASSERT_TRUE(list.ok());
  std::vector<std::string> ids;
  for (const auto& x : *list) ids.push_back(x.id);
  EXPECT_EQ(ids, (std::vector<std::string>{"mig-new", "mig-b", "mig-a", "mig-old"}));
  auto two = s.ListMigrations(2);
  ASSERT_TRUE(two.ok());
  ASSERT_EQ(two->size(), 2u);
  EXPECT_EQ((*two)[1].id, "mig-b");
  EXPECT_EQ(s.ListMigrations(0)->size(), 0u);
  EXPECT_EQ(s.GetMigration("mig-zz").status().code(), StatusCode::kNotFound);
}

TEST_P(StateStoreConformanceTest, RolloutCompareAndSwapByVersion) {
  StateStore& s = *store_;
  EXPECT_EQ(s.GetRollout("eu-west").status().code(), StatusCode::kNotFound);
  auto first = s.CompareAndSwapRollout(0, MakeRollout("eu-west", "canary", 5));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->version, 1u);
  auto again = s.CompareAndSwapRollout(0, MakeRollout("eu-west", "early", 25));
  ASSERT_EQ(again.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(again.status().message().find("version 1"), std::string::npos);
  EXPECT_NE(again.status().message().find("stage canary"), std::string::npos);

  RolloutRecord halted = MakeRollout("eu-west", "early", 25);
  halted.halted = true;
  halted.version = 99;  // ignored
  auto second = s.CompareAndSwapRollout(1, halted);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->version, 2u);
  auto got = s.GetRollout("eu-west");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->stage, "early");
  EXPECT_EQ(got->percent, 25);
  EXPECT_TRUE(got->halted);
  EXPECT_EQ(got->version, 2u);
  EXPECT_EQ(got->reason, "go");
  EXPECT_EQ(got->detail, halted.detail);
  EXPECT_EQ(got->changed_by, "node-a");
  EXPECT_EQ(got->changed_ms, kT0);

  auto wrong = s.CompareAndSwapRollout(5, MakeRollout("us-east", "full", 100));
  EXPECT_EQ(wrong.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(wrong.status().message().find("no record"), std::string::npos);
  ASSERT_TRUE(s.CompareAndSwapRollout(0, MakeRollout("ap-south", "v1", 0)).ok());
  auto all = s.ListRollouts();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].region, "ap-south");
  EXPECT_EQ((*all)[1].region, "eu-west");
  EXPECT_EQ(s.CompareAndSwapRollout(0, MakeRollout("", "v1", 0)).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_P(StateStoreConformanceTest, LeaseAcquireRenewConflictExpiryRelease) {
  StateStore& s = *store_;
  EXPECT_EQ(s.AcquireLease("cluster-leader", "node-a", 0).status().code(),
            StatusCode::kInvalidArgument);
  auto a = s.AcquireLease("cluster-leader", "node-a", 5000);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->holder, "node-a");
  EXPECT_EQ(a->expires_ms, kT0 + 5000);

  clock_.Advance(std::chrono::milliseconds(1000));
  auto renewed = s.AcquireLease("cluster-leader", "node-a", 5000);
  ASSERT_TRUE(renewed.ok()) << renewed.status().ToString();
  EXPECT_EQ(renewed->expires_ms, kT0 + 6000);

  auto b = s.AcquireLease("cluster-leader", "node-b", 5000);
  ASSERT_EQ(b.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(b.status().message().find("node-a"), std::string::npos);
  Status not_yours = s.ReleaseLease("cluster-leader", "node-b");
  EXPECT_EQ(not_yours.code(), StatusCode::kFailedPrecondition);

  // node-a stops renewing: once the lease expires, node-b takes it over.
  clock_.Advance(std::chrono::milliseconds(5000));
  auto takeover = s.AcquireLease("cluster-leader", "node-b", 5000);
  ASSERT_TRUE(takeover.ok()) << takeover.status().ToString();
  EXPECT_EQ(takeover->holder, "node-b");
  EXPECT_EQ(s.AcquireLease("cluster-leader", "node-a", 5000).status().code(),
            StatusCode::kFailedPrecondition);

  EXPECT_TRUE(s.ReleaseLease("cluster-leader", "node-b").ok());
  EXPECT_TRUE(s.ReleaseLease("cluster-leader", "node-b").ok());  // not held: OK
  auto after = s.AcquireLease("cluster-leader", "node-a", 5000);
  ASSERT_TRUE(after.ok()) << after.status().ToString();
  EXPECT_EQ(after->holder, "node-a");
}

// Several handles race the same compare-and-swap from several threads: exactly one wins and
// every loser sees FailedPrecondition.
TEST_P(StateStoreConformanceTest, ConcurrentCompareAndSwapHasExactlyOneWinner) {
  constexpr int kRacers = 6;
  ASSERT_TRUE(store_->CreateVm(MakeVm("vm-1")).ok());
  ASSERT_TRUE(store_->CompareAndSwapRollout(0, MakeRollout("eu-west", "canary", 5)).ok());
  std::vector<std::unique_ptr<StateStore>> handles;
  for (int i = 0; i < kRacers; ++i) {
    handles.push_back(Open(clock_));
    ASSERT_NE(handles.back(), nullptr);
  }
  const VmRecord expected = *store_->GetVm("vm-1");
  for (int round = 0; round < 3; ++round) {
    std::atomic<int> vm_wins{0}, vm_losses{0}, rollout_wins{0}, rollout_losses{0};
    std::atomic<int> lease_wins{0}, lease_losses{0}, other{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> threads;
    const uint64_t version = store_->GetRollout("eu-west")->version;
    const VmRecord current = *store_->GetVm("vm-1");
    for (int i = 0; i < kRacers; ++i) {
      threads.emplace_back([&, i] {
        while (!go) std::this_thread::yield();
        StateStore& h = *handles[i];
        VmRecord desired = current;
        desired.node_id = "node-" + std::to_string(i);
        desired.epoch = current.epoch + 1;
        MigrationRecord m =
            MakeMigration("mig-r" + std::to_string(round) + "-" + std::to_string(i));
        Status st = h.CompareAndSwapVm(current, desired, &m);
        (st.ok() ? vm_wins : st.code() == StatusCode::kFailedPrecondition ? vm_losses : other)++;
        auto r =
            h.CompareAndSwapRollout(version, MakeRollout("eu-west", "s" + std::to_string(i), i));
        (r.ok()                                                 ? rollout_wins
         : r.status().code() == StatusCode::kFailedPrecondition ? rollout_losses
                                                                : other)++;
        auto l =
            h.AcquireLease("race-" + std::to_string(round), "holder-" + std::to_string(i), 60000);
        (l.ok()                                                 ? lease_wins
         : l.status().code() == StatusCode::kFailedPrecondition ? lease_losses
                                                                : other)++;
      });
    }
    go = true;
    for (auto& t : threads) t.join();
    EXPECT_EQ(vm_wins, 1);
    EXPECT_EQ(vm_losses, kRacers - 1);
    EXPECT_EQ(rollout_wins, 1);
    EXPECT_EQ(rollout_losses, kRacers - 1);
    EXPECT_EQ(lease_wins, 1);
    EXPECT_EQ(lease_losses, kRacers - 1);
    EXPECT_EQ(other, 0);
    // The winner's migration record was written with its VM record, no loser's was.
    auto vm = store_->GetVm("vm-1");
    ASSERT_TRUE(vm.ok());
    EXPECT_EQ(vm->epoch, current.epoch + 1);
    const std::string winner = vm->node_id.substr(5);
    for (int i = 0; i < kRacers; ++i) {
      auto m = store_->GetMigration("mig-r" + std::to_string(round) + "-" + std::to_string(i));
      EXPECT_EQ(m.ok(), std::to_string(i) == winner) << "racer " << i;
    }
    EXPECT_EQ(store_->GetRollout("eu-west")->version, version + 1);
  }
  EXPECT_EQ(store_->GetVm("vm-1")->epoch, expected.epoch + 3);
}

TEST_P(StateStoreConformanceTest, HealthReportsItsMembers) {
  auto h = store_->Health();
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->members, 1);
  EXPECT_EQ(h->healthy, 1);
  EXPECT_TRUE(h->quorum());
  EXPECT_EQ(h->backend, GetParam());
  if (etcd()) {
    EXPECT_EQ(h->leader, etcd_->Name(0));
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, StateStoreConformanceTest,
                         ::testing::Values(std::string("sqlite"), std::string("etcd")),
                         [](const auto& info) { return info.param; });

// ---------------------------------------------------------------------------------------------
// etcd only: faults and options.

EtcdOptions OptionsFor(const EtcdTestCluster& c, const std::string& prefix = "/dwcp/v3/") {
  EtcdOptions o;
  o.endpoints = c.Endpoints();
  o.key_prefix = prefix;
  o.timeout = std::chrono::milliseconds(3000);
  return o;
}

bool WriteVm(StateStore& s, const std::string& id, Status* out) {
  auto vm = s.GetVm(id);
  if (!vm.ok()) {
    *out = vm.status();
    return false;
  }
  VmRecord desired = *vm;
  ++desired.epoch;
  *out = s.CompareAndSwapVm(*vm, desired);
  return out->ok();
}

// Three members; the leader is killed (writes go on with 2 of 3), then a second member (no
// quorum: Health says so, writes fail with a clear message), then one comes back.
TEST(EtcdStateStoreTest, SurvivesOneMemberAndReportsQuorumLoss) {
  auto started = EtcdTestCluster::Start(3);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  EtcdTestCluster& c = **started;
  auto opened = EtcdStateStore::Open(OptionsFor(c), RealClock::Instance());
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  EtcdStateStore& s = **opened;
  ASSERT_TRUE(s.CreateVm(MakeVm("vm-1")).ok());

  const int leader = c.WaitForLeader();
  ASSERT_GE(leader, 0);
  auto h = s.Health();
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->members, 3);
  EXPECT_EQ(h->healthy, 3);
  EXPECT_EQ(h->leader, c.Name(leader));
  EXPECT_TRUE(h->quorum());

  c.Kill(leader);
  Status st;
  EXPECT_TRUE(WriteVm(s, "vm-1", &st)) << st.ToString();  // retried through the election
  const int next = c.WaitForLeader();
  ASSERT_GE(next, 0);
  EXPECT_NE(next, leader);
  h = s.Health();
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->members, 3);
  EXPECT_EQ(h->healthy, 2);
  EXPECT_EQ(h->leader, c.Name(next));
  EXPECT_TRUE(h->quorum());
  EXPECT_EQ(s.GetVm("vm-1")->epoch, 4u);

  c.Kill(next);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(WriteVm(s, "vm-1", &st));
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_TRUE(st.code() == StatusCode::kUnavailable || st.code() == StatusCode::kDeadlineExceeded)
      << st.ToString();
  EXPECT_NE(st.message().find(s.endpoints()), std::string::npos) << st.message();
  EXPECT_LT(took, 3 * 3.0 + 1);  // bounded by the call budget (a read, then the write)
  // The survivor has no leader once its election timeout passes.
  bool reported = false;
  for (int i = 0; i < 50 && !reported; ++i) {
    h = s.Health();
    reported = h.ok() ? (!h->quorum() && h->healthy == 0 && h->leader.empty()) : true;
    if (!reported) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(reported);
  if (h.ok()) {
    EXPECT_EQ(h->members, 3);
  }

  ASSERT_TRUE(c.Restart(leader).ok());
  ASSERT_GE(c.WaitForLeader(), 0);
  bool wrote = false;
  for (int i = 0; i < 20 && !wrote; ++i) wrote = WriteVm(s, "vm-1", &st);
  EXPECT_TRUE(wrote) << st.ToString();
  bool two = false;
  for (int i = 0; i < 30 && !two; ++i) {
    h = s.Health();
    two = h.ok() && h->healthy == 2 && h->quorum();
    if (!two) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(two) << (h.ok() ? std::to_string(h->healthy) : h.status().ToString());
}

// A lease key is bound to an etcd lease: when its holder stops renewing, the key disappears.
TEST(EtcdStateStoreTest, DeadHoldersLeaseKeyDisappears) {
  auto started = EtcdTestCluster::Start(1);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  EtcdTestCluster& c = **started;
  auto opened = EtcdStateStore::Open(OptionsFor(c), RealClock::Instance());
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  EtcdStateStore& s = **opened;
  ASSERT_TRUE(s.AcquireLease("cluster-leader", "node-a", 1000).ok());
  std::string out;
  ASSERT_EQ(c.Etcdctl("get /dwcp/v3/leases/cluster-leader -w json", &out), 0) << out;
  EXPECT_NE(out.find("\"lease\""), std::string::npos) << out;  // bound to an etcd lease
  // Renewing keeps the key (keep-alive of the same etcd lease).
  for (int i = 0; i < 4; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    ASSERT_TRUE(s.AcquireLease("cluster-leader", "node-a", 1000).ok());
  }
  ASSERT_EQ(c.Etcdctl("get /dwcp/v3/leases/cluster-leader --print-value-only", &out), 0);
  EXPECT_NE(out.find("node-a"), std::string::npos) << out;
  // Stop renewing: gone within ttl + 1 s plus etcd's expiry check.
  bool gone = false;
  for (int i = 0; i < 60 && !gone; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ASSERT_EQ(c.Etcdctl("get /dwcp/v3/leases/cluster-leader --print-value-only", &out), 0);
    gone = out.find("node-a") == std::string::npos;
  }
  EXPECT_TRUE(gone) << out;
  auto b = s.AcquireLease("cluster-leader", "node-b", 1000);
  EXPECT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_TRUE(s.ReleaseLease("cluster-leader", "node-b").ok());
}

// A watch on the VM records sees every change in order, with the record as written.
TEST(EtcdStateStoreTest, WatchReportsEveryChangeOfAKindInOrder) {
  auto started = EtcdTestCluster::Start(1);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  auto opened = EtcdStateStore::Open(OptionsFor(**started), RealClock::Instance());
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  EtcdStateStore& s = **opened;
  VmRecord vm = MakeVm("vm-1");
  ASSERT_TRUE(s.CreateVm(vm).ok());
  ASSERT_TRUE(s.UpsertNode(MakeNode("node-a")).ok());  // another kind: not reported

  std::vector<EtcdStateStore::Event> events;
  Status watched;
  std::thread watcher([&] {
    // From the start of history, so nothing written before the stream opens is missed.
    watched = s.Watch(
        "vms", 1,
        [&](const EtcdStateStore::Event& e) {
          events.push_back(e);
          return events.size() < 3;
        },
        std::chrono::seconds(10));
  });
  VmRecord moved = vm;
  moved.node_id = "node-b";
  moved.epoch = 4;
  ASSERT_TRUE(s.CompareAndSwapVm(vm, moved).ok());
  ASSERT_TRUE(s.DeleteVm("vm-1", 4).ok());
  watcher.join();
  ASSERT_TRUE(watched.ok()) << watched.ToString();
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].type, EtcdStateStore::Event::Type::kPut);
  EXPECT_EQ(events[0].id, "vm-1");
  EXPECT_EQ(VmFromJson(events[0].value, "e0")->node_id, "node-a");
  EXPECT_EQ(events[1].type, EtcdStateStore::Event::Type::kPut);
  EXPECT_EQ(VmFromJson(events[1].value, "e1")->epoch, 4u);
  EXPECT_EQ(events[2].type, EtcdStateStore::Event::Type::kDelete);
  EXPECT_EQ(events[2].id, "vm-1");
  EXPECT_LT(events[0].revision, events[1].revision);
  EXPECT_LT(events[1].revision, events[2].revision);

  // Nothing changes: the watch ends at its deadline.
  Status idle = s.Watch(
      "rollouts", 0, [](const EtcdStateStore::Event&) { return true; },
      std::chrono::milliseconds(300));
  EXPECT_EQ(idle.code(), StatusCode::kDeadlineExceeded) << idle.ToString();
}

TEST(EtcdStateStoreTest, UnreachableClusterFailsFastNamingTheEndpoints) {
  StoreOptions o;
  o.store = "etcd://127.0.0.1:1,127.0.0.1:2";
  o.timeout = std::chrono::milliseconds(500);
  const auto t0 = std::chrono::steady_clock::now();
  auto s = OpenStateStore(o, RealClock::Instance());
  ASSERT_FALSE(s.ok());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));
  EXPECT_TRUE(s.status().code() == StatusCode::kUnavailable ||
              s.status().code() == StatusCode::kDeadlineExceeded)
      << s.status().ToString();
  EXPECT_NE(s.status().message().find("127.0.0.1:1,127.0.0.1:2"), std::string::npos)
      << s.status().message();
}

TEST(EtcdStateStoreTest, CorruptValueIsDataLossNamingTheKey) {
  auto started = EtcdTestCluster::Start(1);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  EtcdTestCluster& c = **started;
  std::string out;
  ASSERT_EQ(c.Etcdctl("put /dwcp/v3/vms/vm-bad not-json", &out), 0) << out;
  auto opened = EtcdStateStore::Open(OptionsFor(c), RealClock::Instance());
  ASSERT_TRUE(opened.ok());
  auto vm = (*opened)->GetVm("vm-bad");
  EXPECT_EQ(vm.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(vm.status().message().find("/dwcp/v3/vms/vm-bad"), std::string::npos);
}

TEST(EtcdStateStoreTest, AuthenticatesAndRejectsABadPassword) {
  auto started = EtcdTestCluster::Start(1);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  EtcdTestCluster& c = **started;
  std::string out;
  ASSERT_EQ(c.Etcdctl("user add root:rootpw", &out), 0) << out;
  ASSERT_EQ(c.Etcdctl("user add dwcp:s3cret", &out), 0) << out;
  ASSERT_EQ(c.Etcdctl("role add dwcp", &out), 0) << out;
  ASSERT_EQ(c.Etcdctl("role grant-permission dwcp --prefix=true readwrite /dwcp/", &out), 0) << out;
  ASSERT_EQ(c.Etcdctl("user grant-role dwcp dwcp", &out), 0) << out;
  ASSERT_EQ(c.Etcdctl("auth enable", &out), 0) << out;

  char tmpl[] = "/tmp/dwcp-auth-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  {
    std::ofstream(dir + "/good") << "s3cret\n";
    std::ofstream(dir + "/bad") << "wrong\n";
  }
  StoreOptions o;
  o.store = c.Url();
  o.username = "dwcp";
  o.password_file = dir + "/good";
  auto s = OpenStateStore(o, RealClock::Instance());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_TRUE((*s)->UpsertNode(MakeNode("node-a")).ok());
  EXPECT_TRUE((*s)->AcquireLease("cluster-leader", "node-a", 5000).ok());
  auto h = (*s)->Health();
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->healthy, 1);

  o.password_file = dir + "/bad";
  auto bad = OpenStateStore(o, RealClock::Instance());
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kUnauthenticated) << bad.status().ToString();

  StoreOptions anonymous;
  anonymous.store = c.Url();
  auto anon = OpenStateStore(anonymous, RealClock::Instance());
  EXPECT_FALSE(anon.ok());
  std::filesystem::remove_all(dir);
}

TEST(EtcdStateStoreTest, MutualTls) {
  char tmpl[] = "/tmp/dwcp-etcd-tls-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const std::string cmd = std::string("bash ") + DWCP_SOURCE_DIR + "/scripts/make-certs.sh " + dir +
                          " etcd node-a >/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  {
    auto started = EtcdTestCluster::Start(testing::EtcdTestOptions{1, dir});
    ASSERT_TRUE(started.ok()) << started.status().ToString();
    EtcdTestCluster& c = **started;
    StoreOptions o;
    o.store = c.Url();
    o.ca_file = dir + "/ca.pem";
    o.cert_file = dir + "/node-a.pem";
    o.key_file = dir + "/node-a.key";
    auto s = OpenStateStore(o, RealClock::Instance());
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    EXPECT_TRUE((*s)->CreateVm(MakeVm("vm-1")).ok());
    auto h = (*s)->Health();
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    EXPECT_EQ(h->healthy, 1);
    // Without TLS the member does not answer.
    StoreOptions plain;
    plain.store = c.Url();
    plain.timeout = std::chrono::milliseconds(500);
    EXPECT_FALSE(OpenStateStore(plain, RealClock::Instance()).ok());
  }
  std::filesystem::remove_all(dir);
}

// ---------------------------------------------------------------------------------------------
// Store URLs and the JSON records.

TEST(StoreFactoryTest, ParsesEtcdUrls) {
  auto u = ParseEtcdUrl("etcd://127.0.0.1:2379,etcd-b.example:22379");
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_EQ(u->endpoints, (std::vector<std::string>{"127.0.0.1:2379", "etcd-b.example:22379"}));
  EXPECT_EQ(u->key_prefix, "/dwcp/v3/");
  auto p = ParseEtcdUrl("etcd://127.0.0.1:2379/dwcp/prod");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->key_prefix, "/dwcp/prod/");
  for (const char* bad :
       {"etcd://", "etcd://127.0.0.1", "etcd://127.0.0.1:0", "etcd://127.0.0.1:99999",
        "etcd://127.0.0.1:2379,", "etcd://:2379", "etcd://h:12ab"}) {
    auto r = ParseEtcdUrl(bad);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_TRUE(IsEtcdUrl("etcd://x:1"));
  EXPECT_FALSE(IsEtcdUrl("/var/lib/dwcp/state.db"));
}

TEST(StoreFactoryTest, ValidatesOptions) {
  StoreOptions o;
  o.store = "/tmp/x.db";
  EXPECT_TRUE(ValidateStoreOptions(o).ok());
  o.username = "dwcp";  // etcd options with a SQLite store
  EXPECT_EQ(ValidateStoreOptions(o).code(), StatusCode::kInvalidArgument);
  o.username.clear();
  o.store = "zk://127.0.0.1:2181";
  EXPECT_EQ(ValidateStoreOptions(o).code(), StatusCode::kInvalidArgument);
  o.store = "etcd://127.0.0.1:2379";
  EXPECT_TRUE(ValidateStoreOptions(o).ok());
  o.cert_file = "/nonexistent.pem";  // without a key, and without a CA
  EXPECT_EQ(ValidateStoreOptions(o).code(), StatusCode::kInvalidArgument);
  o.key_file = "/nonexistent.key";
  o.ca_file = "/nonexistent-ca.pem";
  Status unreadable = ValidateStoreOptions(o);
  EXPECT_EQ(unreadable.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(unreadable.message().find("/nonexistent"), std::string::npos);
  o = StoreOptions{};
  o.store = "etcd://127.0.0.1:2379";
  o.username = "dwcp";  // without a password file
  EXPECT_EQ(ValidateStoreOptions(o).code(), StatusCode::kInvalidArgument);
  o.username.clear();
  o.timeout = std::chrono::milliseconds(0);
  EXPECT_EQ(ValidateStoreOptions(o).code(), StatusCode::kInvalidArgument);
}

TEST(RecordJsonTest, RoundTripsEveryFieldAndRejectsGarbage) {
  MigrationRecord m = MakeMigration("mig-1");
  m.updated_ms = kT0 + 3;
  auto back = MigrationFromJson(MigrationToJson(m), "k");
  ASSERT_TRUE(back.ok());
  ExpectMigrationEq(*back, m);
  EXPECT_EQ(back->updated_ms, m.updated_ms);
  VmRecord vm = MakeVm("vm-1");
  vm.epoch = ~0ull;
  auto vback = VmFromJson(VmToJson(vm), "k");
  ASSERT_TRUE(vback.ok());
  ExpectVmEq(*vback, vm);
  EXPECT_EQ(NodeFromJson("[1]", "/p/nodes/a").status().code(), StatusCode::kDataLoss);
  auto wrong = VmFromJson(R"({"epoch":"three"})", "/p/vms/v");
  EXPECT_EQ(wrong.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(wrong.status().message().find("epoch"), std::string::npos);
  auto lease = LeaseFromJson(LeaseToJson(Lease{"l", "h", kT0}), "k");
  ASSERT_TRUE(lease.ok());
  EXPECT_EQ(lease->expires_ms, kT0);
  RolloutRecord r = MakeRollout("eu", "full", 100);
  r.halted = true;
  r.version = 7;
  auto rback = RolloutFromJson(RolloutToJson(r), "k");
  ASSERT_TRUE(rback.ok());
  EXPECT_EQ(rback->version, 7u);
  EXPECT_TRUE(rback->halted);
  EXPECT_EQ(rback->percent, 100);
}

}  // namespace
}  // namespace dwcp::acp
