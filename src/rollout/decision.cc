#include "rollout/decision.h"

#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>

namespace dwcp::rollout {
namespace {

constexpr double kEpsilon = 1e-9;

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

ProtocolStats StatsOf(const std::vector<const MigrationSample*>& samples) {
  ProtocolStats s;
  std::vector<double> latency, throughput;
  for (const MigrationSample* m : samples) {
    ++s.migrations;
    if (!m->success) continue;
    ++s.succeeded;
    latency.push_back(m->latency_seconds);
    if (m->throughput_bytes_per_second > 0) throughput.push_back(m->throughput_bytes_per_second);
  }
  s.success_rate = s.migrations > 0 ? double(s.succeeded) / s.migrations : 0;
  s.latency_p50_seconds = Median(std::move(latency));
  s.throughput_p50_bytes_per_second = Median(std::move(throughput));
  return s;
}

std::string Fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string Percent(double share) { return Fixed(100 * share, 1) + "%"; }

std::string Rate(double bytes_per_second) { return Fixed(bytes_per_second / 1e6, 1) + " MB/s"; }

}  // namespace

const char* DecisionName(Decision d) {
  switch (d) {
    case Decision::kGo:
      return "go";
    case Decision::kNoGo:
      return "no_go";
    default:
      return "pending";
  }
}

double DecisionValue(Decision d) {
  switch (d) {
    case Decision::kGo:
      return 1;
    case Decision::kNoGo:
      return 0;
    default:
      return 0.5;
  }
}

nlohmann::json ProtocolStats::ToJson() const {
  return {{"migrations", migrations},
          {"succeeded", succeeded},
          {"failed", migrations - succeeded},
          {"success_rate", migrations > 0 ? nlohmann::json(success_rate) : nlohmann::json()},
          {"latency_p50_seconds",
           succeeded > 0 ? nlohmann::json(latency_p50_seconds) : nlohmann::json()},
          {"throughput_p50_bytes_per_second", throughput_p50_bytes_per_second > 0
                                                  ? nlohmann::json(throughput_p50_bytes_per_second)
                                                  : nlohmann::json()}};
}

Verdict Evaluate(const RolloutConfig& config, const EvaluationInput& in) {
  Verdict v;
  const int64_t window_start = in.now_ms - config.window.count();

  // Samples of each protocol, and which migrations ran v1 (their anomalies say nothing
  // against v3).
  std::vector<const MigrationSample*> v1, v3;
  std::set<std::string> v1_ids;
  for (const MigrationSample& m : in.migrations) {
    if (m.protocol == 1) v1_ids.insert(m.id);
    if (m.finished_ms == 0 || m.finished_ms < window_start) continue;
    if (m.protocol == 1) {
      v1.push_back(&m);
    } else if (m.protocol == 3 && m.created_ms >= in.stage_since_ms) {
      v3.push_back(&m);
    }
  }
  v.v1 = StatsOf(v1);
  v.v3 = StatsOf(v3);

  // 1. Nothing to judge at 0 %.
  if (in.stage.percent <= 0) {
    v.reasons.push_back("stage " + in.stage.name + " sends no migration over v3");
    return v;
  }

  // 2. Anomalies since the stage began.
  const int64_t anomalies_since = std::max(window_start, in.stage_since_ms);
  std::map<std::string, int> by_type;
  for (const AnomalySample& a : in.anomalies) {
    if (a.wall_ms < anomalies_since) continue;
    if (!a.migration_id.empty() && v1_ids.count(a.migration_id) > 0) continue;
    ++v.anomalies;
    ++by_type[a.anomaly_type];
  }
  if (v.anomalies > config.max_critical_anomalies) {
    std::string types;
    for (const auto& [type, n] : by_type) {
      types += (types.empty() ? "" : ", ") + type + (n > 1 ? " x" + std::to_string(n) : "");
    }
    v.decision = Decision::kNoGo;
    v.reasons.push_back(std::to_string(v.anomalies) + " critical anomal" +
                        (v.anomalies == 1 ? "y" : "ies") + " since the stage began (" + types +
                        "), more than " + std::to_string(config.max_critical_anomalies));
    return v;
  }

  const double min = config.min_samples;
  const double success_floor = v.v1.success_rate - config.max_success_rate_drop;
  // 3. Failures that no later success can make up for.
  if (v.v1.migrations >= min && v.v3.migrations < min) {
    const double best = (v.v3.succeeded + (min - v.v3.migrations)) / min;
    if (best < success_floor - kEpsilon) {
      v.decision = Decision::kNoGo;
      v.reasons.push_back("v3 success rate cannot reach " + Percent(success_floor) + ": " +
                          std::to_string(v.v3.migrations - v.v3.succeeded) + " of " +
                          std::to_string(v.v3.migrations) + " v3 migrations failed (v1 " +
                          Percent(v.v1.success_rate) + " of " + std::to_string(v.v1.migrations) +
                          ")");
      return v;
    }
  }

  // 4. Enough samples of both?
  if (v.v3.migrations < min) {
    v.reasons.push_back("v3 samples " + std::to_string(v.v3.migrations) + " < " +
                        std::to_string(config.min_samples) + " since the stage began");
  }
  if (v.v1.migrations < min) {
    v.reasons.push_back(
        "v1 samples " + std::to_string(v.v1.migrations) + " < " +
        std::to_string(config.min_samples) + " in the window" +
        (in.stage.percent >= 100 ? " (pin some migrations to v1 to keep a baseline)" : ""));
  }
  if (!v.reasons.empty()) return v;

  // 5. The comparison.
  if (v.v3.success_rate < success_floor - kEpsilon) {
    v.reasons.push_back("v3 success rate " + Percent(v.v3.success_rate) + " is below v1's " +
                        Percent(v.v1.success_rate) + " minus " +
                        Percent(config.max_success_rate_drop));
  }
  if (v.v1.succeeded > 0 && v.v3.succeeded > 0 &&
      v.v3.latency_p50_seconds >
          v.v1.latency_p50_seconds * (1 + config.max_latency_increase) + kEpsilon) {
    v.reasons.push_back("v3 median latency " + Fixed(v.v3.latency_p50_seconds, 3) +
                        " s is above v1's " + Fixed(v.v1.latency_p50_seconds, 3) +
                        " s by more than " + Percent(config.max_latency_increase));
  }
  if (v.v1.throughput_p50_bytes_per_second > 0 && v.v3.throughput_p50_bytes_per_second > 0 &&
      v.v3.throughput_p50_bytes_per_second <
          v.v1.throughput_p50_bytes_per_second * (1 - config.max_throughput_drop) - kEpsilon) {
    v.reasons.push_back("v3 median throughput " + Rate(v.v3.throughput_p50_bytes_per_second) +
                        " is below v1's " + Rate(v.v1.throughput_p50_bytes_per_second) +
                        " by more than " + Percent(config.max_throughput_drop));
  }
  if (!v.reasons.empty()) {
    v.decision = Decision::kNoGo;
    return v;
  }

  // 6. GO, with the figures that justify it.
  v.decision = Decision::kGo;
  v.reasons.push_back("v3 success " + Percent(v.v3.success_rate) + " vs v1 " +
                      Percent(v.v1.success_rate) + ", median latency " +
                      Fixed(v.v3.latency_p50_seconds, 3) + " s vs " +
                      Fixed(v.v1.latency_p50_seconds, 3) + " s, median throughput " +
                      Rate(v.v3.throughput_p50_bytes_per_second) + " vs " +
                      Rate(v.v1.throughput_p50_bytes_per_second));
  return v;
}

uint32_t BucketOf(std::string_view vm_id) {
  return static_cast<uint32_t>(XXH64(vm_id.data(), vm_id.size(), 0) % 10000);
}

bool UsesV3(uint32_t bucket, double percent) { return bucket < percent * 100 - kEpsilon; }

}  // namespace dwcp::rollout
