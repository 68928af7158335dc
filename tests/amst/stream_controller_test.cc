#include "amst/stream_controller.h"

#include <gtest/gtest.h>

#include <functional>

namespace dwcp::amst {
namespace {

using std::chrono::milliseconds;
using TimePoint = StreamController::TimePoint;

TEST(StreamControllerTest, FirstGuessFromTheBandwidthDelayProduct) {
  StreamControllerConfig c;                                        // 4 MiB per stream, 1..8
  EXPECT_EQ(StreamController::InitialStreams(c, 0.05, 5e9), 1u);   // loopback
  EXPECT_EQ(StreamController::InitialStreams(c, 50, 125e6), 2u);   // 1 Gbit/s, 50 ms: 6.25 MB
  EXPECT_EQ(StreamController::InitialStreams(c, 80, 1.25e9), 8u);  // 10 Gbit/s, 80 ms: capped
  EXPECT_EQ(StreamController::InitialStreams(c, 50, 0), 1u);       // bandwidth unknown
  c.fixed_streams = 3;
  EXPECT_EQ(StreamController::InitialStreams(c, 0.05, 5e9), 3u);
}

// Drives a controller against a link whose delivered rate is `rate(streams)`, one
// observation every 100 ms for `seconds`, with streams opening instantly.
uint32_t Drive(StreamController& s, const std::function<double(uint32_t)>& rate, int seconds,
               TimePoint* now, uint64_t* bytes) {
  uint32_t open = s.target();
  for (int i = 0; i < seconds * 10; ++i) {
    *now += milliseconds(100);
    *bytes += static_cast<uint64_t>(rate(open) / 10);
    open = s.Observe(*now, *bytes, open);
  }
  return open;
}

TEST(StreamControllerTest, AddsStreamsWhileEachPaysThenHolds) {
  StreamControllerConfig c;
  StreamController s(c, 1);
  TimePoint now{};
  uint64_t bytes = 0;
  // Each stream is worth 10 MB/s up to 4 streams (a lossy long link), flat beyond.
  auto rate = [](uint32_t n) { return 10e6 * std::min<uint32_t>(n, 4); };
  EXPECT_EQ(Drive(s, rate, 12, &now, &bytes), 4u);
  EXPECT_NEAR(s.settled_rate(), 40e6, 1e6);
  // It holds at 4 (the probe of a 5th failed), and probes again after the hold without
  // drifting: still 4 a minute later.
  EXPECT_EQ(Drive(s, rate, 60, &now, &bytes), 4u);
}

TEST(StreamControllerTest, RemovesAStreamThatDoesNotPay) {
  StreamControllerConfig c;
  StreamController s(c, 3);  // the BDP guess was too high: more streams only add overhead
  TimePoint now{};
  uint64_t bytes = 0;
  auto rate = [](uint32_t n) { return 100e6 - 1e6 * n; };
  EXPECT_EQ(Drive(s, rate, 5, &now, &bytes), 3u);  // probed 4, went back to 3
}

TEST(StreamControllerTest, StaysWithinBoundsAndHonoursAFixedCount) {
  StreamControllerConfig c;
  c.max_streams = 2;
  StreamController s(c, 1);
  TimePoint now{};
  uint64_t bytes = 0;
  auto linear = [](uint32_t n) { return 10e6 * n; };
  EXPECT_EQ(Drive(s, linear, 30, &now, &bytes), 2u);
  c.fixed_streams = 5;
  StreamController fixed(c, 1);
  EXPECT_EQ(Drive(fixed, linear, 30, &now, &bytes), 5u);
}

TEST(StreamControllerTest, DoesNotMeasureWhileStreamsAreOpening) {
  StreamControllerConfig c;
  StreamController s(c, 2);
  TimePoint now{};
  // One stream open while two are wanted: no measurement, no change, however long.
  for (int i = 0; i < 100; ++i) {
    now += milliseconds(100);
    EXPECT_EQ(s.Observe(now, uint64_t(i) * 1000, 1), 2u);
  }
  EXPECT_EQ(s.settled_rate(), 0);
}

}  // namespace
}  // namespace dwcp::amst
