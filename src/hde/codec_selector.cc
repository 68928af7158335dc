#include "hde/codec_selector.h"

#include <algorithm>
#include <limits>

namespace dwcp::hde {
namespace {

constexpr double kEwmaAlpha = 0.3;
// A candidate must beat a cheaper one by this factor to be chosen over it.
constexpr double kPreferCheaper = 1.01;
// Batches whose stream is smaller than this do not update speed estimates (timer noise).
constexpr uint64_t kMinMeasuredBytes = 16 * 1024;

// Priors: one core of a 2.6 GHz x86 server compressing the entry stream of a first round of
// the synthetic content model (text and binary pages; bench/hde_bench.cc). The first
// measurement replaces them.
CodecSelector::Estimate Prior(CodecSetting s) {
  CodecSelector::Estimate e;
  switch (s.codec) {
    case Codec::kNone:
      e.bytes_per_second = 8e9;
      e.ratio = 1.0;
      break;
    case Codec::kLz4:
      e.bytes_per_second = 650e6;
      e.ratio = 2.15;
      break;
    case Codec::kZstd: {
      struct P {
        int level;
        double speed, ratio;
      };
      static constexpr P kTable[] = {{-5, 700e6, 2.0}, {-2, 580e6, 2.75}, {-1, 500e6, 2.85},
                                     {1, 440e6, 2.86}, {3, 280e6, 3.05},  {6, 115e6, 3.15},
                                     {9, 68e6, 3.2},   {12, 40e6, 3.25},  {15, 14e6, 3.3},
                                     {19, 4e6, 3.45},  {22, 2e6, 3.5}};
      const P* best = &kTable[0];
      for (const P& p : kTable) {
        if (p.level <= s.level) best = &p;
      }
      e.bytes_per_second = best->speed;
      e.ratio = best->ratio;
      break;
    }
  }
  return e;
}

}  // namespace

Result<CodecPolicy> ParseCodecPolicy(std::string_view name) {
  for (CodecPolicy p :
       {CodecPolicy::kAuto, CodecPolicy::kZstd, CodecPolicy::kLz4, CodecPolicy::kNone}) {
    if (name == CodecPolicyName(p)) return p;
  }
  return Status(InvalidArgument("unknown hde codec '" + std::string(name) +
                                "' (want auto, zstd, lz4 or none)"));
}

const char* CodecPolicyName(CodecPolicy policy) {
  switch (policy) {
    case CodecPolicy::kAuto:
      return "auto";
    case CodecPolicy::kZstd:
      return "zstd";
    case CodecPolicy::kLz4:
      return "lz4";
    case CodecPolicy::kNone:
      return "none";
  }
  return "unknown";
}

std::string SettingName(CodecSetting s) {
  std::string name = CodecName(s.codec);
  if (s.codec == Codec::kZstd) name += "-" + std::to_string(s.level);
  return name;
}

CodecSelector::CodecSelector(const SelectorConfig& config) : config_(config) {
  auto add_zstd = [&] {
    if (config_.zstd_level != 0) {
      candidates_.push_back({Codec::kZstd, config_.zstd_level});
      return;
    }
    for (int level : kAutoZstdLevels) {
      if (level <= std::max(1, config_.max_zstd_level))
        candidates_.push_back({Codec::kZstd, level});
    }
  };
  switch (config_.policy) {
    case CodecPolicy::kNone:
      candidates_.push_back({Codec::kNone, 0});
      break;
    case CodecPolicy::kLz4:
      candidates_.push_back({Codec::kLz4, 0});
      break;
    case CodecPolicy::kZstd:
      add_zstd();
      break;
    case CodecPolicy::kAuto:
      candidates_.push_back({Codec::kNone, 0});
      candidates_.push_back({Codec::kLz4, 0});
      add_zstd();
      break;
  }
  for (CodecSetting s : candidates_) estimates_.push_back(Prior(s));
}

int CodecSelector::IndexOf(CodecSetting s) const {
  for (size_t i = 0; i < candidates_.size(); ++i) {
    if (candidates_[i] == s) return static_cast<int>(i);
  }
  return -1;
}

const CodecSelector::Estimate* CodecSelector::estimate(CodecSetting s) const {
  int i = IndexOf(s);
  return i < 0 ? nullptr : &estimates_[i];
}

double CodecSelector::Predict(CodecSetting s, const BatchShape& shape, double link) const {
  int i = IndexOf(s);
  if (i < 0) return 0;
  if (link <= 0) link = config_.default_link_bytes_per_second;
  const Estimate& e = estimates_[i];
  const double v = static_cast<double>(shape.input_bytes);
  const double a = static_cast<double>(shape.stream_bytes);
  const double t_compress = e.bytes_per_second > 0 ? a / e.bytes_per_second : 0;
  const double threads = std::max(1u, config_.compress_threads);
  const double t_encode = threads <= 1 ? shape.plan_seconds + t_compress
                                       : std::max(shape.plan_seconds, t_compress / threads);
  const double encode_rate = t_encode > 0 ? v / t_encode : std::numeric_limits<double>::infinity();
  const double wire =
      static_cast<double>(kHeaderSize + shape.stored_bytes) + a / std::max(e.ratio, 1e-3);
  const double link_rate = link * v / wire;
  return std::min(encode_rate, link_rate);
}

CodecSelector::Choice CodecSelector::Choose(const BatchShape& shape, double link) {
  ++batches_;
  size_t best = 0;
  double best_rate = -1;
  for (size_t i = 0; i < candidates_.size(); ++i) {
    double rate = Predict(candidates_[i], shape, link);
    if (rate > best_rate * kPreferCheaper) {
      best = i;
      best_rate = rate;
    }
  }
  Choice choice{candidates_[best], false};
  if (config_.explore_every > 0 && candidates_.size() > 1 &&
      batches_ % config_.explore_every == 0 && shape.stream_bytes >= kMinMeasuredBytes) {
    // Try the neighbour (cheaper or stronger) measured least recently.
    size_t pick = best;
    if (best == 0) {
      pick = 1;
    } else if (best + 1 == candidates_.size()) {
      pick = best - 1;
    } else {
      const Estimate& lo = estimates_[best - 1];
      const Estimate& hi = estimates_[best + 1];
      pick =
          hi.last_batch < lo.last_batch || (hi.last_batch == lo.last_batch) ? best + 1 : best - 1;
    }
    choice = {candidates_[pick], true};
  }
  return choice;
}

void CodecSelector::Observe(CodecSetting s, uint64_t stream_bytes, uint64_t compressed_bytes,
                            double seconds) {
  int i = IndexOf(s);
  if (i < 0 || stream_bytes < kMinMeasuredBytes || compressed_bytes == 0) return;
  Estimate& e = estimates_[i];
  const double ratio = static_cast<double>(stream_bytes) / static_cast<double>(compressed_bytes);
  const bool timed = seconds > 0;
  const double speed = timed ? static_cast<double>(stream_bytes) / seconds : 0;
  if (e.samples == 0) {
    e.ratio = ratio;
    if (timed) e.bytes_per_second = speed;
  } else {
    e.ratio += kEwmaAlpha * (ratio - e.ratio);
    if (timed) e.bytes_per_second += kEwmaAlpha * (speed - e.bytes_per_second);
  }
  ++e.samples;
  e.last_batch = batches_;
}

void CodecSelector::SetEstimate(CodecSetting s, double bytes_per_second, double ratio) {
  int i = IndexOf(s);
  if (i < 0) return;
  Estimate& e = estimates_[i];
  e.bytes_per_second = bytes_per_second;
  e.ratio = ratio;
  e.samples = std::max<uint64_t>(e.samples, 1);
  e.last_batch = batches_;
}

}  // namespace dwcp::hde
