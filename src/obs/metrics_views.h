// Views of the one registry (STYLE.md rule 6): Prometheus text for /metrics and
// /metrics/<component>, and the JSON of /metrics/summary (docs/metrics.md).
#pragma once

#include <prometheus/metric_family.h>

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

// The value at quantile q (0..1) of a histogram family, summed over its series (optionally
// only those whose `label` equals `value`), interpolated within buckets the way PromQL's
// histogram_quantile does. NaN when it has no observations.
double HistogramQuantile(const std::vector<prometheus::MetricFamily>& families,
                         const std::string& name, double q, const std::string& label = "",
                         const std::string& value = "");

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
