#include "obs/anomaly.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <set>

#include "obs/log.h"
#include "obs/metrics_views.h"
#include "obs/yaml_read.h"

namespace dwcp::obs {
namespace {

using std::chrono::steady_clock;

constexpr double kMadToSigma = 1.4826;  // MAD of a normal distribution → its sigma
constexpr auto kErrorWindow = std::chrono::seconds(60);

// Median of `v` (the upper one for even sizes); reorders `v`.
double Median(std::vector<double>& v) {
  auto mid = v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2);
  std::nth_element(v.begin(), mid, v.end());
  return *mid;
}

std::string LabelOf(const prometheus::ClientMetric& m, const std::string& name) {
  for (const auto& l : m.label) {
    if (l.name == name) return l.value;
  }
  return "";
}

Status ParseSeriesParams(const YAML::Node& node, const std::string& prefix,
                         AnomalySeriesParams* p) {
  namespace yr = yaml_read;
  if (!node.IsMap()) return InvalidArgument("config key '" + prefix + "' must be a mapping");
  std::set<std::string> seen;
  for (auto it = node.begin(); it != node.end(); ++it) {
    std::string k;
    DWCP_RETURN_IF_ERROR(yr::Key(it->first, prefix, &seen, &k));
    const std::string key = prefix + "." + k;
    const YAML::Node v = it->second;  // a copy: it->second lives in a temporary
    if (k == "window") {
      DWCP_RETURN_IF_ERROR(yr::Scalar(v, key, &p->window));
    } else if (k == "warmup") {
      DWCP_RETURN_IF_ERROR(yr::Scalar(v, key, &p->warmup));
    } else if (k == "min_deviation") {
      DWCP_RETURN_IF_ERROR(yr::Scalar(v, key, &p->min_deviation));
    } else if (k == "min_relative_deviation") {
      DWCP_RETURN_IF_ERROR(yr::Scalar(v, key, &p->min_relative_deviation));
    } else if (k == "confirm") {
      DWCP_RETURN_IF_ERROR(yr::Scalar(v, key, &p->confirm));
    } else if (k == "clear") {
      DWCP_RETURN_IF_ERROR(yr::Scalar(v, key, &p->clear));
    } else {
      return InvalidArgument("unknown config key '" + key + "'");
    }
  }
  return Status::Ok();
}

}  // namespace

const char* AnomalyTypeName(AnomalyType type) {
  static const char* kNames[] = {"latency_spike",      "throughput_drop",  "error_burst",
                                 "compression_drop",   "prediction_error", "consensus_latency",
                                 "resource_saturation"};
  return kNames[static_cast<int>(type)];
}

const char* AnomalySeverityName(AnomalySeverity severity) {
  return severity == AnomalySeverity::kCritical ? "critical" : "warning";
}

const char* AnomalySeriesName(AnomalySeries series) {
  static const char* kNames[] = {"migration_latency",
                                 "migration_throughput",
                                 "compression_ratio",
                                 "error_rate",
                                 "prediction_error",
                                 "consensus_latency",
                                 "cpu",
                                 "memory"};
  return kNames[static_cast<int>(series)];
}

AnomalyType AnomalyTypeOf(AnomalySeries series) {
  switch (series) {
    case AnomalySeries::kMigrationLatency:
      return AnomalyType::kLatencySpike;
    case AnomalySeries::kMigrationThroughput:
      return AnomalyType::kThroughputDrop;
    case AnomalySeries::kCompressionRatio:
      return AnomalyType::kCompressionDrop;
    case AnomalySeries::kErrorRate:
      return AnomalyType::kErrorBurst;
    case AnomalySeries::kPredictionError:
      return AnomalyType::kPredictionError;
    case AnomalySeries::kConsensusLatency:
      return AnomalyType::kConsensusLatency;
    case AnomalySeries::kCpu:
    case AnomalySeries::kMemory:
      return AnomalyType::kResourceSaturation;
  }
  return AnomalyType::kLatencySpike;
}

bool AnomalyIsDrop(AnomalySeries series) {
  return series == AnomalySeries::kMigrationThroughput ||
         series == AnomalySeries::kCompressionRatio;
}

