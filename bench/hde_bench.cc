// HDE encode throughput per core on the realistic content model (vm/synthetic_guest.h), for
// the first pre-copy round (every page) and a later dirty round (the pages a guest dirtied
// in one second after round 1), against plain ZSTD_compress level 1 and LZ4 on the same
// bytes in 1 MiB chunks, measured in the same run.
//
// Counters: bytes_per_second (guest bytes in), ratio (guest bytes per output byte), and for
// the adaptive policy the share of batches per codec. Compare BM_HdeRound1/<codec> with
// BM_Zstd1Round1 and BM_HdeDirtyRound/<codec> with BM_Zstd1DirtyRound.
#include <benchmark/benchmark.h>
#include <lz4.h>
#include <zstd.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "hde/page_decoder.h"
#include "hde/page_encoder.h"
#include "vm/synthetic_guest.h"

namespace {

using dwcp::FakeClock;
using dwcp::vm::kPageSize;
using dwcp::vm::SyntheticGuest;
namespace hde = dwcp::hde;

constexpr uint64_t kGuestBytes = 64ull << 20;
constexpr size_t kBatchPages = 256;
constexpr uint64_t kDirtyBytesPerSecond = 64ull << 20;

// Two identical booted guests: v0 (round 1 content) and v1 (v0 after one second of guest
// writes at kDirtyBytesPerSecond), plus the pages v1 dirtied.
struct Fixture {
  FakeClock clock;
  std::unique_ptr<SyntheticGuest> v0, v1;
  std::vector<uint64_t> all, dirty;

