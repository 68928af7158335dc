// Structured JSON logs, one object per line, with the guide's field names (section 4.1):
// timestamp, level, component, message, node_id, and optional vm_id, migration_id,
// latency_ms, throughput_gbps, trace_id, error, ... Thread-safe.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace dwcp::obs {

enum class LogLevel { kDebug = 0, kInfo, kWarn, kError, kFatal };

// "debug" | "info" | "warn" | "error" | "fatal"; false on an unknown name.
bool ParseLogLevel(std::string_view name, LogLevel* level);
const char* LogLevelName(LogLevel level);

// Process-wide settings: minimum level, the node id stamped on every line, and the output
// (stderr unless a file is given). Call once at start-up, before other threads log.
void ConfigureLogging(LogLevel min_level, std::string node_id, const std::string& file = "");

// The minimum level, changeable at run time (PUT /api/v1/log-level). Thread-safe.
void SetLogLevel(LogLevel level);
LogLevel CurrentLogLevel();

// Writes one line if `level` passes the configured minimum. `fields` is a JSON object whose
// members are added to the line (vm_id, latency_ms, ...).
void Log(LogLevel level, std::string_view component, std::string_view message,
         const nlohmann::json& fields = nlohmann::json::object());

inline void LogInfo(std::string_view c, std::string_view m, const nlohmann::json& f = {}) {
  Log(LogLevel::kInfo, c, m, f);
}
inline void LogWarn(std::string_view c, std::string_view m, const nlohmann::json& f = {}) {
  Log(LogLevel::kWarn, c, m, f);
}
inline void LogError(std::string_view c, std::string_view m, const nlohmann::json& f = {}) {
  Log(LogLevel::kError, c, m, f);
}
inline void LogDebug(std::string_view c, std::string_view m, const nlohmann::json& f = {}) {
  Log(LogLevel::kDebug, c, m, f);
}

// RFC 3339 UTC with milliseconds: "2025-11-10T18:00:00.123Z".
std::string FormatTimestamp(int64_t wall_millis);

}  // namespace dwcp::obs
