// The node's part of the qemu VM driver (docs/qemu.md): creating, recovering, watching and
// stopping the QEMU guests of this host. They live in qemu_vms_, apart from the engine's
// VmTable of page-level guests.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "node/node.h"
#include "obs/log.h"

namespace dwcp::node {
namespace {

using nlohmann::json;

// What a restart needs to boot or adopt the guest again: DATA_DIR/qemu/<id>/spec.json.
json SpecJson(const VmCreateRequest& r, uint64_t memory_bytes) {
  return {{"id", r.id},         {"memory_bytes", memory_bytes}, {"kernel", r.kernel},
          {"initrd", r.initrd}, {"append", r.append},           {"qmp_socket", r.qmp_socket},
          {"accel", r.accel},   {"boot_marker", r.boot_marker}};
}

Status WriteSpec(const std::string& run_dir, const json& spec) {
  const std::string path = run_dir + "/spec.json";
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << spec.dump(2) << "\n";
    if (!out) return Unavailable("cannot write " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return Unavailable("cannot write " + path);
  return Status::Ok();
}

Result<VmCreateRequest> ReadSpec(const std::string& run_dir) {
  const std::string path = run_dir + "/spec.json";
  std::ifstream in(path);
  if (!in) return Status(NotFound("no " + path));
  json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return Status(DataLoss(path + " is not a JSON object"));
  VmCreateRequest r;
  r.driver = "qemu";
  r.id = j.value("id", "");
  r.memory_bytes = j.value("memory_bytes", uint64_t{0});
  r.kernel = j.value("kernel", "");
  r.initrd = j.value("initrd", "");
  r.append = j.value("append", "");
  r.qmp_socket = j.value("qmp_socket", "");
  r.accel = j.value("accel", "auto");
  r.boot_marker = j.value("boot_marker", "");
  return r;
}

Result<std::unique_ptr<vm::QemuGuest>> StartOrAdopt(const VmCreateRequest& r,
                                                    const std::string& run_dir,
                                                    vm::AccelSelector& accel) {
  if (!r.qmp_socket.empty()) return vm::QemuGuest::Adopt(r.id, r.qmp_socket);
  vm::QemuGuestSpec spec;
  spec.id = r.id;
  spec.memory_bytes = r.memory_bytes;
  spec.kernel = r.kernel;
  spec.initrd = r.initrd;
  spec.append = r.append;
  spec.accel = r.accel;
  spec.boot_marker = r.boot_marker;
  spec.run_dir = run_dir;
  return vm::QemuGuest::Start(spec, accel);
}

}  // namespace

std::string Node::QemuRunDir(const std::string& id) const {
  return config_.data_dir + "/qemu/" + id;
}

std::shared_ptr<vm::QemuGuest> Node::FindQemuVm(const std::string& id) const {
  std::lock_guard lock(qemu_mu_);
  auto it = qemu_vms_.find(id);
  return it == qemu_vms_.end() ? nullptr : it->second.guest;
}

Result<acp::VmRecord> Node::CreateQemuVm(const VmCreateRequest& req) {
  if (req.dirty_rate != 0 || req.seed != 0) {
    return Status(InvalidArgument(
        "dirty_rate and seed are for synthetic guests; a qemu guest's workload decides"));
  }
  const bool adopt = !req.qmp_socket.empty();
  if (adopt && (!req.kernel.empty() || !req.initrd.empty() || !req.append.empty())) {
    return Status(
        InvalidArgument("give either qmp_socket (adopt a running QEMU) or kernel, "
                        "initrd and append (start one), not both"));
  }
  if (!adopt && req.kernel.empty()) {
    return Status(
        InvalidArgument("a qemu VM needs a kernel (and usually an initrd), or the "
                        "qmp_socket of a running QEMU to adopt"));
  }
  if (store_->GetVm(req.id).ok()) return Status(AlreadyExists("vm " + req.id + " already exists"));
  {
    std::lock_guard lock(qemu_mu_);
    if (qemu_vms_.count(req.id)) return Status(AlreadyExists("vm " + req.id + " already exists"));
  }
  if (req.id[0] == '.') {
    return Status(InvalidArgument("a qemu vm id must not start with '.' (it names a directory)"));
  }
  const std::string run_dir = QemuRunDir(req.id);
  std::error_code ec;
  std::filesystem::create_directories(run_dir, ec);
  if (ec) return Status(Unavailable("cannot create " + run_dir + ": " + ec.message()));
  auto guest = StartOrAdopt(req, run_dir, accel_selector_);
  if (!guest.ok()) return guest.status();
  std::shared_ptr<vm::QemuGuest> qemu = std::move(guest).value();

  acp::VmRecord rec;
  rec.id = req.id;
  rec.node_id = config_.node_id;
  rec.state = acp::kVmRunning;
  rec.epoch = 1;
  rec.driver = "qemu";
  rec.memory_bytes = qemu->memory_bytes();
  rec.created_ms = clock_.WallMillis();
  // Adopted guests keep their directory for the spec only (the QMP socket is QEMU's own).
  Status st = WriteSpec(run_dir, SpecJson(req, rec.memory_bytes));
  if (st.ok()) st = store_->CreateVm(rec);
  if (!st.ok()) {
    if (!qemu->adopted()) (void)qemu->Quit();
    return st;
  }
  {
    std::lock_guard lock(qemu_mu_);
    qemu_vms_[rec.id] = LocalQemuVm{qemu, rec.epoch};
  }
  obs::LogInfo("vm", "vm created",
               {{"vm_id", rec.id},
                {"driver", "qemu"},
                {"memory_bytes", rec.memory_bytes},
                {"accel", qemu->accel()},
                {"accel_reason", qemu->accel_reason()},
                {"pid", qemu->pid()},
                {"adopted", qemu->adopted()}});
  return store_->GetVm(rec.id);
}

// A restarted node boots its started qemu VMs again from their spec (guest memory does not
// survive: QEMU died with the previous dwcpd) and adopts its adopted ones again.
void Node::RecoverQemuVm(const acp::VmRecord& vm) {
  auto mark_stopped = [&](const std::string& why) {
    acp::VmRecord stopped = vm;
    stopped.state = acp::kVmStopped;
    stopped.migration_id.clear();
    (void)store_->CompareAndSwapVm(vm, stopped);
    obs::LogError("vm", "cannot recover an owned qemu vm", {{"vm_id", vm.id}, {"error", why}});
  };
  auto req = ReadSpec(QemuRunDir(vm.id));
  if (!req.ok()) return mark_stopped(req.status().message());
  auto guest = StartOrAdopt(*req, QemuRunDir(vm.id), accel_selector_);
  if (!guest.ok()) return mark_stopped(guest.status().message());
  std::shared_ptr<vm::QemuGuest> qemu = std::move(guest).value();
  acp::VmRecord desired = vm;
  desired.state = acp::kVmRunning;
  desired.migration_id.clear();
  if (!store_->CompareAndSwapVm(vm, desired).ok()) {
    if (!qemu->adopted()) (void)qemu->Quit();
    return;  // changed meanwhile: not ours to run
  }
  {
    std::lock_guard lock(qemu_mu_);
    qemu_vms_[vm.id] = LocalQemuVm{qemu, vm.epoch};
  }
  obs::LogWarn("vm",
               qemu->adopted() ? "adopted an owned qemu vm again"
                               : "cold-booted an owned qemu vm: guest memory does not survive "
                                 "a node restart",
               {{"vm_id", vm.id}, {"epoch", vm.epoch}, {"previous_state", vm.state}});
}

void Node::CheckQemuVms() {
  std::map<std::string, LocalQemuVm> vms;
  {
    std::lock_guard lock(qemu_mu_);
    vms = qemu_vms_;
  }
  for (const auto& [id, local] : vms) {
    auto rec = store_->GetVm(id);
    if (!rec.ok() && rec.status().code() != StatusCode::kNotFound) continue;  // store hiccup
    const bool ours = rec.ok() && rec->node_id == config_.node_id && rec->epoch == local.epoch;
    const bool alive = local.guest->Alive();
    if (ours && alive) continue;
    {
      std::lock_guard lock(qemu_mu_);
      qemu_vms_.erase(id);
    }
    if (!ours) {
      // A VM runs only where the store says: stop this copy (an adopted QEMU is paused, not
      // ended: it is not ours to end).
      Status st = local.guest->adopted() ? local.guest->Pause() : local.guest->Quit();
      metrics_.CountError(obs::Component::kAcp, "fenced", "critical");
      obs::LogError("acp", "stopped a guest the store does not give to this node",
                    {{"vm_id", id},
                     {"driver", "qemu"},
                     {"local_epoch", local.epoch},
                     {"store_owner", rec.ok() ? rec->node_id : ""},
                     {"store_epoch", rec.ok() ? rec->epoch : 0},
                     {"stop_error", st.ok() ? "" : st.message()}});
      continue;
    }
    const std::string how = local.guest->adopted() ? std::string("its QMP connection closed")
                                                   : "QEMU " + local.guest->ExitDescription();
    acp::VmRecord stopped = *rec;
    stopped.state = acp::kVmStopped;
    (void)store_->CompareAndSwapVm(*rec, stopped);
    obs::LogError("vm", "qemu guest ended",
                  {{"vm_id", id},
                   {"how", how},
                   {"console_tail", vm::ReadFileTail(local.guest->console_path(), 300)}});
  }
}

void Node::StopQemuVms() {
  std::map<std::string, LocalQemuVm> vms;
  {
    std::lock_guard lock(qemu_mu_);
    vms.swap(qemu_vms_);
  }
  for (const auto& [id, local] : vms) {
    if (local.guest->adopted()) continue;  // destroying it disconnects; QEMU keeps running
    Status st = local.guest->Quit();
    if (!st.ok()) {
      obs::LogWarn("vm", "qemu guest did not quit cleanly",
                   {{"vm_id", id}, {"error", st.message()}});
    }
    if (!store_) continue;
    auto rec = store_->GetVm(id);
    if (!rec.ok() || rec->node_id != config_.node_id || rec->state != acp::kVmRunning) continue;
    acp::VmRecord stopped = *rec;
    stopped.state = acp::kVmStopped;
    (void)store_->CompareAndSwapVm(*rec, stopped);
  }
}

}  // namespace dwcp::node
