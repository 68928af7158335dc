#include "obs/metrics.h"

#include <cassert>
#include <cstdlib>
#include <tuple>

#include "obs/log.h"

namespace dwcp::obs {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

// 0.1 s to 30 min: migrations of small idle guests to multi-GiB guests over a WAN.
const prometheus::Histogram::BucketBoundaries kLatencyBuckets = {
    0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800};
const prometheus::Histogram::BucketBoundaries kDowntimeBuckets = {
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2.5, 5, 10, 30};
const prometheus::Histogram::BucketBoundaries kRoundBuckets = {1, 2,  3,  4,  5,  6,
                                                               8, 10, 15, 20, 30, 50};
const prometheus::Histogram::BucketBoundaries kOpBuckets = {
    0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1};
// Logical bytes per wire byte of one batch: 1 = nothing saved.
const prometheus::Histogram::BucketBoundaries kRatioBuckets = {1, 1.1, 1.25, 1.5, 2,  3,
                                                               4, 6,   10,   20,  50, 100};

std::string Checked(Result<std::string> name) {
  if (!name.ok()) {
    LogError("obs", "invalid metric name", {{"error", name.status().ToString()}});
    std::abort();
  }
  return std::move(name).value();
}

class ComputedGauge final : public prometheus::Collectable {
 public:
  ComputedGauge(std::string name, std::string help, std::function<double()> read)
      : name_(std::move(name)), help_(std::move(help)), read_(std::move(read)) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    prometheus::MetricFamily f;
    f.name = name_;
    f.help = help_;
    f.type = prometheus::MetricType::Gauge;
    prometheus::ClientMetric m;
    m.gauge.value = read_();
    f.metric.push_back(m);
    return {f};
  }

 private:
  std::string name_, help_;
  std::function<double()> read_;
};

}  // namespace

const prometheus::Histogram::BucketBoundaries& RatioBuckets() { return kRatioBuckets; }
const prometheus::Histogram::BucketBoundaries& OperationBuckets() { return kOpBuckets; }

const char* ComponentName(Component c) {
  static const char* kNames[] = {"amst", "hde", "pba", "acp", "ass", "itp"};
  return kNames[static_cast<int>(c)];
}

std::optional<Component> ParseComponent(std::string_view name) {
  for (int c = 0; c < kComponentCount; ++c) {
    if (name == ComponentName(static_cast<Component>(c))) return static_cast<Component>(c);
  }
  return std::nullopt;
}

const char* MigrationResultName(MigrationResult r) {
  static const char* kNames[] = {"success", "failed", "aborted"};
  return kNames[static_cast<int>(r)];
}

Result<std::string> MetricName(std::optional<Component> component, std::string_view metric,
                               std::string_view unit) {
  bool ok =
      !metric.empty() && metric.front() >= 'a' && metric.front() <= 'z' && metric.back() != '_';
  for (char ch : metric) {
    ok = ok && ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_');
  }
  if (!ok) return Status(InvalidArgument("metric '" + std::string(metric) + "' is not snake_case"));
  bool known_unit = false;
  for (auto u : kMetricUnits) known_unit = known_unit || u == unit;
  if (!known_unit)
    return Status(InvalidArgument("unknown metric unit '" + std::string(unit) + "'"));
  std::string name = "dwcp_v3_";
  if (component) name += std::string(ComponentName(*component)) + "_";
  name += metric;
  if (!unit.empty() && !std::string_view(name).ends_with(std::string("_") + std::string(unit))) {
    name += "_" + std::string(unit);
  }
  return name;
}

Metrics::Metrics() : Metrics(std::make_shared<prometheus::Registry>()) {}

