#include "obs/trace/tracer.h"

#include <gtest/gtest.h>

#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>

#include "common/clock.h"
#include "obs/log.h"
#include "obs/metrics.h"

namespace dwcp::obs::trace {
namespace {

using namespace std::chrono_literals;

// What the fake exporter received, shared with the test (the tracer owns the exporter).
struct Sink {
  std::mutex mu;
  std::vector<SpanData> spans;
  int calls = 0;
  std::deque<Status> script;  // answers for the next calls; OK once empty
};

class FakeExporter final : public SpanExporter {
 public:
  explicit FakeExporter(std::shared_ptr<Sink> sink) : sink_(std::move(sink)) {}
  Status Export(const std::vector<SpanData>& spans,
                std::chrono::steady_clock::time_point) override {
    std::lock_guard lock(sink_->mu);
    ++sink_->calls;
    if (!sink_->script.empty()) {
      Status st = sink_->script.front();
      sink_->script.pop_front();
      if (!st.ok()) return st;
    }
    sink_->spans.insert(sink_->spans.end(), spans.begin(), spans.end());
    return Status::Ok();
  }

 private:
  std::shared_ptr<Sink> sink_;
};

TracerConfig TestConfig(double param, std::vector<std::string> always = {}) {
  TracerConfig c;
  c.sampling.type = "probabilistic";
  c.sampling.param = param;
  c.sampling.always_sample = std::move(always);
  c.export_interval = 10s;  // export only on Shutdown(): one deterministic batch
  c.retry_initial_backoff = 1ms;
  c.shutdown_timeout = 2s;
  return c;
}

struct Harness {
  explicit Harness(TracerConfig config, Metrics* metrics = nullptr, const Clock* clock = nullptr)
      : sink(std::make_shared<Sink>()),
        tracer(std::move(config), metrics,
               TracerEnv{std::make_unique<FakeExporter>(sink), nullptr, clock}) {}

  // Shuts the tracer down and returns what was exported, by span name.
  std::map<std::string, SpanData> Exported() {
    tracer.Shutdown();
    std::map<std::string, SpanData> out;
    std::lock_guard lock(sink->mu);
    for (const SpanData& s : sink->spans) out.emplace(s.name, s);
    return out;
  }

