// Parsing and printing of sizes ("1GiB", "512MiB", "4096") and rates ("20MB/s").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace dwcp {

// Accepts a non-negative integer or decimal with an optional unit: B, K/KB (1000), KiB
// (1024), M/MB, MiB, G/GB, GiB, T/TB, TiB; case-insensitive units, no spaces required.
// Rejects negatives, overflow, empty input and unknown units with InvalidArgument.
Result<uint64_t> ParseBytes(std::string_view text);

// A rate in bytes per second: a size as ParseBytes accepts followed by "/s" (the "/s" is
// optional); "20MB/s" = 20,000,000. Bit rates: "1Gbit/s", "100Mbit/s".
Result<uint64_t> ParseRate(std::string_view text);

// A duration: "300ms", "2s", "1.5s", "5m", "1h"; a bare number means milliseconds.
Result<int64_t> ParseDurationMillis(std::string_view text);

// "1.00 GiB", "512 MiB", "17 B" (binary units, two decimals above bytes).
std::string FormatBytes(uint64_t bytes);
// "1.23 GB/s" (decimal units, as network rates are quoted).
std::string FormatRate(double bytes_per_second);
// "1.234 s", "87 ms", "2m03s".
std::string FormatDuration(double seconds);

}  // namespace dwcp
