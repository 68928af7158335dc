// Adaptive choice of the batch codec: the encoder measures its own speed and ratio per codec
// setting and picks, per batch, the setting that maximises the guest bytes per second that
// reach the destination at the current link rate. Not thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "hde/hde_format.h"

namespace dwcp::hde {

// The operator's codec policy.
enum class CodecPolicy { kAuto, kZstd, kLz4, kNone };
// "auto", "zstd", "lz4", "none" (case-sensitive); InvalidArgument for anything else.
Result<CodecPolicy> ParseCodecPolicy(std::string_view name);
const char* CodecPolicyName(CodecPolicy policy);

// One codec with its parameter.
struct CodecSetting {
  Codec codec = Codec::kNone;
  int level = 0;  // zstd level; 0 for none and lz4
  bool operator==(const CodecSetting&) const = default;
};
// "none", "lz4", "zstd-3".
std::string SettingName(CodecSetting s);

// Levels the selector tries when it picks the zstd level itself.
// The fast negative levels fill the gap between lz4 and 1: on VM pages -1 compresses about as
// well as 1, and faster.
inline constexpr int kAutoZstdLevels[] = {-2, -1, 1, 3, 6, 9, 12, 15, 19};

struct SelectorConfig {
  CodecPolicy policy = CodecPolicy::kAuto;
  // 0: the selector picks the level (from kAutoZstdLevels up to max_zstd_level); otherwise
  // zstd always uses this level (ZSTD_minCLevel()..ZSTD_maxCLevel()).
  int zstd_level = 0;
  int max_zstd_level = 19;
  // Threads the caller runs the compress step on; the model lets that step scale with them
  // while the plan step stays sequential.
  unsigned compress_threads = 1;
  // Every Nth batch tries a neighbour of the best setting, so estimates stay fresh (0: never).
  uint32_t explore_every = 16;
  // Link rate assumed when the caller passes none (<= 0).
  double default_link_bytes_per_second = 1.25e9;
};

class CodecSelector {
 public:
  // What the selector believes about one setting.
  struct Estimate {
    double bytes_per_second = 0;  // stream bytes the compress step handles per second
    double ratio = 1;             // stream bytes per compressed byte
    uint64_t samples = 0;         // measurements folded in (0: still the built-in prior)
    uint64_t last_batch = 0;      // the Choose() call that preceded its last measurement
  };
  // The batch to choose for, known once its plan step is done.
  struct BatchShape {
    uint64_t input_bytes = 0;   // guest bytes it carries
    uint64_t stream_bytes = 0;  // entry stream the codec compresses
    uint64_t stored_bytes = 0;  // bytes sent beside the stream without compression
    double plan_seconds = 0;    // what its sequential plan step took
  };
  struct Choice {
    CodecSetting setting;
    bool explored = false;  // not the predicted best: an exploration
  };

  // The candidates follow from the config: the policy's codecs, cheapest first.
  explicit CodecSelector(const SelectorConfig& config);

  const std::vector<CodecSetting>& candidates() const { return candidates_; }
  const SelectorConfig& config() const { return config_; }

  // The setting to use for `shape` at `link_bytes_per_second` (<= 0: the configured default).
  Choice Choose(const BatchShape& shape, double link_bytes_per_second);
  // Predicted guest bytes per second delivered with `s`: the smaller of what the encoder can
  // produce (plan + compress, the latter over compress_threads) and what the link carries
  // (link rate × guest bytes per wire byte). Zero for a setting that is not a candidate.
  double Predict(CodecSetting s, const BatchShape& shape, double link_bytes_per_second) const;
  // Folds in one measured compress step: EWMA (the first measurement replaces the prior).
  // Ignores settings that are not candidates and batches too small to measure.
  void Observe(CodecSetting s, uint64_t stream_bytes, uint64_t compressed_bytes, double seconds);
  // Overrides an estimate (tests, or priors measured elsewhere); counts as one measurement.
  void SetEstimate(CodecSetting s, double bytes_per_second, double ratio);
  // Null for a setting that is not a candidate.
  const Estimate* estimate(CodecSetting s) const;

 private:
  int IndexOf(CodecSetting s) const;

  SelectorConfig config_;
  std::vector<CodecSetting> candidates_;
  std::vector<Estimate> estimates_;
  uint64_t batches_ = 0;
};

}  // namespace dwcp::hde
