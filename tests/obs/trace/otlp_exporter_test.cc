// The OTLP/gRPC exporter against a real gRPC server on 127.0.0.1. The server is a generic
// (raw bytes) service, and what it receives is decoded by `protoc --decode_raw`, which knows
// nothing of our .proto files: the checks below use the OTLP field numbers of the public
// specification, so a wrong field number in proto/otlp/ fails here.
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "obs/metrics.h"
#include "obs/trace/tracer.h"

namespace dwcp::obs::trace {
namespace {

using namespace std::chrono_literals;

constexpr char kExportMethod[] = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

// ---- A collector that records raw request bytes ----

class RawCollector final : public grpc::CallbackGenericService {
 public:
  struct Call {
    std::string method;
    std::string body;
    grpc::StatusCode answered;
  };

  // The next calls are answered with these codes, in order; OK afterwards.
  void AnswerNext(std::vector<grpc::StatusCode> codes) {
    std::lock_guard lock(mu_);
    script_ = std::move(codes);
  }
  // Calls are received and never answered (until the server shuts down).
  void Hang() { hang_ = true; }

  std::vector<Call> calls() {
    std::lock_guard lock(mu_);
    return calls_;
  }

  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* ctx) override {
    return new Reactor(this, ctx->method());
  }

 private:
  class Reactor final : public grpc::ServerGenericBidiReactor {
   public:
    Reactor(RawCollector* c, std::string method) : c_(c), method_(std::move(method)) {
      StartRead(&request_);
    }
    void OnReadDone(bool ok) override {
      if (!ok) return Done(grpc::Status(grpc::StatusCode::INTERNAL, "no request"));
      std::vector<grpc::Slice> slices;
      std::string body;
      if (request_.Dump(&slices).ok()) {
        for (const grpc::Slice& s : slices) body.append(s.begin(), s.end());
      }
      if (c_->hang_) {
        c_->Record(method_, std::move(body), grpc::StatusCode::UNKNOWN);
        return;  // answered by OnCancel when the client gives up or the server stops
      }
      grpc::StatusCode code = c_->Record(method_, std::move(body), std::nullopt);
      if (code != grpc::StatusCode::OK) return Done(grpc::Status(code, "scripted failure"));
      // An empty ExportTraceServiceResponse is zero bytes.
      grpc::Slice empty{std::string()};
      response_ = grpc::ByteBuffer(&empty, 1);
      StartWriteAndFinish(&response_, grpc::WriteOptions(), grpc::Status::OK);
    }
    void OnCancel() override { Done(grpc::Status::CANCELLED); }
    void OnDone() override { delete this; }

   private:
    void Done(const grpc::Status& st) {
      if (!finished_.exchange(true)) Finish(st);
    }
    RawCollector* c_;
    std::string method_;
    grpc::ByteBuffer request_, response_;
    std::atomic<bool> finished_{false};
  };

  grpc::StatusCode Record(std::string method, std::string body,
                          std::optional<grpc::StatusCode> fixed) {
    std::lock_guard lock(mu_);
    grpc::StatusCode code = grpc::StatusCode::OK;
    if (fixed) {
      code = *fixed;
    } else if (!script_.empty()) {
      code = script_.front();
      script_.erase(script_.begin());
    }
    calls_.push_back({std::move(method), std::move(body), code});
    return code;
  }

  std::mutex mu_;
  std::vector<grpc::StatusCode> script_;
  std::vector<Call> calls_;
  std::atomic<bool> hang_{false};
};

struct CollectorServer {
  CollectorServer() {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterCallbackGenericService(&collector);
    server = builder.BuildAndStart();
  }
  ~CollectorServer() { server->Shutdown(std::chrono::system_clock::now() + 1s); }
  std::string endpoint() const { return "127.0.0.1:" + std::to_string(port); }

