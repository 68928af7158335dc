#include "obs/trace/tracer.h"

#include <prometheus/counter.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>

#include "common/clock.h"
#include "obs/log.h"
#include "obs/metrics.h"

namespace dwcp::obs::trace {
namespace {

using SteadyClock = std::chrono::steady_clock;

class RandomIdGenerator final : public IdGenerator {
 public:
  TraceId NewTraceId() override {
    TraceId id{};
    while (id == TraceId{}) Fill(id.data(), id.size());
    return id;
  }
  SpanId NewSpanId() override {
    SpanId id{};
    while (id == SpanId{}) Fill(id.data(), id.size());
    return id;
  }

 private:
  static void Fill(uint8_t* out, size_t n) {
    thread_local std::mt19937_64 rng = [] {
      std::random_device rd;
      std::seed_seq seq{rd(), rd(), rd(), rd()};
      return std::mt19937_64(seq);
    }();
    for (size_t i = 0; i < n; i += 8) {
      uint64_t v = rng();
      std::memcpy(out + i, &v, std::min<size_t>(8, n - i));
    }
  }
};

void SetAttr(Attributes& attrs, std::string_view key, AttributeValue value) {
  for (auto& [k, v] : attrs) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  attrs.emplace_back(std::string(key), std::move(value));
}

Attributes BuildResource(const TracerConfig& c) {
  Attributes r;
  SetAttr(r, "service.name", c.service_name);
  SetAttr(r, "service.version", c.service_version);
  if (!c.node_id.empty()) SetAttr(r, "service.instance.id", c.node_id);
  std::string host = c.host_name;
  if (host.empty()) {
    char buf[256] = {};
    if (gethostname(buf, sizeof buf - 1) == 0) host = buf;
  }
  if (!host.empty()) SetAttr(r, "host.name", host);
  SetAttr(r, "process.pid", static_cast<int64_t>(getpid()));
  SetAttr(r, "telemetry.sdk.name", std::string("dwcp"));
  SetAttr(r, "telemetry.sdk.language", std::string("cpp"));
  SetAttr(r, "telemetry.sdk.version", c.service_version);
  for (const auto& [k, v] : c.resource_attributes) SetAttr(r, k, v);
  return r;
}

struct TraceIdHash {
  size_t operator()(const TraceId& id) const {
    uint64_t v;
    std::memcpy(&v, id.data() + 8, sizeof v);
    return std::hash<uint64_t>{}(v);
  }
};

}  // namespace

namespace internal {

// Shared by the Tracer and its spans, so that a span may outlive the Tracer safely.
class TracerCore {
 public:
  TracerCore(TracerConfig config, obs::Metrics* metrics, TracerEnv env)
      : config_(std::move(config)),
        sampler_(config_.sampling),
        clock_(env.clock != nullptr ? env.clock : &RealClock::Instance()),
        ids_(env.ids ? std::move(env.ids) : std::make_unique<RandomIdGenerator>()),
        exporter_(std::move(env.exporter)) {
    config_.max_batch = std::max<size_t>(config_.max_batch, 1);
    config_.max_export_attempts = std::max(config_.max_export_attempts, 1);
    wall_anchor_ns_ = static_cast<uint64_t>(clock_->WallMillis()) * 1'000'000;
    steady_anchor_ = clock_->Now();
    if (metrics != nullptr) {
      auto& spans = prometheus::BuildCounter()
                        .Name("dwcp_v3_trace_spans_total")
                        .Help(
                            "Finished spans by outcome: exported to the collector, dropped "
                            "(queue or buffer full, export failed) or unsampled")
                        .Register(metrics->registry());
      prom_exported_ = &spans.Add({{"outcome", "exported"}});
      prom_dropped_ = &spans.Add({{"outcome", "dropped"}});
      prom_unsampled_ = &spans.Add({{"outcome", "unsampled"}});
      prom_export_errors_ = &prometheus::BuildCounter()
                                 .Name("dwcp_v3_trace_export_errors_total")
                                 .Help("OTLP export batches given up after retries")
                                 .Register(metrics->registry())
                                 .Add({});
    }
    if (!config_.enabled) return;
    if (!exporter_) {
      exporter_ =
          MakeOtlpGrpcExporter(config_.endpoint, BuildResource(config_), config_.service_version);
    }
    worker_ = std::thread([this] { Run(); });
  }

