// Type-checked reads of YAML config values that name the key on failure, shared by the
// config blocks that components parse themselves (`sla:`, `anomaly:`, `rollout:`).
#pragma once

#include <yaml-cpp/yaml.h>

#include <set>
#include <string>

#include "common/status.h"
#include "common/units.h"

namespace dwcp::obs::yaml_read {

template <typename T>
Status Scalar(const YAML::Node& node, const std::string& key, T* out) {
  // yaml-cpp reads an empty value ("key:") as null; never guess.
  if (!node.IsDefined() || node.IsNull()) {
    return InvalidArgument("config key '" + key + "' has no value");
  }
  if (!node.IsScalar()) return InvalidArgument("config key '" + key + "' must be a scalar");
  try {
    *out = node.as<T>();
  } catch (const YAML::Exception& e) {
    return InvalidArgument("config key '" + key + "': " + e.msg);
  }
  return Status::Ok();
}

inline Status DurationMillis(const YAML::Node& node, const std::string& key, int64_t* ms) {
  std::string text;
  DWCP_RETURN_IF_ERROR(Scalar(node, key, &text));
  auto parsed = ParseDurationMillis(text);
  if (!parsed.ok()) {
    return InvalidArgument("config key '" + key + "': " + parsed.status().message());
  }
  *ms = *parsed;
  return Status::Ok();
}

inline Status Rate(const YAML::Node& node, const std::string& key, double* bytes_per_second) {
  std::string text;
  DWCP_RETURN_IF_ERROR(Scalar(node, key, &text));
  auto parsed = ParseRate(text);
  if (!parsed.ok()) {
    return InvalidArgument("config key '" + key + "': " + parsed.status().message());
  }
  *bytes_per_second = static_cast<double>(*parsed);
  return Status::Ok();
}

// The key of one mapping entry: a plain string, given once in its mapping.
inline Status Key(const YAML::Node& key, const std::string& prefix, std::set<std::string>* seen,
                  std::string* out) {
  if (!key.IsScalar()) return InvalidArgument("config block '" + prefix + "' has a non-string key");
  *out = key.Scalar();
  if (!seen->insert(*out).second) {
    return InvalidArgument("config key '" + prefix + "." + *out + "' is given twice");
  }
  return Status::Ok();
}

}  // namespace dwcp::obs::yaml_read
