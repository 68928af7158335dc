#include "hde/hde_stats.h"

namespace dwcp::hde {
namespace {

prometheus::Family<prometheus::Counter>& ErrorsFamily(obs::Metrics& m) {
  return prometheus::BuildCounter()
      .Name("dwcp_v3_errors_total")
      .Help("Errors by component, type and severity")
      .Register(m.registry());
}

}  // namespace

HdeStats::HdeStats(obs::Metrics& metrics)
    : metrics_(metrics),
      decode_latency_(
          prometheus::BuildHistogram()
              .Name("dwcp_v3_component_latency_seconds")
              .Help("Latency of individual component operations")
              .Register(metrics.registry())
              .Add({{"component", "hde"}, {"operation", "decode_batch"}}, obs::OperationBuckets())),
      rejected_protocol_(
          ErrorsFamily(metrics).Add({{"component", "hde"},
                                     {"error_type", StatusCodeName(StatusCode::kProtocol)},
                                     {"severity", "critical"}})),
      rejected_data_loss_(
          ErrorsFamily(metrics).Add({{"component", "hde"},
                                     {"error_type", StatusCodeName(StatusCode::kDataLoss)},
                                     {"severity", "critical"}})) {
  ratio_[static_cast<int>(Codec::kNone)] = &metrics.compression_v1;
  ratio_[static_cast<int>(Codec::kLz4)] = &metrics.compression_lz4;
  ratio_[static_cast<int>(Codec::kZstd)] = &metrics.compression_zstd;
  auto& latency = metrics.HistogramFamily(
      obs::Component::kHde, "compression_latency", "seconds",
      "Time of the HDE compress step per page batch (codec, checksum), by algorithm");
  for (int c = 0; c < kCodecCount; ++c) {
    latency_[c] =
        &latency.Add({{"algorithm", CodecName(static_cast<Codec>(c))}}, obs::OperationBuckets());
  }
  auto& pattern = metrics.CounterFamily(
      obs::Component::kHde, "pattern_pages",
      "Pages HDE encoded, by content pattern: zero, duplicate (sent as a reference), delta, "
      "and for the others a sampled estimate: text, binary, random");
  for (int p = 0; p < kPatternCount; ++p) {
    pattern_[p] = &pattern.Add({{"pattern", PatternName(static_cast<Pattern>(p))}});
  }
}

void HdeStats::RecordEncoded(const EncodeStats& s) {
  metrics_.hde_input_bytes.Increment(static_cast<double>(s.input_bytes));
  metrics_.hde_output_bytes.Increment(static_cast<double>(s.output_bytes));
  if (s.output_bytes > 0) compression_ratio(s.codec).Observe(s.ratio());
  compression_latency(s.codec).Observe(s.compress_seconds);
  metrics_.encode_latency.Observe(s.encode_seconds());
  if (s.zero_pages) metrics_.pages_zero.Increment(static_cast<double>(s.zero_pages));
  if (s.raw_pages) metrics_.pages_raw.Increment(static_cast<double>(s.raw_pages));
  if (s.dedup_pages) metrics_.pages_dedup.Increment(static_cast<double>(s.dedup_pages));
  if (s.delta_pages) metrics_.pages_delta.Increment(static_cast<double>(s.delta_pages));
  if (s.delta_base_hits) metrics_.delta_base_hits.Increment(static_cast<double>(s.delta_base_hits));
  if (s.delta_base_misses) {
    metrics_.delta_base_misses.Increment(static_cast<double>(s.delta_base_misses));
  }
  for (int p = 0; p < kPatternCount; ++p) {
    if (s.pattern_pages[p]) pattern_[p]->Increment(static_cast<double>(s.pattern_pages[p]));
  }
}

void HdeStats::RecordDecoded(const DecodeStats& s) {
  decode_latency_.Observe(s.parse_seconds + s.apply_seconds);
}

void HdeStats::RecordRejected(const Status& status) {
  switch (status.code()) {
    case StatusCode::kDataLoss:
      rejected_data_loss_.Increment();
      break;
    case StatusCode::kProtocol:
      rejected_protocol_.Increment();
      break;
    default:  // a caller's mistake rather than a peer's (e.g. the wrong guest): rare
      metrics_.CountError(obs::Component::kHde, StatusCodeName(status.code()), "critical");
      break;
  }
}

}  // namespace dwcp::hde