  RawCollector collector;
  int port = 0;
  std::unique_ptr<grpc::Server> server;
};

// A port with nothing listening: bound by a server that is then stopped.
int ClosedPort() {
  CollectorServer s;
  return s.port;
}

// ---- protoc --decode_raw output as a tree ----

// One field of a decoded message: `value` for scalars (strings unescaped, numbers as
// printed, fixed64/fixed32 as "0x..."), `fields` for nested messages. --decode_raw prints a
// length-delimited field as a message whenever its bytes happen to parse as one (the key
// "error" does: 'e' is the tag of a fixed32 field 12), so string fields are read with Str(),
// which re-encodes such a field to its original bytes.
struct Raw {
  enum Kind { kMessage, kString, kNumber };
  int number = 0;
  Kind kind = kMessage;
  std::string value;
  std::vector<Raw> fields;

  std::vector<const Raw*> All(int n) const {
    std::vector<const Raw*> out;
    for (const Raw& f : fields) {
      if (f.number == n) out.push_back(&f);
    }
    return out;
  }
  const Raw& One(int n) const {
    static const Raw kMissing;
    auto all = All(n);
    EXPECT_EQ(all.size(), 1u) << "field " << n;
    return all.empty() ? kMissing : *all[0];
  }
  bool Has(int n) const { return !All(n).empty(); }
};

std::string Unescape(std::string_view q) {  // C escapes as protoc prints them
  std::string out;
  for (size_t i = 1; i + 1 < q.size(); ++i) {
    if (q[i] != '\\') {
      out += q[i];
      continue;
    }
    char c = q[++i];
    if (c >= '0' && c <= '7') {
      int v = 0;
      for (int k = 0; k < 3 && i < q.size() - 1 && q[i] >= '0' && q[i] <= '7'; ++k) {
        v = v * 8 + (q[i++] - '0');
      }
      --i;
      out += static_cast<char>(v);
    } else {
      out += c == 'n' ? '\n' : c == 'r' ? '\r' : c == 't' ? '\t' : c;
    }
  }
  return out;
}

Raw ParseDecodeRaw(const std::string& text) {
  Raw root;
  std::vector<Raw*> stack = {&root};
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    size_t b = line.find_first_not_of(' ');
    if (b == std::string::npos) continue;
    std::string_view l = std::string_view(line).substr(b);
    if (l == "}") {
      stack.pop_back();
      continue;
    }
    Raw f;
    f.number = std::stoi(std::string(l));
    stack.back()->fields.push_back(std::move(f));
    Raw* added = &stack.back()->fields.back();
    if (l.ends_with(" {")) {
      stack.push_back(added);
    } else {
      std::string_view v = l.substr(l.find(": ") + 2);
      added->kind = v.front() == '"' ? Raw::kString : Raw::kNumber;
      added->value = v.front() == '"' ? Unescape(v) : std::string(v);
    }
  }
  return root;
}

std::string Varint(uint64_t v) {
  std::string out;
  for (; v >= 0x80; v >>= 7) out += static_cast<char>(v | 0x80);
  return out + static_cast<char>(v);
}

// The wire encoding of `m`'s fields, rebuilt from the decoded tree.
std::string Encode(const Raw& m) {
  std::string out;
  for (const Raw& f : m.fields) {
    const uint64_t n = static_cast<uint64_t>(f.number) << 3;
    if (f.kind == Raw::kNumber && f.value.starts_with("0x")) {
      const size_t width = (f.value.size() - 2) / 2;  // fixed32: 4 bytes, fixed64: 8
      out += Varint(n | (width == 4 ? 5 : 1));
      uint64_t v = std::stoull(f.value, nullptr, 16);
      for (size_t i = 0; i < width; ++i) out += static_cast<char>(v >> (8 * i));
    } else if (f.kind == Raw::kNumber) {
      out += Varint(n) + Varint(std::stoull(f.value));
    } else {
      std::string body = f.kind == Raw::kString ? f.value : Encode(f);
      out += Varint(n | 2) + Varint(body.size()) + body;
    }
  }
  return out;
}

// The bytes of a string/bytes field, however --decode_raw printed it.
std::string Str(const Raw& f) { return f.kind == Raw::kMessage ? Encode(f) : f.value; }

