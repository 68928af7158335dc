#include "obs/pprof/task_registry.h"

#include <algorithm>
#include <utility>

namespace dwcp::obs::pprof {

struct TaskHandle::Entry {
  uint64_t id;
  std::string name;
  std::string detail;
  std::chrono::steady_clock::time_point started;
  mutable std::mutex mu;  // guards state
  std::string state;
};

TaskHandle::TaskHandle(TaskHandle&& other) noexcept
    : registry_(std::exchange(other.registry_, nullptr)),
      entry_(std::exchange(other.entry_, nullptr)) {}

TaskHandle& TaskHandle::operator=(TaskHandle&& other) noexcept {
  if (this != &other) {
    Reset();
    registry_ = std::exchange(other.registry_, nullptr);
    entry_ = std::exchange(other.entry_, nullptr);
  }
  return *this;
}

TaskHandle::~TaskHandle() { Reset(); }

void TaskHandle::SetState(std::string state) {
  if (entry_ == nullptr) return;
  std::lock_guard lock(entry_->mu);
  entry_->state = std::move(state);
}

void TaskHandle::Reset() {
  if (entry_ == nullptr) return;
  registry_->Unregister(entry_);
  registry_ = nullptr;
  entry_ = nullptr;
}

uint64_t TaskHandle::id() const { return entry_ == nullptr ? 0 : entry_->id; }

TaskRegistry::TaskRegistry(const Clock& clock) : clock_(clock) {}

TaskRegistry::~TaskRegistry() = default;

TaskRegistry& TaskRegistry::Global() {
  static TaskRegistry* registry = new TaskRegistry();  // never destroyed: handles may outlive main
  return *registry;
}

TaskHandle TaskRegistry::Register(std::string name, std::string detail) {
  auto entry = std::make_unique<TaskHandle::Entry>();
  entry->name = std::move(name);
  entry->detail = std::move(detail);
  entry->started = clock_.Now();
  TaskHandle::Entry* raw = entry.get();
  std::lock_guard lock(mu_);
  entry->id = next_id_++;
  tasks_.emplace(raw->id, std::move(entry));
  return TaskHandle(this, raw);
}

void TaskRegistry::Unregister(TaskHandle::Entry* entry) {
  std::lock_guard lock(mu_);
  tasks_.erase(entry->id);
}

std::vector<TaskInfo> TaskRegistry::Snapshot() const {
  auto now = clock_.Now();
  std::vector<TaskInfo> out;
  {
    std::lock_guard lock(mu_);
    out.reserve(tasks_.size());
    for (const auto& [id, e] : tasks_) {
      TaskInfo info;
      info.id = id;
      info.name = e->name;
      info.detail = e->detail;
      info.age = std::chrono::duration_cast<std::chrono::milliseconds>(now - e->started);
      {
        std::lock_guard state_lock(e->mu);
        info.state = e->state;
      }
      out.push_back(std::move(info));
    }
  }
  std::sort(out.begin(), out.end(),
            [](const TaskInfo& a, const TaskInfo& b) { return a.id < b.id; });
  return out;
}

size_t TaskRegistry::Count() const {
  std::lock_guard lock(mu_);
  return tasks_.size();
}

}  // namespace dwcp::obs::pprof
