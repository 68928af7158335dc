#include "linkem_core.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>

#include "common/units.h"

namespace dwcp::linkem {
namespace {

constexpr int64_t kMaxDelayNs = 3600 * kNanosPerSecond;

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// Splits "12.5ms" into 12.5 and "ms" (lower-cased). InvalidArgument without a leading
// non-negative decimal number.
Result<std::pair<double, std::string>> SplitNumber(std::string_view text) {
  size_t i = 0;
  bool digit = false, dot = false;
  for (; i < text.size(); ++i) {
    char c = text[i];
    if (std::isdigit(static_cast<unsigned char>(c))) {
      digit = true;
    } else if (c == '.' && !dot) {
      dot = true;
    } else {
      break;
    }
  }
  if (!digit) return Status(InvalidArgument("'" + std::string(text) + "' is not a number"));
  double value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + i, value, std::chars_format::fixed);
  if (ec != std::errc() || ptr != text.data() + i || !std::isfinite(value)) {
    return Status(InvalidArgument("'" + std::string(text) + "' is not a number"));
  }
  std::string unit(Trim(text.substr(i)));
  for (char& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return std::pair<double, std::string>(value, unit);
}

uint64_t SerializationBytes(uint64_t rate, int64_t ns) {
  if (ns <= 0) return 0;
  return static_cast<uint64_t>(static_cast<unsigned __int128>(rate) * static_cast<uint64_t>(ns) /
                               static_cast<uint64_t>(kNanosPerSecond));
}

uint64_t SplitMix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

}  // namespace

uint64_t DefaultQueueLimit(uint64_t rate_bytes_per_s) {
  return std::max<uint64_t>(rate_bytes_per_s / 10, 16 * 1500);
}

Result<int64_t> ParseDelayNanos(std::string_view text) {
  std::string_view t = Trim(text);
  auto split = SplitNumber(t);
  if (!split.ok()) return split.status();
  auto [value, unit] = *split;
  double scale;
  if (unit.empty() || unit == "ms") {
    scale = 1e6;
  } else if (unit == "ns") {
    scale = 1;
  } else if (unit == "us") {
    scale = 1e3;
  } else if (unit == "s") {
    scale = 1e9;
  } else if (unit == "m" || unit == "min") {
    scale = 60e9;
  } else if (unit == "h") {
    scale = 3600e9;
  } else {
    return Status(InvalidArgument("unknown time unit '" + unit + "' in '" + std::string(t) +
                                  "' (use us, ms, s, m or h)"));
  }
  double ns = std::round(value * scale);
  if (!(ns <= static_cast<double>(kMaxDelayNs))) {
    return Status(InvalidArgument("'" + std::string(t) + "' is longer than one hour"));
  }
  return static_cast<int64_t>(ns);
}

Result<double> ParseLossPercent(std::string_view text) {
  std::string_view t = Trim(text);
  if (!t.ends_with('%')) {
    return Status(InvalidArgument("loss '" + std::string(t) +
                                  "' must be a percentage with a % sign, e.g. 0.1%"));
  }
  auto split = SplitNumber(Trim(t.substr(0, t.size() - 1)));
  if (!split.ok() || !split->second.empty()) {
    return Status(InvalidArgument("loss '" + std::string(t) + "' is not a percentage"));
  }
  if (split->first > 100) {
    return Status(InvalidArgument("loss '" + std::string(t) + "' is above 100%"));
  }
  return split->first / 100.0;
}

Result<uint64_t> ParseQueueLimit(std::string_view text, uint64_t rate_bytes_per_s) {
  std::string_view t = Trim(text);
  auto bytes = ParseBytes(t);
  uint64_t limit = 0;
  if (bytes.ok()) {
    limit = *bytes;
  } else {
    auto split = SplitNumber(t);
    bool time_unit = split.ok() && !split->second.empty() && split->second.back() == 's';
    auto ns = time_unit ? ParseDelayNanos(t) : Result<int64_t>(bytes.status());
    if (!ns.ok()) {
      return Status(InvalidArgument("queue limit '" + std::string(t) +
                                    "' is neither a size (256KiB) nor a time (100ms)"));
    }
    if (rate_bytes_per_s == 0) {
      return Status(
          InvalidArgument("a queue limit given as a time ('" + std::string(t) + "') needs a rate"));
    }
    limit = SerializationBytes(rate_bytes_per_s, *ns);
  }
  if (limit == 0) return Status(InvalidArgument("queue limit '" + std::string(t) + "' is zero"));
  return limit;
}

std::string DescribeConfig(const LinkConfig& c) {
  char buf[256];
  char rate[48] = "unlimited";
  if (c.rate_bytes_per_s > 0) {
    std::snprintf(rate, sizeof rate, "%.3f Mbit/s", c.rate_bytes_per_s * 8 / 1e6);
  }
  uint64_t queue =
      c.queue_limit_bytes ? c.queue_limit_bytes : DefaultQueueLimit(c.rate_bytes_per_s);
  std::snprintf(buf, sizeof buf, "delay %.3f ms, jitter %.3f ms, rate %s, loss %.4f %%, queue %s%s",
                c.delay_ns / 1e6, c.jitter_ns / 1e6, rate, c.loss * 100,
                c.rate_bytes_per_s ? (std::to_string(queue) + " B").c_str() : "n/a",
                c.allow_reorder ? ", reordering allowed" : "");
  return buf;
}

std::vector<std::string> SplitLinkFileWords(std::string_view text) {
  std::vector<std::string> words;
  std::string word;
  bool comment = false;
  for (char c : text) {
    if (comment) {
      comment = c != '\n';
      continue;
    }
    if (c == '#' || std::isspace(static_cast<unsigned char>(c))) {
      if (!word.empty()) words.push_back(std::move(word));
      word.clear();
      comment = c == '#';
      continue;
    }
    word.push_back(c);
  }
  if (!word.empty()) words.push_back(std::move(word));
  return words;
}

Rng::Rng(uint64_t seed) {
  for (uint64_t& s : s_) s = SplitMix64(seed);
}

uint64_t Rng::Next() {
  uint64_t result = Rotl(s_[1] * 5, 7) * 9;
  uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = Rotl(s_[3], 45);
  return result;
}

double Rng::NextDouble() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

uint64_t Rng::Below(uint64_t n) {
  // Lemire's multiply-shift; the bias (< n / 2^64) is irrelevant here.
  return static_cast<uint64_t>((static_cast<unsigned __int128>(Next()) * n) >> 64);
}

std::string DirectionStats::ToJson() const {
  char buf[512];
  std::snprintf(
      buf, sizeof buf,
      "{\"rx_packets\":%llu,\"rx_bytes\":%llu,\"tx_packets\":%llu,\"tx_bytes\":%llu,"
      "\"drop_loss\":%llu,\"drop_queue\":%llu,\"drop_overflow\":%llu,"
      "\"tx_errors\":%llu,\"max_queue_bytes\":%llu,\"in_flight_at_exit\":%llu}",
      static_cast<unsigned long long>(rx_packets), static_cast<unsigned long long>(rx_bytes),
      static_cast<unsigned long long>(tx_packets), static_cast<unsigned long long>(tx_bytes),
      static_cast<unsigned long long>(drop_loss), static_cast<unsigned long long>(drop_queue),
      static_cast<unsigned long long>(drop_overflow), static_cast<unsigned long long>(tx_errors),
      static_cast<unsigned long long>(max_queue_bytes),
      static_cast<unsigned long long>(in_flight_at_exit));
  return buf;
}

LinkScheduler::LinkScheduler(const LinkConfig& config, uint64_t seed)
    : config_(config),
      queue_limit_(config.queue_limit_bytes ? config.queue_limit_bytes
                                            : DefaultQueueLimit(config.rate_bytes_per_s)),
      rng_(seed) {}

uint64_t LinkScheduler::BacklogBytes(int64_t now_ns) const {
  if (config_.rate_bytes_per_s == 0) return 0;
  return SerializationBytes(config_.rate_bytes_per_s, link_free_at_ns_ - now_ns);
}

void LinkScheduler::Reconfigure(const LinkConfig& config) {
  if ((config.rate_bytes_per_s == 0) != (config_.rate_bytes_per_s == 0)) link_free_at_ns_ = 0;
  if (config.rate_bytes_per_s != config_.rate_bytes_per_s) carry_ = 0;  // carry < old rate
  config_ = config;
  queue_limit_ = config.queue_limit_bytes ? config.queue_limit_bytes
                                          : DefaultQueueLimit(config.rate_bytes_per_s);
}

LinkScheduler::Decision LinkScheduler::Admit(int64_t now_ns, uint32_t bytes,
                                             DirectionStats& stats) {
  if (config_.loss > 0 && rng_.NextDouble() < config_.loss) {
    ++stats.drop_loss;
    return {Verdict::kDropLoss, 0};
  }
  int64_t sent_ns = now_ns;  // when the last bit has left the bottleneck
  if (config_.rate_bytes_per_s > 0) {
    uint64_t rate = config_.rate_bytes_per_s;
    uint64_t backlog = BacklogBytes(now_ns);
    if (backlog > 0 && backlog + bytes > queue_limit_) {
      ++stats.drop_queue;
      return {Verdict::kDropQueue, 0};
    }
    stats.max_queue_bytes = std::max<uint64_t>(stats.max_queue_bytes, backlog + bytes);
    uint64_t numerator = uint64_t{bytes} * kNanosPerSecond + carry_;
    carry_ = numerator % rate;
    link_free_at_ns_ = std::max(now_ns, link_free_at_ns_) + static_cast<int64_t>(numerator / rate);
    sent_ns = link_free_at_ns_;
  }
  int64_t delay = config_.delay_ns;
  if (config_.jitter_ns > 0) {
    uint64_t span = 2 * static_cast<uint64_t>(config_.jitter_ns) + 1;
    delay += static_cast<int64_t>(rng_.Below(span)) - config_.jitter_ns;
    delay = std::max<int64_t>(delay, 0);
  }
  int64_t deliver = sent_ns + delay;
  if (!config_.allow_reorder) deliver = std::max(deliver, last_deliver_ns_);
  last_deliver_ns_ = std::max(last_deliver_ns_, deliver);
  return {Verdict::kForward, deliver};
}

DelayLine::DelayLine(size_t max_packets) : max_packets_(max_packets) {}

int64_t DelayLine::NextDueNs() const {
  return heap_.empty() ? std::numeric_limits<int64_t>::max() : slots_[heap_.front()].deliver_at_ns;
}

bool DelayLine::Earlier(uint32_t a, uint32_t b) const {
  const Slot& x = slots_[a];
  const Slot& y = slots_[b];
  return x.deliver_at_ns != y.deliver_at_ns ? x.deliver_at_ns < y.deliver_at_ns : x.seq < y.seq;
}

bool DelayLine::Push(int64_t deliver_at_ns, std::span<const uint8_t> packet) {
  if (heap_.size() >= max_packets_) return false;
  uint32_t index;
  if (!free_.empty()) {
    index = free_.back();
    free_.pop_back();
  } else {
    index = static_cast<uint32_t>(slots_.size());
    slots_.emplace_back();
  }
  Slot& slot = slots_[index];
  slot.deliver_at_ns = deliver_at_ns;
  slot.seq = next_seq_++;
  slot.length = static_cast<uint32_t>(packet.size());
  if (slot.data.size() < packet.size()) slot.data.resize(packet.size());
  std::copy(packet.begin(), packet.end(), slot.data.begin());
  // Sift up.
  size_t i = heap_.size();
  heap_.push_back(index);
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!Earlier(heap_[i], heap_[parent])) break;
    std::swap(heap_[i], heap_[parent]);
    i = parent;
  }
  return true;
}

uint32_t DelayLine::PopFront() {
  uint32_t top = heap_.front();
  heap_.front() = heap_.back();
  heap_.pop_back();
  // Sift down.
  size_t i = 0, n = heap_.size();
  while (true) {
    size_t l = 2 * i + 1, r = l + 1, best = i;
    if (l < n && Earlier(heap_[l], heap_[best])) best = l;
    if (r < n && Earlier(heap_[r], heap_[best])) best = r;
    if (best == i) break;
    std::swap(heap_[i], heap_[best]);
    i = best;
  }
  return top;
}

}  // namespace dwcp::linkem
