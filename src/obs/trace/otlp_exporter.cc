// OTLP/gRPC exporter: the only file that knows the OTLP protos and gRPC.
#include <grpcpp/grpcpp.h>

#include <mutex>

#include "obs/log.h"
#include "obs/trace/exporter.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.grpc.pb.h"

namespace dwcp::obs::trace {
namespace {

namespace otlp_collector = opentelemetry::proto::collector::trace::v1;
namespace otlp_common = opentelemetry::proto::common::v1;
namespace otlp_trace = opentelemetry::proto::trace::v1;

constexpr uint32_t kFlagHasIsRemote = 0x100;
constexpr uint32_t kFlagIsRemote = 0x200;

void SetValue(const AttributeValue& v, otlp_common::AnyValue* out) {
  if (auto* s = std::get_if<std::string>(&v)) {
    out->set_string_value(*s);
  } else if (auto* i = std::get_if<int64_t>(&v)) {
    out->set_int_value(*i);
  } else if (auto* d = std::get_if<double>(&v)) {
    out->set_double_value(*d);
  } else {
    out->set_bool_value(std::get<bool>(v));
  }
}

template <typename Repeated>
void AddAttributes(const Attributes& attrs, Repeated* out) {
  for (const auto& [key, value] : attrs) {
    otlp_common::KeyValue* kv = out->Add();
    kv->set_key(key);
    SetValue(value, kv->mutable_value());
  }
}

void ToProto(const SpanData& s, otlp_trace::Span* out) {
  out->set_trace_id(s.context.trace_id.data(), s.context.trace_id.size());
  out->set_span_id(s.context.span_id.data(), s.context.span_id.size());
  if (s.parent_span_id != SpanId{}) {
    out->set_parent_span_id(s.parent_span_id.data(), s.parent_span_id.size());
  }
  out->set_flags((s.context.sampled ? 0x01 : 0x00) | kFlagHasIsRemote |
                 (s.parent_remote ? kFlagIsRemote : 0));
  out->set_name(s.name);
  out->set_kind(otlp_trace::Span::SPAN_KIND_INTERNAL);
  out->set_start_time_unix_nano(s.start_unix_nano);
  out->set_end_time_unix_nano(s.end_unix_nano);
  AddAttributes(s.attributes, out->mutable_attributes());
  for (const SpanEvent& e : s.events) {
    otlp_trace::Span::Event* pe = out->add_events();
    pe->set_name(e.name);
    pe->set_time_unix_nano(e.time_unix_nano);
  }
  if (s.error) {
    out->mutable_status()->set_code(otlp_trace::Status::STATUS_CODE_ERROR);
    out->mutable_status()->set_message(s.status_message);
  }
}

class OtlpGrpcExporter final : public SpanExporter {
 public:
  OtlpGrpcExporter(const std::string& endpoint, const Attributes& resource,
                   std::string scope_version)
      : scope_version_(std::move(scope_version)) {
    std::string target = endpoint;
    if (target.rfind("http://", 0) == 0) target.erase(0, 7);
    grpc::ChannelArguments args;
    // Reconnect within seconds once a collector comes back (gRPC's default grows to 2 min).
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 5000);
    stub_ = otlp_collector::TraceService::NewStub(
        grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
    AddAttributes(resource, resource_.mutable_attributes());
  }

  Status Export(const std::vector<SpanData>& spans,
                std::chrono::steady_clock::time_point deadline) override {
    otlp_collector::ExportTraceServiceRequest request;
    otlp_trace::ResourceSpans* rs = request.add_resource_spans();
    *rs->mutable_resource() = resource_;
    otlp_trace::ScopeSpans* ss = rs->add_scope_spans();
    ss->mutable_scope()->set_name("dwcp-v3");
    ss->mutable_scope()->set_version(scope_version_);
    for (const SpanData& s : spans) ToProto(s, ss->add_spans());

    grpc::ClientContext ctx;
    // gRPC takes system_clock deadlines.
    ctx.set_deadline(std::chrono::system_clock::now() +
                     (deadline - std::chrono::steady_clock::now()));
    {
      std::lock_guard lock(mu_);
      if (cancelled_) return Aborted("exporter cancelled");
      active_ = &ctx;
    }
    otlp_collector::ExportTraceServiceResponse response;
    grpc::Status st = stub_->Export(&ctx, request, &response);
    {
      std::lock_guard lock(mu_);
      active_ = nullptr;
    }
    if (st.ok()) {
      // A partial success is final: the collector will not take those spans on a retry.
      if (response.partial_success().rejected_spans() > 0) {
        LogWarn("trace", "collector rejected spans",
                {{"rejected_spans", response.partial_success().rejected_spans()},
                 {"error", response.partial_success().error_message()}});
      }
      return Status::Ok();
    }
    std::string msg = "otlp export: " + st.error_message();
    switch (st.error_code()) {
      case grpc::StatusCode::UNAVAILABLE:
        return Unavailable(msg);
      case grpc::StatusCode::DEADLINE_EXCEEDED:
        return DeadlineExceeded(msg);
      case grpc::StatusCode::CANCELLED:
        return Aborted(msg);
      default:
        return Internal(msg + " (grpc code " + std::to_string(st.error_code()) + ")");
    }
  }

  void Cancel() override {
    std::lock_guard lock(mu_);
    cancelled_ = true;
    if (active_ != nullptr) active_->TryCancel();
  }

 private:
  const std::string scope_version_;
  std::unique_ptr<otlp_collector::TraceService::Stub> stub_;
  opentelemetry::proto::resource::v1::Resource resource_;
  std::mutex mu_;
  grpc::ClientContext* active_ = nullptr;  // guarded by mu_
  bool cancelled_ = false;                 // guarded by mu_
};

}  // namespace

std::unique_ptr<SpanExporter> MakeOtlpGrpcExporter(const std::string& endpoint,
                                                   const Attributes& resource,
                                                   std::string scope_version) {
  return std::make_unique<OtlpGrpcExporter>(endpoint, resource, std::move(scope_version));
}

}  // namespace dwcp::obs::trace
