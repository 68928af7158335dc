#include "pba/bandwidth_predictor.h"

#include <algorithm>

namespace dwcp::pba {
namespace {

const prometheus::Histogram::BucketBoundaries kErrorBuckets = {0.01, 0.02, 0.05, 0.1, 0.2,
                                                               0.3,  0.5,  0.75, 1.0, 2.0};

}  // namespace

BandwidthPredictor::BandwidthPredictor(obs::Metrics& metrics)
    : accuracy_(metrics
                    .GaugeFamily(obs::Component::kPba, "prediction_accuracy", "percent",
                                 "Accuracy of the bandwidth forecasts, 100 x (1 - smoothed "
                                 "relative error of the winning model), mean over peer links")
                    .Add({})),
      utilization_(metrics
                       .GaugeFamily(obs::Component::kPba, "bandwidth_utilization", "percent",
                                    "Wire bytes per second the last pre-copy round achieved, "
                                    "as a share of the forecast bandwidth of its link")
                       .Add({})),
      error_(metrics
                 .HistogramFamily(obs::Component::kPba, "prediction_error", "ratio",
                                  "Relative error |forecast - measured| / measured of each "
                                  "bandwidth forecast")
                 .Add({}, kErrorBuckets)) {
  auto& models = metrics.GaugeFamily(obs::Component::kPba, "model_error", "ratio",
                                     "Smoothed relative forecast error per model, mean over "
                                     "peer links (the lowest wins)");
  for (int m = 0; m < kModelCount; ++m) {
    model_error_[m] = &models.Add({{"model", ModelName(static_cast<Model>(m))}});
  }
}

double BandwidthPredictor::Forecast(const std::string& peer) const {
  std::lock_guard lock(mu_);
  auto it = links_.find(peer);
  return it == links_.end() ? 0 : it->second.Forecast();
}

std::optional<LinkForecast> BandwidthPredictor::Describe(const std::string& peer) const {
  std::lock_guard lock(mu_);
  auto it = links_.find(peer);
  if (it == links_.end() || it->second.samples() == 0) return std::nullopt;
  const LinkForecaster& f = it->second;
  return LinkForecast{f.Forecast(), ModelName(f.winner()), f.accuracy_percent(), f.samples()};
}

void BandwidthPredictor::Observe(const std::string& peer, double measured_bandwidth,
                                 double achieved) {
  std::lock_guard lock(mu_);
  LinkForecaster& f = links_[peer];
  const double forecast = f.Forecast();
  if (forecast > 0 && achieved > 0) {
    utilization_.Set(std::min(100.0, 100.0 * achieved / forecast));
  }
  if (auto e = f.Observe(measured_bandwidth)) error_.Observe(*e);
  UpdateGaugesLocked();
}

void BandwidthPredictor::UpdateGaugesLocked() {
  double accuracy = 0;
  std::array<double, kModelCount> errors{};
  int scored = 0;
  for (const auto& [_, f] : links_) {
    if (f.samples() < 2) continue;
    ++scored;
    accuracy += f.accuracy_percent();
    for (int m = 0; m < kModelCount; ++m) errors[m] += f.error(static_cast<Model>(m));
  }
  if (scored == 0) return;
  accuracy_.Set(accuracy / scored);
  for (int m = 0; m < kModelCount; ++m) model_error_[m]->Set(errors[m] / scored);
}

std::optional<double> BandwidthPredictor::mean_error() const {
  std::lock_guard lock(mu_);
  double sum = 0;
  int scored = 0;
  for (const auto& [_, f] : links_) {
    if (f.samples() < 2) continue;
    ++scored;
    sum += f.error(f.winner());
  }
  if (scored == 0) return std::nullopt;
  return sum / scored;
}

}  // namespace dwcp::pba