std::array<AnomalySeriesParams, kAnomalySeriesCount> AnomalyConfig::DefaultSeriesParams() {
  std::array<AnomalySeriesParams, kAnomalySeriesCount> p;
  auto set = [&](AnomalySeries s, size_t window, size_t warmup, double min_dev, double min_rel,
                 int confirm, int clear) {
    p[static_cast<int>(s)] = {window, warmup, min_dev, min_rel, confirm, clear};
  };
  // Per migration: a baseline of the last 50 migrations, two in a row to open an incident.
  set(AnomalySeries::kMigrationLatency, 50, 10, 0.05, 0.15, 2, 3);
  set(AnomalySeries::kMigrationThroughput, 50, 10, 1e6, 0.10, 2, 3);
  set(AnomalySeries::kCompressionRatio, 50, 10, 0.02, 0.05, 2, 3);
  // Per tick: five minutes of baseline, three seconds in a row to open an incident.
  set(AnomalySeries::kErrorRate, 300, 60, 3, 0.25, 3, 5);
  set(AnomalySeries::kPredictionError, 300, 60, 0.02, 0.20, 3, 5);
  set(AnomalySeries::kConsensusLatency, 300, 60, 0.005, 0.50, 3, 5);
  set(AnomalySeries::kCpu, 300, 60, 5, 0.10, 3, 5);
  set(AnomalySeries::kMemory, 300, 60, 2, 0.05, 3, 5);
  return p;
}

Status ValidateAnomalyConfig(const AnomalyConfig& c) {
  if (!(c.clear_score > 0 && c.clear_score < c.warning_score &&
        c.warning_score < c.critical_score && std::isfinite(c.critical_score))) {
    return InvalidArgument(
        "anomaly scores must satisfy 0 < clear_score < warning_score < critical_score");
  }
  if (c.cooldown.count() < 0) return InvalidArgument("anomaly.cooldown must be >= 0");
  if (c.recent_capacity == 0) return InvalidArgument("anomaly recent_capacity must be > 0");
  for (int i = 0; i < kAnomalySeriesCount; ++i) {
    const auto& p = c.series[i];
    const std::string key =
        std::string("anomaly.series.") + AnomalySeriesName(static_cast<AnomalySeries>(i));
    if (p.window < 5 || p.window > 100'000) {
      return InvalidArgument(key + ".window must be between 5 and 100000 samples");
    }
    if (p.warmup < 3 || p.warmup > p.window) {
      return InvalidArgument(key + ".warmup must be between 3 and the window");
    }
    if (!(p.min_deviation > 0) || !std::isfinite(p.min_deviation)) {
      return InvalidArgument(key + ".min_deviation must be > 0");
    }
    if (!(p.min_relative_deviation >= 0) || !std::isfinite(p.min_relative_deviation)) {
      return InvalidArgument(key + ".min_relative_deviation must be >= 0");
    }
    if (p.confirm < 1 || p.confirm > 1000) {
      return InvalidArgument(key + ".confirm must be between 1 and 1000");
    }
    if (p.clear < 1 || p.clear > 1000) {
      return InvalidArgument(key + ".clear must be between 1 and 1000");
    }
  }
  return Status::Ok();
}

Status ParseAnomalyConfig(const YAML::Node& node, AnomalyConfig* c) {
  namespace yr = yaml_read;
  if (node.IsNull()) return ValidateAnomalyConfig(*c);
  if (!node.IsMap()) return InvalidArgument("config key 'anomaly' must be a mapping");
  std::set<std::string> seen;
  for (auto it = node.begin(); it != node.end(); ++it) {
    std::string k;
    DWCP_RETURN_IF_ERROR(yr::Key(it->first, "anomaly", &seen, &k));
    const std::string key = "anomaly." + k;
    const YAML::Node v = it->second;  // a copy: it->second lives in a temporary
    if (k == "warning_score") {
      DWCP_RETURN_IF_ERROR(yr::Scalar(v, key, &c->warning_score));
    } else if (k == "critical_score") {
      DWCP_RETURN_IF_ERROR(yr::Scalar(v, key, &c->critical_score));
    } else if (k == "clear_score") {
      DWCP_RETURN_IF_ERROR(yr::Scalar(v, key, &c->clear_score));
    } else if (k == "cooldown") {
      int64_t ms = 0;
      DWCP_RETURN_IF_ERROR(yr::DurationMillis(v, key, &ms));
      c->cooldown = std::chrono::milliseconds(ms);
    } else if (k == "series") {
      if (!v.IsMap()) return InvalidArgument("config key '" + key + "' must be a mapping");
      std::set<std::string> seen_series;
      for (auto s = v.begin(); s != v.end(); ++s) {
        std::string name;
        DWCP_RETURN_IF_ERROR(yr::Key(s->first, key, &seen_series, &name));
        int index = -1;
        for (int i = 0; i < kAnomalySeriesCount; ++i) {
          if (name == AnomalySeriesName(static_cast<AnomalySeries>(i))) index = i;
        }
        if (index < 0) return InvalidArgument("unknown config key '" + key + "." + name + "'");
        DWCP_RETURN_IF_ERROR(ParseSeriesParams(s->second, key + "." + name, &c->series[index]));
      }
    } else {
      return InvalidArgument("unknown config key '" + key + "'");
    }
  }
  return ValidateAnomalyConfig(*c);
}

