#include "migration/control_checks.h"

#include <algorithm>

#include "vm/guest.h"

namespace dwcp::migration {

uint32_t NegotiateVersion(const wire::Hello& hello, std::span<const uint32_t> mine) {
  uint32_t version = 0;
  for (uint32_t offered : hello.versions()) {
    if (std::find(mine.begin(), mine.end(), offered) != mine.end()) {
      version = std::max(version, offered);
    }
  }
  return version;
}

Result<uint8_t> AcceptedVersion(const wire::HelloAck& ack, std::span<const uint32_t> offered) {
  if (ack.version() == 0) {
    // The destination says why: no common version, or it refuses this node (quarantine).
    return Status(FailedPrecondition(
        "destination refused the connection: " +
        (ack.error().empty() ? std::string("no common protocol version") : ack.error())));
  }
  if (std::find(offered.begin(), offered.end(), ack.version()) == offered.end()) {
    return Status(ProtocolError("destination chose protocol version " +
                                std::to_string(ack.version()) + ", which was not offered"));
  }
  return static_cast<uint8_t>(ack.version());
}

Status CheckMigrationBegin(const wire::MigrationBegin& b, const acp::VmRecord& vm,
                           const acp::MigrationRecord& mig, const std::string& node_id) {
  if (vm.state != acp::kVmMigrating || vm.migration_id != b.migration_id() ||
      vm.node_id != b.source_node() || vm.epoch != b.epoch() || mig.dest_node != node_id) {
    return FailedPrecondition("store does not show vm " + b.vm_id() + " migrating from " +
                              b.source_node() + " to " + node_id + " as " + b.migration_id());
  }
  if (b.page_size() != vm::kPageSize) {
    return InvalidArgument("unsupported page size " + std::to_string(b.page_size()));
  }
  if (b.memory_bytes() != vm.memory_bytes) {
    return FailedPrecondition("migration of vm " + b.vm_id() + " announces " +
                              std::to_string(b.memory_bytes()) + " bytes of memory, the store " +
                              std::to_string(vm.memory_bytes));
  }
  return Status::Ok();
}

}  // namespace dwcp::migration