Raw DecodeRaw(const std::string& bytes) {
  std::string path = testing::TempDir() + "/otlp_request_" + std::to_string(getpid()) + ".bin";
  std::ofstream(path, std::ios::binary) << bytes;
  std::string cmd = std::string(DWCP_PROTOC) + " --decode_raw < " + path;
  std::string text;
  if (FILE* p = popen(cmd.c_str(), "r")) {
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) text.append(buf, n);
    EXPECT_EQ(pclose(p), 0) << text;
  }
  std::remove(path.c_str());
  return ParseDecodeRaw(text);
}

std::string Bytes(const uint8_t* data, size_t n) {
  return std::string(reinterpret_cast<const char*>(data), n);
}

// Attributes (KeyValue = {1: key, 2: AnyValue}) of a Span or Resource, by key.
std::map<std::string, const Raw*> Attrs(const Raw& m, int field) {
  std::map<std::string, const Raw*> out;
  static const Raw kMissing;
  for (const Raw* kv : m.All(field)) out[Str(kv->One(1))] = &kv->One(2);
  for (const char* key : {"service.name", "service.instance.id", "host.name", "process.pid",
                          "component", "vm.id", "pages", "ratio", "v3", "error"}) {
    out.try_emplace(key, &kMissing);  // a missing key fails the checks, not the process
  }
  return out;
}

// Ids whose first byte is zero: protoc --decode_raw then cannot mistake them for nested
// messages (field number 0 is invalid) and prints them as strings.
class SequentialIds final : public IdGenerator {
 public:
  TraceId NewTraceId() override {
    TraceId id{};
    id[1] = 0xab;
    id[15] = static_cast<uint8_t>(++next_);
    return id;
  }
  SpanId NewSpanId() override {
    SpanId id{};
    id[1] = 0xcd;
    id[7] = static_cast<uint8_t>(++next_);
    return id;
  }

 private:
  std::atomic<int> next_{0};
};

TracerConfig ExportConfig(const std::string& endpoint) {
  TracerConfig c;
  c.endpoint = endpoint;
  c.node_id = "node-a";
  c.host_name = "test-host";
  c.sampling.type = "always";
  c.export_interval = 10s;  // one batch, sent by Shutdown()
  c.retry_initial_backoff = 10ms;
  c.shutdown_timeout = 3s;
  return c;
}

// All spans of the requests the collector accepted.
std::vector<Raw> AcceptedRequests(RawCollector& c) {
  std::vector<Raw> out;
  for (const auto& call : c.calls()) {
    EXPECT_EQ(call.method, kExportMethod);
    if (call.answered == grpc::StatusCode::OK) out.push_back(DecodeRaw(call.body));
  }
  return out;
}

std::vector<Raw> SpansOf(const std::vector<Raw>& requests) {
  std::vector<Raw> spans;
  for (const Raw& req : requests) {
    for (const Raw* rs : req.All(1)) {     // ExportTraceServiceRequest.resource_spans
      for (const Raw* ss : rs->All(2)) {   // ResourceSpans.scope_spans
        for (const Raw* s : ss->All(2)) {  // ScopeSpans.spans
          spans.push_back(*s);
        }
      }
    }
  }
  return spans;
}

