#include "obs/summary_history.h"

#include <algorithm>
#include <cmath>

namespace dwcp::obs {
namespace {

nlohmann::json NumberOrNull(double v) {
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
}

}  // namespace

SummaryHistory::SummaryHistory(SummaryHistoryConfig config) : config_(config) {}

void SummaryHistory::SetOrigin(int64_t started_ms) {
  std::lock_guard lock(mu_);
  if (!readings_.empty()) return;
  Reading zero;
  zero.t_ms = started_ms;
  readings_.push_back(std::move(zero));
}

bool SummaryHistory::Offer(const std::vector<prometheus::MetricFamily>& families, int64_t now_ms) {
  std::lock_guard lock(mu_);
  if (!readings_.empty() && now_ms - readings_.back().t_ms < config_.interval_ms) return false;
  Reading r;
  r.t_ms = now_ms;
  r.latency = HistogramOf(families, "dwcp_v3_migration_latency_seconds");
  r.migrations = SumOf(families, "dwcp_v3_migrations_total");
  r.hde_input_bytes = SumOf(families, "dwcp_v3_hde_input_bytes_total");
  r.network_bytes = SumOf(families, "dwcp_v3_network_bytes_total");
  r.anomalies = SumOf(families, "dwcp_v3_anomaly_detections_total");
  r.errors = SumByLabel(families, "dwcp_v3_errors_total", "component");
  if (!readings_.empty()) {
    // The base of the window: the newest reading at least a window old, else the oldest.
    while (readings_.size() > 1 && now_ms - readings_[1].t_ms >= config_.window_ms) {
      readings_.pop_front();
    }
    points_.push_back(PointLocked(r, families));
    while (points_.size() > config_.max_points) points_.pop_front();
  }
  readings_.push_back(std::move(r));
  return true;
}

nlohmann::json SummaryHistory::PointLocked(
    const Reading& now, const std::vector<prometheus::MetricFamily>& families) const {
  const Reading& base = readings_.front();  // a window ago, or the oldest there is
  const Reading& last = readings_.back();   // the previous point's reading
  const double window_s = static_cast<double>(now.t_ms - base.t_ms) / 1e3;
  const double interval_s = static_cast<double>(now.t_ms - last.t_ms) / 1e3;
  auto rate = [](double now_v, double then_v, double seconds) {
    return seconds > 0 ? std::max(0.0, now_v - then_v) / seconds : 0.0;
  };
  const HistogramCounts latency = now.latency.Minus(base.latency);
  nlohmann::json errors = nlohmann::json::object();
  for (const auto& [component, value] : now.errors) {
    auto it = base.errors.find(component);
    errors[component] = rate(value, it == base.errors.end() ? 0 : it->second, window_s);
  }
  nlohmann::json throughput = nlohmann::json::object();
  for (const auto& [transport, value] :
       SumByLabel(families, "dwcp_v3_throughput_bytes_per_second", "transport")) {
    throughput[transport] = value;
  }
  nlohmann::json amst = nlohmann::json::object();
  for (const auto& [mode, value] :
       SumByLabel(families, "dwcp_v3_amst_throughput_bytes_per_second", "mode")) {
    amst[mode] = value;
  }
  return {
      {"t_ms", now.t_ms},
      {"latency_seconds",
       {{"p50", NumberOrNull(latency.Quantile(0.50))},
        {"p95", NumberOrNull(latency.Quantile(0.95))},
        {"p99", NumberOrNull(latency.Quantile(0.99))},
        {"count", latency.total}}},
      {"migrations_per_minute", rate(now.migrations, base.migrations, window_s) * 60},
      {"throughput_bytes_per_second", throughput},
      {"amst_bytes_per_second", amst},
      {"hde_input_bytes_per_second", rate(now.hde_input_bytes, last.hde_input_bytes, interval_s)},
      {"network_bytes_per_second", rate(now.network_bytes, last.network_bytes, interval_s)},
      {"errors_per_second", errors},
      {"anomalies", std::max(0.0, now.anomalies - base.anomalies)},
  };
}

nlohmann::json SummaryHistory::ToJson() const {
  std::lock_guard lock(mu_);
  nlohmann::json points = nlohmann::json::array();
  for (const auto& p : points_) points.push_back(p);
  return {{"interval_seconds", static_cast<double>(config_.interval_ms) / 1e3},
          {"window_seconds", static_cast<double>(config_.window_ms) / 1e3},
          {"points", std::move(points)}};
}

}  // namespace dwcp::obs
