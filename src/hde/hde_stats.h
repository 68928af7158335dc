// HDE's metrics: the series a node updates per encoded, decoded or rejected batch. Handles
// are resolved once at construction; Record* touch only cached references (atomics), so they
// are cheap and thread-safe. Any number of HdeStats may share one obs::Metrics (they resolve
// to the same series).
//
//   dwcp_v3_compression_ratio{algorithm="none|lz4|zstd"}      guest bytes per payload byte
//   dwcp_v3_hde_pages_total{encoding="zero|raw|dedup|delta"}
//   dwcp_v3_hde_pattern_pages_total{pattern="zero|duplicate|delta|text|binary|random"}
//   dwcp_v3_hde_delta_base_lookups_total{result="hit|miss"}
//   dwcp_v3_hde_compression_latency_seconds{algorithm}        the compress step per batch
//   dwcp_v3_hde_input_bytes_total, dwcp_v3_hde_output_bytes_total
//   dwcp_v3_component_latency_seconds{component="hde",operation="encode_batch|decode_batch"}
//   dwcp_v3_errors_total{component="hde",error_type="protocol|data_loss",severity="critical"}
// plus the computed gauges dwcp_v3_hde_compression_ratio, dwcp_v3_hde_dedup_hit_ratio and
// dwcp_v3_hde_delta_hit_ratio that obs::Metrics derives from them (docs/metrics.md).
#pragma once

#include <prometheus/counter.h>
#include <prometheus/histogram.h>

#include <array>

#include "common/status.h"
#include "hde/hde_format.h"
#include "hde/page_classifier.h"
#include "hde/page_decoder.h"
#include "hde/page_encoder.h"
#include "obs/metrics.h"

namespace dwcp::hde {

class HdeStats {
 public:
  // `metrics` must outlive this object.
  explicit HdeStats(obs::Metrics& metrics);

  // One batch the encoder produced (source side).
  void RecordEncoded(const EncodeStats& s);
  // One batch the decoder applied (destination side).
  void RecordDecoded(const DecodeStats& s);
  // One batch the decoder refused with `status` (not OK): counted as an hde error.
  void RecordRejected(const Status& status);

  prometheus::Histogram& compression_ratio(Codec c) { return *ratio_[static_cast<int>(c)]; }
  prometheus::Histogram& compression_latency(Codec c) { return *latency_[static_cast<int>(c)]; }
  prometheus::Counter& pattern_pages(Pattern p) { return *pattern_[static_cast<int>(p)]; }

 private:
  obs::Metrics& metrics_;
  std::array<prometheus::Histogram*, kCodecCount> ratio_{};
  std::array<prometheus::Histogram*, kCodecCount> latency_{};
  std::array<prometheus::Counter*, kPatternCount> pattern_{};
  prometheus::Histogram& decode_latency_;
  prometheus::Counter& rejected_protocol_;
  prometheus::Counter& rejected_data_loss_;
};

}  // namespace dwcp::hde