  ~TracerCore() { Shutdown(); }

  const TracerConfig& config() const { return config_; }
  bool accepting() const { return config_.enabled && !shut_down_.load(); }

  uint64_t NowUnixNano() const {
    auto since =
        std::chrono::duration_cast<std::chrono::nanoseconds>(clock_->Now() - steady_anchor_);
    return wall_anchor_ns_ + static_cast<uint64_t>(std::max<int64_t>(since.count(), 0));
  }

  // Fills ids and the sampling flag of a new span and registers it with its trace.
  std::unique_ptr<SpanData> Begin(std::string_view name, std::string_view component,
                                  const SpanContext* parent) {
    auto d = std::make_unique<SpanData>();
    d->name = std::string(name);
    d->start_unix_nano = NowUnixNano();
    SpanContext& ctx = d->context;
    const bool has_parent = parent != nullptr && parent->valid();
    if (has_parent) {
      ctx.trace_id = parent->trace_id;
      ctx.sampled = parent->sampled;
      d->parent_span_id = parent->span_id;
      d->parent_remote = parent->remote;
    } else {
      ctx.trace_id = ids_->NewTraceId();
      ctx.sampled = sampler_.SampleRoot(ctx.trace_id, name);
    }
    ctx.span_id = ids_->NewSpanId();
    if (!component.empty()) d->attributes.emplace_back("component", std::string(component));
    stats_.started.fetch_add(1, std::memory_order_relaxed);
    if (ctx.sampled) return d;

    std::lock_guard lock(pending_mu_);
    if (has_parent && sampler_.Forced(name)) {
      // always_sample inside an unsampled trace: this span and its descendants are sampled,
      // and the spans buffered so far are kept when the local root ends.
      ctx.sampled = true;
      if (auto it = pending_.find(ctx.trace_id); it != pending_.end()) it->second.keep = true;
      return d;
    }
    auto [it, inserted] = pending_.try_emplace(ctx.trace_id);
    if (inserted) it->second.local_root = ctx.span_id;
    ++it->second.open;
    return d;
  }

  // Takes a finished span: sampled ones go to the export queue, unsampled ones to their
  // trace's buffer until the local root ends and decides.
  void Finish(std::unique_ptr<SpanData> d) {
    d->end_unix_nano = std::max(NowUnixNano(), d->start_unix_nano);
    if (d->context.sampled) {
      std::vector<SpanData> one;
      one.push_back(std::move(*d));
      Enqueue(std::move(one));
      return;
    }
    const bool error = d->error || IsErrorSpanName(d->name);
    std::vector<SpanData> keep;
    uint64_t unsampled = 0, overflow = 0;
    {
      std::lock_guard lock(pending_mu_);
      auto it = pending_.find(d->context.trace_id);
      if (it == pending_.end()) {
        // Defensive: an entry lives while any of its spans is open.
        if (error) {
          keep.push_back(std::move(*d));
        } else {
          ++unsampled;
        }
      } else {
        PendingTrace& t = it->second;
        --t.open;
        const bool is_local_root = d->context.span_id == t.local_root;
        switch (t.decision) {
          case Decision::kOpen:
            t.keep = t.keep || error;
            if (pending_spans_ < config_.max_pending_spans) {
              t.spans.push_back(std::move(*d));
              ++pending_spans_;
            } else {
              ++overflow;
            }
            if (is_local_root) unsampled += Decide(t, keep);
            break;
          case Decision::kKept:
            keep.push_back(std::move(*d));
            break;
          case Decision::kDropped:  // a late error still gets exported, alone
            if (error) {
              keep.push_back(std::move(*d));
            } else {
              ++unsampled;
            }
            break;
        }
        if (t.open == 0 && t.decision != Decision::kOpen) pending_.erase(it);
      }
    }
    if (unsampled > 0) CountUnsampled(unsampled);
    if (overflow > 0) {
      stats_.dropped_buffer_full.fetch_add(overflow, std::memory_order_relaxed);
      if (prom_dropped_ != nullptr) prom_dropped_->Increment(static_cast<double>(overflow));
      WarnOnce(warned_buffer_, "trace sampling buffer full; dropping unsampled spans");
    }
    if (!keep.empty()) Enqueue(std::move(keep));
  }

