// The `rollout:` block of dwcpd's configuration (docs/rollout.md): the stages of the v1→v3
// rollout, the GO / NO-GO rule's thresholds, the automatic actions and the webhook secret.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace YAML {
class Node;
}

namespace dwcp::rollout {

// One step of the rollout: unpinned migrations use v3 with probability percent / 100.
struct Stage {
  std::string name;
  double percent = 0;
};

// The stage every list starts with: no v3 at all. Not configurable, always index 0.
inline constexpr char kV1StageName[] = "v1";

struct RolloutConfig {
  // The configured stages in rollout order, strictly increasing percent in (0, 100]. The
  // controller puts {"v1", 0} in front of them (StageList).
  std::vector<Stage> stages = {{"canary", 5}, {"early", 25}, {"majority", 50}, {"full", 100}};
  // The stage a region starts at when the store has no record for it yet: "v1" or a
  // configured stage name. Default: the last stage (a new cluster has no v1 fleet to protect;
  // a cluster upgrading from v1 sets "canary", or "v1" to start by hand).
  std::string initial_stage;  // empty: the last configured stage
  // The comparison window: a migration is a sample while it finished within it.
  std::chrono::milliseconds window{15 * 60'000};
  // Finished migrations per protocol before GO or NO-GO can be said on the comparison.
  uint32_t min_samples = 10;
  // A GO must hold this long, without interruption, before the next stage starts.
  std::chrono::milliseconds go_period{10 * 60'000};
  bool auto_advance = true;
  bool auto_rollback = true;
  // NO-GO thresholds, v3 against v1 over the window:
  double max_success_rate_drop = 0.05;  // v3 success rate below v1's minus this (0..1)
  double max_latency_increase = 0.5;    // v3 median latency above v1's x (1 + this)
  double max_throughput_drop = 0.25;    // v3 median throughput below v1's x (1 - this), [0, 1)
  // Critical anomalies (src/obs/anomaly) since the stage began, not tied to a v1 migration,
  // beyond which the decision is NO-GO.
  uint32_t max_critical_anomalies = 0;
  // How often the controller evaluates (the node's background loop ticks once a second).
  std::chrono::milliseconds interval{5'000};
  // File holding the shared secret Alertmanager presents as a bearer token on
  // POST /api/v1/rollback. Empty: the webhook refuses every call.
  std::string webhook_token_file;
};

// InvalidArgument naming the first bad field as `rollout.<key>`.
Status ValidateRolloutConfig(const RolloutConfig& config);

// Reads the `rollout:` mapping on top of `config` (keys not given keep their values) and
// validates the result. InvalidArgument naming the key on an unknown, repeated or empty key,
// a malformed value or one out of range; `config` is then unspecified.
Status ParseRolloutConfig(const YAML::Node& node, RolloutConfig* config);

// {"v1", 0} followed by config.stages: index 0 is v1 only, the last index the full rollout.
std::vector<Stage> StageList(const RolloutConfig& config);
// The index in `stages` of the stage named `name`; nullopt when there is none.
std::optional<size_t> StageIndex(const std::vector<Stage>& stages, std::string_view name);
// The index of the initial stage (config.initial_stage, default the last).
size_t InitialStageIndex(const RolloutConfig& config);

}  // namespace dwcp::rollout
