// The checks both ends of a migration make on the control messages that open it
// (docs/protocol.md, "Handshake and version negotiation", "A migration on the wire"). Pure
// and thread-safe: the engine runs them on what it receives, fuzz/control_fuzzer.cc on
// arbitrary bytes.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "acp/state_store.h"
#include "common/status.h"
#include "dwcp.pb.h"

namespace dwcp::migration {

// Destination: the highest version offered in `hello` that `mine` also lists; 0 when none.
uint32_t NegotiateVersion(const wire::Hello& hello, std::span<const uint32_t> mine);

// Source: the version the destination chose in `ack`. FailedPrecondition (with the
// destination's error) when it found none; Protocol error when it chose a version the
// source did not offer.
Result<uint8_t> AcceptedVersion(const wire::HelloAck& ack, std::span<const uint32_t> offered);

// Destination: whether `begin` matches what the store says about the migration: the VM is
// migrating from begin.source_node to `node_id` under begin.migration_id at begin.epoch,
// with the page size this build uses and the memory size the store records for the VM (so
// the peer cannot make the destination allocate a guest of a size it chooses).
// FailedPrecondition or InvalidArgument naming the mismatch otherwise.
Status CheckMigrationBegin(const wire::MigrationBegin& begin, const acp::VmRecord& vm,
                           const acp::MigrationRecord& migration, const std::string& node_id);

}  // namespace dwcp::migration
