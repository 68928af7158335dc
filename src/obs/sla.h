// SLA evaluation (guide 7.4, docs/sla.md): four objectives judged once per minute from the
// node's own metrics, exported as
//
//   dwcp_v3_sla_compliance{sla_type="latency|throughput|errors|availability|overall"}  0..1
//   dwcp_v3_sla_violations_total{sla_type="latency|throughput|errors|availability"}
//   dwcp_v3_sla_objective_violations_total{sla_type=...}
//
// A minute is bad for an objective when that objective was missed during it (definitions in
// SlaConfig). Compliance is the share of good minutes among the last `window` closed minutes.
// Every bad minute adds exactly 1 to dwcp_v3_sla_violations_total, to the series of its
// first violated objective in the order availability, errors, latency, throughput, so
// `sum(increase(dwcp_v3_sla_violations_total[30d]))` is the number of violation-minutes and
// the guide's error-budget query means what it says. dwcp_v3_sla_objective_violations_total
// counts each objective's bad minutes independently (a minute may count under several).
#pragma once

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/metric_family.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "obs/metrics.h"

namespace YAML {
class Node;
}

namespace dwcp::obs {

// The `sla_type` label values of the four objectives.
enum class SlaType { kLatency = 0, kThroughput, kErrors, kAvailability };
inline constexpr int kSlaTypeCount = 4;
// "latency" | "throughput" | "errors" | "availability".
const char* SlaTypeName(SlaType type);

// The objectives (the `sla:` block of dwcpd's YAML; keys in docs/sla.md). A minute is bad for
//  - latency:      the P99 of migrations finished in it exceeds latency_p99 (minutes without
//                  finished migrations are good). The P99 is interpolated within the buckets
//                  of dwcp_v3_migration_latency_seconds as PromQL does; when latency_p99 is a
//                  bucket bound (0.1 .. 1800 s) this is exactly "at least 99 % within it";
//  - throughput:   migrations were active for at least throughput_min_active of it and the
//                  logical bytes moved (sent + received) per active second were below
//                  throughput_min (0 turns the objective off);
//  - errors:       more than errors_max_per_minute errors (dwcp_v3_errors_total, every
//                  component and severity) were counted in it;
//  - availability: for more than availability_max_down of it some component's health was
//                  below availability_min_health, or the node did not evaluate at all (a gap
//                  of more than 10 s between ticks counts as down; a minute with no tick is bad).
struct SlaConfig {
  std::chrono::minutes window{60};  // the rolling compliance window, 1 min .. 30 days
  double latency_p99_seconds = 10;
  double throughput_min_bytes_per_second = 10e6;
  std::chrono::milliseconds throughput_min_active{10'000};
  double errors_max_per_minute = 5;
  double availability_min_health = kHealthDegraded;  // degraded still counts as up
  std::chrono::milliseconds availability_max_down{5'000};
};

// InvalidArgument naming the first out-of-range field.
Status ValidateSlaConfig(const SlaConfig& config);

// Reads the `sla:` mapping on top of `config` (keys not given keep their values) and
// validates the result. InvalidArgument, naming the key as `sla.<key>`, on an unknown,
// repeated or empty key, a malformed value or one out of range; `config` is then unspecified.
Status ParseSlaConfig(const YAML::Node& node, SlaConfig* config);

// What one tick needs from the node, read from a Metrics::Collect() snapshot.
struct SlaInputs {
  double errors_total = 0;             // sum of dwcp_v3_errors_total
  double bytes_transferred_total = 0;  // sum of dwcp_v3_bytes_transferred_total
  double active_migrations = 0;        // sum of dwcp_v3_active_migrations
  // dwcp_v3_migration_latency_seconds summed over its series: (upper bound, cumulative
  // count) in ascending order, +Inf last. Empty when the family is missing.
  std::vector<std::pair<double, double>> latency_buckets;
  double min_health = kHealthy;  // lowest dwcp_v3_component_health; 1 when none is set
  std::string least_healthy;     // its component; "" when all are healthy

  static SlaInputs FromFamilies(const std::vector<prometheus::MetricFamily>& families);
};

class SlaEvaluator {
 public:
  // Registers the SLA families in `metrics` and resolves every series; compliance starts at
  // 1. `config` must pass ValidateSlaConfig (asserted). `metrics` and `clock` must outlive
  // the evaluator. Minutes are counted from construction on clock.Now().
  SlaEvaluator(const SlaConfig& config, Metrics& metrics, const Clock& clock);
  SlaEvaluator(const SlaEvaluator&) = delete;
  SlaEvaluator& operator=(const SlaEvaluator&) = delete;

  // Call about once a second with the counters as they are now. Closes every minute that
  // ended since the last call: judges it, bumps the counters and refreshes compliance.
  // Thread-safe, but meant for one caller (the node's background loop).
  void Tick(const SlaInputs& inputs);

  // Compliance over the window as last exported: one objective, or all four together.
  // Thread-safe.
  double Compliance(SlaType type) const;
  double OverallCompliance() const;
  // Violation-minutes since construction: all (= the sum of dwcp_v3_sla_violations_total)
  // and per objective (= dwcp_v3_sla_objective_violations_total). Thread-safe.
  int64_t ViolationMinutes() const;
  int64_t ObjectiveViolationMinutes(SlaType type) const;

  // The "sla" member of /metrics/summary: objectives, compliance, violation-minutes, the
  // 30-day error budget as far as this process has seen it, the last closed minute's figures
  // and the most recent bad minutes (newest first). Thread-safe.
  nlohmann::json SlaSummary() const;

  const SlaConfig& config() const { return config_; }

 private:
  struct Snapshot {
    std::chrono::steady_clock::time_point at;
    double errors = 0, bytes = 0, active = 0;
    std::vector<std::pair<double, double>> latency;
  };
  struct Accumulated {
    double active_seconds = 0, active_bytes = 0, down_seconds = 0;
  };
  struct MinuteReport {
    int64_t start_wall_ms = 0;
    double finished = 0;
    double latency_p99 = 0;  // NaN when nothing finished
    double active_seconds = 0;
    double throughput = 0;  // NaN when nothing was active
    double errors = 0;
    double down_seconds = 0;
    std::string least_healthy;
    uint8_t violated = 0;  // bit per SlaType
  };

  int64_t MinuteOf(std::chrono::steady_clock::time_point t) const;
  std::chrono::steady_clock::time_point MinuteStart(int64_t minute) const;
  void CloseMinute(int64_t minute, const Snapshot& now, const Accumulated& acc,
                   const std::string& least_healthy);
  void CloseMissedMinute(int64_t minute);
  void Record(const MinuteReport& report);
  static nlohmann::json ReportJson(const MinuteReport& report);

  const SlaConfig config_;
  const Clock& clock_;
  const std::chrono::steady_clock::time_point start_;
  const int64_t start_wall_ms_;

  // Resolved once; index SlaType, compliance has "overall" at kSlaTypeCount.
  std::array<prometheus::Gauge*, kSlaTypeCount + 1> compliance_{};
  std::array<prometheus::Counter*, kSlaTypeCount> violations_{};
  std::array<prometheus::Counter*, kSlaTypeCount> objective_violations_{};

  mutable std::mutex mu_;
  bool started_ = false;
  Snapshot prev_;
  Snapshot open_;  // cumulative values when the open minute began
  int64_t open_minute_ = 0;
  Accumulated acc_;
  std::string least_healthy_;  // worst component seen down in the open minute
  // Violation bits of the last 30 days of closed minutes, a ring indexed by closed_.
  std::vector<uint8_t> flags_;
  int64_t closed_ = 0;
  int64_t violation_minutes_ = 0;
  std::array<int64_t, kSlaTypeCount> attributed_{};
  std::array<int64_t, kSlaTypeCount> objective_{};
  std::array<double, kSlaTypeCount + 1> compliance_value_{1, 1, 1, 1, 1};
  bool have_last_ = false;
  MinuteReport last_;
  std::deque<MinuteReport> recent_bad_;  // newest first
};

}  // namespace dwcp::obs
