// Online anomaly detection on the series an SRE watches (guide 7.5, docs/anomaly.md).
//
// Each series keeps a sliding window of its recent samples; the baseline is their median and
// the scale their MAD (x 1.4826), floored per series so a quiet series does not alarm on
// noise. A sample's score is its distance from the baseline in scales, in the bad direction
// only (up for latency, down for throughput). An incident opens after `confirm` consecutive
// samples score at least warning_score (critical when they all reach critical_score), and
// closes after `clear` consecutive samples below clear_score. Opening an incident, or its
// escalation from warning to critical, is one detection: it adds 1 to
//
//   dwcp_v3_anomaly_detections_total{anomaly_type, severity="warning|critical"}
//
// and writes one WARN log line with the series, value, baseline, score and, for per-migration
// series, the migration's trace_id, vm_id and migration_id. A detection of a severity within
// `cooldown` of the series' last detection of that severity or higher is not counted.
// Outside an incident, samples enter the window clipped to baseline + warning_score scales
// on their bad side, so outliers barely move it while slow drift of normal load is
// followed; inside one they enter as they are, so a lasting new level becomes the baseline
// after about half a window and the incident closes.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/metric_family.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "obs/metrics.h"

namespace YAML {
class Node;
}

namespace dwcp::obs {

// The `anomaly_type` label values.
enum class AnomalyType {
  kLatencySpike = 0,
  kThroughputDrop,
  kErrorBurst,
  kCompressionDrop,
  kPredictionError,
  kConsensusLatency,
  kResourceSaturation,
};
inline constexpr int kAnomalyTypeCount = 7;
// "latency_spike", "throughput_drop", "error_burst", "compression_drop", "prediction_error",
// "consensus_latency", "resource_saturation".
const char* AnomalyTypeName(AnomalyType type);

enum class AnomalySeverity { kWarning = 0, kCritical };
const char* AnomalySeverityName(AnomalySeverity severity);  // "warning" | "critical"

// The watched series and where their samples come from.
enum class AnomalySeries {
  kMigrationLatency = 0,  // seconds, per migration (ObserveMigration)       → latency_spike
  kMigrationThroughput,   // bytes/s, per migration                           → throughput_drop
  kCompressionRatio,      // logical / wire bytes, per migration              → compression_drop
  kErrorRate,             // errors in the last 60 s, per tick (Tick)          → error_burst
  kPredictionError,       // PBA prediction error, per tick when given        → prediction_error
  kConsensusLatency,      // mean ACP store/commit latency of the tick, s     → consensus_latency
  kCpu,     // cpu percent, per tick                            → resource_saturation
  kMemory,  // memory percent, per tick                         → resource_saturation
};
inline constexpr int kAnomalySeriesCount = 8;
// "migration_latency", "migration_throughput", "compression_ratio", "error_rate",
// "prediction_error", "consensus_latency", "cpu", "memory" (also the YAML keys).
const char* AnomalySeriesName(AnomalySeries series);
AnomalyType AnomalyTypeOf(AnomalySeries series);
// True for series whose bad direction is down (throughput, compression ratio).
bool AnomalyIsDrop(AnomalySeries series);

struct AnomalySeriesParams {
  size_t window = 300;                  // samples in the baseline window
  size_t warmup = 60;                   // samples before the first detection (<= window)
  double min_deviation = 1;             // floor of the scale, in the series' unit (> 0)
  double min_relative_deviation = 0.1;  // floor of the scale as a share of |baseline|
  int confirm = 3;                      // consecutive anomalous samples that open an incident
  int clear = 5;                        // consecutive calm samples that close it
};

struct AnomalyConfig {
  double warning_score = 4;
  double critical_score = 8;
  double clear_score = 2;
  std::chrono::milliseconds cooldown{300'000};
  size_t recent_capacity = 100;  // detections kept for Recent()
  std::array<AnomalySeriesParams, kAnomalySeriesCount> series = DefaultSeriesParams();

  // The documented per-series defaults (docs/anomaly.md).
  static std::array<AnomalySeriesParams, kAnomalySeriesCount> DefaultSeriesParams();
};

// InvalidArgument naming the first bad field (needs 0 < clear < warning < critical scores).
Status ValidateAnomalyConfig(const AnomalyConfig& config);

// Reads the `anomaly:` mapping (warning_score, critical_score, clear_score, cooldown, and
// series.<name>.{window, warmup, min_deviation, min_relative_deviation, confirm, clear}) on
// top of `config`, then validates it. InvalidArgument naming the key on an unknown, repeated
// or empty key or a bad value; `config` is then unspecified.
Status ParseAnomalyConfig(const YAML::Node& node, AnomalyConfig* config);

// One finished migration. Feed successful migrations only: a failed one is an error (see
// kErrorRate), and its short or long duration says nothing about normal latency.
struct MigrationObservation {
  double latency_seconds = 0;              // start to finish; < 0 or NaN: not observed
  double throughput_bytes_per_second = 0;  // logical bytes per transfer second; <= 0: unknown
  double compression_ratio = 0;            // logical / wire bytes; <= 0: unknown
  std::string trace_id;                    // carried into the detection and its log line
  std::string vm_id;
  std::string migration_id;
};

// What one tick gives the detector. Unset values are skipped.
struct AnomalyTick {
  std::optional<double> errors_total;           // cumulative dwcp_v3_errors_total
  std::optional<double> consensus_seconds_sum;  // cumulative sum of ACP store/commit latency
  std::optional<double> consensus_count;        // cumulative count of those operations
  std::optional<double> cpu_percent;
  std::optional<double> memory_percent;
  std::optional<double> prediction_error;  // from PBA, once it exists

