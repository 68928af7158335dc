#include "rollout/rollout_config.h"

#include <yaml-cpp/yaml.h>

#include <cctype>
#include <cmath>
#include <set>

#include "common/units.h"
#include "obs/yaml_read.h"

namespace dwcp::rollout {
namespace {

using obs::yaml_read::Key;
using obs::yaml_read::Scalar;

Status Duration(const YAML::Node& node, const std::string& key, std::chrono::milliseconds* out) {
  int64_t ms = 0;
  DWCP_RETURN_IF_ERROR(obs::yaml_read::DurationMillis(node, key, &ms));
  *out = std::chrono::milliseconds(ms);
  return Status::Ok();
}

// A percentage: a number, optionally written with a trailing '%'.
Status Percent(const YAML::Node& node, const std::string& key, double* out) {
  std::string text;
  DWCP_RETURN_IF_ERROR(Scalar(node, key, &text));
  if (!text.empty() && text.back() == '%') text.pop_back();
  try {
    size_t used = 0;
    *out = std::stod(text, &used);
    if (used != text.size()) throw std::invalid_argument(text);
  } catch (const std::exception&) {
    return InvalidArgument("config key '" + key + "' must be a percentage like 25 or 25%");
  }
  return Status::Ok();
}

bool ValidStageName(const std::string& name) {
  if (name.empty() || name.size() > 32) return false;
  for (char c : name) {
    if (!std::islower(static_cast<unsigned char>(c)) &&
        !std::isdigit(static_cast<unsigned char>(c)) && c != '-' && c != '_') {
      return false;
    }
  }
  return true;
}

Status ParseStages(const YAML::Node& node, std::vector<Stage>* out) {
  if (!node.IsSequence()) {
    return InvalidArgument(
        "config key 'rollout.stages' must be a list like [{name: canary, percent: 5}, ...]");
  }
  out->clear();
  for (size_t i = 0; i < node.size(); ++i) {
    const std::string prefix = "rollout.stages[" + std::to_string(i) + "]";
    const YAML::Node entry = node[i];
    if (!entry.IsMap()) return InvalidArgument("config key '" + prefix + "' must be a mapping");
    Stage stage;
    bool has_name = false, has_percent = false;
    std::set<std::string> seen;
    for (auto it = entry.begin(); it != entry.end(); ++it) {
      std::string k;
      DWCP_RETURN_IF_ERROR(Key(it->first, prefix, &seen, &k));
      const YAML::Node v = it->second;
      if (k == "name") {
        DWCP_RETURN_IF_ERROR(Scalar(v, prefix + ".name", &stage.name));
        has_name = true;
      } else if (k == "percent") {
        DWCP_RETURN_IF_ERROR(Percent(v, prefix + ".percent", &stage.percent));
        has_percent = true;
      } else {
        return InvalidArgument("unknown config key '" + prefix + "." + k + "'");
      }
    }
    if (!has_name || !has_percent) {
      return InvalidArgument("config key '" + prefix + "' needs a name and a percent");
    }
    out->push_back(std::move(stage));
  }
  return Status::Ok();
}

}  // namespace

Status ValidateRolloutConfig(const RolloutConfig& c) {
  if (c.stages.empty()) return InvalidArgument("rollout.stages must name at least one stage");
  if (c.stages.size() > 20) return InvalidArgument("rollout.stages has more than 20 stages");
  std::set<std::string> names;
  double previous = 0;
  for (const Stage& s : c.stages) {
    if (!ValidStageName(s.name)) {
      return InvalidArgument("rollout.stages: stage name '" + s.name +
                             "' must be 1-32 of [a-z0-9_-]");
    }
    if (s.name == kV1StageName) {
      return InvalidArgument("rollout.stages: 'v1' is the implicit 0% stage; use another name");
    }
    if (!names.insert(s.name).second) {
      return InvalidArgument("rollout.stages: stage '" + s.name + "' is listed twice");
    }
    if (!std::isfinite(s.percent) || s.percent <= previous || s.percent > 100) {
      return InvalidArgument("rollout.stages: percents must increase strictly within (0, 100]; " +
                             ("stage '" + s.name + "' has " + std::to_string(s.percent)));
    }
    previous = s.percent;
  }
  if (!c.initial_stage.empty() && c.initial_stage != kV1StageName &&
      names.count(c.initial_stage) == 0) {
    return InvalidArgument("rollout.initial_stage '" + c.initial_stage +
                           "' is neither v1 nor a configured stage");
  }
  if (c.window.count() < 1000 || c.window > std::chrono::hours(24 * 30)) {
    return InvalidArgument("rollout.window must be between 1s and 720h");
  }
  if (c.min_samples < 1 || c.min_samples > 100000) {
    return InvalidArgument("rollout.min_samples must be between 1 and 100000");
  }
  if (c.go_period.count() < 0 || c.go_period > std::chrono::hours(24 * 30)) {
    return InvalidArgument("rollout.go_period must be between 0s and 720h");
  }
  if (!(c.max_success_rate_drop >= 0 && c.max_success_rate_drop <= 1)) {
    return InvalidArgument("rollout.max_success_rate_drop must be between 0 and 1");
  }
  if (!(c.max_latency_increase >= 0) || !std::isfinite(c.max_latency_increase)) {
    return InvalidArgument("rollout.max_latency_increase must be a number >= 0");
  }
  if (!(c.max_throughput_drop >= 0 && c.max_throughput_drop < 1)) {
    return InvalidArgument("rollout.max_throughput_drop must be in [0, 1)");
  }
  if (c.interval.count() < 100 || c.interval > std::chrono::hours(1)) {
    return InvalidArgument("rollout.interval must be between 100ms and 1h");
  }
  return Status::Ok();
}

Status ParseRolloutConfig(const YAML::Node& node, RolloutConfig* c) {
  if (node.IsNull()) return ValidateRolloutConfig(*c);  // "rollout:" with nothing under it
  if (!node.IsMap()) return InvalidArgument("config key 'rollout' must be a mapping");
  std::set<std::string> seen;
  for (auto it = node.begin(); it != node.end(); ++it) {
    std::string k;
    DWCP_RETURN_IF_ERROR(Key(it->first, "rollout", &seen, &k));
    const YAML::Node v = it->second;  // a copy: it->second lives in a temporary
    const std::string key = "rollout." + k;
    if (k == "stages") {
      DWCP_RETURN_IF_ERROR(ParseStages(v, &c->stages));
    } else if (k == "initial_stage") {
      DWCP_RETURN_IF_ERROR(Scalar(v, key, &c->initial_stage));
    } else if (k == "window") {
      DWCP_RETURN_IF_ERROR(Duration(v, key, &c->window));
    } else if (k == "min_samples") {
      DWCP_RETURN_IF_ERROR(Scalar(v, key, &c->min_samples));
    } else if (k == "go_period") {
      DWCP_RETURN_IF_ERROR(Duration(v, key, &c->go_period));
    } else if (k == "auto_advance") {
      DWCP_RETURN_IF_ERROR(Scalar(v, key, &c->auto_advance));
    } else if (k == "auto_rollback") {
      DWCP_RETURN_IF_ERROR(Scalar(v, key, &c->auto_rollback));
    } else if (k == "max_success_rate_drop") {
      DWCP_RETURN_IF_ERROR(Scalar(v, key, &c->max_success_rate_drop));
    } else if (k == "max_latency_increase") {
      DWCP_RETURN_IF_ERROR(Scalar(v, key, &c->max_latency_increase));
    } else if (k == "max_throughput_drop") {
      DWCP_RETURN_IF_ERROR(Scalar(v, key, &c->max_throughput_drop));
    } else if (k == "max_critical_anomalies") {
      DWCP_RETURN_IF_ERROR(Scalar(v, key, &c->max_critical_anomalies));
    } else if (k == "interval") {
      DWCP_RETURN_IF_ERROR(Duration(v, key, &c->interval));
    } else if (k == "webhook_token_file") {
      DWCP_RETURN_IF_ERROR(Scalar(v, key, &c->webhook_token_file));
    } else {
      return InvalidArgument("unknown config key '" + key + "'");
    }
  }
  return ValidateRolloutConfig(*c);
}

std::vector<Stage> StageList(const RolloutConfig& config) {
  std::vector<Stage> list = {{kV1StageName, 0}};
  list.insert(list.end(), config.stages.begin(), config.stages.end());
  return list;
}

std::optional<size_t> StageIndex(const std::vector<Stage>& stages, std::string_view name) {
  for (size_t i = 0; i < stages.size(); ++i) {
    if (stages[i].name == name) return i;
  }
  return std::nullopt;
}

size_t InitialStageIndex(const RolloutConfig& config) {
  const auto stages = StageList(config);
  if (config.initial_stage.empty()) return stages.size() - 1;
  return StageIndex(stages, config.initial_stage).value_or(stages.size() - 1);
}

}  // namespace dwcp::rollout