TEST(OtlpExportTest, IndependentDecoderReadsSpansByOtlpFieldNumbers) {
  CollectorServer server;
  Metrics metrics;
  TracerEnv env;
  env.ids = std::make_unique<SequentialIds>();
  Tracer tracer(ExportConfig(server.endpoint()), &metrics, std::move(env));
  SpanContext root_ctx, child_ctx;
  {
    Span root = tracer.StartSpan("migrate_vm", "migration");
    root.SetAttribute("vm.id", "vm-42");
    root.SetAttribute("pages", int64_t{4096});
    root.SetAttribute("ratio", 2.5);
    root.SetAttribute("v3", true);
    Span child = tracer.StartSpan("amst_transfer", "amst", &root.context());
    child.SetError("digest mismatch");
    root_ctx = root.context();
    child_ctx = child.context();
  }
  tracer.Shutdown();
  EXPECT_EQ(tracer.stats().spans_exported, 2u);

  std::vector<Raw> requests = AcceptedRequests(server.collector);
  ASSERT_EQ(requests.size(), 1u);
  const Raw& resource_spans = requests[0].One(1);
  // Resource (ResourceSpans.resource = 1, Resource.attributes = 1, AnyValue.string_value = 1)
  auto resource = Attrs(resource_spans.One(1), 1);
  ASSERT_TRUE(resource.count("service.name"));
  EXPECT_EQ(Str(resource["service.name"]->One(1)), "dwcp-v3");
  ASSERT_TRUE(resource.count("service.instance.id"));
  EXPECT_EQ(Str(resource["service.instance.id"]->One(1)), "node-a");
  EXPECT_EQ(Str(resource["host.name"]->One(1)), "test-host");
  EXPECT_EQ(resource["process.pid"]->One(3).value, std::to_string(getpid()));  // int_value
  // Scope (ScopeSpans.scope = 1, InstrumentationScope.name = 1)
  EXPECT_EQ(Str(resource_spans.One(2).One(1).One(1)), "dwcp-v3");

  std::vector<Raw> spans = SpansOf(requests);
  ASSERT_EQ(spans.size(), 2u);
  std::map<std::string, const Raw*> by_name;
  for (const Raw& s : spans) by_name[Str(s.One(5))] = &s;  // Span.name = 5
  ASSERT_TRUE(by_name.count("migrate_vm") && by_name.count("amst_transfer"));
  const Raw& root = *by_name["migrate_vm"];
  const Raw& child = *by_name["amst_transfer"];

  const std::string trace_id = Bytes(root_ctx.trace_id.data(), 16);
  EXPECT_EQ(Str(root.One(1)), trace_id);  // Span.trace_id = 1
  EXPECT_EQ(Str(child.One(1)), trace_id);
  EXPECT_EQ(Str(root.One(2)), Bytes(root_ctx.span_id.data(), 8));  // Span.span_id = 2
  EXPECT_EQ(Str(child.One(2)), Bytes(child_ctx.span_id.data(), 8));
  EXPECT_FALSE(root.Has(4));                                        // a root: no parent
  EXPECT_EQ(Str(child.One(4)), Bytes(root_ctx.span_id.data(), 8));  // Span.parent_span_id = 4
  EXPECT_EQ(root.One(6).value, "1");                                // kind = SPAN_KIND_INTERNAL
  // fixed64 start/end (7, 8), printed as hex; end >= start.
  uint64_t start = std::stoull(root.One(7).value, nullptr, 16);
  uint64_t end = std::stoull(root.One(8).value, nullptr, 16);
  EXPECT_GT(start, 1'600'000'000'000'000'000u);
  EXPECT_GE(end, start);
  EXPECT_EQ(root.One(16).value, "0x00000101");  // flags: sampled | has-is-remote

  // Span.attributes = 9; AnyValue: string 1, bool 2, int 3, double 4.
  auto ra = Attrs(root, 9);
  EXPECT_EQ(Str(ra["component"]->One(1)), "migration");
  EXPECT_EQ(Str(ra["vm.id"]->One(1)), "vm-42");
  EXPECT_EQ(ra["pages"]->One(3).value, "4096");
  EXPECT_EQ(ra["ratio"]->One(4).value, "0x4004000000000000");  // 2.5 as IEEE-754 bits
  EXPECT_EQ(ra["v3"]->One(2).value, "1");
  EXPECT_FALSE(root.Has(15));  // status unset

  auto ca = Attrs(child, 9);
  EXPECT_EQ(Str(ca["component"]->One(1)), "amst");
  EXPECT_EQ(ca["error"]->One(2).value, "1");
  // Span.status = 15; Status.message = 2, Status.code = 3 (STATUS_CODE_ERROR = 2).
  EXPECT_EQ(child.One(15).One(3).value, "2");
  EXPECT_EQ(Str(child.One(15).One(2)), "digest mismatch");
}

