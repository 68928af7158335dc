// Parsing and printing of sizes ("1GiB", "512MiB", "4096") and rates ("20MB/s").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace dwcp {

// Accepts a non-negative integer or decimal with an optional unit: B, K/KB (1000), KiB
// (1024), M/MB, MiB, G/GB, GiB, T/TB, TiB; case-insensitive units, no spaces required.
// Integers are exact up to 2^64-1; fractions round to the nearest byte. Rejects negatives,
// exponents, values of 2^64 or more, empty input and unknown units with InvalidArgument.
Result<uint64_t> ParseBytes(std::string_view text);

// A rate in bytes per second: a size as ParseBytes accepts followed by "/s" (the "/s" is
// optional); "20MB/s" = 20,000,000, "1GiB/s" = 2^30. Bit rates (divided by 8, rounded):
// "1Gbit/s" = 125,000,000, "100Mbit/s", and "100Mbps" (lower-case b: bits; "100MBps" is
// bytes). Rejects what ParseBytes rejects with InvalidArgument.
Result<uint64_t> ParseRate(std::string_view text);

// A duration: "300ms", "2s", "1.5s", "5m" (or "5min"), "1h"; a bare number means
// milliseconds; rounded to the nearest millisecond. InvalidArgument for unknown units,
// negatives and values beyond int64 milliseconds.
Result<int64_t> ParseDurationMillis(std::string_view text);

// "1.00 GiB", "512.00 MiB", "17 B" (binary units, two decimals above bytes; a value that
// would print as 1024.00 is shown in the next unit).
std::string FormatBytes(uint64_t bytes);
// "1.23 GB/s" (decimal units, as network rates are quoted; never "1000.00").
std::string FormatRate(double bytes_per_second);
// "87 ms" below 999.5 ms, "1.234 s" below 59.9995 s, then whole minutes and seconds
// (truncated): "2m03s".
std::string FormatDuration(double seconds);

}  // namespace dwcp
