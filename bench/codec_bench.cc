// Micro-benchmarks of the per-page hot path: zero detection and batch encoding (HDE), frame
// checksums (AMST), and the content digest that bounds downtime.
#include <benchmark/benchmark.h>

#include <vector>

#include "amst/frame.h"
#include "hde/page_codec.h"
#include "obs/metrics.h"
#include "vm/synthetic_guest.h"

namespace {

using dwcp::vm::kPageSize;

void BM_IsZeroPage(benchmark::State& state) {
  std::vector<uint8_t> page(kPageSize, 0);
  for (auto _ : state) benchmark::DoNotOptimize(dwcp::hde::IsZeroPage(page.data()));
  state.SetBytesProcessed(state.iterations() * kPageSize);
}
BENCHMARK(BM_IsZeroPage);

void BM_EncodeBatch(benchmark::State& state) {
  auto guest = dwcp::vm::SyntheticGuest::CreateIncoming({"bench", 64ull << 20, 0, 7});
  auto booted = dwcp::vm::SyntheticGuest::Boot({"bench", 64ull << 20, 0, 7});
  dwcp::hde::PageBatchEncoder encoder(state.range(0) != 0);
  uint64_t page = 0;
  const uint64_t pages = (*booted)->page_count();
  for (auto _ : state) {
    encoder.Reset(1);
    for (int i = 0; i < 256; ++i, page = (page + 1) % pages) {
      encoder.Add(page, (*booted)->PageData(page));
    }
    benchmark::DoNotOptimize(encoder.Finish().data());
  }
  state.SetBytesProcessed(state.iterations() * 256 * kPageSize);
}
BENCHMARK(BM_EncodeBatch)->Arg(0)->Arg(1)->ArgNames({"zero_detection"});

void BM_FrameHeader(benchmark::State& state) {
  std::vector<uint8_t> payload(1 << 20, 0x5a);
  for (auto _ : state) {
    auto h = dwcp::amst::EncodeFrameHeader(3, dwcp::amst::FrameType::kPages, 1, payload);
    benchmark::DoNotOptimize(h.data());
  }
  state.SetBytesProcessed(state.iterations() * payload.size());
}
BENCHMARK(BM_FrameHeader);

void BM_Digest(benchmark::State& state) {
  auto guest = dwcp::vm::SyntheticGuest::Boot({"bench", 256ull << 20, 0, 7});
  (*guest)->Pause();
  for (auto _ : state) benchmark::DoNotOptimize((*guest)->Digest());
  state.SetBytesProcessed(state.iterations() * (256ll << 20));
}
BENCHMARK(BM_Digest)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();

// The metric updates the migration engine makes per 1 MiB page batch (counters, histograms
// through kept references). Compare with BM_EncodeBatch: the ratio is the cost of metrics
// on a migration's throughput.
void BM_BatchMetrics(benchmark::State& state) {
  dwcp::obs::Metrics metrics;
  for (auto _ : state) {
    metrics.encode_latency.Observe(0.0001);
    metrics.bytes_sent.Increment(1 << 20);
    metrics.hde_input_bytes.Increment(1 << 20);
    metrics.hde_output_bytes.Increment(800000);
    metrics.compression_lz4.Observe(1.3);
    metrics.pages_zero.Increment(60);
    metrics.pages_raw.Increment(196);
    metrics.wire_sent.Increment(800024);
  }
}
BENCHMARK(BM_BatchMetrics);
