// PBA for a node: one LinkForecaster per peer, fed by the migration engine after every
// pre-copy round with the link's measured bandwidth and what the round achieved, and the
// PBA metrics (docs/pba.md):
//
//   dwcp_v3_pba_prediction_accuracy_percent          mean accuracy over the node's links
//   dwcp_v3_pba_model_error_ratio{model}             mean smoothed error per model
//   dwcp_v3_pba_prediction_error_ratio               histogram: each forecast's error
//   dwcp_v3_pba_bandwidth_utilization_percent        last round: achieved / forecast
//
// Thread-safe (one mutex; called once per round, never per batch).
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "obs/metrics.h"
#include "pba/link_forecaster.h"

namespace dwcp::pba {

// PBA's view of one link.
struct LinkForecast {
  double bandwidth = 0;         // the forecast, bytes/s
  std::string model;            // the model that makes it (lowest recent error)
  double accuracy_percent = 0;  // 100 × (1 − that model's smoothed error)
  uint64_t samples = 0;         // measurements seen
};

class BandwidthPredictor {
 public:
  explicit BandwidthPredictor(obs::Metrics& metrics);

  // The bandwidth to expect toward `peer` (bytes/s; 0 when nothing is known yet). Called
  // before a round; Observe() afterwards scores it.
  double Forecast(const std::string& peer) const;
  // The forecast toward `peer` with its model and accuracy; nullopt before a measurement.
  std::optional<LinkForecast> Describe(const std::string& peer) const;

  // One round toward `peer`: the link's measured bandwidth (the kernel's delivery rate over
  // the migration's streams) and the wire bytes per second the round achieved.
  void Observe(const std::string& peer, double measured_bandwidth, double achieved);

  // The mean of the links' smoothed forecast errors (relative), for anomaly detection;
  // nullopt before any forecast was scored.
  std::optional<double> mean_error() const;

 private:
  void UpdateGaugesLocked();

  mutable std::mutex mu_;
  std::map<std::string, LinkForecaster> links_;
  prometheus::Gauge& accuracy_;
  prometheus::Gauge& utilization_;
  std::array<prometheus::Gauge*, kModelCount> model_error_{};
  prometheus::Histogram& error_;
};

}  // namespace dwcp::pba