AnomalyTick AnomalyTick::FromFamilies(const std::vector<prometheus::MetricFamily>& families) {
  AnomalyTick t;
  t.errors_total = SumOf(families, "dwcp_v3_errors_total");
  double sum = 0, count = 0;
  bool consensus = false;
  for (const auto& f : families) {
    if (f.type == prometheus::MetricType::Histogram &&
        (f.name == "dwcp_v3_acp_store_latency_seconds" ||
         f.name == "dwcp_v3_component_latency_seconds")) {
      for (const auto& m : f.metric) {
        if (f.name == "dwcp_v3_component_latency_seconds" && LabelOf(m, "component") != "acp") {
          continue;
        }
        consensus = true;
        sum += m.histogram.sample_sum;
        count += static_cast<double>(m.histogram.sample_count);
      }
    } else if (f.name == "dwcp_v3_resource_utilization_percent") {
      for (const auto& m : f.metric) {
        const std::string r = LabelOf(m, "resource_type");
        if (r == "cpu") t.cpu_percent = m.gauge.value;
        if (r == "memory") t.memory_percent = m.gauge.value;
      }
    }
  }
  if (consensus) {
    t.consensus_seconds_sum = sum;
    t.consensus_count = count;
  }
  return t;
}

nlohmann::json AnomalyDetection::ToJson() const {
  nlohmann::json j = {{"anomaly_type", AnomalyTypeName(type)},
                      {"severity", AnomalySeverityName(severity)},
                      {"series", AnomalySeriesName(series)},
                      {"value", value},
                      {"baseline", baseline},
                      {"scale", scale},
                      {"score", std::isfinite(score) ? score : 1e9}};
  if (escalation) j["escalation"] = true;
  if (!trace_id.empty()) j["trace_id"] = trace_id;
  if (!vm_id.empty()) j["vm_id"] = vm_id;
  if (!migration_id.empty()) j["migration_id"] = migration_id;
  return j;
}

AnomalyDetector::AnomalyDetector(const AnomalyConfig& config, Metrics& metrics, const Clock& clock)
    : config_(config), clock_(clock) {
  assert(ValidateAnomalyConfig(config_).ok());
  auto& family = metrics.CounterFamily(
      std::nullopt, "anomaly_detections",
      "Anomalies detected on this node's series, by type and severity; one per incident "
      "(docs/anomaly.md)");
  for (int t = 0; t < kAnomalyTypeCount; ++t) {
    for (auto s : {AnomalySeverity::kWarning, AnomalySeverity::kCritical}) {
      counters_[t][static_cast<int>(s)] =
          &family.Add({{"anomaly_type", AnomalyTypeName(static_cast<AnomalyType>(t))},
                       {"severity", AnomalySeverityName(s)}});
    }
  }
}

void AnomalyDetector::ObserveMigration(const MigrationObservation& o) {
  std::vector<AnomalyDetection> found;
  {
    std::lock_guard lock(mu_);
    if (std::isfinite(o.latency_seconds) && o.latency_seconds >= 0) {
      Sample(AnomalySeries::kMigrationLatency, o.latency_seconds, &o, &found);
    }
    if (std::isfinite(o.throughput_bytes_per_second) && o.throughput_bytes_per_second > 0) {
      Sample(AnomalySeries::kMigrationThroughput, o.throughput_bytes_per_second, &o, &found);
    }
    if (std::isfinite(o.compression_ratio) && o.compression_ratio > 0) {
      Sample(AnomalySeries::kCompressionRatio, o.compression_ratio, &o, &found);
    }
  }
  LogDetections(found);
}

