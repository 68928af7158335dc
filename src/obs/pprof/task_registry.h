// The "goroutine" analogue of dwcpd: a process-wide registry of live coroutine tasks (a
// migration's sender, an incoming stream, a control loop), shown by /debug/pprof/goroutine
// and counted by the resource metrics. Registering is for long-lived tasks, not per page.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/clock.h"

namespace dwcp::obs::pprof {

class TaskRegistry;

// What Snapshot() reports of one live task.
struct TaskInfo {
  uint64_t id = 0;     // unique in the process, increasing in registration order
  std::string name;    // kind of task, low cardinality: "migration.send", "amst.stream"
  std::string detail;  // which one: "vm-7 -> node-b"
  std::string state;   // what it is doing now: "precopy round 3", "" until first SetState
  std::chrono::milliseconds age{0};  // since Register()
};

// Keeps one task registered for as long as it lives (RAII). Movable, not copyable; a
// default-constructed or moved-from handle is empty and does nothing. Each handle may be used
// from one thread at a time; SetState takes only the task's own lock (never the registry's),
// so it is cheap enough for every state change but not meant for every page.
class TaskHandle {
 public:
  TaskHandle() = default;
  TaskHandle(TaskHandle&& other) noexcept;
  TaskHandle& operator=(TaskHandle&& other) noexcept;
  TaskHandle(const TaskHandle&) = delete;
  TaskHandle& operator=(const TaskHandle&) = delete;
  ~TaskHandle();

  // Replaces the task's state text.
  void SetState(std::string state);
  // Unregisters now; the handle becomes empty.
  void Reset();
  bool active() const { return entry_ != nullptr; }
  uint64_t id() const;

 private:
  friend class TaskRegistry;
  struct Entry;
  TaskHandle(TaskRegistry* registry, Entry* entry) : registry_(registry), entry_(entry) {}

  TaskRegistry* registry_ = nullptr;
  Entry* entry_ = nullptr;
};

// Thread-safe. The registry must outlive its handles (Global() lives for the whole process).
class TaskRegistry {
 public:
  explicit TaskRegistry(const Clock& clock = RealClock::Instance());
  TaskRegistry(const TaskRegistry&) = delete;
  TaskRegistry& operator=(const TaskRegistry&) = delete;
  ~TaskRegistry();

  // The process-wide registry, never destroyed.
  static TaskRegistry& Global();

  // Registers a task; it stays listed until the returned handle is destroyed or Reset().
  TaskHandle Register(std::string name, std::string detail = "");
  // Every live task, oldest first.
  std::vector<TaskInfo> Snapshot() const;
  // The number of live tasks.
  size_t Count() const;

 private:
  friend class TaskHandle;
  void Unregister(TaskHandle::Entry* entry);

  const Clock& clock_;
  mutable std::mutex mu_;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, std::unique_ptr<TaskHandle::Entry>> tasks_;
};

}  // namespace dwcp::obs::pprof
