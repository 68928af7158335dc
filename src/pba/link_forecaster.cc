#include "pba/link_forecaster.h"

#include <algorithm>
#include <cmath>

namespace dwcp::pba {
namespace {

constexpr double kEwmaAlpha = 0.3;
constexpr double kHoltAlpha = 0.5, kHoltBeta = 0.3;
constexpr double kErrorAlpha = 0.2;  // smoothing of each model's error

}  // namespace

const char* ModelName(Model m) {
  switch (m) {
    case Model::kLast:
      return "last";
    case Model::kEwma:
      return "ewma";
    case Model::kHolt:
      return "holt";
  }
  return "unknown";
}

double LinkForecaster::Predict(Model m) const {
  switch (m) {
    case Model::kLast:
      return last_;
    case Model::kEwma:
      return ewma_;
    case Model::kHolt:
      return std::max(0.0, level_ + trend_);
  }
  return 0;
}

std::optional<double> LinkForecaster::Observe(double bandwidth) {
  if (!(bandwidth > 0) || !std::isfinite(bandwidth)) return std::nullopt;
  std::optional<double> winner_error;
  if (samples_ == 0) {
    last_ = ewma_ = level_ = bandwidth;
    trend_ = 0;
  } else {
    for (int i = 0; i < kModelCount; ++i) {
      const double e = std::abs(Predict(static_cast<Model>(i)) - bandwidth) / bandwidth;
      if (static_cast<Model>(i) == winner_) winner_error = e;
      error_[i] = samples_ == 1 ? e : error_[i] + kErrorAlpha * (e - error_[i]);
    }
    last_ = bandwidth;
    ewma_ += kEwmaAlpha * (bandwidth - ewma_);
    const double previous_level = level_;
    level_ = kHoltAlpha * bandwidth + (1 - kHoltAlpha) * (level_ + trend_);
    trend_ = kHoltBeta * (level_ - previous_level) + (1 - kHoltBeta) * trend_;
    winner_ = static_cast<Model>(std::min_element(error_.begin(), error_.end()) - error_.begin());
  }
  ++samples_;
  return winner_error;
}

double LinkForecaster::Forecast() const { return samples_ == 0 ? 0 : Predict(winner_); }

double LinkForecaster::accuracy_percent() const {
  if (samples_ < 2) return 0;
  return std::clamp(100.0 * (1.0 - error(winner_)), 0.0, 100.0);
}

}  // namespace dwcp::pba