void AnomalyDetector::ObserveMigration(double latency_seconds, double throughput_bytes_per_second,
                                       std::string_view trace_id, std::string_view vm_id) {
  MigrationObservation o;
  o.latency_seconds = latency_seconds;
  o.throughput_bytes_per_second = throughput_bytes_per_second;
  o.trace_id = trace_id;
  o.vm_id = vm_id;
  ObserveMigration(o);
}

void AnomalyDetector::Tick(const AnomalyTick& tick) {
  std::vector<AnomalyDetection> found;
  {
    std::lock_guard lock(mu_);
    const auto now = clock_.Now();
    if (tick.errors_total) {
      const double total = *tick.errors_total;
      if (!errors_.empty() && total < errors_.back().second) errors_.clear();  // counter reset
      errors_.emplace_back(now, total);
      // Keep the newest entry at or before now - 60 s as the base of the window.
      while (errors_.size() >= 2 && errors_[1].first <= now - kErrorWindow) errors_.pop_front();
      if (now - errors_.front().first >= kErrorWindow - std::chrono::milliseconds(500)) {
        Sample(AnomalySeries::kErrorRate, total - errors_.front().second, nullptr, &found);
      }
    }
    if (tick.consensus_seconds_sum && tick.consensus_count) {
      std::pair<double, double> cur{*tick.consensus_seconds_sum, *tick.consensus_count};
      if (consensus_prev_ && cur.second > consensus_prev_->second &&
          cur.first >= consensus_prev_->first) {
        Sample(AnomalySeries::kConsensusLatency,
               (cur.first - consensus_prev_->first) / (cur.second - consensus_prev_->second),
               nullptr, &found);
      }
      consensus_prev_ = cur;
    }
    auto gauge = [&](AnomalySeries s, const std::optional<double>& v) {
      if (v && std::isfinite(*v)) Sample(s, *v, nullptr, &found);
    };
    gauge(AnomalySeries::kPredictionError, tick.prediction_error);
    gauge(AnomalySeries::kCpu, tick.cpu_percent);
    gauge(AnomalySeries::kMemory, tick.memory_percent);
  }
  LogDetections(found);
}