  void Shutdown() {
    std::call_once(shutdown_once_, [this] {
      shut_down_.store(true);
      if (!worker_.joinable()) return;
      // Undecided traces: keep those that already hold an error or a forced span.
      std::vector<SpanData> keep;
      uint64_t unsampled = 0;
      {
        std::lock_guard lock(pending_mu_);
        for (auto it = pending_.begin(); it != pending_.end();) {
          if (it->second.decision == Decision::kOpen) unsampled += Decide(it->second, keep);
          it = it->second.open == 0 ? pending_.erase(it) : std::next(it);
        }
      }
      CountUnsampled(unsampled);
      Enqueue(std::move(keep));
      std::unique_lock lock(mu_);
      stopping_ = true;
      shutdown_deadline_ = SteadyClock::now() + config_.shutdown_timeout;
      cv_.notify_all();
      if (!cv_.wait_until(lock, shutdown_deadline_, [this] { return closed_; })) {
        lock.unlock();
        exporter_->Cancel();  // an Export in flight past the deadline
      } else {
        lock.unlock();
      }
      worker_.join();
    });
  }

  TracerStats stats() const {
    TracerStats s;
    s.spans_started = stats_.started.load();
    s.spans_exported = stats_.exported.load();
    s.spans_dropped_queue_full = stats_.dropped_queue_full.load();
    s.spans_dropped_buffer_full = stats_.dropped_buffer_full.load();
    s.spans_dropped_export_failed = stats_.dropped_export_failed.load();
    s.spans_dropped_unsampled = stats_.dropped_unsampled.load();
    s.export_failures = stats_.export_failures.load();
    s.export_retries = stats_.export_retries.load();
    return s;
  }

 private:
  enum class Decision { kOpen, kKept, kDropped };

  // The finished spans of one unsampled trace, held until its local root span ends: the
  // first span of the trace opened here while none was open (for a trace continued from
  // another node, the first local span).
  struct PendingTrace {
    SpanId local_root{};
    int open = 0;       // spans of this trace started here and not yet ended
    bool keep = false;  // an error or an always_sample span was seen
    Decision decision = Decision::kOpen;
    std::vector<SpanData> spans;
  };

  // Moves a kept trace's spans to `out`; returns how many were dropped as unsampled.
  // Requires pending_mu_.
  uint64_t Decide(PendingTrace& t, std::vector<SpanData>& out) {
    pending_spans_ -= t.spans.size();
    uint64_t dropped = 0;
    if (t.keep) {
      std::move(t.spans.begin(), t.spans.end(), std::back_inserter(out));
      t.decision = Decision::kKept;
    } else {
      dropped = t.spans.size();
      t.decision = Decision::kDropped;
    }
    t.spans.clear();
    t.spans.shrink_to_fit();
    return dropped;
  }

  void Enqueue(std::vector<SpanData> spans) {
    if (spans.empty()) return;
    uint64_t dropped = 0;
    bool wake = false;
    {
      std::lock_guard lock(mu_);
      for (SpanData& s : spans) {
        if (closed_ || queue_.size() >= config_.max_queue_spans) {
          ++dropped;
        } else {
          queue_.push_back(std::move(s));
        }
      }
      wake = queue_.size() >= config_.max_batch;
    }
    if (wake) cv_.notify_all();
    if (dropped > 0) {
      stats_.dropped_queue_full.fetch_add(dropped, std::memory_order_relaxed);
      if (prom_dropped_ != nullptr) prom_dropped_->Increment(static_cast<double>(dropped));
      WarnOnce(warned_queue_, "trace export queue full; dropping spans");
    }
  }

  // The export thread: a batch when max_batch spans wait or export_interval passed; on
  // shutdown, drains until the queue is empty or the deadline passes.
  void Run() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait_for(lock, config_.export_interval,
                   [this] { return stopping_ || queue_.size() >= config_.max_batch; });
      if (stopping_ && (queue_.empty() || SteadyClock::now() >= shutdown_deadline_)) break;
      if (queue_.empty()) continue;
      const size_t n = std::min(queue_.size(), config_.max_batch);
      std::vector<SpanData> batch(std::make_move_iterator(queue_.begin()),
                                  std::make_move_iterator(queue_.begin() + n));
      queue_.erase(queue_.begin(), queue_.begin() + n);
      lock.unlock();
      ExportWithRetry(batch);
      lock.lock();
    }
    const uint64_t left = queue_.size();
    queue_.clear();
    closed_ = true;
    cv_.notify_all();
    lock.unlock();
    if (left > 0) stats_.dropped_export_failed.fetch_add(left, std::memory_order_relaxed);
    if (left > 0 && prom_dropped_ != nullptr) prom_dropped_->Increment(static_cast<double>(left));
  }

