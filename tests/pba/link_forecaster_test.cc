#include "pba/link_forecaster.h"

#include <gtest/gtest.h>

#include <cmath>

#include "obs/metrics.h"
#include "pba/bandwidth_predictor.h"

namespace dwcp::pba {
namespace {

TEST(LinkForecasterTest, NothingBeforeTheFirstMeasurement) {
  LinkForecaster f;
  EXPECT_EQ(f.Forecast(), 0);
  EXPECT_EQ(f.accuracy_percent(), 0);
  EXPECT_FALSE(f.Observe(100e6).has_value());  // no forecast to score yet
  EXPECT_EQ(f.Forecast(), 100e6);
  EXPECT_FALSE(f.Observe(-1).has_value());  // ignored
  EXPECT_FALSE(f.Observe(NAN).has_value());
  EXPECT_EQ(f.samples(), 1u);
}

TEST(LinkForecasterTest, SteadyLinkIsPredictedExactly) {
  LinkForecaster f;
  for (int i = 0; i < 20; ++i) f.Observe(125e6);
  EXPECT_NEAR(f.Forecast(), 125e6, 1);
  EXPECT_NEAR(f.accuracy_percent(), 100, 1e-6);
}

TEST(LinkForecasterTest, HoltWinsOnATrendAndNoiseFavoursSmoothing) {
  LinkForecaster ramp;
  for (int i = 1; i <= 40; ++i) ramp.Observe(10e6 * i);  // a link ramping up (slow start)
  EXPECT_EQ(ramp.winner(), Model::kHolt);
  EXPECT_LT(ramp.error(Model::kHolt), ramp.error(Model::kEwma));
  EXPECT_NEAR(ramp.Forecast(), 410e6, 20e6);

  LinkForecaster noisy;  // alternating ±30% around 100 MB/s: the mean is the best guess
  for (int i = 0; i < 60; ++i) noisy.Observe(i % 2 ? 130e6 : 70e6);
  EXPECT_EQ(noisy.winner(), Model::kEwma);
  EXPECT_LT(noisy.error(Model::kEwma), noisy.error(Model::kLast));
  EXPECT_GT(noisy.accuracy_percent(), 50);
  EXPECT_LT(noisy.accuracy_percent(), 90);
}

TEST(BandwidthPredictorTest, ExportsAccuracyErrorsAndUtilization) {
  obs::Metrics metrics;
  BandwidthPredictor p(metrics);
  EXPECT_FALSE(p.mean_error().has_value());
  EXPECT_EQ(p.Forecast("node-b"), 0);
  p.Observe("node-b", 100e6, 50e6);
  p.Observe("node-b", 100e6, 50e6);  // forecast 100e6, achieved half of it
  p.Observe("node-b", 80e6, 80e6);   // forecast 100e6, measured 80e6: 25% error
  ASSERT_TRUE(p.mean_error().has_value());
  EXPECT_GT(*p.mean_error(), 0);
  auto families = metrics.Collect();
  auto value = [&](const std::string& name, const std::string& label = "") -> double {
    for (const auto& f : families) {
      if (f.name != name) continue;
      for (const auto& m : f.metric) {
        bool match = label.empty();
        for (const auto& l : m.label) match = match || l.value == label;
        if (!match) continue;
        if (f.type == prometheus::MetricType::Histogram) return m.histogram.sample_count;
        return m.gauge.value;
      }
    }
    return NAN;
  };
  EXPECT_GT(value("dwcp_v3_pba_prediction_accuracy_percent"), 0);
  EXPECT_LT(value("dwcp_v3_pba_prediction_accuracy_percent"), 100);
  EXPECT_NEAR(value("dwcp_v3_pba_bandwidth_utilization_percent"), 80, 1e-6);
  EXPECT_EQ(value("dwcp_v3_pba_prediction_error_ratio"), 2);  // two forecasts scored
  EXPECT_GT(value("dwcp_v3_pba_model_error_ratio", "holt"), 0);
}

}  // namespace
}  // namespace dwcp::pba
