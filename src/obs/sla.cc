#include "obs/sla.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "obs/log.h"
#include "obs/metrics_views.h"
#include "obs/yaml_read.h"

namespace dwcp::obs {
namespace {

using std::chrono::duration;
using std::chrono::steady_clock;

constexpr int64_t kMinutesKept = 30 * 24 * 60;  // the guide's 30-day error budget
constexpr double kStallSeconds = 10;            // a longer gap between ticks counts as down
constexpr size_t kRecentBad = 60;
// The order in which a bad minute is attributed to one sla_type: causes before symptoms.
constexpr std::array<SlaType, kSlaTypeCount> kAttribution = {
    SlaType::kAvailability, SlaType::kErrors, SlaType::kLatency, SlaType::kThroughput};

const char* kLatencyFamily = "dwcp_v3_migration_latency_seconds";

double Seconds(steady_clock::duration d) { return duration<double>(d).count(); }

nlohmann::json Nullable(double v) { return std::isfinite(v) ? nlohmann::json(v) : nullptr; }

// PromQL-style quantile of cumulative buckets, through the one implementation the
// /metrics/summary view uses.
double Quantile(const std::vector<std::pair<double, double>>& buckets, double q) {
  prometheus::MetricFamily f;
  f.name = kLatencyFamily;
  f.type = prometheus::MetricType::Histogram;
  prometheus::ClientMetric m;
  for (const auto& [bound, count] : buckets) {
    prometheus::ClientMetric::Bucket b;
    b.upper_bound = bound;
    b.cumulative_count = static_cast<uint64_t>(std::llround(count));
    m.histogram.bucket.push_back(b);
  }
  m.histogram.sample_count = buckets.empty() ? 0 : m.histogram.bucket.back().cumulative_count;
  f.metric.push_back(std::move(m));
  return HistogramQuantile({f}, kLatencyFamily, q);
}

// now - before per bucket; empty when the bucket layouts differ (the histogram appeared
// during the minute counts from zero).
std::vector<std::pair<double, double>> BucketDelta(
    const std::vector<std::pair<double, double>>& now,
    const std::vector<std::pair<double, double>>& before) {
  std::vector<std::pair<double, double>> out = now;
  if (before.empty()) return out;
  if (before.size() != now.size()) return {};
  for (size_t i = 0; i < out.size(); ++i) {
    if (before[i].first != now[i].first) return {};
    out[i].second = std::max(0.0, now[i].second - before[i].second);
  }
  return out;
}

std::string LabelOf(const prometheus::ClientMetric& m, const std::string& name) {
  for (const auto& l : m.label) {
    if (l.name == name) return l.value;
  }
  return "";
}

}  // namespace

const char* SlaTypeName(SlaType type) {
  static const char* kNames[] = {"latency", "throughput", "errors", "availability"};
  return kNames[static_cast<int>(type)];
}

Status ValidateSlaConfig(const SlaConfig& c) {
  if (c.window.count() < 1 || c.window.count() > kMinutesKept) {
    return InvalidArgument("sla.window must be between 1m and 720h (30 days)");
  }
  if (!std::isfinite(c.latency_p99_seconds) || c.latency_p99_seconds <= 0) {
    return InvalidArgument("sla.latency_p99 must be a positive duration");
  }
  if (!std::isfinite(c.throughput_min_bytes_per_second) || c.throughput_min_bytes_per_second < 0) {
    return InvalidArgument("sla.throughput_min must be a rate >= 0 (0 turns it off)");
  }
  if (c.throughput_min_active.count() < 1000 || c.throughput_min_active.count() > 60'000) {
    return InvalidArgument("sla.throughput_min_active must be between 1s and 60s");
  }
  if (!std::isfinite(c.errors_max_per_minute) || c.errors_max_per_minute < 0) {
    return InvalidArgument("sla.errors_max_per_minute must be a number >= 0");
  }
  if (!(c.availability_min_health > 0 && c.availability_min_health <= 1)) {
    return InvalidArgument("sla.availability_min_health must be in (0, 1]");
  }
  if (c.availability_max_down.count() < 0 || c.availability_max_down.count() >= 60'000) {
    return InvalidArgument("sla.availability_max_down must be between 0s and 59s");
  }
  return Status::Ok();
}

Status ParseSlaConfig(const YAML::Node& node, SlaConfig* c) {
  namespace yr = yaml_read;
  if (node.IsNull()) return ValidateSlaConfig(*c);  // "sla:" with nothing under it
  if (!node.IsMap()) return InvalidArgument("config key 'sla' must be a mapping");
  std::set<std::string> seen;
  for (auto it = node.begin(); it != node.end(); ++it) {
    std::string k;
    DWCP_RETURN_IF_ERROR(yr::Key(it->first, "sla", &seen, &k));
    const YAML::Node v = it->second;  // a copy: it->second lives in a temporary
    const std::string key = "sla." + k;
    int64_t ms = 0;
    if (k == "window") {
      DWCP_RETURN_IF_ERROR(yr::DurationMillis(v, key, &ms));
      if (ms % 60'000 != 0) return InvalidArgument(key + " must be a whole number of minutes");
      c->window = std::chrono::minutes(ms / 60'000);
    } else if (k == "latency_p99") {
      DWCP_RETURN_IF_ERROR(yr::DurationMillis(v, key, &ms));
      c->latency_p99_seconds = static_cast<double>(ms) / 1e3;
    } else if (k == "throughput_min") {
      DWCP_RETURN_IF_ERROR(yr::Rate(v, key, &c->throughput_min_bytes_per_second));
    } else if (k == "throughput_min_active") {
      DWCP_RETURN_IF_ERROR(yr::DurationMillis(v, key, &ms));
      c->throughput_min_active = std::chrono::milliseconds(ms);
    } else if (k == "errors_max_per_minute") {
      DWCP_RETURN_IF_ERROR(yr::Scalar(v, key, &c->errors_max_per_minute));
    } else if (k == "availability_min_health") {
      DWCP_RETURN_IF_ERROR(yr::Scalar(v, key, &c->availability_min_health));
    } else if (k == "availability_max_down") {
      DWCP_RETURN_IF_ERROR(yr::DurationMillis(v, key, &ms));
      c->availability_max_down = std::chrono::milliseconds(ms);
    } else {
      return InvalidArgument("unknown config key '" + key + "'");
    }
  }
  return ValidateSlaConfig(*c);
}

SlaInputs SlaInputs::FromFamilies(const std::vector<prometheus::MetricFamily>& families) {
  SlaInputs in;
  in.errors_total = SumOf(families, "dwcp_v3_errors_total");
  in.bytes_transferred_total = SumOf(families, "dwcp_v3_bytes_transferred_total");
  in.active_migrations = SumOf(families, "dwcp_v3_active_migrations");
  for (const auto& f : families) {
    if (f.name == kLatencyFamily && f.type == prometheus::MetricType::Histogram) {
      std::map<double, double> cumulative;
      for (const auto& m : f.metric) {
        for (const auto& b : m.histogram.bucket) {
          cumulative[b.upper_bound] += static_cast<double>(b.cumulative_count);
        }
      }
      in.latency_buckets.assign(cumulative.begin(), cumulative.end());
    } else if (f.name == "dwcp_v3_component_health") {
      for (const auto& m : f.metric) {
        if (m.gauge.value < in.min_health) {
          in.min_health = m.gauge.value;
          in.least_healthy = LabelOf(m, "component");
        }
      }
    }
  }
  return in;
}

SlaEvaluator::SlaEvaluator(const SlaConfig& config, Metrics& metrics, const Clock& clock)
    : config_(config),
      clock_(clock),
      start_(clock.Now()),
      start_wall_ms_(clock.WallMillis()),
      flags_(kMinutesKept, 0) {
  assert(ValidateSlaConfig(config_).ok());
  auto& compliance = metrics.GaugeFamily(
      std::nullopt, "sla_compliance", "",
      "Share of good minutes among the last SLA window of closed minutes (0..1), per objective; "
      "overall: minutes in which every objective was met (docs/sla.md)");
  auto& violations = metrics.CounterFamily(
      std::nullopt, "sla_violations",
      "SLA violation-minutes: each minute in which an objective was missed adds 1, to the "
      "series of its first missed objective (availability, errors, latency, throughput), so "
      "the sum over sla_type counts every bad minute once (docs/sla.md)");
  auto& objective = metrics.CounterFamily(
      std::nullopt, "sla_objective_violations",
      "Minutes in which each SLA objective was missed, counted per objective independently: a "
      "minute that missed two objectives counts under both (docs/sla.md)");
  for (int t = 0; t < kSlaTypeCount; ++t) {
    const std::string name = SlaTypeName(static_cast<SlaType>(t));
    compliance_[t] = &compliance.Add({{"sla_type", name}});
    violations_[t] = &violations.Add({{"sla_type", name}});
    objective_violations_[t] = &objective.Add({{"sla_type", name}});
  }
  compliance_[kSlaTypeCount] = &compliance.Add({{"sla_type", "overall"}});
  for (auto* g : compliance_) g->Set(1);
}

int64_t SlaEvaluator::MinuteOf(steady_clock::time_point t) const {
  if (t < start_) return 0;
  return std::chrono::duration_cast<std::chrono::minutes>(t - start_).count();
}

steady_clock::time_point SlaEvaluator::MinuteStart(int64_t minute) const {
  return start_ + std::chrono::minutes(minute);
}

void SlaEvaluator::Tick(const SlaInputs& in) {
  std::lock_guard lock(mu_);
  Snapshot now;
  now.at = clock_.Now();
  now.errors = in.errors_total;
  now.bytes = in.bytes_transferred_total;
  now.active = in.active_migrations;
  now.latency = in.latency_buckets;
  if (!started_) {
    started_ = true;
    prev_ = now;
    open_ = now;
    open_minute_ = MinuteOf(now.at);
    acc_ = {};
    return;
  }
  if (now.at <= prev_.at) return;  // no time passed: nothing to attribute

  const double dt = Seconds(now.at - prev_.at);
  const double moved = std::max(0.0, now.bytes - prev_.bytes);
  // A stalled loop (below) says nothing about throughput; availability counts it.
  if (dt <= kStallSeconds && (now.active > 0 || prev_.active > 0 || moved > 0)) {
    acc_.active_seconds += dt;
    acc_.active_bytes += moved;
  }
  const bool unhealthy = in.min_health < config_.availability_min_health;
  const bool down = unhealthy || dt > kStallSeconds;
  if (unhealthy && least_healthy_.empty()) least_healthy_ = in.least_healthy;
  if (dt > kStallSeconds && least_healthy_.empty()) least_healthy_ = "node";

  const int64_t minute = MinuteOf(now.at);
  if (minute == open_minute_) {
    if (down) acc_.down_seconds += dt;
  } else {
    // The interval (prev, now] crosses at least one minute boundary: split its down time.
    if (down) {
      acc_.down_seconds +=
          std::max(0.0, Seconds(std::min(now.at, MinuteStart(open_minute_ + 1)) - prev_.at));
    }
    CloseMinute(open_minute_, now, acc_, least_healthy_);
    for (int64_t m = open_minute_ + 1; m < minute; ++m) CloseMissedMinute(m);
    open_minute_ = minute;
    open_ = now;
    acc_ = {};
    least_healthy_.clear();
    if (down) {
      acc_.down_seconds = Seconds(now.at - std::max(prev_.at, MinuteStart(minute)));
      if (unhealthy) least_healthy_ = in.least_healthy;
      if (dt > kStallSeconds) least_healthy_ = "node";
    }
  }
  prev_ = now;
}

void SlaEvaluator::CloseMinute(int64_t minute, const Snapshot& now, const Accumulated& acc,
                               const std::string& least_healthy) {
  MinuteReport r;
  r.start_wall_ms = start_wall_ms_ + minute * 60'000;
  auto latency = BucketDelta(now.latency, open_.latency);
  r.finished = latency.empty() ? 0 : latency.back().second;
  r.latency_p99 = r.finished > 0 ? Quantile(latency, 0.99) : std::nan("");
  r.active_seconds = acc.active_seconds;
  r.throughput = acc.active_seconds > 0 ? acc.active_bytes / acc.active_seconds : std::nan("");
  r.errors = std::max(0.0, now.errors - open_.errors);
  r.down_seconds = acc.down_seconds;
  r.least_healthy = least_healthy;

  auto bit = [](SlaType t) { return static_cast<uint8_t>(1u << static_cast<int>(t)); };
  if (r.finished > 0 && r.latency_p99 > config_.latency_p99_seconds)
    r.violated |= bit(SlaType::kLatency);
  if (config_.throughput_min_bytes_per_second > 0 &&
      r.active_seconds * 1e3 >= static_cast<double>(config_.throughput_min_active.count()) &&
      r.throughput < config_.throughput_min_bytes_per_second) {
    r.violated |= bit(SlaType::kThroughput);
  }
  if (r.errors > config_.errors_max_per_minute) r.violated |= bit(SlaType::kErrors);
  if (r.down_seconds * 1e3 > static_cast<double>(config_.availability_max_down.count())) {
    r.violated |= bit(SlaType::kAvailability);
  }
  Record(r);
}

void SlaEvaluator::CloseMissedMinute(int64_t minute) {
  MinuteReport r;
  r.start_wall_ms = start_wall_ms_ + minute * 60'000;
  r.latency_p99 = std::nan("");
  r.throughput = std::nan("");
  r.down_seconds = 60;
  r.least_healthy = "node";
  r.violated = 1u << static_cast<int>(SlaType::kAvailability);
  Record(r);
}

void SlaEvaluator::Record(const MinuteReport& r) {
  flags_[closed_ % kMinutesKept] = r.violated;
  ++closed_;
  if (r.violated != 0) {
    ++violation_minutes_;
    for (SlaType t : kAttribution) {
      if (r.violated & (1u << static_cast<int>(t))) {
        ++attributed_[static_cast<int>(t)];
        violations_[static_cast<int>(t)]->Increment();
        break;
      }
    }
    std::vector<std::string> missed;
    for (int t = 0; t < kSlaTypeCount; ++t) {
      if (r.violated & (1u << t)) {
        ++objective_[t];
        objective_violations_[t]->Increment();
        missed.push_back(SlaTypeName(static_cast<SlaType>(t)));
      }
    }
    recent_bad_.push_front(r);
    if (recent_bad_.size() > kRecentBad) recent_bad_.pop_back();
    LogWarn("sla", "SLA violation-minute", ReportJson(r));
  }
  last_ = r;
  have_last_ = true;

  const int64_t n = std::min<int64_t>(config_.window.count(), closed_);
  std::array<int64_t, kSlaTypeCount + 1> bad{};
  for (int64_t i = closed_ - n; i < closed_; ++i) {
    const uint8_t f = flags_[i % kMinutesKept];
    for (int t = 0; t < kSlaTypeCount; ++t) bad[t] += (f >> t) & 1;
    bad[kSlaTypeCount] += f != 0;
  }
  for (int t = 0; t <= kSlaTypeCount; ++t) {
    compliance_value_[t] = 1.0 - static_cast<double>(bad[t]) / static_cast<double>(n);
    compliance_[t]->Set(compliance_value_[t]);
  }
}

double SlaEvaluator::Compliance(SlaType type) const {
  std::lock_guard lock(mu_);
  return compliance_value_[static_cast<int>(type)];
}

double SlaEvaluator::OverallCompliance() const {
  std::lock_guard lock(mu_);
  return compliance_value_[kSlaTypeCount];
}

int64_t SlaEvaluator::ViolationMinutes() const {
  std::lock_guard lock(mu_);
  return violation_minutes_;
}

int64_t SlaEvaluator::ObjectiveViolationMinutes(SlaType type) const {
  std::lock_guard lock(mu_);
  return objective_[static_cast<int>(type)];
}

nlohmann::json SlaEvaluator::ReportJson(const MinuteReport& r) {
  nlohmann::json missed = nlohmann::json::array();
  for (int t = 0; t < kSlaTypeCount; ++t) {
    if (r.violated & (1u << t)) missed.push_back(SlaTypeName(static_cast<SlaType>(t)));
  }
  std::string cause;
  for (SlaType t : kAttribution) {
    if (r.violated & (1u << static_cast<int>(t))) {
      cause = SlaTypeName(t);
      break;
    }
  }
  nlohmann::json j = {{"minute_start", FormatTimestamp(r.start_wall_ms)},
                      {"violated", missed},
                      {"finished_migrations", r.finished},
                      {"latency_p99_seconds", Nullable(r.latency_p99)},
                      {"active_seconds", r.active_seconds},
                      {"throughput_bytes_per_second", Nullable(r.throughput)},
                      {"errors", r.errors},
                      {"down_seconds", r.down_seconds}};
  if (!cause.empty()) j["sla_type"] = cause;
  if (!r.least_healthy.empty()) j["down_component"] = r.least_healthy;
  return j;
}

nlohmann::json SlaEvaluator::SlaSummary() const {
  using nlohmann::json;
  std::lock_guard lock(mu_);
  json compliance = json::object(), attributed = json::object(), objective = json::object();
  for (int t = 0; t < kSlaTypeCount; ++t) {
    const char* name = SlaTypeName(static_cast<SlaType>(t));
    compliance[name] = compliance_value_[t];
    attributed[name] = attributed_[t];
    objective[name] = objective_[t];
  }
  compliance["overall"] = compliance_value_[kSlaTypeCount];
  // The guide's 7.4 error budget over the minutes this process has judged (up to 30 days).
  int64_t budget_used = 0;
  const int64_t kept = std::min<int64_t>(closed_, kMinutesKept);
  for (int64_t i = closed_ - kept; i < closed_; ++i) budget_used += flags_[i % kMinutesKept] != 0;
  json recent = json::array();
  for (const auto& r : recent_bad_) {
    if (recent.size() >= 10) break;
    recent.push_back(ReportJson(r));
  }
  return {
      {"objectives",
       {{"latency_p99_seconds", config_.latency_p99_seconds},
        {"throughput_min_bytes_per_second", config_.throughput_min_bytes_per_second},
        {"throughput_min_active_seconds", config_.throughput_min_active.count() / 1e3},
        {"errors_max_per_minute", config_.errors_max_per_minute},
        {"availability_min_health", config_.availability_min_health},
        {"availability_max_down_seconds", config_.availability_max_down.count() / 1e3}}},
      {"window_minutes", config_.window.count()},
      {"minutes_evaluated", std::min<int64_t>(config_.window.count(), closed_)},
      {"compliance", compliance},
      {"violation_minutes",
       {{"total", violation_minutes_}, {"by_sla_type", attributed}, {"by_objective", objective}}},
      {"error_budget",
       {{"period_minutes", kMinutesKept},
        {"minutes_judged", kept},
        {"violation_minutes", budget_used},
        {"remaining_percent",
         100.0 - static_cast<double>(budget_used) / static_cast<double>(kMinutesKept) * 100.0}}},
      {"last_minute", have_last_ ? ReportJson(last_) : json(nullptr)},
      {"recent_violations", recent},
  };
}

}  // namespace dwcp::obs