// Delegation keeps the reference members initialised from one registry.
Metrics::Metrics(std::shared_ptr<prometheus::Registry> r)
    : bytes_sent(BuildCounter()
                     .Name("dwcp_v3_bytes_transferred_total")
                     .Help("VM bytes moved by migrations (logical, before encoding)")
                     .Register(*r)
                     .Add({{"direction", "sent"}})),
      bytes_received(BuildCounter()
                         .Name("dwcp_v3_bytes_transferred_total")
                         .Help("VM bytes moved by migrations (logical, before encoding)")
                         .Register(*r)
                         .Add({{"direction", "received"}})),
      wire_sent(BuildCounter()
                    .Name("dwcp_v3_network_bytes_total")
                    .Help("Bytes on the wire of DWCP data connections, frame headers included")
                    .Register(*r)
                    .Add({{"direction", "sent"}})),
      wire_received(BuildCounter()
                        .Name("dwcp_v3_network_bytes_total")
                        .Help("Bytes on the wire of DWCP data connections, frame headers included")
                        .Register(*r)
                        .Add({{"direction", "received"}})),
      pages_zero(BuildCounter()
                     .Name("dwcp_v3_hde_pages_total")
                     .Help("Pages encoded by HDE, by encoding")
                     .Register(*r)
                     .Add({{"encoding", "zero"}})),
      pages_raw(BuildCounter()
                    .Name("dwcp_v3_hde_pages_total")
                    .Help("Pages encoded by HDE, by encoding")
                    .Register(*r)
                    .Add({{"encoding", "raw"}})),
      pages_dedup(BuildCounter()
                      .Name("dwcp_v3_hde_pages_total")
                      .Help("Pages encoded by HDE, by encoding")
                      .Register(*r)
                      .Add({{"encoding", "dedup"}})),
      pages_delta(BuildCounter()
                      .Name("dwcp_v3_hde_pages_total")
                      .Help("Pages encoded by HDE, by encoding")
                      .Register(*r)
                      .Add({{"encoding", "delta"}})),
      delta_base_hits(BuildCounter()
                          .Name("dwcp_v3_hde_delta_base_lookups_total")
                          .Help("HDE pages sent again (not as zero or dedup) whose previous "
                                "version was (hit) or was not (miss) available as a delta base")
                          .Register(*r)
                          .Add({{"result", "hit"}})),
      delta_base_misses(BuildCounter()
                            .Name("dwcp_v3_hde_delta_base_lookups_total")
                            .Help("HDE pages sent again (not as zero or dedup) whose previous "
                                  "version was (hit) or was not (miss) available as a delta base")
                            .Register(*r)
                            .Add({{"result", "miss"}})),
      hde_input_bytes(BuildCounter()
                          .Name("dwcp_v3_hde_input_bytes_total")
                          .Help("Guest bytes given to the HDE encoder")
                          .Register(*r)
                          .Add({})),
      hde_output_bytes(BuildCounter()
                           .Name("dwcp_v3_hde_output_bytes_total")
                           .Help("Encoded bytes the HDE encoder produced")
                           .Register(*r)
                           .Add({})),
      compression_v1(BuildHistogram()
                         .Name("dwcp_v3_compression_ratio")
                         .Help("Guest bytes per encoded byte of each page batch, by algorithm")
                         .Register(*r)
                         .Add({{"algorithm", "none"}}, kRatioBuckets)),
      compression_lz4(BuildHistogram()
                          .Name("dwcp_v3_compression_ratio")
                          .Help("Guest bytes per encoded byte of each page batch, by algorithm")
                          .Register(*r)
                          .Add({{"algorithm", "lz4"}}, kRatioBuckets)),
      compression_zstd(BuildHistogram()
                           .Name("dwcp_v3_compression_ratio")
                           .Help("Guest bytes per encoded byte of each page batch, by algorithm")
                           .Register(*r)
                           .Add({{"algorithm", "zstd"}}, kRatioBuckets)),
      encode_latency(BuildHistogram()
                         .Name("dwcp_v3_component_latency_seconds")
                         .Help("Latency of individual component operations")
                         .Register(*r)
                         .Add({{"component", "hde"}, {"operation", "encode_batch"}}, kOpBuckets)),
      commit_latency(BuildHistogram()
                         .Name("dwcp_v3_component_latency_seconds")
                         .Help("Latency of individual component operations")
                         .Register(*r)
                         .Add({{"component", "acp"}, {"operation", "commit"}}, kOpBuckets)),
      store_latency(BuildHistogram()
                        .Name("dwcp_v3_acp_store_latency_seconds")
                        .Help("Latency of state store transactions made by the node's health "
                              "checks and heartbeats")
                        .Register(*r)
                        .Add({}, kOpBuckets)),
      throughput(BuildGauge()
                     .Name("dwcp_v3_throughput_bytes_per_second")
                     .Help("Logical migration bytes per second moved by this node over the "
                           "last second, sent plus received")
                     .Register(*r)
                     .Add({{"transport", "tcp"}})),
      amst_streams(BuildGauge()
                       .Name("dwcp_v3_amst_active_streams")
                       .Help("Open AMST data streams, by transport")
                       .Register(*r)
                       .Add({{"transport", "tcp"}})),
      active_connections(BuildGauge()
                             .Name("dwcp_v3_active_connections")
                             .Help("Open DWCP data connections, inbound and outbound")
                             .Register(*r)
                             .Add({})),
      migrations_out(BuildGauge()
                         .Name("dwcp_v3_active_migrations")
                         .Help("Migrations in progress on this node")
                         .Register(*r)
                         .Add({{"direction", "outgoing"}})),
      migrations_in(BuildGauge()
                        .Name("dwcp_v3_active_migrations")
                        .Help("Migrations in progress on this node")
                        .Register(*r)
                        .Add({{"direction", "incoming"}})),
      vms_running(BuildGauge()
                      .Name("dwcp_v3_vms_running")
                      .Help("Guests running on this node")
                      .Register(*r)
                      .Add({})),
      cpu_percent(BuildGauge()
                      .Name("dwcp_v3_resource_utilization_percent")
                      .Help("Resource use of this dwcpd: cpu (share of all cores over the last "
                            "second), memory (resident share of host memory), goroutines (live "
                            "coroutine tasks as a share of the configured limit)")
                      .Register(*r)
                      .Add({{"resource_type", "cpu"}})),
      memory_percent(BuildGauge()
                         .Name("dwcp_v3_resource_utilization_percent")
                         .Help("Resource use of this dwcpd: cpu (share of all cores over the last "
                               "second), memory (resident share of host memory), goroutines (live "
                               "coroutine tasks as a share of the configured limit)")
                         .Register(*r)
                         .Add({{"resource_type", "memory"}})),
      tasks_percent(BuildGauge()
                        .Name("dwcp_v3_resource_utilization_percent")
                        .Help("Resource use of this dwcpd: cpu (share of all cores over the last "
                              "second), memory (resident share of host memory), goroutines (live "
                              "coroutine tasks as a share of the configured limit)")
                        .Register(*r)
                        .Add({{"resource_type", "goroutines"}})),
      tasks(BuildGauge()
                .Name("dwcp_v3_coroutine_tasks")
                .Help("Live coroutine tasks (the goroutine count of dwcpd)")
                .Register(*r)
                .Add({})),
      downtime(BuildHistogram()
                   .Name("dwcp_v3_migration_downtime_seconds")
                   .Help("Guest downtime of successful migrations, pause to resume")
                   .Register(*r)
                   .Add({}, kDowntimeBuckets)),
      rounds(BuildHistogram()
                 .Name("dwcp_v3_migration_rounds")
                 .Help("Pre-copy rounds per finished migration")
                 .Register(*r)
                 .Add({}, kRoundBuckets)),
      registry_(std::move(r)) {
  errors_family_ = &BuildCounter()
                        .Name("dwcp_v3_errors_total")
                        .Help("Errors by component, type and severity")
                        .Register(*registry_);
  // The errors an SRE alerts on exist at 0 from the start: a series born at its first error
  // would hide that error from rate() and increase() (it has no earlier sample).
  for (const auto& [component, type, severity] :
       std::initializer_list<std::tuple<const char*, const char*, const char*>>{
           {"amst", "protocol", "critical"},
           {"amst", "tls", "critical"},
           {"amst", "unavailable", "critical"},
           {"amst", "deadline_exceeded", "critical"},
           {"amst", "aborted", "warning"},
           {"hde", "digest_mismatch", "critical"},
           {"hde", "data_loss", "critical"},
           {"acp", "fenced", "critical"},
           {"acp", "failed_precondition", "critical"},
       }) {
    errors_family_->Add({{"component", component}, {"error_type", type}, {"severity", severity}});
  }
  api_family_ = &BuildCounter()
                     .Name("dwcp_v3_api_requests_total")
                     .Help("HTTP API requests by status code")
                     .Register(*registry_);
  limit_family_ = &BuildCounter()
                       .Name("dwcp_v3_limit_rejections_total")
                       .Help("Requests, connections, frames or migrations refused because a "
                             "configured limit was reached, by limit (docs/security.md)")
                       .Register(*registry_);
  auth_family_ = &BuildCounter()
                      .Name("dwcp_v3_auth_failures_total")
                      .Help("Credentials refused, by listener (api, pprof, data) and reason")
                      .Register(*registry_);
  health_family_ = &BuildGauge()
                        .Name("dwcp_v3_component_health")
                        .Help(
                            "Health of each component from its checks: 1 healthy, 0.5 "
                            "degraded, 0 down (docs/metrics.md)")
                        .Register(*registry_);
  auto& mig = BuildCounter()
                  .Name("dwcp_v3_migrations_total")
                  .Help("Finished migrations by result and wire protocol, counted by the source")
                  .Register(*registry_);
  for (int res = 0; res < kMigrationResultCount; ++res) {
    for (int p = 0; p < 2; ++p) {
      migrations_[res][p] =
          &mig.Add({{"result", MigrationResultName(static_cast<MigrationResult>(res))},
                    {"protocol", p == 0 ? "v1" : "v3"}});
    }
  }
  auto& lat = BuildHistogram()
                  .Name("dwcp_v3_migration_latency_seconds")
                  .Help(
                      "Total time of finished migrations; `component` names the component "
                      "that took the largest share of that migration's time")
                  .Register(*registry_);
  for (Component c : {Component::kAmst, Component::kHde, Component::kAcp}) {
    latency_[static_cast<int>(c)] = &lat.Add({{"component", ComponentName(c)}}, kLatencyBuckets);
  }
  auto& switches = CounterFamily(Component::kAmst, "mode_switches",
                                 "Peer links that switched into a link mode (datacenter, hybrid, "
                                 "internet), from measured RTT, bandwidth and loss");
  auto& links = GaugeFamily(Component::kAmst, "links", "", "Peer links by their current link mode");
  const char* kModes[] = {"datacenter", "hybrid", "internet"};
  auto& amst_rate = prometheus::BuildGauge()
                        .Name("dwcp_v3_amst_throughput_bytes_per_second")
                        .Help(
                            "Page data bytes per second on this node's DWCP data streams over "
                            "the last second, sent plus received, by transport and by the "
                            "link mode of the peer")
                        .Register(*registry_);
  for (int m = 0; m < 3; ++m) {
    mode_switches_[m] = &switches.Add({{"mode", kModes[m]}});
    links_in_mode_[m] = &links.Add({{"mode", kModes[m]}});
    amst_throughput_[m] = &amst_rate.Add({{"transport", "tcp"}, {"mode", kModes[m]}});
  }
  consensus_latency_ =
      &HistogramFamily(Component::kAcp, "consensus_latency", "seconds",
                       "Ownership transactions (compare-and-swap of a VM record) against the "
                       "state store: admission, commit, abort")
           .Add({}, kOpBuckets);
  quorum_healthy_ = &GaugeFamily(Component::kAcp, "quorum_healthy", "ratio",
                                 "State store members that answer, as a share of all members "
                                 "(SQLite: the one file; etcd: the cluster's members)")
                         .Add({});
  leader_elections_ = &CounterFamily(Component::kAcp, "leader_elections",
                                     "Times this node became the cluster leader (the "
                                     "store lease that runs cluster-wide duties)")
                           .Add({});
  leader_ = &GaugeFamily(Component::kAcp, "leader", "",
                         "1 while this node holds the cluster leader lease, else 0")
                 .Add({});
  byzantine_family_ = &CounterFamily(Component::kAcp, "byzantine_detections",
                                     "Peers that sent data or credentials that do not verify, "
                                     "by reason");
  for (const char* reason :
       {"digest_mismatch", "corrupt_batch", "bad_stream_token", "bad_certificate",
        "merkle_mismatch", "bad_signature", "missing_commitment", "stale_epoch",
        "owner_mismatch"}) {
    byzantine_family_->Add({{"reason", reason}});
  }
  quarantined_peers_ = &GaugeFamily(Component::kAcp, "quarantined_peers", "",
                                    "Peers this node refuses for a while after a Byzantine "
                                    "detection (docs/consensus.md)")
                            .Add({});
  stream_saturation_ = &prometheus::BuildGauge()
                            .Name("dwcp_v3_amst_stream_saturation_ratio")
                            .Help(
                                "Share of the last second the open data streams spent "
                                "writing (1 = the network is the bottleneck), by transport")
                            .Register(*registry_)
                            .Add({{"transport", "tcp"}});
  AddComputedGauge("dwcp_v3_hde_compression_ratio",
                   "Guest bytes per encoded byte over every batch HDE encoded on this node "
                   "(1 = no reduction; 0 before the first batch)",
                   [this] {
                     double out = hde_output_bytes.Value();
                     return out > 0 ? hde_input_bytes.Value() / out : 0.0;
                   });
  AddComputedGauge("dwcp_v3_hde_dedup_hit_ratio",
                   "Share of the non-zero pages HDE encoded on this node that it sent as "
                   "references to pages the destination already held (0 before the first)",
                   [this] {
                     double nonzero = pages_raw.Value() + pages_dedup.Value() + pages_delta.Value();
                     return nonzero > 0 ? pages_dedup.Value() / nonzero : 0.0;
                   });
  AddComputedGauge("dwcp_v3_hde_delta_hit_ratio",
                   "Share of the pages HDE sent again (not as zero or dedup) that went as deltas "
                   "against their previous version (0 before the first)",
                   [this] {
                     double again = delta_base_hits.Value() + delta_base_misses.Value();
                     return again > 0 ? pages_delta.Value() / again : 0.0;
                   });
  AddComputedGauge("dwcp_v3_hde_compression_ratio_percent",
                   "Share of guest bytes HDE saved on the wire over every batch it encoded on "
                   "this node: 100 * (1 - encoded / input)",
                   [this] {
                     double in = hde_input_bytes.Value();
                     return in > 0 ? 100.0 * (1.0 - hde_output_bytes.Value() / in) : 0.0;
                   });
}

