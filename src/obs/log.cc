#include "obs/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <memory>

#include "common/clock.h"
#include "obs/trace/tracer.h"

namespace dwcp::obs {
namespace {

struct LogState {
  std::atomic<int> min_level{static_cast<int>(LogLevel::kInfo)};
  std::string node_id;
  std::shared_ptr<spdlog::logger> logger;
};

LogState& State() {
  static LogState* state = [] {
    auto* s = new LogState;
    s->logger =
        std::make_shared<spdlog::logger>("dwcp", std::make_shared<spdlog::sinks::stderr_sink_mt>());
    s->logger->set_pattern("%v");
    s->logger->set_level(spdlog::level::trace);
    s->logger->flush_on(spdlog::level::trace);
    return s;
  }();
  return *state;
}

}  // namespace

bool ParseLogLevel(std::string_view name, LogLevel* level) {
  if (name == "debug")
    *level = LogLevel::kDebug;
  else if (name == "info")
    *level = LogLevel::kInfo;
  else if (name == "warn" || name == "warning")
    *level = LogLevel::kWarn;
  else if (name == "error")
    *level = LogLevel::kError;
  else if (name == "fatal")
    *level = LogLevel::kFatal;
  else
    return false;
  return true;
}

const char* LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
    case LogLevel::kFatal:
      return "fatal";
  }
  return "info";
}

void ConfigureLogging(LogLevel min_level, std::string node_id, const std::string& file) {
  LogState& s = State();
  s.min_level = static_cast<int>(min_level);
  s.node_id = std::move(node_id);
  if (!file.empty()) {
    s.logger = std::make_shared<spdlog::logger>(
        "dwcp", std::make_shared<spdlog::sinks::basic_file_sink_mt>(file));
    s.logger->set_pattern("%v");
    s.logger->set_level(spdlog::level::trace);
    s.logger->flush_on(spdlog::level::trace);
  }
}

std::string FormatTimestamp(int64_t wall_millis) {
  std::time_t secs = wall_millis / 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%03dZ", static_cast<int>(wall_millis % 1000));
  return buf;
}

void Log(LogLevel level, std::string_view component, std::string_view message,
         const nlohmann::json& fields) {
  LogState& s = State();
  if (static_cast<int>(level) < s.min_level.load(std::memory_order_relaxed)) return;
  nlohmann::json line = {
      {"timestamp", FormatTimestamp(RealClock::Instance().WallMillis())},
      {"level", LogLevelName(level)},
      {"component", component},
      {"message", message},
  };
  if (!s.node_id.empty()) line["node_id"] = s.node_id;
  if (fields.is_object()) {
    for (auto it = fields.begin(); it != fields.end(); ++it) line[it.key()] = it.value();
  }
  if (!line.contains("trace_id")) {
    if (auto ctx = trace::ActiveSpanContext()) {
      line["trace_id"] = ctx->TraceIdHex();
      line["span_id"] = ctx->SpanIdHex();
    }
  }
  s.logger->info(line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

void SetLogLevel(LogLevel level) { State().min_level = static_cast<int>(level); }

LogLevel CurrentLogLevel() { return static_cast<LogLevel>(State().min_level.load()); }

}  // namespace dwcp::obs