  void ExportWithRetry(const std::vector<SpanData>& batch) {
    auto backoff = config_.retry_initial_backoff;
    for (int attempt = 1;; ++attempt) {
      auto deadline = SteadyClock::now() + config_.export_timeout;
      {
        std::lock_guard lock(mu_);
        if (stopping_) deadline = std::min(deadline, shutdown_deadline_);
      }
      Status st = exporter_->Export(batch, deadline);
      if (st.ok()) {
        stats_.exported.fetch_add(batch.size(), std::memory_order_relaxed);
        if (prom_exported_ != nullptr) prom_exported_->Increment(static_cast<double>(batch.size()));
        return;
      }
      const bool retryable =
          st.code() == StatusCode::kUnavailable || st.code() == StatusCode::kDeadlineExceeded;
      if (!retryable || attempt >= config_.max_export_attempts || !Backoff(backoff)) {
        stats_.export_failures.fetch_add(1, std::memory_order_relaxed);
        stats_.dropped_export_failed.fetch_add(batch.size(), std::memory_order_relaxed);
        if (prom_export_errors_ != nullptr) prom_export_errors_->Increment();
        if (prom_dropped_ != nullptr) prom_dropped_->Increment(static_cast<double>(batch.size()));
        if (!warned_export_.exchange(true)) {
          LogWarn("trace", "trace export failed; dropping batch",
                  {{"error", st.ToString()}, {"spans", batch.size()}, {"attempts", attempt}});
        }
        return;
      }
      stats_.export_retries.fetch_add(1, std::memory_order_relaxed);
      backoff = std::min(backoff * 2, config_.retry_max_backoff);
    }
  }

  // Sleeps `d`, cut short by the shutdown deadline. False when that deadline has passed.
  bool Backoff(std::chrono::milliseconds d) {
    std::unique_lock lock(mu_);
    const auto until = SteadyClock::now() + d;
    for (;;) {
      const auto limit = stopping_ ? std::min(until, shutdown_deadline_) : until;
      if (SteadyClock::now() >= limit) break;
      cv_.wait_until(lock, limit);
    }
    return !(stopping_ && SteadyClock::now() >= shutdown_deadline_);
  }

  void CountUnsampled(uint64_t n) {
    if (n == 0) return;
    stats_.dropped_unsampled.fetch_add(n, std::memory_order_relaxed);
    if (prom_unsampled_ != nullptr) prom_unsampled_->Increment(static_cast<double>(n));
  }

  static void WarnOnce(std::atomic<bool>& flag, std::string_view message) {
    if (!flag.exchange(true)) LogWarn("trace", message);
  }

  TracerConfig config_;
  const Sampler sampler_;
  const Clock* clock_;
  std::unique_ptr<IdGenerator> ids_;
  std::unique_ptr<SpanExporter> exporter_;
  uint64_t wall_anchor_ns_ = 0;
  SteadyClock::time_point steady_anchor_;

  struct {
    std::atomic<uint64_t> started{0}, exported{0}, dropped_queue_full{0}, dropped_buffer_full{0},
        dropped_export_failed{0}, dropped_unsampled{0}, export_failures{0}, export_retries{0};
  } stats_;
  prometheus::Counter* prom_exported_ = nullptr;
  prometheus::Counter* prom_dropped_ = nullptr;
  prometheus::Counter* prom_unsampled_ = nullptr;
  prometheus::Counter* prom_export_errors_ = nullptr;
  std::atomic<bool> warned_queue_{false}, warned_buffer_{false}, warned_export_{false};

  std::mutex pending_mu_;
  std::unordered_map<TraceId, PendingTrace, TraceIdHash> pending_;  // guarded by pending_mu_
  size_t pending_spans_ = 0;                                        // guarded by pending_mu_

