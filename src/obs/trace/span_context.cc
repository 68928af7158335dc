#include "obs/trace/span_context.h"

#include <algorithm>

namespace dwcp::obs::trace {
namespace {

// -1 for anything but 0-9 and a-f (the W3C format is lower-case only).
int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

bool ParseHex(std::string_view text, uint8_t* out) {
  for (size_t i = 0; i < text.size() / 2; ++i) {
    int hi = HexValue(text[2 * i]);
    int lo = HexValue(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

template <size_t N>
bool AllZero(const std::array<uint8_t, N>& a) {
  return std::all_of(a.begin(), a.end(), [](uint8_t b) { return b == 0; });
}

}  // namespace

std::string ToHex(const uint8_t* data, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kDigits[data[i] >> 4];
    out[2 * i + 1] = kDigits[data[i] & 0xf];
  }
  return out;
}

bool SpanContext::valid() const { return !AllZero(trace_id) && !AllZero(span_id); }

std::string SpanContext::TraceIdHex() const { return ToHex(trace_id.data(), trace_id.size()); }

std::string SpanContext::SpanIdHex() const { return ToHex(span_id.data(), span_id.size()); }

std::string SpanContext::ToTraceparent() const {
  return "00-" + TraceIdHex() + "-" + SpanIdHex() + (sampled ? "-01" : "-00");
}

std::optional<SpanContext> SpanContext::FromTraceparent(std::string_view h) {
  // 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01
  // 0  3                                36               53
  if (h.size() != 55 || h[2] != '-' || h[35] != '-' || h[52] != '-') return std::nullopt;
  uint8_t version = 0, flags = 0;
  if (!ParseHex(h.substr(0, 2), &version) || version != 0) return std::nullopt;
  SpanContext ctx;
  if (!ParseHex(h.substr(3, 32), ctx.trace_id.data()) ||
      !ParseHex(h.substr(36, 16), ctx.span_id.data()) || !ParseHex(h.substr(53, 2), &flags)) {
    return std::nullopt;
  }
  if (!ctx.valid()) return std::nullopt;
  ctx.sampled = (flags & 0x01) != 0;
  ctx.remote = true;
  return ctx;
}

}  // namespace dwcp::obs::trace
