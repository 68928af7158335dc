#include "obs/metrics.h"

#include <prometheus/text_serializer.h>

#include <sstream>

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
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};

}  // namespace

const char* ComponentName(Component c) {
  static const char* kNames[] = {"amst", "hde", "pba", "acp", "ass", "itp"};
  return kNames[static_cast<int>(c)];
}

const char* MigrationResultName(MigrationResult r) {
  static const char* kNames[] = {"success", "failed", "aborted"};
  return kNames[static_cast<int>(r)];
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
      throughput(BuildGauge()
                     .Name("dwcp_v3_throughput_bytes_per_second")
                     .Help("Logical migration bytes per second moved by this node over the "
                           "last second, sent plus received")
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
      commit_latency(BuildHistogram()
                         .Name("dwcp_v3_component_latency_seconds")
                         .Help("Latency of individual component operations")
                         .Register(*r)
                         .Add({{"component", "acp"}, {"operation", "commit"}}, kOpBuckets)),
      registry_(std::move(r)) {
  errors_family_ = &BuildCounter()
                        .Name("dwcp_v3_errors_total")
                        .Help("Errors by component, type and severity")
                        .Register(*registry_);
  api_family_ = &BuildCounter()
                     .Name("dwcp_v3_api_requests_total")
                     .Help("HTTP API requests by status code")
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
  for (int c = 0; c < kComponentCount; ++c) {
    latency_[c] =
        &lat.Add({{"component", ComponentName(static_cast<Component>(c))}}, kLatencyBuckets);
  }
}

prometheus::Counter& Metrics::migrations(MigrationResult result, int protocol_version) {
  return *migrations_[static_cast<int>(result)][protocol_version >= 3 ? 1 : 0];
}

void Metrics::CountError(Component component, std::string_view error_type,
                         std::string_view severity) {
  errors_family_
      ->Add({{"component", ComponentName(component)},
             {"error_type", std::string(error_type)},
             {"severity", std::string(severity)}})
      .Increment();
}

void Metrics::CountApiRequest(int http_status) {
  api_family_->Add({{"code", std::to_string(http_status)}}).Increment();
}

std::string Metrics::Serialize() const {
  prometheus::TextSerializer serializer;
  std::ostringstream out;
  serializer.Serialize(out, registry_->Collect());
  return out.str();
}

}  // namespace dwcp::obs
