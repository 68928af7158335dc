#include "amst/mode_detector.h"

#include <gtest/gtest.h>

namespace dwcp::amst {
namespace {

TEST(ModeDetectorTest, ClassifiesByRttLossAndBandwidth) {
  ModeDetector d;
  EXPECT_EQ(d.Classify({0.1, 5e9, 0}), LinkMode::kDatacenter);
  EXPECT_EQ(d.Classify({10, 5e8, 0}), LinkMode::kHybrid);
  EXPECT_EQ(d.Classify({80, 1e8, 0}), LinkMode::kInternet);
  EXPECT_EQ(d.Classify({0.5, 5e9, 0.05}), LinkMode::kInternet);  // lossy
  EXPECT_EQ(d.Classify({0.5, 5e6, 0}), LinkMode::kInternet);     // slow
  EXPECT_EQ(d.Classify({0.5, 0, 0.005}), LinkMode::kHybrid);     // some loss
  EXPECT_EQ(d.Classify({0.5, 0, 0}), LinkMode::kDatacenter);     // bandwidth unknown
}

TEST(ModeDetectorTest, FirstSampleDecidesThenHysteresisHolds) {
  ModeDetector d;
  EXPECT_FALSE(d.measured());
  EXPECT_TRUE(d.Observe({50, 0, 0}));  // straight to internet
  EXPECT_EQ(d.mode(), LinkMode::kInternet);
  EXPECT_EQ(d.switches(), 1u);
  // Two good samples are not enough; an internet sample in between resets the streak.
  EXPECT_FALSE(d.Observe({0.2, 0, 0}));
  EXPECT_FALSE(d.Observe({0.2, 0, 0}));
  EXPECT_FALSE(d.Observe({50, 0, 0}));
  EXPECT_FALSE(d.Observe({0.2, 0, 0}));
  EXPECT_FALSE(d.Observe({0.2, 0, 0}));
  EXPECT_EQ(d.mode(), LinkMode::kInternet);
  EXPECT_TRUE(d.Observe({0.2, 0, 0}));  // the third in a row
  EXPECT_EQ(d.mode(), LinkMode::kDatacenter);
  EXPECT_EQ(d.switches(), 2u);
}

TEST(ModeDetectorTest, AlternatingCandidatesNeverSwitch) {
  ModeDetector d;
  d.Observe({0.2, 0, 0});
  for (int i = 0; i < 20; ++i) {
    EXPECT_FALSE(d.Observe({i % 2 ? 10.0 : 60.0, 0, 0}));  // hybrid, internet, hybrid, ...
  }
  EXPECT_EQ(d.mode(), LinkMode::kDatacenter);
  EXPECT_EQ(d.switches(), 0u);
}

TEST(ModeDetectorTest, PinnedModeNeverChanges) {
  ModeDetectorConfig config;
  config.pinned = LinkMode::kHybrid;
  ModeDetector d(config);
  EXPECT_EQ(d.mode(), LinkMode::kHybrid);
  for (int i = 0; i < 10; ++i) EXPECT_FALSE(d.Observe({100, 0, 0.2}));
  EXPECT_EQ(d.mode(), LinkMode::kHybrid);
  EXPECT_EQ(d.switches(), 0u);
}

TEST(ModeDetectorTest, Names) {
  EXPECT_EQ(*ParseLinkMode("internet"), LinkMode::kInternet);
  EXPECT_STREQ(LinkModeName(LinkMode::kHybrid), "hybrid");
  EXPECT_FALSE(ParseLinkMode("wan").has_value());
}

}  // namespace
}  // namespace dwcp::amst