TEST(OtlpExportTest, RetriesUnavailableAndDeliversOnce) {
  CollectorServer server;
  server.collector.AnswerNext({grpc::StatusCode::UNAVAILABLE});
  Metrics metrics;
  TracerEnv env;
  env.ids = std::make_unique<SequentialIds>();
  Tracer tracer(ExportConfig(server.endpoint()), &metrics, std::move(env));
  std::vector<std::string> span_ids;
  for (int i = 0; i < 3; ++i) {
    Span s = tracer.StartSpan("hde_compress", "hde");
    span_ids.push_back(Bytes(s.context().span_id.data(), 8));
  }
  tracer.Shutdown();

  auto calls = server.collector.calls();
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0].answered, grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(calls[1].answered, grpc::StatusCode::OK);
  std::vector<Raw> spans = SpansOf(AcceptedRequests(server.collector));
  std::multiset<std::string> received;
  for (const Raw& s : spans) received.insert(Str(s.One(2)));
  for (const std::string& id : span_ids) EXPECT_EQ(received.count(id), 1u);
  EXPECT_EQ(received.size(), 3u);

  TracerStats st = tracer.stats();
  EXPECT_EQ(st.spans_exported, 3u);
  EXPECT_EQ(st.export_retries, 1u);
  EXPECT_EQ(st.export_failures, 0u);
  double exported = -1;
  for (const auto& family : metrics.registry().Collect()) {
    if (family.name != "dwcp_v3_trace_spans_total") continue;
    for (const auto& m : family.metric) {
      if (m.label.size() == 1 && m.label[0].value == "exported") exported = m.counter.value;
    }
  }
  EXPECT_EQ(exported, 3);
}

TEST(OtlpExportTest, CollectorDownDropsAreCounted) {
  TracerConfig config = ExportConfig("127.0.0.1:" + std::to_string(ClosedPort()));
  config.max_export_attempts = 3;
  Tracer tracer(config);
  for (int i = 0; i < 5; ++i) tracer.StartSpan("amst_transfer", "amst").End();
  auto t0 = std::chrono::steady_clock::now();
  tracer.Shutdown();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, config.shutdown_timeout);
  TracerStats st = tracer.stats();
  EXPECT_EQ(st.spans_exported, 0u);
  EXPECT_EQ(st.spans_dropped_export_failed, 5u);
  EXPECT_EQ(st.export_failures, 1u);
  EXPECT_EQ(st.export_retries, 2u);
}

TEST(OtlpExportTest, ShutdownMeetsDeadlineDuringBackoff) {
  TracerConfig config = ExportConfig("127.0.0.1:" + std::to_string(ClosedPort()));
  config.max_export_attempts = 10;
  config.retry_initial_backoff = 10s;
  config.shutdown_timeout = 300ms;
  Tracer tracer(config);
  for (int i = 0; i < 5; ++i) tracer.StartSpan("amst_transfer", "amst").End();
  auto t0 = std::chrono::steady_clock::now();
  tracer.Shutdown();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  EXPECT_EQ(tracer.stats().spans_dropped_export_failed, 5u);
}

TEST(OtlpExportTest, ShutdownCancelsAHangingExport) {
  CollectorServer server;
  server.collector.Hang();
  TracerConfig config = ExportConfig(server.endpoint());
  config.export_interval = 10ms;
  config.export_timeout = 30s;
  config.shutdown_timeout = 300ms;
  Tracer tracer(config);
  tracer.StartSpan("acp_consensus", "acp").End();
  // Wait until the Export is in flight with its 30 s deadline, then shut down.
  for (int i = 0; i < 200 && server.collector.calls().empty(); ++i) {
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_EQ(server.collector.calls().size(), 1u);
  auto t0 = std::chrono::steady_clock::now();
  tracer.Shutdown();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  EXPECT_EQ(tracer.stats().spans_dropped_export_failed, 1u);
  EXPECT_EQ(server.collector.calls().size(), 1u);
}

}  // namespace
}  // namespace dwcp::obs::trace