  std::mutex mu_;
  std::condition_variable cv_;                 // queue filled, shutdown, worker closed
  std::deque<SpanData> queue_;                 // guarded by mu_
  bool stopping_ = false;                      // guarded by mu_
  bool closed_ = false;                        // guarded by mu_: the worker has exited
  SteadyClock::time_point shutdown_deadline_;  // guarded by mu_
  std::atomic<bool> shut_down_{false};
  std::once_flag shutdown_once_;
  std::thread worker_;
};

}  // namespace internal

// ---- Span ----

Span::Span(std::shared_ptr<internal::TracerCore> core, std::unique_ptr<SpanData> data)
    : core_(std::move(core)), data_(std::move(data)), context_(data_->context) {}

Span::Span(Span&& other) noexcept
    : core_(std::move(other.core_)), data_(std::move(other.data_)), context_(other.context_) {}

Span& Span::operator=(Span&& other) noexcept {
  if (this != &other) {
    End();
    core_ = std::move(other.core_);
    data_ = std::move(other.data_);
    context_ = other.context_;
  }
  return *this;
}

Span::~Span() { End(); }

void Span::SetAttribute(std::string_view key, std::string_view value) {
  if (data_) SetAttr(data_->attributes, key, std::string(value));
}
void Span::SetAttribute(std::string_view key, const char* value) {
  SetAttribute(key, std::string_view(value != nullptr ? value : ""));
}
void Span::SetAttribute(std::string_view key, int64_t value) {
  if (data_) SetAttr(data_->attributes, key, value);
}
void Span::SetAttribute(std::string_view key, double value) {
  if (data_) SetAttr(data_->attributes, key, value);
}
void Span::SetAttribute(std::string_view key, bool value) {
  if (data_) SetAttr(data_->attributes, key, value);
}

void Span::SetError(std::string_view message) {
  if (!data_) return;
  data_->error = true;
  data_->status_message = std::string(message);
  SetAttr(data_->attributes, "error", true);
}

void Span::AddEvent(std::string_view name) {
  if (data_) data_->events.push_back({std::string(name), core_->NowUnixNano()});
}

void Span::End() {
  if (!data_) return;
  core_->Finish(std::move(data_));
  core_.reset();
}

// ---- Tracer ----

Status TracerConfig::Validate() const {
  DWCP_RETURN_IF_ERROR(sampling.Validate());
  if (endpoint.empty()) return InvalidArgument("tracing endpoint is empty");
  if (max_queue_spans == 0 || max_batch == 0) {
    return InvalidArgument("tracing max_queue_spans and max_batch must be positive");
  }
  if (max_export_attempts < 1) return InvalidArgument("tracing max_export_attempts must be >= 1");
  if (export_interval.count() <= 0 || export_timeout.count() <= 0 ||
      shutdown_timeout.count() <= 0) {
    return InvalidArgument("tracing intervals and timeouts must be positive");
  }
  return Status::Ok();
}

Tracer::Tracer(TracerConfig config, obs::Metrics* metrics)
    : Tracer(std::move(config), metrics, TracerEnv{}) {}

Tracer::Tracer(TracerConfig config, obs::Metrics* metrics, TracerEnv env)
    : core_(std::make_shared<internal::TracerCore>(std::move(config), metrics, std::move(env))) {}

Tracer::~Tracer() { Shutdown(); }

Span Tracer::StartSpan(std::string_view name, std::string_view component,
                       const SpanContext* parent) {
  if (!core_->accepting()) return Span();
  return Span(core_, core_->Begin(name, component, parent));
}

void Tracer::Shutdown() { core_->Shutdown(); }

TracerStats Tracer::stats() const { return core_->stats(); }

const TracerConfig& Tracer::config() const { return core_->config(); }

// ---- Active span ----

namespace {
thread_local SpanContext tls_active;
}

ScopedActiveSpan::ScopedActiveSpan(const SpanContext& context) : previous_(tls_active) {
  tls_active = context;
}

ScopedActiveSpan::~ScopedActiveSpan() { tls_active = previous_; }

std::optional<SpanContext> ActiveSpanContext() {
  if (!tls_active.valid()) return std::nullopt;
  return tls_active;
}

}  // namespace dwcp::obs::trace
