#include "obs/metrics_views.h"

#include <prometheus/text_serializer.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <sstream>

namespace dwcp::obs {
namespace {

const prometheus::MetricFamily* Find(const std::vector<prometheus::MetricFamily>& families,
                                     const std::string& name) {
  for (const auto& f : families) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

std::string LabelOf(const prometheus::ClientMetric& m, const std::string& name) {
  for (const auto& l : m.label) {
    if (l.name == name) return l.value;
  }
  return "";
}

double ValueOf(const prometheus::MetricFamily& f, const prometheus::ClientMetric& m) {
  switch (f.type) {
    case prometheus::MetricType::Counter:
      return m.counter.value;
    case prometheus::MetricType::Gauge:
      return m.gauge.value;
    case prometheus::MetricType::Histogram:
      return static_cast<double>(m.histogram.sample_count);
    default:
      return m.untyped.value;
  }
}

double JsonNumber(double v) { return std::isfinite(v) ? v : 0; }

}  // namespace

std::string PrometheusText(const std::vector<prometheus::MetricFamily>& families) {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

std::vector<prometheus::MetricFamily> ComponentView(
    const std::vector<prometheus::MetricFamily>& families, Component component) {
  const std::string name = ComponentName(component);
  const std::string prefix = "dwcp_v3_" + name + "_";
  std::vector<prometheus::MetricFamily> out;
  for (const auto& f : families) {
    if (f.name.rfind(prefix, 0) == 0) {
      out.push_back(f);
      continue;
    }
    prometheus::MetricFamily subset = f;
    subset.metric.clear();
    for (const auto& m : f.metric) {
      if (LabelOf(m, "component") == name) subset.metric.push_back(m);
    }
    if (!subset.metric.empty()) out.push_back(std::move(subset));
  }
  return out;
}

HistogramCounts HistogramOf(const std::vector<prometheus::MetricFamily>& families,
                            const std::string& name, const std::string& label,
                            const std::string& value) {
  HistogramCounts out;
  const auto* f = Find(families, name);
  if (f == nullptr || f->type != prometheus::MetricType::Histogram) return out;
  for (const auto& m : f->metric) {
    if (!label.empty() && LabelOf(m, label) != value) continue;
    for (const auto& b : m.histogram.bucket) {
      out.cumulative[b.upper_bound] += static_cast<double>(b.cumulative_count);
    }
    out.total += static_cast<double>(m.histogram.sample_count);
  }
  return out;
}

HistogramCounts HistogramCounts::Minus(const HistogramCounts& earlier) const {
  HistogramCounts out = *this;
  for (auto& [bound, count] : out.cumulative) {
    auto it = earlier.cumulative.find(bound);
    if (it != earlier.cumulative.end()) count = std::max(0.0, count - it->second);
  }
  out.total = std::max(0.0, total - earlier.total);
  return out;
}

double HistogramCounts::Quantile(double q) const {
  if (total == 0) return std::nan("");
  const double rank = q * total;
  double prev_bound = 0, prev_count = 0;
  for (const auto& [bound, count] : cumulative) {
    if (count >= rank) {
      if (std::isinf(bound)) return prev_bound;  // as PromQL: the highest finite bound
      if (count == prev_count) return bound;
      return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count);
    }
    prev_bound = bound;
    prev_count = count;
  }
  return prev_bound;
}

double HistogramQuantile(const std::vector<prometheus::MetricFamily>& families,
                         const std::string& name, double q, const std::string& label,
                         const std::string& value) {
  return HistogramOf(families, name, label, value).Quantile(q);
}

std::map<std::string, double> SumByLabel(const std::vector<prometheus::MetricFamily>& families,
                                         const std::string& name, const std::string& label) {
  std::map<std::string, double> out;
  const auto* f = Find(families, name);
  if (f == nullptr) return out;
  for (const auto& m : f->metric) out[LabelOf(m, label)] += ValueOf(*f, m);
  return out;
}

double SumOf(const std::vector<prometheus::MetricFamily>& families, const std::string& name,
             const std::vector<std::pair<std::string, std::string>>& match) {
  const auto* f = Find(families, name);
  if (f == nullptr) return 0;
  double sum = 0;
  for (const auto& m : f->metric) {
    bool all = true;
    for (const auto& [k, v] : match) all = all && LabelOf(m, k) == v;
    if (all) sum += ValueOf(*f, m);
  }
  return sum;
}

nlohmann::json Summary(const std::vector<prometheus::MetricFamily>& families,
                       const SummaryContext& ctx) {
  using nlohmann::json;
  auto sum = [&](const std::string& name,
                 std::vector<std::pair<std::string, std::string>> match = {}) {
    return SumOf(families, name, match);
  };
  auto quantiles = [&](const std::string& name) {
    return json{{"p50", JsonNumber(HistogramQuantile(families, name, 0.50))},
                {"p95", JsonNumber(HistogramQuantile(families, name, 0.95))},
                {"p99", JsonNumber(HistogramQuantile(families, name, 0.99))},
                {"count", sum(name)}};
  };

  json by_component = json::object(), by_type = json::object(), health = json::object();
  if (const auto* errors = Find(families, "dwcp_v3_errors_total")) {
    for (const auto& m : errors->metric) {
      by_component[LabelOf(m, "component")] =
          by_component.value(LabelOf(m, "component"), 0.0) + m.counter.value;
      by_type[LabelOf(m, "error_type")] =
          by_type.value(LabelOf(m, "error_type"), 0.0) + m.counter.value;
    }
  }
  if (const auto* h = Find(families, "dwcp_v3_component_health")) {
    for (const auto& m : h->metric) health[LabelOf(m, "component")] = m.gauge.value;
  }
  json latency = quantiles("dwcp_v3_migration_latency_seconds");
  json dominant = json::object();
  for (Component c : {Component::kAmst, Component::kHde, Component::kAcp}) {
    double n = sum("dwcp_v3_migration_latency_seconds", {{"component", ComponentName(c)}});
    if (n > 0) dominant[ComponentName(c)] = n;
  }
  latency["dominant_component"] = dominant;
  const double sent = sum("dwcp_v3_bytes_transferred_total", {{"direction", "sent"}});
  const double hde_in = sum("dwcp_v3_hde_input_bytes_total");
  const double hde_out = sum("dwcp_v3_hde_output_bytes_total");
  return {
      {"node", ctx.node_id},
      {"migrations",
       {{"total", sum("dwcp_v3_migrations_total")},
        {"success", sum("dwcp_v3_migrations_total", {{"result", "success"}})},
        {"failed", sum("dwcp_v3_migrations_total", {{"result", "failed"}})},
        {"aborted", sum("dwcp_v3_migrations_total", {{"result", "aborted"}})},
        {"per_minute", ctx.migrations_per_minute},
        {"active_outgoing", sum("dwcp_v3_active_migrations", {{"direction", "outgoing"}})},
        {"active_incoming", sum("dwcp_v3_active_migrations", {{"direction", "incoming"}})}}},
      {"latency_seconds", latency},
      {"downtime_seconds", quantiles("dwcp_v3_migration_downtime_seconds")},
      {"throughput_bytes_per_second", sum("dwcp_v3_throughput_bytes_per_second")},
      {"bytes",
       {{"transferred_sent", sent},
        {"transferred_received",
         sum("dwcp_v3_bytes_transferred_total", {{"direction", "received"}})},
        {"network_sent", sum("dwcp_v3_network_bytes_total", {{"direction", "sent"}})},
        {"network_received", sum("dwcp_v3_network_bytes_total", {{"direction", "received"}})},
        {"hde_compression_ratio", hde_out > 0 ? hde_in / hde_out : 0}}},
      {"errors",
       {{"total", sum("dwcp_v3_errors_total")},
        {"by_component", by_component},
        {"by_type", by_type}}},
      {"health", health},
      {"resources",
       {{"cpu_percent", sum("dwcp_v3_resource_utilization_percent", {{"resource_type", "cpu"}})},
        {"memory_percent",
         sum("dwcp_v3_resource_utilization_percent", {{"resource_type", "memory"}})},
        {"goroutines_percent",
         sum("dwcp_v3_resource_utilization_percent", {{"resource_type", "goroutines"}})},
        {"coroutine_tasks", sum("dwcp_v3_coroutine_tasks")},
        {"resident_memory_bytes", sum("process_resident_memory_bytes")}}},
  };
}

}  // namespace dwcp::obs
