#include "common/failpoint.h"

#include <algorithm>
#include <cstdlib>
#include <mutex>

#include "obs/log.h"

namespace dwcp {
namespace {

std::mutex g_mu;
std::map<std::string, std::chrono::milliseconds> g_points;

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

}  // namespace

Result<std::map<std::string, std::chrono::milliseconds>> ParseFailpoints(const std::string& spec) {
  std::map<std::string, std::chrono::milliseconds> out;
  size_t start = 0;
  while (start <= spec.size()) {
    size_t end = spec.find(';', start);
    if (end == std::string::npos) end = spec.size();
    const std::string entry = Trim(spec.substr(start, end - start));
    start = end + 1;
    if (entry.empty()) continue;
    const size_t eq = entry.find('=');
    const std::string name = eq == std::string::npos ? "" : Trim(entry.substr(0, eq));
    const std::string action = eq == std::string::npos ? "" : Trim(entry.substr(eq + 1));
    if (!name.empty() && action == "on") {
      out[name] = std::chrono::milliseconds(-1);
      continue;
    }
    const std::string prefix = "sleep(";
    bool ok = !name.empty() && action.rfind(prefix, 0) == 0 && action.size() > prefix.size() + 1 &&
              action.back() == ')';
    long long ms = -1;
    if (ok) {
      const std::string digits = action.substr(prefix.size(), action.size() - prefix.size() - 1);
      ok = digits.size() <= 9 && digits.find_first_not_of("0123456789") == std::string::npos;
      if (ok) ms = std::stoll(digits);
    }
    if (!ok) {
      return Status(InvalidArgument("DWCP_FAILPOINTS: '" + entry +
                                    "' is not NAME=sleep(MILLISECONDS) or NAME=on"));
    }
    out[name] = std::chrono::milliseconds(ms);
  }
  return out;
}

Status Failpoints::Init() {
  const char* env = std::getenv("DWCP_FAILPOINTS");
  auto parsed = ParseFailpoints(env ? env : "");
  if (!parsed.ok()) return parsed.status();
  std::lock_guard lock(g_mu);
  g_points = std::move(parsed).value();
  return Status::Ok();
}

std::chrono::milliseconds Failpoints::Hit(const std::string& name) {
  std::chrono::milliseconds wait{0};
  {
    std::lock_guard lock(g_mu);
    auto it = g_points.find(name);
    if (it == g_points.end()) return wait;
    wait = std::max(std::chrono::milliseconds(0), it->second);
  }
  obs::LogWarn("failpoint", "failpoint reached", {{"name", name}, {"sleep_ms", wait.count()}});
  return wait;
}

bool Failpoints::Armed(const std::string& name) {
  {
    std::lock_guard lock(g_mu);
    if (g_points.count(name) == 0) return false;
  }
  obs::LogWarn("failpoint", "failpoint reached", {{"name", name}});
  return true;
}

bool Failpoints::Any() {
  std::lock_guard lock(g_mu);
  return !g_points.empty();
}

}  // namespace dwcp
