// StateStore commit latency and throughput: CompareAndSwapVm with a migration record (the
// shape of a migration's admission and commit) on SQLite and on etcd clusters of 1, 3 and 5
// real members started on loopback, all in one run (docs/acp.md has figures).
//
//   build-etcd/store_bench --benchmark_min_time=2
//
// BM_Commit/<backend>: one thread, one VM; time per iteration is the commit latency.
// BM_Commit/<backend>/threads:8: eight threads, a VM each, a store handle each; items/s is
// the store's compare-and-swap rate.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "acp/etcd_state_store.h"
#include "acp/sqlite_state_store.h"
#include "common/clock.h"
#include "tests/acp/etcd_test_cluster.h"

namespace {

using namespace dwcp;
using namespace dwcp::acp;

struct Backend {
  std::string name;
  std::unique_ptr<testing::EtcdTestCluster> etcd;  // null: SQLite
  std::string sqlite_path;
};

std::vector<std::unique_ptr<Backend>>& Backends() {
  static std::vector<std::unique_ptr<Backend>> backends;
  return backends;
}

std::unique_ptr<StateStore> Open(const Backend& b) {
  if (!b.etcd) {
    auto s = SqliteStateStore::Open(b.sqlite_path, RealClock::Instance());
    return s.ok() ? std::move(s).value() : nullptr;
  }
  EtcdOptions o;
  o.endpoints = b.etcd->Endpoints();
  o.timeout = std::chrono::milliseconds(5000);
  auto s = EtcdStateStore::Open(o, RealClock::Instance());
  return s.ok() ? std::move(s).value() : nullptr;
}

void BM_Commit(benchmark::State& state, const Backend* backend) {
  auto store = Open(*backend);
  if (!store) {
    state.SkipWithError("cannot open the store");
    return;
  }
  VmRecord vm;
  vm.id = "vm-" + std::to_string(state.thread_index());
  vm.node_id = "node-a";
  vm.state = kVmRunning;
  vm.epoch = 1;
  vm.memory_bytes = 1ull << 30;
  Status created = store->CreateVm(vm);
  if (!created.ok() && created.code() != StatusCode::kAlreadyExists) {
    state.SkipWithError(created.ToString().c_str());
    return;
  }
  auto current = store->GetVm(vm.id);
  if (!current.ok()) {
    state.SkipWithError(current.status().ToString().c_str());
    return;
  }
  VmRecord expected = *current;
  MigrationRecord m;
  m.vm_id = vm.id;
  m.source_node = "node-a";
  m.dest_node = "node-b";
  m.phase = kPhaseCompleted;
  m.protocol = "v3";
  m.created_ms = 1;
  uint64_t n = 0;
  for (auto _ : state) {
    VmRecord desired = expected;
    ++desired.epoch;
    m.id = "mig-" + std::to_string(state.thread_index()) + "-" + std::to_string(n++);
    Status st = store->CompareAndSwapVm(expected, desired, &m);
    if (!st.ok()) {
      state.SkipWithError(st.ToString().c_str());
      break;
    }
    expected = desired;
  }
  state.SetItemsProcessed(state.iterations());
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  char tmpl[] = "/tmp/dwcp-store-bench-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  auto sqlite = std::make_unique<Backend>();
  sqlite->name = "sqlite";
  sqlite->sqlite_path = dir + "/state.db";
  Backends().push_back(std::move(sqlite));
  for (int members : {1, 3, 5}) {
    auto started = testing::EtcdTestCluster::Start(members);
    if (!started.ok()) {
      std::cerr << "store_bench: etcd x" << members << ": " << started.status().ToString() << "\n";
      return 1;
    }
    auto b = std::make_unique<Backend>();
    b->name = "etcd" + std::to_string(members);
    b->etcd = std::move(started).value();
    Backends().push_back(std::move(b));
  }
  for (const auto& b : Backends()) {
    benchmark::RegisterBenchmark(("BM_Commit/" + b->name).c_str(), BM_Commit, b.get())
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("BM_Commit/" + b->name).c_str(), BM_Commit, b.get())
        ->Threads(8)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  Backends().clear();
  std::filesystem::remove_all(dir);
  return 0;
}
