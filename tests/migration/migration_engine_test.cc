// Two migration engines in one process, on loopback, sharing a temp-dir SQLite store; the
// destination's guests can be swapped for fault-injecting ones.
#include "migration/migration_engine.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "acp/sqlite_state_store.h"
#include "amst/connection.h"
#include "amst/frame.h"
#include "common/failpoint.h"
#include "common/little_endian.h"
#include "tests/common/socket_test_util.h"
#include "vm/synthetic_guest.h"

namespace dwcp::migration {
namespace {

using namespace std::chrono_literals;

// A guest that corrupts one page as it is written: what a buggy transport or decoder does.
class CorruptingGuest final : public vm::Guest {
 public:
  CorruptingGuest(std::shared_ptr<vm::Guest> inner, uint64_t bad_page)
      : inner_(std::move(inner)), bad_page_(bad_page) {}
  const vm::GuestSpec& spec() const override { return inner_->spec(); }
  const uint8_t* PageData(uint64_t i) const override { return inner_->PageData(i); }
  void WritePage(uint64_t i, const uint8_t* data) override {
    if (i != bad_page_) return inner_->WritePage(i, data);
    std::vector<uint8_t> copy(data, data + vm::kPageSize);
    copy[100] ^= 0x01;
    inner_->WritePage(i, copy.data());
  }
  void ZeroPage(uint64_t i) override {
    if (i != bad_page_) return inner_->ZeroPage(i);
    std::vector<uint8_t> one(vm::kPageSize, 0);
    one[100] = 1;
    inner_->WritePage(i, one.data());
  }
  void StartDirtyLog() override { inner_->StartDirtyLog(); }
  void StopDirtyLog() override { inner_->StopDirtyLog(); }
  void CollectDirtyPages(std::vector<uint64_t>* out) override { inner_->CollectDirtyPages(out); }
  uint64_t DirtyPageCount() const override { return inner_->DirtyPageCount(); }
  void Pause() override { inner_->Pause(); }
  void Resume() override { inner_->Resume(); }
  bool running() const override { return inner_->running(); }
  std::string Digest() const override { return inner_->Digest(); }
  uint64_t pages_written() const override { return inner_->pages_written(); }

 private:
  std::shared_ptr<vm::Guest> inner_;
  uint64_t bad_page_;
};

// One node's engine with its own guests, metrics and network threads.
struct TestNode {
  TestNode(const std::string& id, acp::StateStore& store, EngineConfig config,
           IncomingGuestFactory factory = SyntheticIncomingGuests()) {
    config.node_id = id;
    engine = std::make_unique<MigrationEngine>(config, store, vms, metrics, RealClock::Instance(),
                                               io, std::move(factory));
    EXPECT_TRUE(engine->Listen("127.0.0.1", 0).ok());
    work.emplace(io.get_executor());
    for (int i = 0; i < 2; ++i) threads.emplace_back([this] { io.run(); });
    acp::NodeRecord rec{id,
                        "local",
                        "http://127.0.0.1:1",
                        "127.0.0.1:" + std::to_string(engine->listen_port()),
                        "up",
                        "test",
                        RealClock::Instance().WallMillis(),
                        RealClock::Instance().WallMillis()};
    EXPECT_TRUE(store.UpsertNode(rec).ok());
  }
  ~TestNode() {
    engine->Shutdown(5s);
    work.reset();
    io.stop();
    for (auto& t : threads) t.join();
  }
  vm::VmTable vms;
  obs::Metrics metrics;
  asio::io_context io;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::vector<std::thread> threads;
  std::unique_ptr<MigrationEngine> engine;
};

class MigrationEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/dwcp-engine-XXXXXX";
    dir_ = mkdtemp(tmpl);
    auto s = acp::SqliteStateStore::Open(dir_ + "/state.db", RealClock::Instance());
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(s).value();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Boots a guest on `node` and records it.
  void BootVm(TestNode& node, const std::string& node_id, const std::string& id,
              uint64_t dirty_rate) {
    auto g = vm::SyntheticGuest::Boot({id, 32ull << 20, dirty_rate, 11});
    ASSERT_TRUE(g.ok());
    node.vms.Add(id, std::shared_ptr<vm::Guest>(std::move(g).value()), 1);
    acp::VmRecord rec;
    rec.id = id;
    rec.node_id = node_id;
    rec.state = acp::kVmRunning;
    rec.epoch = 1;
    rec.memory_bytes = 32ull << 20;
    rec.dirty_rate = dirty_rate;
    rec.seed = 11;
    ASSERT_TRUE(store_->CreateVm(rec).ok());
  }