  // Everything but prediction_error, from a Metrics::Collect() snapshot: errors from
  // dwcp_v3_errors_total; consensus from dwcp_v3_acp_store_latency_seconds plus
  // dwcp_v3_component_latency_seconds{component="acp"}; cpu and memory from
  // dwcp_v3_resource_utilization_percent.
  static AnomalyTick FromFamilies(const std::vector<prometheus::MetricFamily>& families);
};

struct AnomalyDetection {
  int64_t wall_millis = 0;
  AnomalyType type = AnomalyType::kLatencySpike;
  AnomalySeverity severity = AnomalySeverity::kWarning;
  AnomalySeries series = AnomalySeries::kMigrationLatency;
  double value = 0;                           // the sample that confirmed the incident
  double baseline = 0;                        // the window's median before it
  double scale = 0;                           // the floored robust spread
  double score = 0;                           // (value - baseline) / scale, sign flipped for drops
  bool escalation = false;                    // a warning incident that became critical
  std::string trace_id, vm_id, migration_id;  // per-migration series only

  // The fields of the WARN log line and of one Recent() entry.
  nlohmann::json ToJson() const;
};

class AnomalyDetector {
 public:
  // Registers dwcp_v3_anomaly_detections_total with every anomaly_type x severity series at 0.
  // `config` must pass ValidateAnomalyConfig (asserted). `metrics` and `clock` must outlive
  // the detector.
  AnomalyDetector(const AnomalyConfig& config, Metrics& metrics, const Clock& clock);
  AnomalyDetector(const AnomalyDetector&) = delete;
  AnomalyDetector& operator=(const AnomalyDetector&) = delete;

  // A finished migration: one sample each for latency, throughput and compression ratio.
  // Thread-safe (the migration engine may call it from any thread).
  void ObserveMigration(const MigrationObservation& observation);
  void ObserveMigration(double latency_seconds, double throughput_bytes_per_second,
                        std::string_view trace_id, std::string_view vm_id);

  // About once a second: one sample for each per-tick series that has a value. Thread-safe.
  void Tick(const AnomalyTick& tick);

  // The last n detections, newest first (at most recent_capacity kept). Thread-safe.
  std::vector<AnomalyDetection> Detections(size_t n) const;
  // The same as a JSON array of AnomalyDetection::ToJson() with an RFC 3339 "timestamp":
  // the anomaly timeline of /metrics/summary and the dashboard. Thread-safe.
  nlohmann::json Recent(size_t n) const;
  // The "anomalies" member of /metrics/summary: detections by type and severity, each
  // series' baseline, scale, last score and whether an incident is open, and Recent(recent).
  nlohmann::json AnomalySummary(size_t recent = 20) const;

 private:
  struct SeriesState {
    std::deque<double> window;
    int run_anomalous = 0, run_critical = 0, run_calm = 0;
    bool open = false;
    AnomalySeverity open_severity = AnomalySeverity::kWarning;
    // Last counted detection per severity.
    std::array<std::optional<std::chrono::steady_clock::time_point>, 2> last_emit;
    double last_value = 0, baseline = 0, scale = 0, last_score = 0;
    int64_t samples = 0, suppressed = 0;
  };

  // Scores `value` against the series' window, updates the incident state and the window,
  // and counts a detection (appended to `out` for logging) when one is due. Requires mu_.
  void Sample(AnomalySeries series, double value, const MigrationObservation* migration,
              std::vector<AnomalyDetection>* out);
  // One WARN line per detection; called without mu_.
  static void LogDetections(const std::vector<AnomalyDetection>& detections);

  const AnomalyConfig config_;
  const Clock& clock_;
  std::array<std::array<prometheus::Counter*, 2>, kAnomalyTypeCount> counters_{};

  mutable std::mutex mu_;
  std::array<SeriesState, kAnomalySeriesCount> state_;
  std::deque<std::pair<std::chrono::steady_clock::time_point, double>> errors_;
  std::optional<std::pair<double, double>> consensus_prev_;  // (sum, count)
  std::deque<AnomalyDetection> recent_;                      // newest first
  std::array<std::array<int64_t, 2>, kAnomalyTypeCount> counts_{};
};

}  // namespace dwcp::obs