prometheus::Family<prometheus::Counter>& Metrics::CounterFamily(std::optional<Component> c,
                                                                std::string_view metric,
                                                                const std::string& help) {
  return BuildCounter()
      .Name(Checked(MetricName(c, metric, "total")))
      .Help(help)
      .Register(*registry_);
}

prometheus::Family<prometheus::Gauge>& Metrics::GaugeFamily(std::optional<Component> c,
                                                            std::string_view metric,
                                                            std::string_view unit,
                                                            const std::string& help) {
  return BuildGauge().Name(Checked(MetricName(c, metric, unit))).Help(help).Register(*registry_);
}

prometheus::Family<prometheus::Histogram>& Metrics::HistogramFamily(std::optional<Component> c,
                                                                    std::string_view metric,
                                                                    std::string_view unit,
                                                                    const std::string& help) {
  return BuildHistogram()
      .Name(Checked(MetricName(c, metric, unit)))
      .Help(help)
      .Register(*registry_);
}

void Metrics::AddCollectable(std::shared_ptr<prometheus::Collectable> collectable) {
  std::lock_guard lock(collectables_mu_);
  collectables_.push_back(std::move(collectable));
}

void Metrics::AddComputedGauge(std::string name, std::string help, std::function<double()> read) {
  AddCollectable(
      std::make_shared<ComputedGauge>(std::move(name), std::move(help), std::move(read)));
}

