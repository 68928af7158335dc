#include "common/units.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>

namespace dwcp {
namespace {

constexpr uint64_t kKiB = uint64_t{1} << 10;
constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kGiB = uint64_t{1} << 30;
constexpr uint64_t kTiB = uint64_t{1} << 40;

uint64_t MustParseBytes(std::string_view text) {
  auto r = ParseBytes(text);
  EXPECT_TRUE(r.ok()) << "'" << text << "': " << r.status().ToString();
  return r.ok() ? *r : 0;
}

uint64_t MustParseRate(std::string_view text) {
  auto r = ParseRate(text);
  EXPECT_TRUE(r.ok()) << "'" << text << "': " << r.status().ToString();
  return r.ok() ? *r : 0;
}

int64_t MustParseDuration(std::string_view text) {
  auto r = ParseDurationMillis(text);
  EXPECT_TRUE(r.ok()) << "'" << text << "': " << r.status().ToString();
  return r.ok() ? *r : -1;
}

TEST(UnitsTest, ParseBytesPlainNumber) {
  EXPECT_EQ(MustParseBytes("4096"), 4096u);
  EXPECT_EQ(MustParseBytes("0"), 0u);
  EXPECT_EQ(MustParseBytes("  17  "), 17u);
  EXPECT_EQ(MustParseBytes("17B"), 17u);
}

TEST(UnitsTest, ParseBytesBinaryUnits) {
  EXPECT_EQ(MustParseBytes("1KiB"), kKiB);
  EXPECT_EQ(MustParseBytes("1 KiB"), kKiB);
  EXPECT_EQ(MustParseBytes("512MiB"), 512 * kMiB);
  EXPECT_EQ(MustParseBytes("1GiB"), kGiB);
  EXPECT_EQ(MustParseBytes("2TiB"), 2 * kTiB);
  EXPECT_EQ(MustParseBytes("1.5GiB"), kGiB + kGiB / 2);
  EXPECT_EQ(MustParseBytes("4Gi"), 4 * kGiB);
}

TEST(UnitsTest, ParseBytesDecimalUnits) {
  EXPECT_EQ(MustParseBytes("1.5GB"), 1'500'000'000u);
  EXPECT_EQ(MustParseBytes("20MB"), 20'000'000u);
  EXPECT_EQ(MustParseBytes("20M"), 20'000'000u);
  EXPECT_EQ(MustParseBytes("3k"), 3000u);
  EXPECT_EQ(MustParseBytes("1TB"), 1'000'000'000'000u);
}

TEST(UnitsTest, ParseBytesUnitsAreCaseInsensitive) {
  EXPECT_EQ(MustParseBytes("1gib"), kGiB);
  EXPECT_EQ(MustParseBytes("1GIB"), kGiB);
  EXPECT_EQ(MustParseBytes("1gB"), 1'000'000'000u);
  EXPECT_EQ(MustParseBytes("8mib"), 8 * kMiB);
}

TEST(UnitsTest, ParseBytesRejectsBadInput) {
  for (const char* bad : {"", "   ", "-1", "-1GiB", "abc", "GiB", "12XB", "1.2.3", "1e99GiB",
                          "1 G i B", ".", "0x10", "inf", "nan"}) {
    auto r = ParseBytes(bad);
    EXPECT_FALSE(r.ok()) << "'" << bad << "' parsed as " << (r.ok() ? *r : 0);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_FALSE(r.status().message().empty()) << bad;
  }
}

TEST(UnitsTest, ParseBytesRejectsOverflow) {
  // 2^64 bytes = 16 EiB = 16,777,216 TiB; anything at or above it does not fit.
  for (const char* big :
       {"16777216TiB", "20000000TB", "99999999999999999999GiB", "18446744073709551616"}) {
    auto r = ParseBytes(big);
    EXPECT_FALSE(r.ok()) << big << " parsed as " << (r.ok() ? *r : 0);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << big;
  }
  // More digits than a double can hold must fail as a value, not throw.
  std::string huge(400, '9');
  EXPECT_EQ(ParseBytes(huge).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseBytes(huge + "GiB").status().code(), StatusCode::kInvalidArgument);
}

TEST(UnitsTest, ParseBytesLargeValuesStayExact) {
  // Above INT64_MAX but below 2^64: must not wrap through a signed conversion.
  EXPECT_EQ(MustParseBytes("10000000TB"), 10'000'000'000'000'000'000u);
  EXPECT_EQ(MustParseBytes("8388608TiB"), uint64_t{1} << 63);
  EXPECT_EQ(MustParseBytes("1000TiB"), 1000 * kTiB);
  EXPECT_EQ(MustParseBytes("18446744073709551615"), UINT64_MAX);
  EXPECT_EQ(MustParseBytes("16777215TiB"), 16777215 * kTiB);
  EXPECT_EQ(MustParseBytes("9007199254740993"), 9007199254740993u);  // 2^53 + 1, not a double
}

TEST(UnitsTest, ParseBytesRoundsFractionsToTheNearestByte) {
  EXPECT_EQ(MustParseBytes("1.5"), 2u);
  EXPECT_EQ(MustParseBytes("1.4B"), 1u);
  EXPECT_EQ(MustParseBytes("0.5KiB"), 512u);
  EXPECT_EQ(MustParseBytes(".5KiB"), 512u);
  EXPECT_EQ(MustParseBytes("1.KiB"), 1024u);
}

TEST(UnitsTest, ParseRateBytesPerSecond) {
  EXPECT_EQ(MustParseRate("20MB/s"), 20'000'000u);
  EXPECT_EQ(MustParseRate("20MB"), 20'000'000u);
  EXPECT_EQ(MustParseRate("1GiB/s"), kGiB);
  EXPECT_EQ(MustParseRate("512MiB/s"), 512 * kMiB);
  EXPECT_EQ(MustParseRate("4KiB/s"), 4 * kKiB);
  EXPECT_EQ(MustParseRate("1.5GB/s"), 1'500'000'000u);
  EXPECT_EQ(MustParseRate("100B/s"), 100u);
  EXPECT_EQ(MustParseRate("1000"), 1000u);
  EXPECT_EQ(MustParseRate("1000/s"), 1000u);
  EXPECT_EQ(MustParseRate(" 20 mb/s "), 20'000'000u);
}

TEST(UnitsTest, ParseRateBitsPerSecond) {
  EXPECT_EQ(MustParseRate("1Gbit/s"), 125'000'000u);
  EXPECT_EQ(MustParseRate("1gbit/s"), 125'000'000u);
  EXPECT_EQ(MustParseRate("100Mbit/s"), 12'500'000u);
  EXPECT_EQ(MustParseRate("100Mbit"), 12'500'000u);
  EXPECT_EQ(MustParseRate("10Gbit/s"), 1'250'000'000u);
  EXPECT_EQ(MustParseRate("8bit/s"), 1u);
  EXPECT_EQ(MustParseRate("1Gibit/s"), kGiB / 8);
}

TEST(UnitsTest, ParseRateBpsSuffix) {
  // Lower-case b in "bps" is bits, upper-case B is bytes, as rates are conventionally quoted.
  EXPECT_EQ(MustParseRate("100Mbps"), 12'500'000u);
  EXPECT_EQ(MustParseRate("1Gbps"), 125'000'000u);
  EXPECT_EQ(MustParseRate("800kbps"), 100'000u);
  EXPECT_EQ(MustParseRate("800bps"), 100u);
  EXPECT_EQ(MustParseRate("100MBps"), 100'000'000u);
  EXPECT_EQ(MustParseRate("2GiBps"), 2 * kGiB);
}

TEST(UnitsTest, ParseRateRejectsJunk) {
  for (const char* bad : {"", "fast", "/s", "-1MB/s", "20XB/s", "20MB/h", "20MB/s/s", "1Gbitz",
                          "Mbps", "1e3MB/s", "20ps"}) {
    auto r = ParseRate(bad);
    EXPECT_FALSE(r.ok()) << "'" << bad << "' parsed as " << (r.ok() ? *r : 0);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(ParseRate("99999999999999999999GB/s").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseRate(std::string(400, '9') + "MB/s").status().code(),
            StatusCode::kInvalidArgument);
}

TEST(UnitsTest, ParseDurationMillis) {
  EXPECT_EQ(MustParseDuration("300ms"), 300);
  EXPECT_EQ(MustParseDuration("2s"), 2000);
  EXPECT_EQ(MustParseDuration("1.5s"), 1500);
  EXPECT_EQ(MustParseDuration("5m"), 300'000);
  EXPECT_EQ(MustParseDuration("5min"), 300'000);
  EXPECT_EQ(MustParseDuration("1h"), 3'600'000);
  EXPECT_EQ(MustParseDuration("250"), 250);
  EXPECT_EQ(MustParseDuration("0"), 0);
  EXPECT_EQ(MustParseDuration("60S"), 60'000);
  EXPECT_EQ(MustParseDuration(" 10 ms "), 10);
}

TEST(UnitsTest, ParseDurationRejectsBadInput) {
  for (const char* bad : {"5x", "", "ms", "-5s", "abc", "5 sec", "1e3s", "5mss"}) {
    auto r = ParseDurationMillis(bad);
    EXPECT_FALSE(r.ok()) << "'" << bad << "' parsed as " << (r.ok() ? *r : 0);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
  }
  // Far beyond int64 milliseconds: an error, not a wrapped value.
  EXPECT_EQ(ParseDurationMillis("99999999999999999999h").status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseDurationMillis(std::string(400, '9')).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(UnitsTest, ParseDurationUnknownUnitMessageNamesUnit) {
  auto r = ParseDurationMillis("5x");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("'x'"), std::string::npos) << r.status().message();
}

TEST(UnitsTest, FormatBytes) {
  EXPECT_EQ(FormatBytes(0), "0 B");
  EXPECT_EQ(FormatBytes(17), "17 B");
  EXPECT_EQ(FormatBytes(1023), "1023 B");
  EXPECT_EQ(FormatBytes(1024), "1.00 KiB");
  EXPECT_EQ(FormatBytes(1536), "1.50 KiB");
  EXPECT_EQ(FormatBytes(512 * kMiB), "512.00 MiB");
  EXPECT_EQ(FormatBytes(kGiB), "1.00 GiB");
  EXPECT_EQ(FormatBytes(3 * kTiB), "3.00 TiB");
  EXPECT_EQ(FormatBytes(2048 * kTiB), "2048.00 TiB");
  // Values that round up to the next unit are printed in that unit.
  EXPECT_EQ(FormatBytes(kMiB - 1), "1.00 MiB");
  EXPECT_EQ(FormatBytes(kGiB - 1), "1.00 GiB");
  EXPECT_EQ(FormatBytes(UINT64_MAX), "16777216.00 TiB");
}

TEST(UnitsTest, FormatRate) {
  EXPECT_EQ(FormatRate(0), "0.00 B/s");
  EXPECT_EQ(FormatRate(999), "999.00 B/s");
  EXPECT_EQ(FormatRate(1000), "1.00 kB/s");
  EXPECT_EQ(FormatRate(20e6), "20.00 MB/s");
  EXPECT_EQ(FormatRate(1.23e9), "1.23 GB/s");
  EXPECT_EQ(FormatRate(125e6), "125.00 MB/s");
  EXPECT_EQ(FormatRate(2e12), "2.00 TB/s");
  EXPECT_EQ(FormatRate(999'999), "1.00 MB/s");
}

TEST(UnitsTest, FormatDuration) {
  EXPECT_EQ(FormatDuration(0), "0 ms");
  EXPECT_EQ(FormatDuration(0.087), "87 ms");
  EXPECT_EQ(FormatDuration(1.234), "1.234 s");
  EXPECT_EQ(FormatDuration(59.5), "59.500 s");
  EXPECT_EQ(FormatDuration(60), "1m00s");
  EXPECT_EQ(FormatDuration(123), "2m03s");
  EXPECT_EQ(FormatDuration(123.9), "2m03s");
  EXPECT_EQ(FormatDuration(3600), "60m00s");
  // Values that round up to the next unit are printed in that unit.
  EXPECT_EQ(FormatDuration(0.9996), "1.000 s");
  EXPECT_EQ(FormatDuration(59.9996), "1m00s");
}

}  // namespace
}  // namespace dwcp