  acp::MigrationRecord WaitForEnd(const std::string& id) {
    for (int i = 0; i < 600; ++i) {
      auto m = store_->GetMigration(id);
      if (m.ok() && m->finished_ms != 0) return *m;
      std::this_thread::sleep_for(50ms);
    }
    ADD_FAILURE() << "migration did not end";
    return {};
  }

  std::string dir_;
  std::unique_ptr<acp::SqliteStateStore> store_;
};

TEST_F(MigrationEngineTest, MigratesAndHandsOverTheGuest) {
  TestNode a("node-a", *store_, {}), b("node-b", *store_, {});
  BootVm(a, "node-a", "vm-1", 8'000'000);
  auto m = a.engine->Start({"vm-1", "node-b"});
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  auto done = WaitForEnd(m->id);
  EXPECT_EQ(done.phase, acp::kPhaseCompleted) << done.error;
  EXPECT_EQ(done.source_digest, done.dest_digest);
  EXPECT_EQ(a.vms.size(), 0u);
  ASSERT_NE(b.vms.Find("vm-1").guest, nullptr);
  EXPECT_TRUE(b.vms.Find("vm-1").guest->running());
  EXPECT_EQ(b.vms.Find("vm-1").epoch, 2u);
  auto vm = store_->GetVm("vm-1");
  EXPECT_EQ(vm->node_id, "node-b");
  EXPECT_EQ(vm->epoch, 2u);
  EXPECT_EQ(a.metrics.migrations(obs::MigrationResult::kSuccess, 3).Value(), 1);
  EXPECT_EQ(a.metrics.bytes_sent.Value(), b.metrics.bytes_received.Value());
  EXPECT_EQ(a.metrics.wire_sent.Value(), b.metrics.wire_received.Value());
}

TEST_F(MigrationEngineTest, DigestMismatchFailsAndKeepsTheVmOnTheSource) {
  auto corrupting = [](const vm::GuestSpec& spec) -> Result<std::shared_ptr<vm::Guest>> {
    auto g = vm::SyntheticGuest::CreateIncoming(spec);
    if (!g.ok()) return g.status();
    return std::shared_ptr<vm::Guest>(
        std::make_shared<CorruptingGuest>(std::shared_ptr<vm::Guest>(std::move(g).value()), 5));
  };
  TestNode a("node-a", *store_, {}), b("node-b", *store_, {}, corrupting);
  BootVm(a, "node-a", "vm-1", 0);
  auto m = a.engine->Start({"vm-1", "node-b"});
  ASSERT_TRUE(m.ok());
  auto done = WaitForEnd(m->id);
  EXPECT_EQ(done.phase, acp::kPhaseFailed);
  EXPECT_NE(done.error.find("digest"), std::string::npos) << done.error;
  EXPECT_NE(done.source_digest, done.dest_digest);
  auto vm = store_->GetVm("vm-1");
  EXPECT_EQ(vm->node_id, "node-a");
  EXPECT_EQ(vm->state, acp::kVmRunning);
  EXPECT_EQ(vm->epoch, 1u);
  ASSERT_NE(a.vms.Find("vm-1").guest, nullptr);
  EXPECT_TRUE(a.vms.Find("vm-1").guest->running());  // resumed after the pause
  EXPECT_EQ(b.vms.size(), 0u);
  EXPECT_EQ(a.metrics.migrations(obs::MigrationResult::kFailed, 3).Value(), 1);
}

// The destination verified, the source stalls before its commit (a failpoint) past the
// destination's peer timeout: the destination cancels in the store, the source's commit loses
// the race and it resumes the guest. Nothing runs twice, and the VM moves on the next try.
TEST_F(MigrationEngineTest, ACommitThatLosesToTheDestinationsCancelKeepsTheVmOnTheSource) {
  ::setenv("DWCP_FAILPOINTS", "migration.source.before_commit=sleep(2500)", 1);
  ASSERT_TRUE(Failpoints::Init().ok());
  EngineConfig quick;
  quick.io_timeout = 1s;
  {
    TestNode a("node-a", *store_, {}), b("node-b", *store_, quick);
    BootVm(a, "node-a", "vm-1", 0);
    auto m = a.engine->Start({"vm-1", "node-b"});
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    auto done = WaitForEnd(m->id);
    ::unsetenv("DWCP_FAILPOINTS");
    ASSERT_TRUE(Failpoints::Init().ok());
    // The destination's cancel may end the record first; the source's failure follows.
    for (int i = 0; i < 100 && a.engine->IsActive(m->id); ++i) std::this_thread::sleep_for(50ms);
    done = *store_->GetMigration(m->id);
    EXPECT_NE(done.phase, acp::kPhaseCompleted);
    auto vm = store_->GetVm("vm-1");
    EXPECT_EQ(vm->node_id, "node-a");
    EXPECT_EQ(vm->epoch, 1u);
    EXPECT_EQ(vm->state, acp::kVmRunning);
    ASSERT_NE(a.vms.Find("vm-1").guest, nullptr);
    EXPECT_TRUE(a.vms.Find("vm-1").guest->running());
    EXPECT_EQ(b.vms.size(), 0u);

    auto again = a.engine->Start({"vm-1", "node-b"});
    ASSERT_TRUE(again.ok()) << again.status().ToString();
    auto moved = WaitForEnd(again->id);
    EXPECT_EQ(moved.phase, acp::kPhaseCompleted) << moved.error;
    EXPECT_EQ(store_->GetVm("vm-1")->node_id, "node-b");
    ASSERT_NE(b.vms.Find("vm-1").guest, nullptr);
    EXPECT_TRUE(b.vms.Find("vm-1").guest->running());
    EXPECT_EQ(a.vms.size(), 0u);
  }
  ::unsetenv("DWCP_FAILPOINTS");
  ASSERT_TRUE(Failpoints::Init().ok());
}

TEST_F(MigrationEngineTest, StripesOverSeveralStreams) {
  EngineConfig three;
  three.streams.fixed_streams = 3;
  three.batch_pages = 64;
  TestNode a("node-a", *store_, three), b("node-b", *store_, {});
  BootVm(a, "node-a", "vm-1", 8'000'000);
  auto m = a.engine->Start({"vm-1", "node-b"});
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  auto done = WaitForEnd(m->id);
  EXPECT_EQ(done.phase, acp::kPhaseCompleted) << done.error;
  EXPECT_EQ(done.source_digest, done.dest_digest);
  EXPECT_EQ(b.engine->streams_joined(), 2u);
  // Wire bytes of every stream are counted: the record matches what left the node.
  EXPECT_EQ(done.network_bytes, a.metrics.wire_sent.Value());
}

TEST_F(MigrationEngineTest, BandwidthCapChangesWhileTheMigrationRuns) {
  TestNode a("node-a", *store_, {}), b("node-b", *store_, {});
  BootVm(a, "node-a", "vm-1", 0);
  MigrationRequest req{"vm-1", "node-b"};
  req.protocol = 1;                 // raw pages: 32 MiB on the wire
  req.bandwidth_limit = 2'000'000;  // 16 s at this cap
  auto m = a.engine->Start(req);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(a.engine->SetMigrationBandwidthLimit("mig-unknown", 0).code(), StatusCode::kNotFound);
  std::this_thread::sleep_for(300ms);
  ASSERT_TRUE(a.engine->SetMigrationBandwidthLimit(m->id, 0).ok());  // lift it
  auto done = WaitForEnd(m->id);
  EXPECT_EQ(done.phase, acp::kPhaseCompleted) << done.error;
  // Under the original cap it could not have finished before 16 s.
  EXPECT_LT(done.total_ms, 16000);
  a.engine->SetNodeBandwidthLimit(5'000'000);
  EXPECT_EQ(a.engine->node_bandwidth_limit(), 5'000'000u);
}

TEST_F(MigrationEngineTest, RoundLimitAbortsOrForcesAsConfigured) {
  EngineConfig strict;
  strict.max_rounds = 2;
  strict.force_on_round_limit = false;
  strict.downtime_budget_ms = 1;
  TestNode a("node-a", *store_, strict), b("node-b", *store_, strict);
  // 400 MB/s of dirtying against a 40 MB/s cap never converges. v1 sends raw pages, so the
  // cap on wire bytes is a cap on guest bytes (v3's reduction could make rounds short enough
  // to catch the guest between two dirtier ticks).
  BootVm(a, "node-a", "vm-1", 400'000'000);
  MigrationRequest req{"vm-1", "node-b"};
  req.protocol = 1;
  req.bandwidth_limit = 40'000'000;
  auto m = a.engine->Start(req);
  ASSERT_TRUE(m.ok());
  auto aborted = WaitForEnd(m->id);
  EXPECT_EQ(aborted.phase, acp::kPhaseAborted);
  EXPECT_NE(aborted.error.find("did not converge in 2 rounds"), std::string::npos) << aborted.error;
  EXPECT_EQ(store_->GetVm("vm-1")->node_id, "node-a");
  EXPECT_TRUE(a.vms.Find("vm-1").guest->running());

  req.on_round_limit = 1;  // force
  m = a.engine->Start(req);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  auto forced = WaitForEnd(m->id);
  EXPECT_EQ(forced.phase, acp::kPhaseCompleted) << forced.error;
  EXPECT_EQ(forced.round, 3u);  // two pre-copy rounds, then stop-and-copy
  EXPECT_EQ(forced.source_digest, forced.dest_digest);
  EXPECT_EQ(store_->GetVm("vm-1")->node_id, "node-b");
}

TEST_F(MigrationEngineTest, RefusesWithoutACommonProtocolVersion) {
  EngineConfig v3_only;
  v3_only.protocols = {3};
  TestNode a("node-a", *store_, {}), b("node-b", *store_, v3_only);
  BootVm(a, "node-a", "vm-1", 0);
  MigrationRequest req{"vm-1", "node-b"};
  req.protocol = 1;
  auto m = a.engine->Start(req);
  ASSERT_TRUE(m.ok());
  auto done = WaitForEnd(m->id);
  EXPECT_EQ(done.phase, acp::kPhaseFailed);
  EXPECT_NE(done.error.find("no common protocol version"), std::string::npos) << done.error;
  EXPECT_EQ(store_->GetVm("vm-1")->node_id, "node-a");
}

// A source that announces a guest size other than the store's is refused before the
// destination allocates anything: the peer must not choose how much memory it takes.
TEST_F(MigrationEngineTest, DestinationRefusesAGuestSizeTheStoreDoesNotRecord) {
  TestNode b("node-b", *store_, {});
  acp::VmRecord vm;
  vm.id = "vm-1";
  vm.node_id = "node-a";
  vm.state = acp::kVmMigrating;
  vm.epoch = 1;
  vm.migration_id = "mig-1";
  vm.memory_bytes = 32ull << 20;
  ASSERT_TRUE(store_->CreateVm(vm).ok());
  acp::MigrationRecord mig;
  mig.id = "mig-1";
  mig.vm_id = "vm-1";
  mig.source_node = "node-a";
  mig.dest_node = "node-b";
  ASSERT_TRUE(store_->PutMigration(mig).ok());

  // A hand-driven source: hello, then a begin for 64 MiB where the store says 32 MiB.
  asio::io_context io;
  Result<wire::Control> ready = Status(Internal("no reply"));
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto c = co_await amst::Connect("127.0.0.1", b.engine->listen_port(), b.metrics, 5s);
        if (!c.ok()) co_return;
        std::shared_ptr<amst::Connection> conn = std::move(c).value();
        wire::Control hello;
        hello.mutable_hello()->set_node_id("node-a");
        hello.mutable_hello()->add_versions(3);
        if (!(co_await conn->SendControl(hello, 5s)).ok()) co_return;
        auto ack = co_await conn->ReceiveControl(5s);
        if (!ack.ok()) co_return;
        conn->set_protocol(static_cast<uint8_t>(ack->hello_ack().version()));
        wire::Control begin;
        auto* bg = begin.mutable_begin();
        bg->set_migration_id("mig-1");
        bg->set_vm_id("vm-1");
        bg->set_memory_bytes(64ull << 20);
        bg->set_page_size(vm::kPageSize);
        bg->set_epoch(1);
        bg->set_source_node("node-a");
        if (!(co_await conn->SendControl(begin, 5s)).ok()) co_return;
        ready = co_await conn->ReceiveControl(5s);
      },
      asio::detached);
  io.run();
  ASSERT_TRUE(ready.ok()) << ready.status().ToString();
  ASSERT_EQ(ready->msg_case(), wire::Control::kReady);
  EXPECT_FALSE(ready->ready().ok());
  EXPECT_NE(ready->ready().error().find("memory"), std::string::npos) << ready->ready().error();
  EXPECT_EQ(b.vms.size(), 0u);
}