std::vector<prometheus::MetricFamily> Metrics::Collect() const {
  auto families = registry_->Collect();
  std::lock_guard lock(collectables_mu_);
  for (const auto& c : collectables_) {
    auto more = c->Collect();
    families.insert(families.end(), std::make_move_iterator(more.begin()),
                    std::make_move_iterator(more.end()));
  }
  return families;
}

prometheus::Counter& Metrics::migrations(MigrationResult result, int protocol_version) {
  return *migrations_[static_cast<int>(result)][protocol_version >= 3 ? 1 : 0];
}

void Metrics::SetHealth(Component c, double value) {
  auto& slot = health_[static_cast<int>(c)];
  prometheus::Gauge* g = slot.load(std::memory_order_acquire);
  if (g == nullptr) {
    g = &health_family_->Add({{"component", ComponentName(c)}});  // same gauge on a race
    slot.store(g, std::memory_order_release);
  }
  g->Set(value);
}

void Metrics::CountError(Component component, std::string_view error_type,
                         std::string_view severity) {
  errors_family_
      ->Add({{"component", ComponentName(component)},
             {"error_type", std::string(error_type)},
             {"severity", std::string(severity)}})
      .Increment();
}

void Metrics::CountByzantine(std::string_view reason) {
  byzantine_family_->Add({{"reason", std::string(reason)}}).Increment();
}

void Metrics::CountApiRequest(int http_status) {
  api_family_->Add({{"code", std::to_string(http_status)}}).Increment();
}

void Metrics::CountLimitRejection(std::string_view limit) {
  limit_family_->Add({{"limit", std::string(limit)}}).Increment();
}

void Metrics::CountAuthFailure(std::string_view listener, std::string_view reason) {
  auth_family_->Add({{"listener", std::string(listener)}, {"reason", std::string(reason)}})
      .Increment();
}

}  // namespace dwcp::obs
