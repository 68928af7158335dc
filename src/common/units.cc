#include "common/units.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <string>

namespace dwcp {
namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// Splits "12.5MiB" into 12.5 and "mib". Fails on a missing or negative number.
Status SplitNumber(std::string_view text, double* number, std::string* unit) {
  text = Trim(text);
  size_t i = 0;
  bool seen_digit = false, seen_dot = false;
  while (i < text.size()) {
    char c = text[i];
    if (std::isdigit(static_cast<unsigned char>(c))) {
      seen_digit = true;
    } else if (c == '.' && !seen_dot) {
      seen_dot = true;
    } else {
      break;
    }
    ++i;
  }
  if (!seen_digit) return InvalidArgument("'" + std::string(text) + "' is not a number");
  *number = std::stod(std::string(text.substr(0, i)));
  *unit = Lower(Trim(text.substr(i)));
  return Status::Ok();
}

Result<double> UnitMultiplier(const std::string& unit) {
  if (unit.empty() || unit == "b") return 1.0;
  if (unit == "k" || unit == "kb") return 1e3;
  if (unit == "kib" || unit == "ki") return 1024.0;
  if (unit == "m" || unit == "mb") return 1e6;
  if (unit == "mib" || unit == "mi") return 1024.0 * 1024;
  if (unit == "g" || unit == "gb") return 1e9;
  if (unit == "gib" || unit == "gi") return 1024.0 * 1024 * 1024;
  if (unit == "t" || unit == "tb") return 1e12;
  if (unit == "tib" || unit == "ti") return 1024.0 * 1024 * 1024 * 1024;
  return Status(InvalidArgument("unknown size unit '" + unit + "'"));
}

}  // namespace

Result<uint64_t> ParseBytes(std::string_view text) {
  double number = 0;
  std::string unit;
  DWCP_RETURN_IF_ERROR(SplitNumber(text, &number, &unit));
  auto mult = UnitMultiplier(unit);
  if (!mult.ok()) return mult.status();
  double bytes = number * *mult;
  if (bytes >= 1.8e19) return Status(InvalidArgument("size '" + std::string(text) + "' is too large"));
  return static_cast<uint64_t>(std::llround(bytes));
}

Result<uint64_t> ParseRate(std::string_view text) {
  std::string lower = Lower(Trim(text));
  if (lower.size() > 2 && lower.ends_with("/s")) lower.resize(lower.size() - 2);
  if (lower.ends_with("ps")) lower.resize(lower.size() - 2);  // "Mbps"
  double number = 0;
  std::string unit;
  DWCP_RETURN_IF_ERROR(SplitNumber(lower, &number, &unit));
  double divisor = 1;
  if (unit.ends_with("bit") || (unit.size() >= 2 && unit.back() == 'b' && unit != "kb" &&
                                unit != "mb" && unit != "gb" && unit != "tb" && unit != "b")) {
    // "gbit", "mbit": bits. (A lone "b" means bytes.)
    unit = unit.substr(0, unit.find("bit") == std::string::npos ? unit.size() - 1 : unit.find("bit"));
    divisor = 8;
  }
  auto mult = UnitMultiplier(unit);
  if (!mult.ok()) return Status(InvalidArgument("unknown rate unit in '" + std::string(text) + "'"));
  double rate = number * *mult / divisor;
  if (rate >= 1.8e19) return Status(InvalidArgument("rate '" + std::string(text) + "' is too large"));
  return static_cast<uint64_t>(std::llround(rate));
}

Result<int64_t> ParseDurationMillis(std::string_view text) {
  double number = 0;
  std::string unit;
  DWCP_RETURN_IF_ERROR(SplitNumber(text, &number, &unit));
  double ms;
  if (unit.empty() || unit == "ms") {
    ms = number;
  } else if (unit == "s") {
    ms = number * 1e3;
  } else if (unit == "m" || unit == "min") {
    ms = number * 60e3;
  } else if (unit == "h") {
    ms = number * 3600e3;
  } else {
    return Status(InvalidArgument("unknown duration unit '" + unit + "' (use ms, s, m or h)"));
  }
  return static_cast<int64_t>(std::llround(ms));
}

std::string FormatBytes(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0) {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(buf, sizeof buf, "%.2f %s", v, kUnits[u]);
  }
  return buf;
}

std::string FormatRate(double bps) {
  static const char* kUnits[] = {"B/s", "kB/s", "MB/s", "GB/s", "TB/s"};
  int u = 0;
  while (bps >= 1000 && u < 4) {
    bps /= 1000;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f %s", bps, kUnits[u]);
  return buf;
}

std::string FormatDuration(double seconds) {
  char buf[32];
  if (seconds < 1) {
    std::snprintf(buf, sizeof buf, "%.0f ms", seconds * 1e3);
  } else if (seconds < 60) {
    std::snprintf(buf, sizeof buf, "%.3f s", seconds);
  } else {
    int total = static_cast<int>(seconds);
    std::snprintf(buf, sizeof buf, "%dm%02ds", total / 60, total % 60);
  }
  return buf;
}

}  // namespace dwcp
