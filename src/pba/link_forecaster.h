// PBA, first part: forecasts a link's bandwidth from its measurements and knows how good
// its forecasts have been (docs/pba.md).
//
// Several simple models run side by side on the same series — last value, EWMA, Holt's
// linear trend — and each keeps the smoothed absolute relative error of its own one-step
// forecasts. The forecast handed out is the one of the model with the lowest recent error
// (the guide's "the one with the lowest recent error wins"; the LSTM joins as another model
// in issue 7). Pure and clock-free; one per peer link; not thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <optional>

namespace dwcp::pba {

enum class Model { kLast = 0, kEwma, kHolt };
inline constexpr int kModelCount = 3;
const char* ModelName(Model m);

class LinkForecaster {
 public:
  // Feeds one measurement (bytes/s, > 0; others are ignored) and returns the relative
  // error |forecast - actual| / actual of the forecast the winning model had made for it
  // (nullopt for the first measurement, when there was no forecast).
  std::optional<double> Observe(double bandwidth);

  // The winning model's forecast of the next measurement; 0 before any.
  double Forecast() const;
  Model winner() const { return winner_; }
  // Smoothed absolute relative error of a model's forecasts (0 before it made one).
  double error(Model m) const { return error_[static_cast<int>(m)]; }
  // 100 × (1 − the winner's smoothed error), within [0, 100]; 0 before any forecast.
  double accuracy_percent() const;
  uint64_t samples() const { return samples_; }

 private:
  double Predict(Model m) const;

  uint64_t samples_ = 0;
  double last_ = 0;
  double ewma_ = 0;
  double level_ = 0, trend_ = 0;  // Holt
  std::array<double, kModelCount> error_{};
  Model winner_ = Model::kLast;
};

}  // namespace dwcp::pba
