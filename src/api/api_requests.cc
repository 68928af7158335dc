#include "api/api_requests.h"

#include "common/units.h"

namespace dwcp::api {
namespace {

using nlohmann::json;

// Reads a size or rate field given as a string ("1GiB", "20MB/s") or a non-negative integer.
Status ReadAmount(const json& body, const char* key, bool rate, std::optional<uint64_t>* out) {
  if (!body.contains(key) || body[key].is_null()) return Status::Ok();
  const json& v = body[key];
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return Status::Ok();
  }
  if (v.is_string()) {
    auto parsed = rate ? ParseRate(v.get<std::string>()) : ParseBytes(v.get<std::string>());
    if (!parsed.ok()) return InvalidArgument(std::string(key) + ": " + parsed.status().message());
    *out = *parsed;
    return Status::Ok();
  }
  return InvalidArgument(std::string(key) + " must be a non-negative integer or a string like " +
                         (rate ? "\"20MB/s\"" : "\"1GiB\""));
}

Status ReadAmount(const json& body, const char* key, bool rate, uint64_t* out) {
  std::optional<uint64_t> v;
  DWCP_RETURN_IF_ERROR(ReadAmount(body, key, rate, &v));
  if (v) *out = *v;
  return Status::Ok();
}

Status ReadString(const json& body, const char* key, bool required, std::string* out) {
  if (!body.contains(key) || body[key].is_null()) {
    return required ? InvalidArgument(std::string("missing field '") + key + "'") : Status::Ok();
  }
  if (!body[key].is_string()) return InvalidArgument(std::string(key) + " must be a string");
  *out = body[key].get<std::string>();
  if (required && out->empty()) return InvalidArgument(std::string(key) + " must not be empty");
  return Status::Ok();
}

Status ReadInt(const json& body, const char* key, int64_t* out) {
  if (!body.contains(key) || body[key].is_null()) return Status::Ok();
  if (!body[key].is_number_integer())
    return InvalidArgument(std::string(key) + " must be an integer");
  *out = body[key].get<int64_t>();
  return Status::Ok();
}

}  // namespace

Result<json> ParseJsonObject(std::string_view body) {
  json parsed = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) return Status(InvalidArgument("request body is not valid JSON"));
  if (!parsed.is_object()) return Status(InvalidArgument("request body must be a JSON object"));
  return parsed;
}

Result<CreateVmBody> ParseCreateVmBody(std::string_view text) {
  auto body = ParseJsonObject(text);
  if (!body.ok()) return body.status();
  CreateVmBody r;
  std::string& driver = r.driver;
  Status st = ReadString(*body, "id", true, &r.id);
  if (st.ok() && body->contains("node") && !(*body)["node"].is_null()) {
    r.node.emplace();
    st = ReadString(*body, "node", false, &*r.node);
  }
  if (st.ok()) st = ReadString(*body, "driver", false, &driver);
  if (st.ok()) st = ReadAmount(*body, "memory", false, &r.memory_bytes);
  if (st.ok()) st = ReadAmount(*body, "dirty_rate", true, &r.dirty_rate);
  if (st.ok() && body->contains("seed")) {
    if (!(*body)["seed"].is_number_unsigned()) {
      st = InvalidArgument("seed must be a non-negative integer");
    } else {
      r.seed = (*body)["seed"].get<uint64_t>();
    }
  }
  for (auto [key, field] : {std::pair{"kernel", &r.kernel},
                            {"initrd", &r.initrd},
                            {"append", &r.append},
                            {"qmp_socket", &r.qmp_socket},
                            {"accel", &r.accel},
                            {"boot_marker", &r.boot_marker}}) {
    if (st.ok()) st = ReadString(*body, key, false, field);
    if (st.ok() && !field->empty() && driver != "qemu") {
      st = InvalidArgument(std::string(key) + " is only for driver \"qemu\"");
    }
  }
  if (st.ok() && driver != "synthetic" && driver != "qemu") {
    st = InvalidArgument("driver '" + driver + "' is not supported (synthetic or qemu)");
  }
  if (!st.ok()) return st;
  return r;
}

Result<CreateMigrationBody> ParseCreateMigrationBody(std::string_view text) {
  auto body = ParseJsonObject(text);
  if (!body.ok()) return body.status();
  CreateMigrationBody r;
  std::string protocol = "v3", on_limit;
  // Without a protocol the region's rollout stage picks one (docs/rollout.md).
  r.protocol_pinned = body->contains("protocol") && !(*body)["protocol"].is_null();
  Status st = ReadString(*body, "vm", true, &r.vm);
  if (st.ok()) st = ReadString(*body, "to", true, &r.to);
  if (st.ok()) st = ReadString(*body, "protocol", false, &protocol);
  if (st.ok()) st = ReadString(*body, "on_round_limit", false, &on_limit);
  if (st.ok()) st = ReadInt(*body, "downtime_budget_ms", &r.downtime_budget_ms);
  if (st.ok()) st = ReadInt(*body, "max_rounds", &r.max_rounds);
  if (st.ok()) st = ReadAmount(*body, "bandwidth_limit", true, &r.bandwidth_limit);
  if (st.ok()) {
    if (protocol == "v3") {
      r.protocol = 3;
    } else if (protocol == "v1") {
      r.protocol = 1;
    } else {
      st = InvalidArgument("protocol must be \"v3\" or \"v1\"");
    }
  }
  if (st.ok() && !on_limit.empty()) {
    if (on_limit == "force") {
      r.on_round_limit = 1;
    } else if (on_limit == "abort") {
      r.on_round_limit = 0;
    } else {
      st = InvalidArgument("on_round_limit must be \"force\" or \"abort\"");
    }
  }
  if (!st.ok()) return st;
  return r;
}

Result<RolloutChangeBody> ParseRolloutChangeBody(std::string_view text) {
  RolloutChangeBody r;
  if (text.empty()) return r;
  auto body = ParseJsonObject(text);
  if (!body.ok()) return body.status();
  DWCP_RETURN_IF_ERROR(ReadString(*body, "region", false, &r.region));
  DWCP_RETURN_IF_ERROR(ReadString(*body, "to", false, &r.to));
  DWCP_RETURN_IF_ERROR(ReadString(*body, "note", false, &r.note));
  return r;
}

Result<uint64_t> ParseBandwidthLimitBody(std::string_view text) {
  auto body = ParseJsonObject(text);
  if (!body.ok()) return body.status();
  if (!body->contains("bandwidth_limit")) {
    return Status(InvalidArgument("bandwidth_limit is required (0 = no cap)"));
  }
  uint64_t limit = 0;
  Status st = ReadAmount(*body, "bandwidth_limit", true, &limit);
  if (!st.ok()) return st;
  return limit;
}

Result<obs::LogLevel> ParseLogLevelBody(std::string_view text) {
  auto body = ParseJsonObject(text);
  if (!body.ok()) return body.status();
  std::string name;
  DWCP_RETURN_IF_ERROR(ReadString(*body, "level", true, &name));
  obs::LogLevel level;
  if (!obs::ParseLogLevel(name, &level)) {
    return Status(InvalidArgument("level must be debug, info, warn, error or fatal"));
  }
  return level;
}

}  // namespace dwcp::api
