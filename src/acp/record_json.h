// JSON encodings of the StateStore records, as the etcd store keeps them (docs/acp.md).
#pragma once

#include <string>

#include "acp/state_store.h"
#include "common/status.h"

namespace dwcp::acp {

// Every field of the record, named as in state_store.h. uint64 values round-trip bit for bit,
// doubles exactly. Thread-safe (pure functions).
std::string NodeToJson(const NodeRecord& node);
std::string VmToJson(const VmRecord& vm);
std::string MigrationToJson(const MigrationRecord& migration);
std::string RolloutToJson(const RolloutRecord& rollout);
std::string LeaseToJson(const Lease& lease);

// The inverse. A field that is missing keeps its default (records written by an older build);
// text that is not a JSON object, or a field of the wrong type, is DataLoss naming `what` (the
// key the value was read from) and the field.
Result<NodeRecord> NodeFromJson(const std::string& text, const std::string& what);
Result<VmRecord> VmFromJson(const std::string& text, const std::string& what);
Result<MigrationRecord> MigrationFromJson(const std::string& text, const std::string& what);
Result<RolloutRecord> RolloutFromJson(const std::string& text, const std::string& what);
Result<Lease> LeaseFromJson(const std::string& text, const std::string& what);

}  // namespace dwcp::acp
