// The node's one metric registry, the naming rule of the operator's guide (section 2.4), and
// the core stats of the migration path. Components declare their metrics once, here or
// through the family builders below, and keep references: the hot path never looks a
// metric up by name or takes a lock (prometheus-cpp counters and gauges are atomics).
//
// Adding a custom metric (the C++ counterpart of the guide's 2.3 example):
//
//   auto& my_metric = metrics.GaugeFamily(obs::Component::kHde, "my_custom_metric", "",
//                                         "Description of my metric");   //
//                                         dwcp_v3_hde_my_custom_metric
//   prometheus::Gauge& g = my_metric.Add({{"label1", "value1"}, {"label2", "value2"}});
//   g.Set(42.0);                                 // keep `g`; don't call Add() per event
//
// Names are dwcp_v3_{component}_{metric}_{unit}; CounterFamily requires the unit "total".
// Every family is visible on /metrics, on /metrics/<component> for its component, and in
// the /metrics/summary JSON where the summary uses it.
#pragma once

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace dwcp::obs {

// The guide's `component` label values.
enum class Component { kAmst = 0, kHde, kPba, kAcp, kAss, kItp };
inline constexpr int kComponentCount = 6;
const char* ComponentName(Component c);
// "amst" → kAmst; nullopt for anything else.
std::optional<Component> ParseComponent(std::string_view name);

enum class MigrationResult { kSuccess = 0, kFailed, kAborted };
inline constexpr int kMigrationResultCount = 3;
const char* MigrationResultName(MigrationResult r);

// Units a metric name may end in (guide 2.4: "include units in metric names").
inline constexpr std::array<std::string_view, 7> kMetricUnits = {
    "", "total", "seconds", "bytes", "percent", "ratio", "bytes_per_second"};

// "dwcp_v3_{component}_{metric}_{unit}" (component and unit optional). InvalidArgument when
// `metric` is not snake_case ([a-z][a-z0-9_]*) or the unit is not one of kMetricUnits.
Result<std::string> MetricName(std::optional<Component> component, std::string_view metric,
                               std::string_view unit);

// Component health values of dwcp_v3_component_health (docs/metrics.md).
inline constexpr double kHealthDown = 0;
inline constexpr double kHealthDegraded = 0.5;
inline constexpr double kHealthy = 1;

// Bucket boundaries of families that several components add series to: every series of a
// family must share them. RatioBuckets: dwcp_v3_compression_ratio and other ratios of
// bytes; OperationBuckets: dwcp_v3_component_latency_seconds and per-operation latencies.
const prometheus::Histogram::BucketBoundaries& RatioBuckets();
const prometheus::Histogram::BucketBoundaries& OperationBuckets();

class Metrics {
 public:
  Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  prometheus::Registry& registry() { return *registry_; }

  // Family builders that enforce the naming rule; a bad name is a programming error and
  // aborts. Registering the same name twice returns the same family.
  prometheus::Family<prometheus::Counter>& CounterFamily(std::optional<Component> c,
                                                         std::string_view metric,
                                                         const std::string& help);
  prometheus::Family<prometheus::Gauge>& GaugeFamily(std::optional<Component> c,
                                                     std::string_view metric, std::string_view unit,
                                                     const std::string& help);
  prometheus::Family<prometheus::Histogram>& HistogramFamily(std::optional<Component> c,
                                                             std::string_view metric,
                                                             std::string_view unit,
                                                             const std::string& help);

  // Families computed at scrape time (process_* and friends) join every view.
  void AddCollectable(std::shared_ptr<prometheus::Collectable> collectable);
  // An unlabelled gauge whose value `read` computes at every scrape (brpc PassiveStatus).
  // `read` must be thread-safe and cheap.
  void AddComputedGauge(std::string name, std::string help, std::function<double()> read);
  // Everything: the registry plus the collectables.
  std::vector<prometheus::MetricFamily> Collect() const;

  // dwcp_v3_errors_total{component,error_type,severity}.
  void CountError(Component component, std::string_view error_type,
                  std::string_view severity = "warning");
  // dwcp_v3_migrations_total{result,protocol}: one per migration, counted by the source.
  prometheus::Counter& migrations(MigrationResult result, int protocol_version);
  // dwcp_v3_migration_latency_seconds{component}: observed once per finished migration
  // with the component that took the largest share of its time.
  prometheus::Histogram& migration_latency(Component dominant) {
    return *latency_[static_cast<int>(dominant)];
  }
  // dwcp_v3_component_health{component}: set by the node's health checks; a component
  // appears once it has been checked (components not in this build never appear).
  void SetHealth(Component c, double value);
  // Link modes in amst::LinkMode order: datacenter, hybrid, internet.
  // dwcp_v3_amst_mode_switches_total{mode}: switches of a peer link into `mode`.
  prometheus::Counter& mode_switches(int mode) { return *mode_switches_[mode]; }
  // dwcp_v3_amst_links{mode}: peer links currently classified as `mode`.
  prometheus::Gauge& links_in_mode(int mode) { return *links_in_mode_[mode]; }
  // dwcp_v3_amst_throughput_bytes_per_second{transport="tcp",mode}: page data per second
  // with peers whose link is in `mode`.
  prometheus::Gauge& amst_throughput(int mode) { return *amst_throughput_[mode]; }
  // dwcp_v3_amst_stream_saturation_ratio{transport="tcp"}.
  prometheus::Gauge& stream_saturation() { return *stream_saturation_; }

  // ACP (docs/acp.md). dwcp_v3_acp_consensus_latency_seconds: each ownership transaction
  // (compare-and-swap of a VM record) against the state store.
  prometheus::Histogram& consensus_latency() { return *consensus_latency_; }
  // dwcp_v3_acp_quorum_healthy_ratio: store members that answer / members.
  prometheus::Gauge& quorum_healthy() { return *quorum_healthy_; }
  // dwcp_v3_acp_leader_elections_total: times this node became the cluster leader;
  // dwcp_v3_acp_leader: 1 while it is.
  prometheus::Counter& leader_elections() { return *leader_elections_; }
  prometheus::Gauge& leader() { return *leader_; }
  // dwcp_v3_acp_byzantine_detections_total{reason}: a peer sent something that does not
  // verify (digest_mismatch, corrupt_batch, bad_stream_token, bad_certificate,
  // merkle_mismatch, bad_signature, missing_commitment, stale_epoch, owner_mismatch).
  void CountByzantine(std::string_view reason);
  // dwcp_v3_acp_quarantined_peers: peers this node refuses after a Byzantine detection.
  prometheus::Gauge& quarantined_peers() { return *quarantined_peers_; }

  // dwcp_v3_api_requests_total{code}: HTTP API requests by status code.
  void CountApiRequest(int http_status);
  // dwcp_v3_limit_rejections_total{limit}: requests, connections, frames or migrations
  // refused because a configured limit was reached (docs/security.md lists the limits).
  void CountLimitRejection(std::string_view limit);
  // dwcp_v3_auth_failures_total{listener,reason}: credentials refused on a listener (api,
  // pprof, data): missing_token, wrong_token, bad_client_certificate, ...
  void CountAuthFailure(std::string_view listener, std::string_view reason);

  // Hot-path handles, resolved once at construction.
  prometheus::Counter& bytes_sent;          // dwcp_v3_bytes_transferred_total{direction="sent"}
  prometheus::Counter& bytes_received;      // ...{direction="received"}
  prometheus::Counter& wire_sent;           // dwcp_v3_network_bytes_total{direction="sent"}
  prometheus::Counter& wire_received;       // ...{direction="received"}
  prometheus::Counter& pages_zero;          // dwcp_v3_hde_pages_total{encoding="zero"}
  prometheus::Counter& pages_raw;           // dwcp_v3_hde_pages_total{encoding="raw"}
  prometheus::Counter& pages_dedup;         // ...{encoding="dedup"}: HDE references to held pages
  prometheus::Counter& pages_delta;         // ...{encoding="delta"}: HDE deltas
  prometheus::Counter& delta_base_hits;     // dwcp_v3_hde_delta_base_lookups_total{result="hit"}
  prometheus::Counter& delta_base_misses;   // ...{result="miss"}
  prometheus::Counter& hde_input_bytes;     // dwcp_v3_hde_input_bytes_total
  prometheus::Counter& hde_output_bytes;    // dwcp_v3_hde_output_bytes_total
  prometheus::Histogram& compression_v1;    // dwcp_v3_compression_ratio{algorithm="none"} (also
                                            // HDE batches sent without a codec)
  prometheus::Histogram& compression_lz4;   // ...{algorithm="lz4"}
  prometheus::Histogram& compression_zstd;  // ...{algorithm="zstd"}
  prometheus::Histogram& encode_latency;    // dwcp_v3_component_latency_seconds{hde,encode_batch}
  prometheus::Histogram& commit_latency;    // dwcp_v3_component_latency_seconds{acp,commit}
  prometheus::Histogram& store_latency;     // dwcp_v3_acp_store_latency_seconds
  prometheus::Gauge& throughput;            // dwcp_v3_throughput_bytes_per_second{transport="tcp"}
  prometheus::Gauge& amst_streams;          // dwcp_v3_amst_active_streams{transport="tcp"}
  prometheus::Gauge& active_connections;    // dwcp_v3_active_connections
  prometheus::Gauge& migrations_out;        // dwcp_v3_active_migrations{direction="outgoing"}
  prometheus::Gauge& migrations_in;         // dwcp_v3_active_migrations{direction="incoming"}
  prometheus::Gauge& vms_running;           // dwcp_v3_vms_running
  prometheus::Gauge& cpu_percent;           // dwcp_v3_resource_utilization_percent{cpu}
  prometheus::Gauge& memory_percent;        // ...{resource_type="memory"}
  prometheus::Gauge& tasks_percent;         // ...{resource_type="goroutines"}
  prometheus::Gauge& tasks;                 // dwcp_v3_coroutine_tasks
  prometheus::Histogram& downtime;          // dwcp_v3_migration_downtime_seconds
  prometheus::Histogram& rounds;            // dwcp_v3_migration_rounds

 private:
  explicit Metrics(std::shared_ptr<prometheus::Registry> registry);

  std::shared_ptr<prometheus::Registry> registry_;  // declared after the handles: built last
  prometheus::Family<prometheus::Counter>* errors_family_;
  prometheus::Family<prometheus::Counter>* api_family_;
  prometheus::Family<prometheus::Counter>* limit_family_;
  prometheus::Family<prometheus::Counter>* auth_family_;
  std::array<std::array<prometheus::Counter*, 2>, kMigrationResultCount> migrations_{};
  std::array<prometheus::Histogram*, kComponentCount> latency_{};
  std::array<prometheus::Counter*, 3> mode_switches_{};
  std::array<prometheus::Gauge*, 3> links_in_mode_{};
  std::array<prometheus::Gauge*, 3> amst_throughput_{};
  prometheus::Histogram* consensus_latency_ = nullptr;
  prometheus::Gauge* quorum_healthy_ = nullptr;
  prometheus::Counter* leader_elections_ = nullptr;
  prometheus::Gauge* leader_ = nullptr;
  prometheus::Gauge* quarantined_peers_ = nullptr;
  prometheus::Family<prometheus::Counter>* byzantine_family_ = nullptr;
  prometheus::Gauge* stream_saturation_ = nullptr;
  prometheus::Family<prometheus::Gauge>* health_family_;
  std::array<std::atomic<prometheus::Gauge*>, kComponentCount> health_{};
  mutable std::mutex collectables_mu_;
  std::vector<std::shared_ptr<prometheus::Collectable>> collectables_;
};

}  // namespace dwcp::obs
