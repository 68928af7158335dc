// The JSON bodies of the HTTP API's mutating calls (docs/api.md), parsed and checked before
// the server acts on them. Pure and thread-safe: ApiServer calls them on request bodies,
// fuzz/api_body_fuzzer.cc on arbitrary bytes. Every error is InvalidArgument with the
// message the client gets.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"
#include "obs/log.h"

namespace dwcp::api {

// The body as a JSON object.
Result<nlohmann::json> ParseJsonObject(std::string_view body);

// POST /api/v1/vms. Fields absent from the body are nullopt (the server's defaults apply).
struct CreateVmBody {
  std::string id;
  std::optional<std::string> node;  // where to create it; absent: the receiving node
  std::optional<uint64_t> memory_bytes;
  std::optional<uint64_t> dirty_rate;  // bytes per second
  std::optional<uint64_t> seed;
  std::string driver = "synthetic";  // synthetic | qemu
  // qemu only (docs/qemu.md); empty when absent.
  std::string kernel, initrd, append, qmp_socket, accel, boot_marker;
};
Result<CreateVmBody> ParseCreateVmBody(std::string_view body);

// POST /api/v1/migrations. The -1 defaults mean "the engine's", as in MigrationRequest.
struct CreateMigrationBody {
  std::string vm;
  std::string to;
  uint32_t protocol = 3;         // 3 or 1
  bool protocol_pinned = false;  // the body named a protocol (else the rollout picks)
  int64_t downtime_budget_ms = -1;
  int64_t max_rounds = -1;
  int on_round_limit = -1;       // 0 abort, 1 force
  uint64_t bandwidth_limit = 0;  // bytes per second, 0 = unlimited
};
Result<CreateMigrationBody> ParseCreateMigrationBody(std::string_view body);

// POST /api/v1/rollout/advance and /rollback: optional {"region", "to", "note"}; an empty
// body is all defaults.
struct RolloutChangeBody {
  std::string region, to, note;
};
Result<RolloutChangeBody> ParseRolloutChangeBody(std::string_view body);

// PUT .../bandwidth: {"bandwidth_limit": "50MB/s" | bytes_per_second}; 0 = no cap.
Result<uint64_t> ParseBandwidthLimitBody(std::string_view body);

// PUT /api/v1/log-level: {"level": "debug" | "info" | "warn" | "error" | "fatal"}.
Result<obs::LogLevel> ParseLogLevelBody(std::string_view body);

}  // namespace dwcp::api
