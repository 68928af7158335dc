#include "obs/pprof/task_registry.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace dwcp::obs::pprof {
namespace {

TEST(TaskRegistryTest, RegisterSnapshotAndUnregister) {
  FakeClock clock;
  TaskRegistry registry(clock);
  EXPECT_EQ(registry.Count(), 0u);
  {
    TaskHandle a = registry.Register("migration.send", "vm-1 -> node-b");
    clock.Advance(std::chrono::milliseconds(1500));
    TaskHandle b = registry.Register("amst.stream", "stream 3");
    a.SetState("precopy round 2");
    clock.Advance(std::chrono::milliseconds(500));

    auto tasks = registry.Snapshot();
    ASSERT_EQ(tasks.size(), 2u);
    EXPECT_EQ(registry.Count(), 2u);
    EXPECT_EQ(tasks[0].name, "migration.send");
    EXPECT_EQ(tasks[0].detail, "vm-1 -> node-b");
    EXPECT_EQ(tasks[0].state, "precopy round 2");
    EXPECT_EQ(tasks[0].age, std::chrono::milliseconds(2000));
    EXPECT_EQ(tasks[1].name, "amst.stream");
    EXPECT_EQ(tasks[1].state, "");
    EXPECT_EQ(tasks[1].age, std::chrono::milliseconds(500));
    EXPECT_LT(tasks[0].id, tasks[1].id);
  }
  EXPECT_EQ(registry.Count(), 0u);
  EXPECT_TRUE(registry.Snapshot().empty());
}

TEST(TaskRegistryTest, HandlesMoveAndReset) {
  TaskRegistry registry;
  TaskHandle a = registry.Register("t");
  uint64_t id = a.id();
  TaskHandle b = std::move(a);
  EXPECT_FALSE(a.active());  // NOLINT(bugprone-use-after-move): moved-from is empty by contract
  a.SetState("ignored");     // no effect, no crash
  EXPECT_TRUE(b.active());
  EXPECT_EQ(b.id(), id);
  EXPECT_EQ(registry.Count(), 1u);

  TaskHandle c = registry.Register("u");
  c = std::move(b);  // drops "u", keeps "t"
  ASSERT_EQ(registry.Count(), 1u);
  EXPECT_EQ(registry.Snapshot()[0].name, "t");
  c.Reset();
  EXPECT_EQ(registry.Count(), 0u);
  c.Reset();  // idempotent
}

TEST(TaskRegistryTest, ConcurrentRegisterStateAndSnapshot) {
  TaskRegistry registry;
  std::atomic<bool> done{false};
  std::thread reader([&] {
    while (!done) {
      for (const auto& t : registry.Snapshot()) ASSERT_EQ(t.name, "worker");
    }
  });
  std::vector<std::thread> workers;
  for (int w = 0; w < 4; ++w) {
    workers.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) {
        TaskHandle h = registry.Register("worker", std::to_string(i));
        h.SetState("step " + std::to_string(i));
      }
    });
  }
  for (auto& t : workers) t.join();
  done = true;
  reader.join();
  EXPECT_EQ(registry.Count(), 0u);
}

TEST(TaskRegistryTest, GlobalIsOneRegistry) {
  EXPECT_EQ(&TaskRegistry::Global(), &TaskRegistry::Global());
  size_t before = TaskRegistry::Global().Count();
  TaskHandle h = TaskRegistry::Global().Register("global.test");
  EXPECT_EQ(TaskRegistry::Global().Count(), before + 1);
}

}  // namespace
}  // namespace dwcp::obs::pprof
