// The node's one metric registry and the core stats of the migration path. Metric names and
// labels follow the operator's guide (section 2) and DESIGN.md: no unbounded label values.
// Components hold references handed out here; the hot path never looks a metric up by name.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <memory>
#include <string>
#include <string_view>

namespace dwcp::obs {

// The guide's `component` label values.
enum class Component { kAmst = 0, kHde, kPba, kAcp, kAss, kItp };
inline constexpr int kComponentCount = 6;
const char* ComponentName(Component c);

enum class MigrationResult { kSuccess = 0, kFailed, kAborted };
inline constexpr int kMigrationResultCount = 3;
const char* MigrationResultName(MigrationResult r);

// Thread-safe: prometheus-cpp metrics are atomic; CountError takes the family's lock and is
// meant for error paths only.
class Metrics {
 public:
  Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  prometheus::Registry& registry() { return *registry_; }
  std::shared_ptr<prometheus::Registry> shared_registry() { return registry_; }

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
  // dwcp_v3_api_requests_total{code}: HTTP API requests by status code.
  void CountApiRequest(int http_status);

  // Prometheus text exposition of the whole registry.
  std::string Serialize() const;

  // Hot-path handles, resolved once at construction.
  prometheus::Counter& bytes_sent;        // dwcp_v3_bytes_transferred_total{direction="sent"}
  prometheus::Counter& bytes_received;    // ...{direction="received"}
  prometheus::Counter& wire_sent;         // dwcp_v3_network_bytes_total{direction="sent"}
  prometheus::Counter& wire_received;     // ...{direction="received"}
  prometheus::Counter& pages_zero;        // dwcp_v3_hde_pages_total{encoding="zero"}
  prometheus::Counter& pages_raw;         // dwcp_v3_hde_pages_total{encoding="raw"}
  prometheus::Gauge& throughput;          // dwcp_v3_throughput_bytes_per_second{transport="tcp"}
  prometheus::Gauge& active_connections;  // dwcp_v3_active_connections
  prometheus::Gauge& migrations_out;      // dwcp_v3_active_migrations{direction="outgoing"}
  prometheus::Gauge& migrations_in;       // dwcp_v3_active_migrations{direction="incoming"}
  prometheus::Gauge& vms_running;         // dwcp_v3_vms_running
  prometheus::Histogram& downtime;        // dwcp_v3_migration_downtime_seconds
  prometheus::Histogram& rounds;          // dwcp_v3_migration_rounds
  prometheus::Histogram& commit_latency;  // dwcp_v3_component_latency_seconds{acp,commit}

 private:
  explicit Metrics(std::shared_ptr<prometheus::Registry> registry);

  std::shared_ptr<prometheus::Registry> registry_;  // declared after the handles: built last
  prometheus::Family<prometheus::Counter>* errors_family_;
  prometheus::Family<prometheus::Counter>* api_family_;
  std::array<std::array<prometheus::Counter*, 2>, kMigrationResultCount> migrations_{};
  std::array<prometheus::Histogram*, kComponentCount> latency_{};
};

}  // namespace dwcp::obs
