// Head sampling (the guide's `sampling:` block, section 3.3). The tail rule that keeps error
// traces lives in the tracer; this is the pure, thread-safe decision part.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "obs/trace/span_context.h"

namespace dwcp::obs::trace {

struct SamplingConfig {
  std::string type = "probabilistic";  // "probabilistic" | "always" | "never"
  double param = 0.1;                  // share of root traces kept by "probabilistic"
  // Span names that are always kept with their trace: exact names, or prefixes ending in '*'.
  std::vector<std::string> always_sample = {"migrate_vm", "acp_consensus", "error_*"};

  // InvalidArgument for an unknown type, a param outside [0, 1] or an empty pattern.
  Status Validate() const;
};

// True for span names that mean "this operation failed": error_*.
bool IsErrorSpanName(std::string_view name);

// Immutable after construction; thread-safe.
class Sampler {
 public:
  explicit Sampler(const SamplingConfig& config);

  // True when `name` matches one of always_sample.
  bool Forced(std::string_view name) const;
  // The head decision for a new root span: always; never (unless forced); or probabilistic,
  // deterministic in the trace id (its last 8 bytes, big-endian, below param * 2^64), so
  // every node that sees the id would decide the same.
  bool SampleRoot(const TraceId& trace_id, std::string_view name) const;

 private:
  enum class Type { kProbabilistic, kAlways, kNever };
  Type type_;
  uint64_t threshold_;  // probabilistic: keep when the id's low 64 bits are below it
  bool keep_all_;       // probabilistic with param >= 1
  std::vector<std::string> exact_;
  std::vector<std::string> prefixes_;
};

}  // namespace dwcp::obs::trace
