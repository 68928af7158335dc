// Fuzzes the control messages of a migration (proto/dwcp.proto, docs/protocol.md): the
// payload of a CONTROL frame is parsed as wire::Control, and each message a destination or
// source acts on goes through the same checks the engine runs (migration/control_checks.h),
// plus the W3C traceparent a MigrationBegin carries.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "acp/state_store.h"
#include "dwcp.pb.h"
#include "migration/control_checks.h"
#include "obs/trace/span_context.h"
#include "vm/guest.h"

namespace {

constexpr uint32_t kMine[] = {3, 1};

// What the destination's store says about the one migration the fuzzed peer may begin.
struct Store {
  dwcp::acp::VmRecord vm;
  dwcp::acp::MigrationRecord migration;
  Store() {
    vm.id = "vm-1";
    vm.node_id = "node-a";
    vm.state = dwcp::acp::kVmMigrating;
    vm.epoch = 7;
    vm.migration_id = "mig-1";
    vm.memory_bytes = 64 * dwcp::vm::kPageSize;
    migration.id = "mig-1";
    migration.vm_id = "vm-1";
    migration.source_node = "node-a";
    migration.dest_node = "node-b";
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Store store;
  dwcp::wire::Control c;
  if (!c.ParseFromArray(data, static_cast<int>(size))) return 0;
  switch (c.msg_case()) {
    case dwcp::wire::Control::kHello: {
      uint32_t v = dwcp::migration::NegotiateVersion(c.hello(), kMine);
      if (v != 0 && v != 1 && v != 3) std::abort();  // only a version both speak
      break;
    }
    case dwcp::wire::Control::kHelloAck: {
      auto v = dwcp::migration::AcceptedVersion(c.hello_ack(), kMine);
      if (v.ok() && *v != 1 && *v != 3) std::abort();  // only a version that was offered
      break;
    }
    case dwcp::wire::Control::kBegin: {
      const auto& b = c.begin();
      auto st = dwcp::migration::CheckMigrationBegin(b, store.vm, store.migration, "node-b");
      // Accepted only for the guest size the store records.
      if (st.ok() && b.memory_bytes() != store.vm.memory_bytes) std::abort();
      auto remote = dwcp::obs::trace::SpanContext::FromTraceparent(b.traceparent());
      if (remote) {
        // A parsed context prints back to the header it came from (lowercase hex).
        auto again = dwcp::obs::trace::SpanContext::FromTraceparent(remote->ToTraceparent());
        if (!again || again->ToTraceparent() != remote->ToTraceparent()) std::abort();
      }
      break;
    }
    default:
      break;
  }
  // Whatever parses serialises and parses back to the same message.
  std::string bytes;
  if (!c.SerializeToString(&bytes)) std::abort();
  dwcp::wire::Control back;
  if (!back.ParseFromString(bytes) || back.SerializeAsString() != bytes) std::abort();
  return 0;
}