  std::shared_ptr<Sink> sink;
  Tracer tracer;
};

const AttributeValue* FindAttr(const SpanData& s, std::string_view key) {
  for (const auto& [k, v] : s.attributes) {
    if (k == key) return &v;
  }
  return nullptr;
}

double CounterValue(Metrics& metrics, const std::string& name, const std::string& outcome) {
  for (const auto& family : metrics.registry().Collect()) {
    if (family.name != name) continue;
    for (const auto& m : family.metric) {
      bool match = outcome.empty();
      for (const auto& l : m.label) match = match || (l.name == "outcome" && l.value == outcome);
      if (match) return m.counter.value;
    }
  }
  return -1;
}

TEST(TraceSpanTest, ChildJoinsParentTrace) {
  FakeClock clock;
  Harness h(TestConfig(1.0), nullptr, &clock);
  Span root = h.tracer.StartSpan("migrate_vm", "migration");
  root.SetAttribute("vm.id", "vm-42");
  root.SetAttribute("pages", 4096);  // int: the integral overload, not bool or double
  root.SetAttribute("ratio", 2.5);
  root.SetAttribute("v3", true);
  root.SetAttribute("vm.id", std::string("vm-43"));  // replaces
  Span child = h.tracer.StartSpan("amst_transfer", "amst", &root.context());
  clock.Advance(250ms);
  child.AddEvent("switchover");
  EXPECT_TRUE(child.context().valid());
  EXPECT_EQ(child.context().trace_id, root.context().trace_id);
  EXPECT_NE(child.context().span_id, root.context().span_id);
  child.End();
  child.End();  // idempotent
  EXPECT_FALSE(child.recording());
  EXPECT_TRUE(child.context().valid());
  root.End();

  auto spans = h.Exported();
  ASSERT_EQ(spans.size(), 2u);
  const SpanData& r = spans["migrate_vm"];
  const SpanData& c = spans["amst_transfer"];
  EXPECT_EQ(r.parent_span_id, SpanId{});
  EXPECT_EQ(c.parent_span_id, r.context.span_id);
  EXPECT_FALSE(c.parent_remote);
  EXPECT_EQ(std::get<std::string>(*FindAttr(r, "component")), "migration");
  EXPECT_EQ(std::get<std::string>(*FindAttr(c, "component")), "amst");
  EXPECT_EQ(std::get<std::string>(*FindAttr(r, "vm.id")), "vm-43");
  EXPECT_EQ(std::get<int64_t>(*FindAttr(r, "pages")), 4096);
  EXPECT_EQ(std::get<double>(*FindAttr(r, "ratio")), 2.5);
  EXPECT_EQ(std::get<bool>(*FindAttr(r, "v3")), true);
  EXPECT_EQ(r.attributes.size(), 5u);
  EXPECT_EQ(c.end_unix_nano - c.start_unix_nano, 250'000'000u);
  EXPECT_EQ(c.start_unix_nano, static_cast<uint64_t>(clock.WallMillis() - 250) * 1'000'000);
  ASSERT_EQ(c.events.size(), 1u);
  EXPECT_EQ(c.events[0].name, "switchover");
  EXPECT_EQ(h.tracer.stats().spans_started, 2u);
  EXPECT_EQ(h.tracer.stats().spans_exported, 2u);
}

TEST(TraceSpanTest, RemoteParentContinuesTrace) {
  Harness h(TestConfig(0.0));
  auto remote =
      SpanContext::FromTraceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
  ASSERT_TRUE(remote.has_value());
  { Span s = h.tracer.StartSpan("receive_migration", "migration", &*remote); }
  auto spans = h.Exported();
  ASSERT_EQ(spans.size(), 1u);  // the upstream decision (sampled) wins over param 0
  const SpanData& s = spans["receive_migration"];
  EXPECT_EQ(s.context.trace_id, remote->trace_id);
  EXPECT_EQ(s.parent_span_id, remote->span_id);
  EXPECT_TRUE(s.parent_remote);
  EXPECT_FALSE(s.context.remote);
}

TEST(TraceSpanTest, DisabledTracerHandsOutNoOpSpans) {
  TracerConfig config = TestConfig(1.0);
  config.enabled = false;
  Harness h(config);
  Span s = h.tracer.StartSpan("migrate_vm", "migration");
  EXPECT_FALSE(s.recording());
  EXPECT_FALSE(s.context().valid());
  s.SetAttribute("vm.id", "vm-1");
  s.SetError("ignored");
  s.End();
  Span none;
  none.SetAttribute("k", 1.0);
  EXPECT_FALSE(none.context().valid());
  EXPECT_TRUE(h.Exported().empty());
  EXPECT_EQ(h.tracer.stats().spans_started, 0u);
}

TEST(TraceSpanTest, MoveTransfersOwnershipAndShutdownStopsRecording) {
  Harness h(TestConfig(1.0));
  Span a = h.tracer.StartSpan("first", "");
  Span b = std::move(a);
  EXPECT_FALSE(a.recording());  // NOLINT(bugprone-use-after-move): moved-from is a no-op
  a = h.tracer.StartSpan("second", "");
  b = std::move(a);  // ends "first"
  b.End();
  Span late = h.tracer.StartSpan("open_at_shutdown", "");
  auto spans = h.Exported();
  EXPECT_EQ(spans.size(), 2u);
  EXPECT_TRUE(spans.count("first") && spans.count("second"));
  EXPECT_FALSE(h.tracer.StartSpan("after", "").recording());
  late.End();  // after shutdown: counted, not exported
  TracerStats st = h.tracer.stats();
  EXPECT_EQ(st.spans_started, 3u);
  EXPECT_EQ(st.spans_exported, 2u);
  EXPECT_EQ(st.spans_dropped_queue_full, 1u);
}

TEST(TraceSamplingTest, ParamZeroDropsPlainTrace) {
  Metrics metrics;
  Harness h(TestConfig(0.0, {"migrate_vm"}), &metrics);
  {
    Span root = h.tracer.StartSpan("plain_op", "amst");
    Span child = h.tracer.StartSpan("plain_child", "amst", &root.context());
    EXPECT_FALSE(root.context().sampled);
    EXPECT_FALSE(child.context().sampled);
    EXPECT_TRUE(child.recording());  // recorded for the tail rule
  }
  // Decided when the root ended, before any export.
  EXPECT_EQ(h.tracer.stats().spans_dropped_unsampled, 2u);
  EXPECT_TRUE(h.Exported().empty());
  EXPECT_EQ(CounterValue(metrics, "dwcp_v3_trace_spans_total", "unsampled"), 2);
  EXPECT_EQ(CounterValue(metrics, "dwcp_v3_trace_spans_total", "exported"), 0);
}

TEST(TraceSamplingTest, ParamOneKeepsEveryTrace) {
  Metrics metrics;
  Harness h(TestConfig(1.0), &metrics);
  for (int i = 0; i < 10; ++i) {
    Span s = h.tracer.StartSpan("plain_op", "");
    EXPECT_TRUE(s.context().sampled);
  }
  EXPECT_EQ(h.Exported().size(), 1u);  // ten spans with one name
  EXPECT_EQ(h.tracer.stats().spans_exported, 10u);
  EXPECT_EQ(CounterValue(metrics, "dwcp_v3_trace_spans_total", "exported"), 10);
}

TEST(TraceSamplingTest, AlwaysSampleNamesAreKeptAtParamZero) {
  Harness h(TestConfig(0.0, {"migrate_vm", "acp_*"}));
  {
    Span root = h.tracer.StartSpan("migrate_vm", "migration");  // exact match: head keeps
    EXPECT_TRUE(root.context().sampled);
    Span child = h.tracer.StartSpan("transfer_data", "amst", &root.context());
    EXPECT_TRUE(child.context().sampled);  // inherited
  }
  {
    // A forced span inside an unsampled trace keeps the whole trace.
    Span root = h.tracer.StartSpan("rollout_step", "");
    Span before = h.tracer.StartSpan("prepare", "", &root.context());
    before.End();
    Span forced = h.tracer.StartSpan("acp_consensus", "acp", &root.context());  // prefix
    EXPECT_TRUE(forced.context().sampled);
    Span grandchild = h.tracer.StartSpan("acp_commit_io", "acp", &forced.context());
    EXPECT_TRUE(grandchild.context().sampled);
  }
  { Span other = h.tracer.StartSpan("unrelated", ""); }
  auto spans = h.Exported();
  EXPECT_EQ(spans.size(), 6u);
  for (const char* name : {"migrate_vm", "transfer_data", "rollout_step", "prepare",
                           "acp_consensus", "acp_commit_io"}) {
    EXPECT_TRUE(spans.count(name)) << name;
  }
  EXPECT_EQ(h.tracer.stats().spans_dropped_unsampled, 1u);
}

TEST(TraceSamplingTest, ErrorTraceKeptByTailRule) {
  Metrics metrics;
  Harness h(TestConfig(0.0, {}), &metrics);
  {
    Span root = h.tracer.StartSpan("migrate_vm", "migration");
    EXPECT_FALSE(root.context().sampled);
    Span ok = h.tracer.StartSpan("hde_compress", "hde", &root.context());
    ok.End();
    Span bad = h.tracer.StartSpan("acp_consensus", "acp", &root.context());
    bad.SetError("fencing token rejected");
  }
  { Span root = h.tracer.StartSpan("other", ""); }
  {
    // A span named error_* counts as an error without SetError.
    Span root = h.tracer.StartSpan("rollout", "");
    Span e = h.tracer.StartSpan("error_timeout", "", &root.context());
  }
  auto spans = h.Exported();
  EXPECT_EQ(spans.size(), 5u);
  const SpanData& bad = spans["acp_consensus"];
  EXPECT_TRUE(bad.error);
  EXPECT_EQ(bad.status_message, "fencing token rejected");
  EXPECT_EQ(std::get<bool>(*FindAttr(bad, "error")), true);
  EXPECT_FALSE(spans["hde_compress"].error);
  EXPECT_TRUE(spans.count("migrate_vm") && spans.count("rollout") && spans.count("error_timeout"));
  EXPECT_EQ(h.tracer.stats().spans_dropped_unsampled, 1u);  // "other"
  EXPECT_EQ(CounterValue(metrics, "dwcp_v3_trace_spans_total", "exported"), 5);
}

TEST(TraceSamplingTest, RemoteUnsampledParentDecidesAtFirstLocalSpan) {
  Harness h(TestConfig(1.0, {}));  // param 1 would keep a root, but the parent said no
  auto remote =
      SpanContext::FromTraceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00");
  {
    Span local_root = h.tracer.StartSpan("receive_migration", "migration", &*remote);
    Span child = h.tracer.StartSpan("verify_digest", "hde", &local_root.context());
    child.SetError("digest mismatch");
  }
  { Span local_root = h.tracer.StartSpan("receive_migration_ok", "migration", &*remote); }
  EXPECT_EQ(h.tracer.stats().spans_dropped_unsampled, 1u);
  auto spans = h.Exported();
  EXPECT_EQ(spans.size(), 2u);
  EXPECT_TRUE(spans["receive_migration"].parent_remote);
}

TEST(TraceSamplingTest, LateErrorAfterDroppedDecisionIsExportedAlone) {
  Harness h(TestConfig(0.0, {}));
  Span root = h.tracer.StartSpan("migrate_vm", "");
  Span async_child = h.tracer.StartSpan("ass_sync", "", &root.context());
  Span done = h.tracer.StartSpan("hde_compress", "", &root.context());
  done.End();
  root.End();  // drops root and hde_compress
  async_child.SetError("standby lost");
  async_child.End();
  auto spans = h.Exported();
  ASSERT_EQ(spans.size(), 1u);
  EXPECT_TRUE(spans.count("ass_sync"));
  EXPECT_EQ(h.tracer.stats().spans_dropped_unsampled, 2u);
}

TEST(TraceSamplingTest, BufferOverflowIsCounted) {
  TracerConfig config = TestConfig(0.0, {});
  config.max_pending_spans = 4;
  Metrics metrics;
  Harness h(config, &metrics);
  {
    Span root = h.tracer.StartSpan("migrate_vm", "");
    for (int i = 0; i < 9; ++i) h.tracer.StartSpan("page_batch", "", &root.context()).End();
  }
  TracerStats st = h.tracer.stats();
  EXPECT_EQ(st.spans_started, 10u);
  EXPECT_EQ(st.spans_dropped_buffer_full, 6u);  // 5 children and the root
  EXPECT_EQ(st.spans_dropped_unsampled, 4u);
  // The buffer is free again: an error trace is kept whole.
  {
    Span root = h.tracer.StartSpan("migrate_vm", "");
    h.tracer.StartSpan("error_abort", "", &root.context()).End();
  }
  EXPECT_EQ(h.Exported().size(), 2u);
  EXPECT_EQ(CounterValue(metrics, "dwcp_v3_trace_spans_total", "dropped"), 6);
}

TEST(TraceSamplingTest, ProbabilisticIsDeterministicInTheTraceId) {
  SamplingConfig half;
  half.param = 0.5;
  half.always_sample = {"error_*"};
  Sampler sampler(half);
  TraceId low{}, high{};
  low[15] = 1;
  high.fill(0xff);
  EXPECT_TRUE(sampler.SampleRoot(low, "op"));
  EXPECT_FALSE(sampler.SampleRoot(high, "op"));
  EXPECT_TRUE(sampler.SampleRoot(high, "error_disk"));
  EXPECT_TRUE(sampler.Forced("error_"));
  EXPECT_FALSE(sampler.Forced("errors"));

  Harness h(TestConfig(0.25, {}));
  int kept = 0;
  for (int i = 0; i < 2000; ++i) kept += h.tracer.StartSpan("op", "").context().sampled;
  EXPECT_GT(kept, 350);
  EXPECT_LT(kept, 650);

  SamplingConfig never;
  never.type = "never";
  never.always_sample = {"migrate_vm"};
  EXPECT_FALSE(Sampler(never).SampleRoot(low, "op"));
  EXPECT_TRUE(Sampler(never).SampleRoot(high, "migrate_vm"));
  SamplingConfig always;
  always.type = "always";
  always.param = 0;
  EXPECT_TRUE(Sampler(always).SampleRoot(high, "op"));
}

TEST(TraceSamplingTest, ConfigValidation) {
  TracerConfig c;
  EXPECT_TRUE(c.Validate().ok());
  c.sampling.type = "ratio";
  EXPECT_EQ(c.Validate().code(), StatusCode::kInvalidArgument);
  c.sampling.type = "always";
  c.sampling.param = 1.5;
  EXPECT_FALSE(c.Validate().ok());
  c.sampling.param = 0.1;
  c.max_batch = 0;
  EXPECT_FALSE(c.Validate().ok());
}

TEST(TraceExportTest, QueueFullDropsAreCounted) {
  TracerConfig config = TestConfig(1.0);
  config.max_queue_spans = 2;
  config.max_batch = 100;  // the worker waits for the interval: the queue fills up
  Harness h(config);
  for (int i = 0; i < 5; ++i) h.tracer.StartSpan("op" + std::to_string(i), "").End();
  EXPECT_EQ(h.tracer.stats().spans_dropped_queue_full, 3u);
  EXPECT_EQ(h.Exported().size(), 2u);
}

TEST(TraceExportTest, RetriesTransientFailuresThenGivesUp) {
  TracerConfig config = TestConfig(1.0);
  config.max_export_attempts = 3;
  Metrics metrics;
  Harness h(config, &metrics);
  h.sink->script = {Unavailable("down"), DeadlineExceeded("slow")};
  h.tracer.StartSpan("a", "").End();
  EXPECT_EQ(h.Exported().size(), 1u);
  TracerStats st = h.tracer.stats();
  EXPECT_EQ(h.sink->calls, 3);
  EXPECT_EQ(st.export_retries, 2u);
  EXPECT_EQ(st.export_failures, 0u);

  Harness fail(config, &metrics);  // same registry: counters are shared, not re-registered
  fail.sink->script = {Unavailable("1"), Unavailable("2"), Unavailable("3"), Unavailable("4")};
  fail.tracer.StartSpan("b", "").End();
  EXPECT_TRUE(fail.Exported().empty());
  st = fail.tracer.stats();
  EXPECT_EQ(fail.sink->calls, 3);
  EXPECT_EQ(st.export_failures, 1u);
  EXPECT_EQ(st.spans_dropped_export_failed, 1u);
  EXPECT_EQ(CounterValue(metrics, "dwcp_v3_trace_export_errors_total", ""), 1);

  Harness permanent(config);
  permanent.sink->script = {Internal("bad request")};
  permanent.tracer.StartSpan("c", "").End();
  EXPECT_TRUE(permanent.Exported().empty());
  EXPECT_EQ(permanent.sink->calls, 1);  // not retried
}

TEST(TraceLogTest, LogCarriesActiveSpanIds) {
  Harness h(TestConfig(1.0));
  Span span = h.tracer.StartSpan("migrate_vm", "migration");
  auto last_line = [](auto&& log) {
    testing::internal::CaptureStderr();
    log();
    std::string out = testing::internal::GetCapturedStderr();
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return nlohmann::json::parse(out.substr(out.rfind('\n') + 1));
  };
  nlohmann::json line;
  {
    ScopedActiveSpan active(span);
    ASSERT_TRUE(ActiveSpanContext().has_value());
    line = last_line([] { LogError("migration", "round done"); });
    EXPECT_EQ(line["trace_id"], span.context().TraceIdHex());
    EXPECT_EQ(line["span_id"], span.context().SpanIdHex());
    line = last_line([] { LogError("migration", "explicit", {{"trace_id", "abc123"}}); });
    EXPECT_EQ(line["trace_id"], "abc123");
    EXPECT_FALSE(line.contains("span_id"));
    {
      Span noop;
      ScopedActiveSpan inner(noop);
      EXPECT_FALSE(ActiveSpanContext().has_value());
    }
    EXPECT_EQ(ActiveSpanContext()->span_id, span.context().span_id);  // restored
  }
  EXPECT_FALSE(ActiveSpanContext().has_value());
  line = last_line([] { LogError("migration", "no span"); });
  EXPECT_FALSE(line.contains("trace_id"));
}

}  // namespace
}  // namespace dwcp::obs::trace
