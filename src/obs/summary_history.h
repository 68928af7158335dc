// The recent past of /metrics/summary, for the dashboard's charts: every `interval` the
// node's own metrics are read once and turned into one point of windowed rates and latency
// quantiles (GET /metrics/summary/history, docs/metrics.md). Memory is bounded: at most
// `max_points` points and the readings of one window.
//
// Thread-safe.
#pragma once

#include <prometheus/metric_family.h>

#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "obs/metrics_views.h"

namespace dwcp::obs {

struct SummaryHistoryConfig {
  int64_t interval_ms = 5000;  // one point per interval
  int64_t window_ms = 60000;   // rates and quantiles over this window
  size_t max_points = 180;     // 15 minutes at the default interval
};

class SummaryHistory {
 public:
  explicit SummaryHistory(SummaryHistoryConfig config = {});

  // Every counter was zero at `started_ms` (the process start): the first point then
  // counts what happened since, instead of needing a reading of its own as a base.
  // Call once, before the first Offer().
  void SetOrigin(int64_t started_ms);

  // Offers a reading of the registry taken at wall time `now_ms`; it becomes a point when
  // an interval has passed since the last one. Returns true when it did.
  bool Offer(const std::vector<prometheus::MetricFamily>& families, int64_t now_ms);

  // {"interval_seconds", "window_seconds", "points": [...]}, oldest point first.
  nlohmann::json ToJson() const;

 private:
  // The cumulative values a point is computed from.
  struct Reading {
    int64_t t_ms = 0;
    HistogramCounts latency;
    double migrations = 0;
    double hde_input_bytes = 0;
    double network_bytes = 0;
    double anomalies = 0;
    std::map<std::string, double> errors;  // by component
  };
  nlohmann::json PointLocked(const Reading& now,
                             const std::vector<prometheus::MetricFamily>& families) const;

  const SummaryHistoryConfig config_;
  mutable std::mutex mu_;
  std::deque<Reading> readings_;  // newest last; spans one window
  std::deque<nlohmann::json> points_;
};

}  // namespace dwcp::obs
