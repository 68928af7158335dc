#include "common/units.h"

#include <algorithm>
#include <cctype>
#include <charconv>
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

// A non-negative number as written: its digits and dot, and the unit text after it.
struct Number {
  std::string_view digits;  // e.g. "12.5"
  std::string unit;         // lower-case, trimmed, e.g. "mib"
};

// Splits "12.5MiB" into "12.5" and "mib". Fails on a missing or negative number.
Result<Number> SplitNumber(std::string_view text) {
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
  if (!seen_digit) return Status(InvalidArgument("'" + std::string(text) + "' is not a number"));
  return Number{text.substr(0, i), Lower(Trim(text.substr(i)))};
}

// The decimal value of `digits` (as SplitNumber returns them); InvalidArgument when it does not
// fit a double.
Result<double> ToDouble(std::string_view digits, std::string_view text) {
  double v = 0;
  auto [ptr, ec] =
      std::from_chars(digits.data(), digits.data() + digits.size(), v, std::chars_format::fixed);
  if (ec != std::errc() || ptr != digits.data() + digits.size() || !std::isfinite(v)) {
    return Status(InvalidArgument("'" + std::string(text) + "' is too large"));
  }
  return v;
}

Result<uint64_t> UnitMultiplier(const std::string& unit) {
  if (unit.empty() || unit == "b") return uint64_t{1};
  if (unit == "k" || unit == "kb") return uint64_t{1000};
  if (unit == "kib" || unit == "ki") return uint64_t{1} << 10;
  if (unit == "m" || unit == "mb") return uint64_t{1000000};
  if (unit == "mib" || unit == "mi") return uint64_t{1} << 20;
  if (unit == "g" || unit == "gb") return uint64_t{1000000000};
  if (unit == "gib" || unit == "gi") return uint64_t{1} << 30;
  if (unit == "t" || unit == "tb") return uint64_t{1000000000000};
  if (unit == "tib" || unit == "ti") return uint64_t{1} << 40;
  return Status(InvalidArgument("unknown size unit '" + unit + "'"));
}

// `digits` × `mult` / `divisor`, rounded to the nearest integer (halves up). Exact for integer
// inputs; InvalidArgument naming `text` when the result does not fit 64 bits.
Result<uint64_t> Scale(std::string_view digits, uint64_t mult, uint64_t divisor,
                       std::string_view text) {
  Status too_large = InvalidArgument("'" + std::string(text) + "' is too large");
  if (digits.find('.') == std::string_view::npos) {
    uint64_t n = 0, product = 0;
    auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
    if (ec != std::errc() || ptr != digits.data() + digits.size()) return too_large;
    if (__builtin_mul_overflow(n, mult, &product)) return too_large;
    return product / divisor + ((product % divisor) * 2 >= divisor ? 1 : 0);
  }
  auto number = ToDouble(digits, text);
  if (!number.ok()) return number.status();
  double value = std::round(*number * static_cast<double>(mult) / static_cast<double>(divisor));
  if (!(value < 18446744073709551616.0)) return too_large;  // 2^64
  return static_cast<uint64_t>(value);
}

}  // namespace

Result<uint64_t> ParseBytes(std::string_view text) {
  auto number = SplitNumber(text);
  if (!number.ok()) return number.status();
  auto mult = UnitMultiplier(number->unit);
  if (!mult.ok()) return mult.status();
  return Scale(number->digits, *mult, 1, Trim(text));
}

Result<uint64_t> ParseRate(std::string_view text) {
  std::string_view t = Trim(text);
  std::string s(t);  // case kept: "bps" is bits, "Bps" bytes
  Status unknown = InvalidArgument("unknown rate unit in '" + std::string(t) + "'");
  bool bits = false;
  if (s.size() > 2 && Lower(s).ends_with("/s")) {
    s.resize(s.size() - 2);
  } else if (Lower(s).ends_with("ps")) {  // "100Mbps" (bits), "100MBps" (bytes)
    s.resize(s.size() - 2);
    if (s.empty() || (s.back() != 'b' && s.back() != 'B')) return unknown;
    if (s.back() == 'b') {
      bits = true;
      s.pop_back();
    }
  }
  if (!bits && Lower(s).ends_with("bit")) {  // "1Gbit/s", "100Mibit"
    bits = true;
    s.resize(s.size() - 3);
  }
  auto number = SplitNumber(s);
  if (!number.ok()) return number.status();
  if (bits && number->unit.ends_with('b')) return unknown;  // "1MBbit"
  auto mult = UnitMultiplier(number->unit);
  if (!mult.ok()) return unknown;
  return Scale(number->digits, *mult, bits ? 8 : 1, t);
}

Result<int64_t> ParseDurationMillis(std::string_view text) {
  auto split = SplitNumber(text);
  if (!split.ok()) return split.status();
  auto number = ToDouble(split->digits, Trim(text));
  if (!number.ok()) return number.status();
  const std::string& unit = split->unit;
  double ms;
  if (unit.empty() || unit == "ms") {
    ms = *number;
  } else if (unit == "s") {
    ms = *number * 1e3;
  } else if (unit == "m" || unit == "min") {
    ms = *number * 60e3;
  } else if (unit == "h") {
    ms = *number * 3600e3;
  } else {
    return Status(InvalidArgument("unknown duration unit '" + unit + "' (use ms, s, m or h)"));
  }
  ms = std::round(ms);
  if (!(ms < 9.2e18)) {
    return Status(InvalidArgument("duration '" + std::string(Trim(text)) + "' is too long"));
  }
  return static_cast<int64_t>(ms);
}

std::string FormatBytes(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  // Above bytes, move up once the value would print as "1024.00".
  while ((u == 0 ? v >= 1024 : v >= 1023.995) && u < 4) {
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
  while (bps >= 999.995 && u < 4) {  // never print "1000.00"
    bps /= 1000;
    ++u;
  }
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.2f %s", bps, kUnits[u]);
  return buf;
}

std::string FormatDuration(double seconds) {
  char buf[48];
  double ms = std::round(seconds * 1e3);
  if (!(ms >= 1000)) {  // also negative and NaN
    std::snprintf(buf, sizeof buf, "%.0f ms", seconds * 1e3);
  } else if (ms < 60e3) {
    std::snprintf(buf, sizeof buf, "%.3f s", ms / 1e3);
  } else {
    auto total = static_cast<int64_t>(std::min(ms, 9e18) / 1e3);
    std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(total / 60),
                  static_cast<long long>(total % 60));
  }
  return buf;
}

}  // namespace dwcp
