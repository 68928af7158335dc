// Views of the one registry (STYLE.md rule 6): Prometheus text for /metrics and
// /metrics/<component>, and the JSON of /metrics/summary (docs/metrics.md).
#pragma once

#include <prometheus/metric_family.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "obs/metrics.h"

namespace dwcp::obs {

// Prometheus text exposition (format 0.0.4).
std::string PrometheusText(const std::vector<prometheus::MetricFamily>& families);

// The families of one component: those named dwcp_v3_<component>_*, plus the series of any
// other family whose `component` label is that component.
std::vector<prometheus::MetricFamily> ComponentView(
    const std::vector<prometheus::MetricFamily>& families, Component component);

// A histogram family's buckets summed over series: upper bound → cumulative count.
struct HistogramCounts {
  std::map<double, double> cumulative;
  double total = 0;  // observations

  // The observations since `earlier` (an older reading of the same histogram).
  HistogramCounts Minus(const HistogramCounts& earlier) const;
  // The value at quantile q (0..1), interpolated within buckets the way PromQL's
  // histogram_quantile does. NaN when there are no observations.
  double Quantile(double q) const;
};

// The buckets of histogram family `name`, summed over its series (optionally only those
// whose `label` equals `value`).
HistogramCounts HistogramOf(const std::vector<prometheus::MetricFamily>& families,
                            const std::string& name, const std::string& label = "",
                            const std::string& value = "");

// HistogramOf(...).Quantile(q).
double HistogramQuantile(const std::vector<prometheus::MetricFamily>& families,
                         const std::string& name, double q, const std::string& label = "",
                         const std::string& value = "");

// A counter or gauge family's series summed by the value of one label.
std::map<std::string, double> SumByLabel(const std::vector<prometheus::MetricFamily>& families,
                                         const std::string& name, const std::string& label);

// Sum of a counter or gauge family's series whose labels include all of `match`.
double SumOf(const std::vector<prometheus::MetricFamily>& families, const std::string& name,
             const std::vector<std::pair<std::string, std::string>>& match = {});

struct SummaryContext {
  std::string node_id;
  double migrations_per_minute = 0;  // finished migrations over the last minute
};

// The /metrics/summary document.
nlohmann::json Summary(const std::vector<prometheus::MetricFamily>& families,
                       const SummaryContext& context);

}  // namespace dwcp::obs