TEST_F(MigrationEngineTest, AdmissionChecks) {
  TestNode a("node-a", *store_, {}), b("node-b", *store_, {});
  BootVm(a, "node-a", "vm-1", 0);
  EXPECT_EQ(a.engine->Start({"vm-404", "node-b"}).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(a.engine->Start({"vm-1", "node-z"}).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(a.engine->Start({"vm-1", "node-a"}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(b.engine->Start({"vm-1", "node-a"}).status().code(), StatusCode::kInvalidArgument);
  MigrationRequest slow{"vm-1", "node-b"};
  slow.bandwidth_limit = 10'000'000;
  auto first = a.engine->Start(slow);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(a.engine->Start({"vm-1", "node-b"}).status().code(), StatusCode::kFailedPrecondition);
  a.engine->Shutdown(10s);  // aborts the slow one
  auto done = WaitForEnd(first->id);
  EXPECT_EQ(done.phase, acp::kPhaseAborted);
  EXPECT_EQ(store_->GetVm("vm-1")->state, acp::kVmRunning);
  EXPECT_EQ(a.engine->Start({"vm-1", "node-b"}).status().code(), StatusCode::kAborted);
}

// dwcp_v3_limit_rejections_total{limit} of `metrics` (0 when never counted).
double LimitRejections(obs::Metrics& metrics, const std::string& limit) {
  for (const auto& family : metrics.Collect()) {
    if (family.name != "dwcp_v3_limit_rejections_total") continue;
    for (const auto& m : family.metric) {
      for (const auto& l : m.label) {
        if (l.name == "limit" && l.value == limit) return m.counter.value;
      }
    }
  }
  return 0;
}

// A raw TCP client of a data port, from `source` (any 127/8 address: loopback answers them
// all), that sends what a test tells it.
class RawPeer {
 public:
  RawPeer(uint16_t port, const char* source = "127.0.0.1") {
    fd_ = dwcp::testing::ConnectFrom(source, port, &connected_);
    EXPECT_GE(fd_, 0) << "cannot bind " << source;
  }
  ~RawPeer() { ::close(fd_); }
  bool connected() const { return connected_; }
  void Send(const void* data, size_t n) { (void)::send(fd_, data, n, MSG_NOSIGNAL); }
  // A frame header announcing `length` payload bytes of `type` (checksum left zero: the
  // length is checked first).
  void SendHeader(amst::FrameType type, uint32_t length) {
    std::array<uint8_t, amst::kFrameHeaderSize> h{};
    le::Put32(&h[0], amst::kFrameMagic);
    h[5] = static_cast<uint8_t>(type);
    le::Put32(&h[12], length);
    Send(h.data(), h.size());
  }
  // True once the node closed the connection, within `within`.
  bool ClosedWithin(std::chrono::milliseconds within) {
    return dwcp::testing::ClosedWithin(fd_, within);
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

// A migration that takes about 1.5 s: long enough to overlap with others.
MigrationRequest Slow(const std::string& vm, const std::string& to) {
  MigrationRequest r{vm, to};
  r.bandwidth_limit = 20'000'000;
  return r;
}

TEST_F(MigrationEngineTest, SourceRefusesMigrationsBeyondItsLimits) {
  EngineConfig limited;
  limited.max_migrations = 2;
  limited.max_migrations_per_peer = 1;
  TestNode a("node-a", *store_, limited), b("node-b", *store_, {}), c("node-c", *store_, {});
  for (const char* vm : {"vm-1", "vm-2", "vm-3"}) BootVm(a, "node-a", vm, 0);
  auto first = a.engine->Start(Slow("vm-1", "node-b"));
  ASSERT_TRUE(first.ok()) << first.status().ToString();

  auto per_peer = a.engine->Start({"vm-2", "node-b"});
  ASSERT_FALSE(per_peer.ok());
  EXPECT_EQ(per_peer.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(per_peer.status().message().find("max_migrations_per_peer"), std::string::npos)
      << per_peer.status().message();
  EXPECT_EQ(LimitRejections(a.metrics, "migrations_per_peer"), 1);
  // Refused before the store heard of it: the VM still runs here, not migrating.
  EXPECT_EQ(store_->GetVm("vm-2")->state, acp::kVmRunning);
  EXPECT_TRUE(a.vms.Find("vm-2").guest->running());

  auto second = a.engine->Start(Slow("vm-2", "node-c"));
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  auto total = a.engine->Start({"vm-3", "node-c"});
  ASSERT_FALSE(total.ok());
  EXPECT_NE(total.status().message().find("2 migrations running (max_migrations 2)"),
            std::string::npos)
      << total.status().message();
  EXPECT_EQ(LimitRejections(a.metrics, "migrations"), 1);
  EXPECT_EQ(a.engine->limited_migrations(), 2u);

  EXPECT_EQ(WaitForEnd(first->id).phase, acp::kPhaseCompleted);
  EXPECT_EQ(WaitForEnd(second->id).phase, acp::kPhaseCompleted);
  for (int i = 0; i < 100 && a.engine->limited_migrations() > 0; ++i) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(a.engine->limited_migrations(), 0u);
  auto later = a.engine->Start({"vm-3", "node-b"});
  ASSERT_TRUE(later.ok()) << later.status().ToString();
  EXPECT_EQ(WaitForEnd(later->id).phase, acp::kPhaseCompleted);
}

TEST_F(MigrationEngineTest, BusyDestinationRefusesInTheHandshakeAndTheVmStaysOnTheSource) {
  EngineConfig one;
  one.max_migrations = 1;
  TestNode a("node-a", *store_, {}), b("node-b", *store_, one), c("node-c", *store_, {});
  BootVm(a, "node-a", "vm-1", 0);
  BootVm(c, "node-c", "vm-3", 1'000'000);
  auto first = a.engine->Start(Slow("vm-1", "node-b"));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  for (int i = 0; i < 100 && b.engine->limited_migrations() == 0; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_EQ(b.engine->limited_migrations(), 1u);

  auto refused = c.engine->Start({"vm-3", "node-b"});
  ASSERT_TRUE(refused.ok()) << refused.status().ToString();
  auto failed = WaitForEnd(refused->id);
  EXPECT_EQ(failed.phase, acp::kPhaseFailed);
  EXPECT_NE(failed.error.find("destination node-b busy: 1 migrations running (max_migrations 1)"),
            std::string::npos)
      << failed.error;
  EXPECT_EQ(LimitRejections(b.metrics, "migrations"), 1);
  auto vm = store_->GetVm("vm-3");
  EXPECT_EQ(vm->node_id, "node-c");
  EXPECT_EQ(vm->state, acp::kVmRunning);
  ASSERT_NE(c.vms.Find("vm-3").guest, nullptr);
  EXPECT_TRUE(c.vms.Find("vm-3").guest->running());
  EXPECT_EQ(b.vms.Find("vm-3").guest, nullptr);

  EXPECT_EQ(WaitForEnd(first->id).phase, acp::kPhaseCompleted);
  for (int i = 0; i < 100 && b.engine->limited_migrations() > 0; ++i) {
    std::this_thread::sleep_for(20ms);
  }
  for (int i = 0; i < 100 && c.engine->IsActive(refused->id); ++i)
    std::this_thread::sleep_for(20ms);
  auto later = c.engine->Start({"vm-3", "node-b"});
  ASSERT_TRUE(later.ok()) << later.status().ToString();
  EXPECT_EQ(WaitForEnd(later->id).phase, acp::kPhaseCompleted);
}

TEST_F(MigrationEngineTest, OversizedFramesCloseThePeerAndMigrationsGoOn) {
  TestNode a("node-a", *store_, {}), b("node-b", *store_, {});
  const uint16_t port = b.engine->listen_port();
  RawPeer big_frame(port);
  ASSERT_TRUE(big_frame.connected());
  big_frame.SendHeader(amst::FrameType::kPages, amst::kDefaultMaxPayload + 1);
  EXPECT_TRUE(big_frame.ClosedWithin(2s));
  RawPeer big_control(port);
  big_control.SendHeader(amst::FrameType::kControl, 100 << 10);
  EXPECT_TRUE(big_control.ClosedWithin(2s));
  EXPECT_EQ(LimitRejections(b.metrics, "frame_size"), 1);
  EXPECT_EQ(LimitRejections(b.metrics, "message_size"), 1);

  BootVm(a, "node-a", "vm-1", 0);
  auto m = a.engine->Start({"vm-1", "node-b"});
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(WaitForEnd(m->id).phase, acp::kPhaseCompleted);
}

TEST_F(MigrationEngineTest, AConnectionFloodFromOneAddressDoesNotStopOtherPeers) {
  EngineConfig guarded;
  guarded.max_connections_per_peer = 3;
  guarded.streams.max_streams = 2;
  TestNode a("node-a", *store_, {}), b("node-b", *store_, guarded);
  const uint16_t port = b.engine->listen_port();
  std::vector<std::unique_ptr<RawPeer>> flood;
  for (int i = 0; i < 3; ++i) flood.push_back(std::make_unique<RawPeer>(port, "127.0.0.2"));
  std::this_thread::sleep_for(100ms);  // the three are accepted and held
  RawPeer fourth(port, "127.0.0.2");
  EXPECT_TRUE(fourth.ClosedWithin(2s));
  EXPECT_EQ(LimitRejections(b.metrics, "connections_per_peer"), 1);

  // node-a connects from 127.0.0.1: its migration is not affected.
  BootVm(a, "node-a", "vm-1", 1'000'000);
  auto m = a.engine->Start({"vm-1", "node-b"});
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  auto done = WaitForEnd(m->id);
  EXPECT_EQ(done.phase, acp::kPhaseCompleted) << done.error;
  for (auto& peer : flood) EXPECT_FALSE(peer->ClosedWithin(10ms));  // still held, idle

  // The node-wide limit counts every address.
  EngineConfig tiny;
  tiny.max_connections = 1;
  TestNode d("node-d", *store_, tiny);
  RawPeer held(d.engine->listen_port(), "127.0.0.3");
  std::this_thread::sleep_for(100ms);
  RawPeer over(d.engine->listen_port(), "127.0.0.4");
  EXPECT_TRUE(over.ClosedWithin(2s));
  EXPECT_EQ(LimitRejections(d.metrics, "connections"), 1);
}

TEST_F(MigrationEngineTest, HandshakeDeadlineClosesSilentAndSlowPeers) {
  EngineConfig quick;
  quick.handshake_timeout = 300ms;
  TestNode b("node-b", *store_, quick);
  RawPeer silent(b.engine->listen_port());
  RawPeer slow(b.engine->listen_port());
  slow.Send("DWCP", 4);  // a third of a header, then nothing
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(silent.ClosedWithin(3s));
  EXPECT_TRUE(slow.ClosedWithin(3s));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  for (int i = 0; i < 50 && LimitRejections(b.metrics, "handshake_timeout") < 2; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(LimitRejections(b.metrics, "handshake_timeout"), 2);
}

TEST_F(MigrationEngineTest, ASmallBufferBudgetSlowsMigrationsDownInsteadOfFailingThem) {
  EngineConfig small;
  small.max_buffer_memory = 3ull << 20;  // two batches of 256 pages in flight
  small.streams.fixed_streams = 2;
  TestNode a("node-a", *store_, small), b("node-b", *store_, small);
  BootVm(a, "node-a", "vm-1", 4'000'000);
  auto m = a.engine->Start({"vm-1", "node-b"});
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  auto done = WaitForEnd(m->id);
  EXPECT_EQ(done.phase, acp::kPhaseCompleted) << done.error;
  EXPECT_EQ(done.source_digest, done.dest_digest);
  EXPECT_GE(LimitRejections(a.metrics, "buffer_memory"), 1);
  // Every charge was given back.
  EXPECT_EQ(a.engine->buffer_bytes(), 0u);
  EXPECT_EQ(b.engine->buffer_bytes(), 0u);
}

}  // namespace
}  // namespace dwcp::migration
