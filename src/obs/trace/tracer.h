// A small tracing SDK: spans, head + tail sampling, batched OTLP/gRPC export. See
// docs/tracing.md for the span model and the sampling rules.
//
//   trace::Tracer tracer(config, &metrics);
//   trace::Span span = tracer.StartSpan("migrate_vm", "migration");
//   span.SetAttribute("vm.id", vm_id);
//   trace::Span child = tracer.StartSpan("amst_transfer", "amst", &span.context());
//   if (!st.ok()) child.SetError(st.ToString());
#pragma once

#include <chrono>
#include <concepts>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"
#include "obs/trace/exporter.h"
#include "obs/trace/sampler.h"
#include "obs/trace/span_context.h"

namespace dwcp {
class Clock;
}
namespace dwcp::obs {
class Metrics;
}

namespace dwcp::obs::trace {

namespace internal {
class TracerCore;
}

// One operation. Movable, not copyable. A default-constructed span is a valid no-op (what a
// disabled or shut-down tracer hands out): every call on it does nothing and its context is
// invalid. Not thread-safe: one thread at a time uses a given Span. It may outlive its Tracer;
// it is then ended without being exported.
class Span {
 public:
  Span() = default;
  Span(Span&& other) noexcept;
  Span& operator=(Span&& other) noexcept;  // ends the span this one held
  Span(const Span&) = delete;
  Span& operator=(const Span&) = delete;
  ~Span();  // End()

  // Sets (or replaces) an attribute. Ignored after End().
  void SetAttribute(std::string_view key, std::string_view value);
  void SetAttribute(std::string_view key, const char* value);
  void SetAttribute(std::string_view key, int64_t value);
  void SetAttribute(std::string_view key, double value);
  void SetAttribute(std::string_view key, bool value);
  template <std::integral T>
  requires(!std::same_as<T, bool>) void SetAttribute(std::string_view key, T value) {
    SetAttribute(key, static_cast<int64_t>(value));
  }
  // Marks the span failed: status ERROR with `message`, attribute error=true. Its trace is
  // then kept whatever the head sampling decided (the tail rule).
  void SetError(std::string_view message);
  // A timestamped annotation ("switchover_started").
  void AddEvent(std::string_view name);
  // Records the end time and hands the span to its tracer. Idempotent.
  void End();

  // Ids to pass as parent or to propagate; still valid after End(). Invalid for a no-op span.
  const SpanContext& context() const { return context_; }
  // False for a no-op span and after End().
  bool recording() const { return data_ != nullptr; }

 private:
  friend class Tracer;
  Span(std::shared_ptr<internal::TracerCore> core, std::unique_ptr<SpanData> data);

  std::shared_ptr<internal::TracerCore> core_;
  std::unique_ptr<SpanData> data_;
  SpanContext context_;
};

struct TracerConfig {
  bool enabled = true;  // false: StartSpan hands out no-op spans, nothing is exported
  std::string endpoint = "localhost:4317";  // OTLP/gRPC collector, insecure
  // Resource: service.name, service.version, service.instance.id (node_id, omitted when
  // empty), host.name (gethostname() when empty), process.pid, telemetry.sdk.*, and the
  // extra pairs below (which may override any of those).
  std::string service_name = "dwcp-v3";
  std::string service_version = "3.0.0";
  std::string node_id;
  std::string host_name;
  std::vector<std::pair<std::string, std::string>> resource_attributes;

  SamplingConfig sampling;
  size_t max_queue_spans = 2048;    // spans waiting for export; beyond: dropped and counted
  size_t max_batch = 512;           // spans per Export request
  size_t max_pending_spans = 4096;  // finished spans of undecided unsampled traces, all traces
  std::chrono::milliseconds export_interval{1000};       // a partial batch waits at most this long
  std::chrono::milliseconds export_timeout{5000};        // per Export attempt
  int max_export_attempts = 5;                           // retries on UNAVAILABLE/DEADLINE_EXCEEDED
  std::chrono::milliseconds retry_initial_backoff{100};  // doubles per retry ...
  std::chrono::milliseconds retry_max_backoff{2000};     // ... up to this
  std::chrono::milliseconds shutdown_timeout{5000};      // Shutdown() returns within this

