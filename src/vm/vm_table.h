// The guests this node runs right now, with the fencing epoch each one runs under.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "vm/guest.h"

namespace dwcp::vm {

struct LocalVm {
  std::shared_ptr<Guest> guest;
  uint64_t epoch = 0;  // the store's epoch when this node took ownership
};

// Thread-safe map from VM id to the local guest.
class VmTable {
 public:
  // Adds a guest; false if the id is already present.
  bool Add(const std::string& id, std::shared_ptr<Guest> guest, uint64_t epoch) {
    std::lock_guard lock(mu_);
    return vms_.emplace(id, LocalVm{std::move(guest), epoch}).second;
  }
  // Removes and returns the guest (null if absent). The caller decides when it is destroyed.
  std::shared_ptr<Guest> Remove(const std::string& id) {
    std::lock_guard lock(mu_);
    auto it = vms_.find(id);
    if (it == vms_.end()) return nullptr;
    auto guest = std::move(it->second.guest);
    vms_.erase(it);
    return guest;
  }
  // The guest and its epoch; guest is null if absent.
  LocalVm Find(const std::string& id) const {
    std::lock_guard lock(mu_);
    auto it = vms_.find(id);
    return it == vms_.end() ? LocalVm{} : it->second;
  }
  std::vector<std::string> Ids() const {
    std::lock_guard lock(mu_);
    std::vector<std::string> ids;
    for (const auto& [id, _] : vms_) ids.push_back(id);
    return ids;
  }
  size_t size() const {
    std::lock_guard lock(mu_);
    return vms_.size();
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, LocalVm> vms_;
};

}  // namespace dwcp::vm
