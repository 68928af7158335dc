// What a finished span is, and the interface that ships batches of them somewhere. The
// tracer owns batching, retries and counting; an exporter makes one attempt per call.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "common/status.h"
#include "obs/trace/span_context.h"

namespace dwcp::obs::trace {

using AttributeValue = std::variant<std::string, int64_t, double, bool>;
using Attributes = std::vector<std::pair<std::string, AttributeValue>>;  // unique keys

struct SpanEvent {
  std::string name;
  uint64_t time_unix_nano = 0;
};

// A recorded span. Times are Unix nanoseconds.
struct SpanData {
  SpanContext context;
  SpanId parent_span_id{};  // all zero for a root span
  bool parent_remote = false;
  std::string name;
  uint64_t start_unix_nano = 0;
  uint64_t end_unix_nano = 0;
  Attributes attributes;
  std::vector<SpanEvent> events;
  bool error = false;  // status ERROR
  std::string status_message;
};

class SpanExporter {
 public:
  virtual ~SpanExporter() = default;
  // Sends one batch, one attempt, giving up at `deadline`. Returns OK, or kUnavailable /
  // kDeadlineExceeded when a retry may succeed, or another code when it will not. Called from
  // one thread at a time.
  virtual Status Export(const std::vector<SpanData>& spans,
                        std::chrono::steady_clock::time_point deadline) = 0;
  // Aborts an Export in flight and makes later calls fail fast. Thread-safe; used by the
  // tracer when its shutdown deadline passes.
  virtual void Cancel() {}
};

// OTLP/gRPC TraceService/Export to `endpoint` ("host:port"; an "http://" prefix is accepted)
// over an insecure channel. Every request carries `resource` and the instrumentation scope
// "dwcp-v3" at `scope_version`. Creating it does not connect; the first Export does.
std::unique_ptr<SpanExporter> MakeOtlpGrpcExporter(const std::string& endpoint,
                                                   const Attributes& resource,
                                                   std::string scope_version);

}  // namespace dwcp::obs::trace