void AnomalyDetector::Sample(AnomalySeries series, double value,
                             const MigrationObservation* migration,
                             std::vector<AnomalyDetection>* out) {
  const int index = static_cast<int>(series);
  const AnomalySeriesParams& p = config_.series[index];
  SeriesState& st = state_[index];
  ++st.samples;
  st.last_value = value;

  if (st.window.size() < p.warmup) {
    st.window.push_back(value);
    if (st.window.size() > p.window) st.window.pop_front();
    return;
  }

  // Baseline and floored robust scale of the window as it is before this sample.
  std::vector<double> scratch(st.window.begin(), st.window.end());
  const double median = Median(scratch);
  for (double& x : scratch) x = std::abs(x - median);
  const double mad = Median(scratch);
  const double scale =
      std::max({kMadToSigma * mad, p.min_deviation, p.min_relative_deviation * std::abs(median)});
  const double score = (AnomalyIsDrop(series) ? median - value : value - median) / scale;
  st.baseline = median;
  st.scale = scale;
  st.last_score = score;

  st.run_anomalous = score >= config_.warning_score ? st.run_anomalous + 1 : 0;
  st.run_critical = score >= config_.critical_score ? st.run_critical + 1 : 0;
  st.run_calm = score < config_.clear_score ? st.run_calm + 1 : 0;

  const auto now = clock_.Now();
  auto due = [&](AnomalySeverity sev) {
    // Within the cooldown of a detection of this severity or a higher one: not counted.
    for (int s = static_cast<int>(sev); s < 2; ++s) {
      if (st.last_emit[s] && now - *st.last_emit[s] < config_.cooldown) return false;
    }
    return true;
  };
  auto detect = [&](AnomalySeverity sev, bool escalation) {
    if (!due(sev)) {
      ++st.suppressed;
      return;
    }
    st.last_emit[static_cast<int>(sev)] = now;
    AnomalyDetection d;
    d.wall_millis = clock_.WallMillis();
    d.type = AnomalyTypeOf(series);
    d.severity = sev;
    d.series = series;
    d.value = value;
    d.baseline = median;
    d.scale = scale;
    d.score = score;
    d.escalation = escalation;
    if (migration != nullptr) {
      d.trace_id = migration->trace_id;
      d.vm_id = migration->vm_id;
      d.migration_id = migration->migration_id;
    }
    counters_[static_cast<int>(d.type)][static_cast<int>(sev)]->Increment();
    ++counts_[static_cast<int>(d.type)][static_cast<int>(sev)];
    recent_.push_front(d);
    if (recent_.size() > config_.recent_capacity) recent_.pop_back();
    out->push_back(std::move(d));
  };

  if (!st.open) {
    if (st.run_anomalous >= p.confirm) {
      st.open = true;
      st.open_severity =
          st.run_critical >= p.confirm ? AnomalySeverity::kCritical : AnomalySeverity::kWarning;
      st.run_calm = 0;
      detect(st.open_severity, false);
    }
  } else if (st.open_severity == AnomalySeverity::kWarning && st.run_critical >= p.confirm) {
    st.open_severity = AnomalySeverity::kCritical;
    detect(AnomalySeverity::kCritical, true);
  } else if (st.run_calm >= p.clear) {
    st.open = false;
  }

  // Outside an incident a sample enters the window clipped on its bad side, so outliers
  // and the first samples of an incident barely move the baseline. Inside one it enters as
  // it is: a lasting new level becomes the baseline after about half a window and closes
  // the incident, instead of creeping up and re-opening it.
  double kept = value;
  if (!st.open) {
    const double reach = config_.warning_score * scale;
    kept =
        AnomalyIsDrop(series) ? std::max(value, median - reach) : std::min(value, median + reach);
  }
  st.window.push_back(kept);
  while (st.window.size() > p.window) st.window.pop_front();
}

void AnomalyDetector::LogDetections(const std::vector<AnomalyDetection>& detections) {
  for (const auto& d : detections) LogWarn("anomaly", "anomaly detected", d.ToJson());
}

std::vector<AnomalyDetection> AnomalyDetector::Detections(size_t n) const {
  std::lock_guard lock(mu_);
  n = std::min(n, recent_.size());
  return {recent_.begin(), recent_.begin() + static_cast<std::ptrdiff_t>(n)};
}

nlohmann::json AnomalyDetector::Recent(size_t n) const {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& d : Detections(n)) {
    nlohmann::json j = d.ToJson();
    j["timestamp"] = FormatTimestamp(d.wall_millis);
    out.push_back(std::move(j));
  }
  return out;
}

nlohmann::json AnomalyDetector::AnomalySummary(size_t recent) const {
  using nlohmann::json;
  json by_type = json::object(), series = json::object();
  int64_t total = 0;
  {
    std::lock_guard lock(mu_);
    for (int t = 0; t < kAnomalyTypeCount; ++t) {
      by_type[AnomalyTypeName(static_cast<AnomalyType>(t))] = {{"warning", counts_[t][0]},
                                                               {"critical", counts_[t][1]}};
      total += counts_[t][0] + counts_[t][1];
    }
    for (int i = 0; i < kAnomalySeriesCount; ++i) {
      const SeriesState& st = state_[i];
      if (st.samples == 0) continue;
      const bool warm = st.window.size() >= config_.series[i].warmup && st.scale > 0;
      json s = {{"anomaly_type", AnomalyTypeName(AnomalyTypeOf(static_cast<AnomalySeries>(i)))},
                {"samples", st.samples},
                {"warm", warm},
                {"value", st.last_value},
                {"open", st.open},
                {"suppressed", st.suppressed}};
      if (warm) {
        s["baseline"] = st.baseline;
        s["scale"] = st.scale;
        s["score"] = st.last_score;
      }
      if (st.open) s["severity"] = AnomalySeverityName(st.open_severity);
      series[AnomalySeriesName(static_cast<AnomalySeries>(i))] = std::move(s);
    }
  }
  return {{"detections", {{"total", total}, {"by_type", by_type}}},
          {"series", series},
          {"recent", Recent(recent)}};
}

}  // namespace dwcp::obs