  // InvalidArgument naming the first bad field (sampling included).
  Status Validate() const;
};

// Counters since construction; each span ends in exactly one of exported / dropped_* /
// unsampled (spans still open or queued are in none yet).
struct TracerStats {
  uint64_t spans_started = 0;
  uint64_t spans_exported = 0;
  uint64_t spans_dropped_queue_full = 0;     // export queue full or already closed
  uint64_t spans_dropped_buffer_full = 0;    // tail-sampling buffer full
  uint64_t spans_dropped_export_failed = 0;  // retries exhausted, or shutdown deadline hit
  uint64_t spans_dropped_unsampled = 0;      // the sampling decision said drop
  uint64_t export_failures = 0;              // batches given up
  uint64_t export_retries = 0;               // Export attempts after the first
};

// Side effects a test may replace (STYLE rule 3). Null members get the real default.
class IdGenerator {
 public:
  virtual ~IdGenerator() = default;
  // Thread-safe; never all-zero.
  virtual TraceId NewTraceId() = 0;
  virtual SpanId NewSpanId() = 0;
};

struct TracerEnv {
  std::unique_ptr<SpanExporter> exporter;  // default: OTLP/gRPC to config.endpoint
  std::unique_ptr<IdGenerator> ids;        // default: random ids
  const Clock* clock = nullptr;  // span timestamps; default RealClock; must outlive all spans
};

// Thread-safe. Starts its export thread in the constructor when enabled; the destructor
// calls Shutdown(). `metrics`, when given, must outlive the Tracer; the tracer registers
// dwcp_v3_trace_spans_total{outcome="exported|dropped|unsampled"} and
// dwcp_v3_trace_export_errors_total in its registry.
class Tracer {
 public:
  explicit Tracer(TracerConfig config, obs::Metrics* metrics = nullptr);
  Tracer(TracerConfig config, obs::Metrics* metrics, TracerEnv env);
  ~Tracer();
  Tracer(const Tracer&) = delete;
  Tracer& operator=(const Tracer&) = delete;

  // A new span named `name` with attribute component=`component` (when non-empty). Without a
  // valid parent it starts a new trace and takes the head sampling decision; with one it
  // joins the parent's trace (same trace id, parent span id = parent->span_id) and inherits
  // its sampled flag, unless `name` matches always_sample, which keeps the trace. `parent` may
  // come from another process (SpanContext::FromTraceparent). Returns a no-op span when the
  // tracer is disabled or shut down.
  Span StartSpan(std::string_view name, std::string_view component,
                 const SpanContext* parent = nullptr);

  // Decides undecided traces (keeps those with errors), exports what is queued, stops the
  // export thread, and returns within config.shutdown_timeout (plus a little to cancel an
  // RPC in flight). Spans ending later are dropped. Idempotent.
  void Shutdown();

  TracerStats stats() const;
  const TracerConfig& config() const;

 private:
  std::shared_ptr<internal::TracerCore> core_;
};

// The thread's active span for synchronous code: Log() stamps trace_id/span_id from it.
// Sets the context for the scope and restores the previous one on destruction. Do not keep
// one across a co_await: the coroutine may resume on another thread.
class ScopedActiveSpan {
 public:
  explicit ScopedActiveSpan(const Span& span) : ScopedActiveSpan(span.context()) {}
  explicit ScopedActiveSpan(const SpanContext& context);
  ~ScopedActiveSpan();
  ScopedActiveSpan(const ScopedActiveSpan&) = delete;
  ScopedActiveSpan& operator=(const ScopedActiveSpan&) = delete;

 private:
  SpanContext previous_;
};

// The innermost ScopedActiveSpan's context on this thread, or nullopt (none, or a no-op span).
std::optional<SpanContext> ActiveSpanContext();

}  // namespace dwcp::obs::trace
