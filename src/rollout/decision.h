// The GO / NO-GO rule of the v1→v3 rollout (docs/rollout.md) and the deterministic choice of
// the protocol of an unpinned migration. Pure functions: no clock, no store, no metrics.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "rollout/rollout_config.h"

namespace dwcp::rollout {

// One finished migration of the region, as the state store recorded it.
struct MigrationSample {
  std::string id;
  int protocol = 3;                        // negotiated wire version: 1 or 3
  bool success = false;                    // completed (failed and aborted are not)
  double latency_seconds = 0;              // creation to end
  double throughput_bytes_per_second = 0;  // logical bytes per transfer second; 0 = unknown
  int64_t created_ms = 0;
  int64_t finished_ms = 0;
};

// A critical anomaly (src/obs/anomaly) the decision may count.
struct AnomalySample {
  int64_t wall_ms = 0;
  std::string anomaly_type;
  std::string migration_id;  // empty for node-wide series (errors, cpu, ...)
};

struct EvaluationInput {
  int64_t now_ms = 0;
  Stage stage;                              // the region's current stage
  int64_t stage_since_ms = 0;               // when it began
  std::vector<MigrationSample> migrations;  // finished migrations of the region, any age
  std::vector<AnomalySample> anomalies;     // critical detections, any age
};

enum class Decision { kPending = 0, kGo, kNoGo };
// "pending" | "go" | "no_go".
const char* DecisionName(Decision d);
// The value of dwcp_v3_rollout_decision: 1 GO, 0 NO-GO, 0.5 pending.
double DecisionValue(Decision d);

// What one protocol did over the window.
struct ProtocolStats {
  uint32_t migrations = 0;  // finished samples
  uint32_t succeeded = 0;
  double success_rate = 0;                     // succeeded / migrations; 0 without samples
  double latency_p50_seconds = 0;              // median over successful samples; 0 without
  double throughput_p50_bytes_per_second = 0;  // median over successful samples with a rate

  nlohmann::json ToJson() const;
};

struct Verdict {
  Decision decision = Decision::kPending;
  // Why: for NO-GO every violated rule, for pending what is missing, for GO the figures.
  std::vector<std::string> reasons;
  ProtocolStats v1, v3;
  uint32_t anomalies = 0;  // critical anomalies counted against v3

  double value() const { return DecisionValue(decision); }
};

// Judges the current stage. Samples: v1 migrations that finished within config.window;
// v3 migrations created at or after stage_since_ms that finished within the window (each
// stage is judged on its own traffic, so a rollback is not judged again on the data that
// caused it). Anomalies: critical ones since max(stage_since, now - window) that are not
// tied to a v1 migration of `migrations`. Rule, in order:
//  1. the v1 stage (0 %) has no v3 traffic: pending;
//  2. more than max_critical_anomalies anomalies: NO-GO;
//  3. with at least min_samples v1 samples, v3 failures that already make the success-rate
//     rule fail whatever the remaining v3 samples do: NO-GO (early);
//  4. fewer than min_samples samples of either protocol: pending;
//  5. v3 success rate < v1's - max_success_rate_drop, v3 median latency > v1's x
//     (1 + max_latency_increase), or v3 median throughput < v1's x (1 - max_throughput_drop):
//     NO-GO, one reason each;
//  6. otherwise GO.
Verdict Evaluate(const RolloutConfig& config, const EvaluationInput& input);

// The bucket of a VM, 0..9999: a stable hash of its id. An unpinned migration uses v3 iff
// bucket < percent x 100, so a VM keeps its protocol within a stage and a VM on v3 stays on
// v3 when the rollout advances.
uint32_t BucketOf(std::string_view vm_id);
bool UsesV3(uint32_t bucket, double percent);

}  // namespace dwcp::rollout
