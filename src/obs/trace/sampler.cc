#include "obs/trace/sampler.h"

#include <algorithm>
#include <cmath>

namespace dwcp::obs::trace {

Status SamplingConfig::Validate() const {
  if (type != "probabilistic" && type != "always" && type != "never") {
    return InvalidArgument("sampling.type must be probabilistic, always or never, not '" + type +
                           "'");
  }
  if (!(param >= 0.0 && param <= 1.0)) {
    return InvalidArgument("sampling.param must be within [0, 1]");
  }
  for (const std::string& p : always_sample) {
    if (p.empty()) return InvalidArgument("sampling.always_sample has an empty pattern");
  }
  return Status::Ok();
}

bool IsErrorSpanName(std::string_view name) { return name.starts_with("error_"); }

Sampler::Sampler(const SamplingConfig& config) {
  type_ = config.type == "always"  ? Type::kAlways
          : config.type == "never" ? Type::kNever
                                   : Type::kProbabilistic;
  const double p = std::clamp(config.param, 0.0, 1.0);
  keep_all_ = p >= 1.0;
  // p * 2^64; p < 1 keeps it below 2^64 (the largest double below 1 gives 2^64 - 2^11).
  threshold_ = keep_all_ ? UINT64_MAX : static_cast<uint64_t>(std::ldexp(p, 64));
  for (const std::string& pattern : config.always_sample) {
    if (!pattern.empty() && pattern.back() == '*') {
      prefixes_.push_back(pattern.substr(0, pattern.size() - 1));
    } else {
      exact_.push_back(pattern);
    }
  }
}

bool Sampler::Forced(std::string_view name) const {
  for (const std::string& e : exact_) {
    if (name == e) return true;
  }
  for (const std::string& p : prefixes_) {
    if (name.starts_with(p)) return true;
  }
  return false;
}

bool Sampler::SampleRoot(const TraceId& trace_id, std::string_view name) const {
  if (Forced(name)) return true;
  switch (type_) {
    case Type::kAlways:
      return true;
    case Type::kNever:
      return false;
    case Type::kProbabilistic:
      break;
  }
  if (keep_all_) return true;
  uint64_t low = 0;
  for (size_t i = 8; i < 16; ++i) low = low << 8 | trace_id[i];
  return low < threshold_;
}

}  // namespace dwcp::obs::trace