  Fixture() {
    dwcp::vm::GuestSpec spec{"bench", kGuestBytes, 0, 7};
    v0 = std::move(SyntheticGuest::Boot(spec).value());
    v0->Pause();
    v1 = std::move(SyntheticGuest::Boot(spec, clock).value());
    v1->StartDirtyLog();
    v1->SetDirtyRate(kDirtyBytesPerSecond);
    const uint64_t writes = kDirtyBytesPerSecond / kPageSize;
    // The dirtier turns fake-clock time into writes on its 10 ms ticks.
    while (v1->pages_written() < writes) {
      clock.Advance(std::chrono::milliseconds(50));
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    v1->Pause();
    v1->CollectDirtyPages(&dirty);
    all.resize(v0->page_count());
    for (uint64_t i = 0; i < all.size(); ++i) all[i] = i;
  }
};

Fixture& Data() {
  static Fixture* f = new Fixture();
  return *f;
}

struct Policy {
  const char* name;
  hde::CodecPolicy policy;
  int level;
  double link;  // bytes per second passed per batch
};
constexpr Policy kPolicies[] = {
    {"none", hde::CodecPolicy::kNone, 0, 0},
    {"lz4", hde::CodecPolicy::kLz4, 0, 0},
    {"zstd-2", hde::CodecPolicy::kZstd, -2, 0},
    {"zstd-1", hde::CodecPolicy::kZstd, -1, 0},
    {"zstd1", hde::CodecPolicy::kZstd, 1, 0},
    {"zstd3", hde::CodecPolicy::kZstd, 3, 0},
    {"auto_10gbit", hde::CodecPolicy::kAuto, 0, 10e9 / 8},
    {"auto_1gbit", hde::CodecPolicy::kAuto, 0, 1e9 / 8},
    {"auto_100mbit", hde::CodecPolicy::kAuto, 0, 100e6 / 8},
};

hde::EncoderConfig ConfigFor(const Policy& p) {
  hde::EncoderConfig c;
  c.codec = p.policy;
  c.zstd_level = p.level;
  return c;
}

struct Totals {
  uint64_t in = 0, out = 0, batches = 0;
  uint64_t by_codec[hde::kCodecCount] = {};
};

void EncodeAll(hde::PageEncoder& enc, const dwcp::vm::Guest& g, const std::vector<uint64_t>& idx,
               uint32_t round, double link, Totals* t) {
  for (size_t at = 0; at < idx.size(); at += kBatchPages) {
    size_t n = std::min(kBatchPages, idx.size() - at);
    auto e = enc.Encode(round, std::span(idx).subspan(at, n), g, link);
    benchmark::DoNotOptimize(e->payload().data());
    if (t != nullptr) {
      t->in += e->stats().input_bytes;
      t->out += e->stats().output_bytes;
      ++t->batches;
      ++t->by_codec[static_cast<int>(e->stats().codec)];
    }
  }
}

void Report(benchmark::State& state, const Totals& t) {
  state.SetBytesProcessed(static_cast<int64_t>(t.in));
  state.counters["ratio"] = t.out ? static_cast<double>(t.in) / static_cast<double>(t.out) : 0;
  if (t.batches > 0) {
    for (int c = 0; c < hde::kCodecCount; ++c) {
      state.counters[std::string(hde::CodecName(static_cast<hde::Codec>(c))) + "_share"] =
          static_cast<double>(t.by_codec[c]) / static_cast<double>(t.batches);
    }
  }
}

// Round 1: every page of the guest, a fresh encoder per iteration.
void BM_HdeRound1(benchmark::State& state) {
  const Policy& p = kPolicies[state.range(0)];
  Fixture& f = Data();
  Totals t;
  for (auto _ : state) {
    state.PauseTiming();
    auto enc = std::make_unique<hde::PageEncoder>(ConfigFor(p), f.v0->page_count());
    state.ResumeTiming();
    EncodeAll(*enc, *f.v0, f.all, 1, p.link, &t);
    state.PauseTiming();
    enc.reset();
    state.ResumeTiming();
  }
  state.SetLabel(p.name);
  Report(state, t);
}

// A later round: the encoder has sent v0; it now sends the pages dirtied since.
void BM_HdeDirtyRound(benchmark::State& state) {
  const Policy& p = kPolicies[state.range(0)];
  Fixture& f = Data();
  Totals t;
  for (auto _ : state) {
    state.PauseTiming();
    auto enc = std::make_unique<hde::PageEncoder>(ConfigFor(p), f.v0->page_count());
    EncodeAll(*enc, *f.v0, f.all, 1, p.link, nullptr);
    state.ResumeTiming();
    EncodeAll(*enc, *f.v1, f.dirty, 2, p.link, &t);
    state.PauseTiming();
    enc.reset();
    state.ResumeTiming();
  }
  state.SetLabel(std::string(p.name) + " dirty_pages=" + std::to_string(f.dirty.size()));
  Report(state, t);
}

// The same bytes as BM_HdeDirtyRound's timed part, concatenated in 1 MiB chunks.
std::vector<std::vector<uint8_t>> DirtyChunks() {
  Fixture& f = Data();
  std::vector<std::vector<uint8_t>> chunks;
  for (size_t at = 0; at < f.dirty.size(); at += kBatchPages) {
    size_t n = std::min(kBatchPages, f.dirty.size() - at);
    std::vector<uint8_t> c(n * kPageSize);
    for (size_t i = 0; i < n; ++i) {
      std::memcpy(&c[i * kPageSize], f.v1->PageData(f.dirty[at + i]), kPageSize);
    }
    chunks.push_back(std::move(c));
  }
  return chunks;
}

template <typename Compress>
void CompressChunks(benchmark::State& state, const uint8_t* base, size_t bytes,
                    const std::vector<std::vector<uint8_t>>* chunks, Compress compress) {
  std::vector<uint8_t> out(ZSTD_compressBound(kBatchPages * kPageSize) + 1024);
  Totals t;
  for (auto _ : state) {
    if (chunks != nullptr) {
      for (const auto& c : *chunks) {
        t.out += compress(c.data(), c.size(), out.data(), out.size());
        t.in += c.size();
      }
    } else {
      for (size_t at = 0; at < bytes; at += kBatchPages * kPageSize) {
        size_t n = std::min(kBatchPages * kPageSize, bytes - at);
        t.out += compress(base + at, n, out.data(), out.size());
        t.in += n;
      }
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(t.in));
  state.counters["ratio"] = static_cast<double>(t.in) / static_cast<double>(t.out);
}

size_t Zstd1(const uint8_t* src, size_t n, uint8_t* dst, size_t cap) {
  return ZSTD_compress(dst, cap, src, n, 1);
}
size_t Lz4(const uint8_t* src, size_t n, uint8_t* dst, size_t cap) {
  return static_cast<size_t>(LZ4_compress_default(reinterpret_cast<const char*>(src),
                                                  reinterpret_cast<char*>(dst), static_cast<int>(n),
                                                  static_cast<int>(cap)));
}

void BM_Zstd1Round1(benchmark::State& state) {
  Fixture& f = Data();
  CompressChunks(state, f.v0->PageData(0), kGuestBytes, nullptr, Zstd1);
}
void BM_Lz4Round1(benchmark::State& state) {
  Fixture& f = Data();
  CompressChunks(state, f.v0->PageData(0), kGuestBytes, nullptr, Lz4);
}
void BM_Zstd1DirtyRound(benchmark::State& state) {
  static const auto chunks = DirtyChunks();
  CompressChunks(state, nullptr, 0, &chunks, Zstd1);
}
void BM_Lz4DirtyRound(benchmark::State& state) {
  static const auto chunks = DirtyChunks();
  CompressChunks(state, nullptr, 0, &chunks, Lz4);
}

// Decoding a round-1 batch stream (parse + apply into an incoming guest), zstd-1.
void BM_HdeDecodeRound1(benchmark::State& state) {
  Fixture& f = Data();
  hde::EncoderConfig c;
  c.codec = hde::CodecPolicy::kZstd;
  c.zstd_level = 1;
  hde::PageEncoder enc(c, f.v0->page_count());
  std::vector<std::vector<uint8_t>> batches;
  for (size_t at = 0; at < f.all.size(); at += kBatchPages) {
    auto e = enc.Encode(1, std::span(f.all).subspan(at, kBatchPages), *f.v0, 0);
    batches.emplace_back(e->payload().begin(), e->payload().end());
  }
  auto dst = SyntheticGuest::CreateIncoming({"bench-dst", kGuestBytes, 0, 7});
  uint64_t bytes = 0;
  for (auto _ : state) {
    hde::PageDecoder dec((*dst)->page_count());
    for (const auto& b : batches) {
      if (!dec.Apply(b, **dst).ok()) state.SkipWithError("decode failed");
    }
    bytes += kGuestBytes;
  }
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
}

void PolicyArgs(benchmark::internal::Benchmark* b) {
  for (size_t i = 0; i < std::size(kPolicies); ++i) b->Arg(static_cast<int64_t>(i));
  b->ArgName("policy")->Unit(benchmark::kMillisecond);
}

BENCHMARK(BM_Zstd1Round1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Lz4Round1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_HdeRound1)->Apply(PolicyArgs)->Iterations(3);
BENCHMARK(BM_Zstd1DirtyRound)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Lz4DirtyRound)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_HdeDirtyRound)->Apply(PolicyArgs)->Iterations(5);
BENCHMARK(BM_HdeDecodeRound1)->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace

BENCHMARK_MAIN();
