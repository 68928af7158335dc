// The identity of a span as it travels between threads and nodes, and its W3C trace-context
// form (https://www.w3.org/TR/trace-context/#traceparent-header):
//   traceparent: 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace dwcp::obs::trace {

using TraceId = std::array<uint8_t, 16>;
using SpanId = std::array<uint8_t, 8>;

// A plain value; copy it freely. All-zero ids mean "no span" (valid() is false).
struct SpanContext {
  TraceId trace_id{};
  SpanId span_id{};
  bool sampled = false;  // W3C flag 0x01: the upstream head decision kept this trace
  bool remote = false;   // parsed from a traceparent (the span lives in another process)

  // True when both ids are non-zero.
  bool valid() const;
  // Lower-case hex: 32 and 16 characters.
  std::string TraceIdHex() const;
  std::string SpanIdHex() const;
  // "00-<trace>-<span>-01" (sampled) or "...-00". Meaningless for an invalid context.
  std::string ToTraceparent() const;
  // Strict version-00 parsing: exactly 55 characters, lower-case hex, dashes in place,
  // non-zero ids. Rejects version ff and upper-case hex. Returns a context with
  // remote = true, or nullopt for anything malformed.
  static std::optional<SpanContext> FromTraceparent(std::string_view header);
};

// Lower-case hex of `n` bytes.
std::string ToHex(const uint8_t* data, size_t n);

}  // namespace dwcp::obs::trace
