#include "vm/synthetic_guest.h"

#include <sys/mman.h>
#include <xxhash.h>

#include <algorithm>
#include <bit>
#include <cassert>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <iterator>
#include <new>
#include <string_view>

namespace dwcp::vm {
namespace {

// Generators may write up to this many bytes past the length they are asked for.
constexpr size_t kSlack = 256;
// Hot set granularity: 64 KiB blocks of pages.
constexpr uint64_t kHotBlockPages = 16;
constexpr std::chrono::milliseconds kTick{10};

// Salts that separate the independent hash streams derived from (seed, index).
constexpr uint64_t kClassSalt = 0x636c617373ULL;
constexpr uint64_t kContentSalt = 0x636f6e74656e74ULL;
constexpr uint64_t kLayoutSalt = 0x6c61796f7574ULL;
constexpr uint64_t kTemplateSalt = 0x74656d706cULL;
constexpr uint64_t kHotSalt = 0x686f74ULL;
constexpr uint64_t kDirtierSalt = 0x6469727479ULL;

uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// splitmix64: one 64-bit output per call.
inline uint64_t Next(uint64_t* s) {
  *s += 0x9e3779b97f4a7c15ULL;
  return Mix64(*s);
}

// Uniform in [0, n).
inline uint64_t Below(uint64_t r, uint64_t n) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(r) * n) >> 64);
}

uint64_t Hash(uint64_t seed, uint64_t salt, uint64_t index) {
  return Mix64(Mix64(seed ^ salt) + index * 0x9e3779b97f4a7c15ULL);
}

inline void Store64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }

// ---- text: log-like lines ----

constexpr std::string_view kWords[] = {
    "the",      "request", "to",     "from",      "connection", "for",     "user",    "session",
    "id",       "ok",      "cache",  "completed", "started",    "in",      "ms",      "with",
    "and",      "server",  "client", "status",    "of",         "handler", "GET",     "POST",
    "/api/v1/", "bytes",   "sent",   "received",  "worker",     "queue",   "job",     "task",
    "error",    "timeout", "retry",  "database",  "query",      "hit",     "miss",    "update",
    "config",   "loaded",  "module", "process",   "event",      "record",  "written", "read",
    "open",     "close",   "file",   "path",      "node",       "cluster", "memory",  "disk",
    "network",  "latency", "thread", "pool",      "scheduled",  "failed",  "signal",  "kernel",
};
static_assert(std::size(kWords) == 64);

constexpr std::string_view kLevels[] = {"INFO ", "INFO ", "INFO ", "INFO ", "INFO ",
                                        "DEBUG", "DEBUG", "WARN ", "ERROR", "INFO "};

inline uint8_t* Append(uint8_t* p, std::string_view s) {
  std::memcpy(p, s.data(), s.size());
  return p + s.size();
}

// Writes `digits` decimal digits of v (zero-padded).
inline uint8_t* AppendDigits(uint8_t* p, uint64_t v, int digits) {
  for (int i = digits - 1; i >= 0; --i) {
    p[i] = static_cast<uint8_t>('0' + v % 10);
    v /= 10;
  }
  return p + digits;
}

// Fills buf[0, n) (capacity n + kSlack) with log lines such as
// "2024-05-17T08:12:31.207Z INFO  [worker-3] request completed in ms id=418263\n".
void GenText(uint64_t* rng, uint8_t* buf, size_t n) {
  uint8_t* p = buf;
  uint8_t* const end = buf + n;
  uint64_t t_ms = Below(Next(rng), 3'600'000);
  while (p < end) {
    uint64_t r = Next(rng);
    t_ms = (t_ms + (r & 63)) % 3'600'000;
    p = Append(p, "2024-05-17T08:");
    p = AppendDigits(p, t_ms / 60'000, 2);
    *p++ = ':';
    p = AppendDigits(p, t_ms / 1000 % 60, 2);
    *p++ = '.';
    p = AppendDigits(p, t_ms % 1000, 3);
    p = Append(p, "Z ");
    p = Append(p, kLevels[Below(r >> 6, 10) % 10]);
    p = Append(p, " [worker-");
    *p++ = static_cast<uint8_t>('0' + ((r >> 12) & 7));
    p = Append(p, "] ");
    int words = 4 + static_cast<int>((r >> 16) % 9);
    uint64_t w = Next(rng);
    for (int i = 0; i < words && p < end; ++i) {
      if (i == 5) w = Next(rng);
      // Skewed towards the head of the list: the smaller of two 6-bit draws.
      uint64_t a = w & 63, b = (w >> 6) & 63;
      w >>= 12;
      p = Append(p, kWords[std::min(a, b)]);
      *p++ = ' ';
    }
    if ((r >> 24) & 1) {
      p = Append(p, "id=");
      p = AppendDigits(p, (r >> 32) % 1'000'000, 6);
    } else {
      p = Append(p, "took=");
      p = AppendDigits(p, (r >> 32) % 1000, 3);
      p = Append(p, "ms");
    }
    *p++ = '\n';
  }
}

// ---- binary: repeated structs ----

enum class Field : uint8_t { kZero, kSmall, kTiny, kPointer, kCounter, kConst, kFlags, kRandom };

// A page's struct layout: a pure function of (seed, key), so every version of the page uses it.
struct Layout {
  uint32_t qwords;  // struct size in 8-byte fields
  Field fields[16];
  uint64_t consts[16];
  uint64_t ptr_base;  // shared high bits of pointer-like fields
  uint64_t counter_base;
  uint64_t counter_stride;
};

Layout MakeLayout(uint64_t seed, uint64_t key) {
  static constexpr uint32_t kSizes[] = {4, 6, 8, 8, 12, 16};
  // Weighted field kinds; one kRandom in 16 keeps pages from compressing too well.
  static constexpr Field kKinds[16] = {
      Field::kZero,    Field::kZero,    Field::kSmall,   Field::kSmall,
      Field::kSmall,   Field::kTiny,    Field::kPointer, Field::kPointer,
      Field::kPointer, Field::kCounter, Field::kConst,   Field::kRandom,
      Field::kFlags,   Field::kRandom,  Field::kPointer, Field::kPointer,
  };
  uint64_t s = Hash(seed, kLayoutSalt, key);
  Layout l{};
  l.qwords = kSizes[Below(Next(&s), std::size(kSizes))];
  for (uint32_t i = 0; i < l.qwords; ++i) {
    uint64_t r = Next(&s);
    l.fields[i] = kKinds[r & 15];
    l.consts[i] = Next(&s) >> Below(r >> 8, 64);
  }
  // User-space heap-like addresses: 0x00005xxx_xxxx_xxxx, 16-byte aligned.
  l.ptr_base =
      (0x0000550000000000ULL | (Hash(seed, kLayoutSalt, ~0ULL) & 0xff'ffff'ffffULL)) & ~0xffffffULL;
  l.ptr_base += (Next(&s) & 0xf) << 24;
  l.counter_base = Next(&s) & 0xffffff;
  l.counter_stride = 1 + (Next(&s) & 0xff);
  return l;
}

// Fills buf[0, n) (capacity n + kSlack) with structs of `l`; struct k starts at byte
// k * 8 * l.qwords, so a regenerated prefix lines up with the page's existing structs.
void GenBinary(const Layout& l, uint64_t* rng, uint8_t* buf, size_t n) {
  uint64_t k = 0;
  for (size_t off = 0; off < n; ++k) {
    for (uint32_t i = 0; i < l.qwords; ++i, off += 8) {
      uint64_t v;
      switch (l.fields[i]) {
        case Field::kZero:
          v = 0;
          break;
        case Field::kSmall:
          v = Next(rng) & 0xffff;
          break;
        case Field::kTiny:
          v = Next(rng) & 0x7;
          break;
        case Field::kPointer:
          v = l.ptr_base + ((Next(rng) & 0xfffff) << 4);
          break;
        case Field::kCounter:
          v = l.counter_base + k * l.counter_stride;
          break;
        case Field::kConst:
          v = l.consts[i];
          break;
        case Field::kFlags:
          v = uint64_t{1} << (Next(rng) & 3);
          break;
        default:
          v = Next(rng);
          break;
      }
      Store64(buf + off, v);
    }
  }
}

// ---- random ----

void GenRandom(uint64_t* rng, uint8_t* buf, size_t n) {
  for (size_t off = 0; off < n; off += 8) Store64(buf + off, Next(rng));
}

// Sparse small integers written into a zero-class page.
void GenSparse(uint64_t* rng, uint8_t* buf, size_t n) {
  for (size_t off = 0; off < n; off += 8) {
    uint64_t r = Next(rng);
    Store64(buf + off, (r & 1) ? (r >> 48) : 0);
  }
}

uint64_t TemplateOf(uint64_t seed, uint64_t index) {
  return Hash(seed, kTemplateSalt, index) % SyntheticGuest::kTemplatePages;
}

// Template t holds text (t even) or binary (t odd) content.
void GenTemplate(uint64_t seed, uint64_t t, uint64_t* rng, uint8_t* buf, size_t n) {
  if (t % 2 == 0) {
    GenText(rng, buf, n);
  } else {
    GenBinary(MakeLayout(seed, ~t), rng, buf, n);
  }
}

Status ValidateSpec(const GuestSpec& spec) {
  if (spec.memory_bytes == 0 || spec.memory_bytes % kPageSize != 0) {
    return InvalidArgument("guest " + spec.id + ": memory_bytes " +
                           std::to_string(spec.memory_bytes) + " must be a positive multiple of " +
                           std::to_string(kPageSize));
  }
  return Status::Ok();
}

unsigned WorkerCount(uint64_t units) {
  unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  return static_cast<unsigned>(std::min<uint64_t>(hw, std::max<uint64_t>(units, 1)));
}

// Runs fn(unit) for every unit in [0, units) on up to hardware_concurrency() threads.
template <typename Fn>
void ParallelFor(uint64_t units, Fn fn) {
  unsigned workers = WorkerCount(units);
  std::atomic<uint64_t> next{0};
  auto work = [&] {
    for (uint64_t u; (u = next.fetch_add(1, std::memory_order_relaxed)) < units;) fn(u);
  };
  std::vector<std::thread> threads;
  for (unsigned i = 1; i < workers; ++i) threads.emplace_back(work);
  work();
  for (auto& t : threads) t.join();
}

}  // namespace

const char* PageClassName(PageClass c) {
  switch (c) {
    case PageClass::kZero:
      return "zero";
    case PageClass::kDuplicate:
      return "duplicate";
    case PageClass::kText:
      return "text";
    case PageClass::kBinary:
      return "binary";
    case PageClass::kRandom:
      return "random";
  }
  return "unknown";
}

PageClass ClassOfPage(uint64_t seed, uint64_t index) {
  uint64_t pct = Below(Hash(seed, kClassSalt, index), 100);
  if (pct < 25) return PageClass::kZero;
  if (pct < 40) return PageClass::kDuplicate;
  if (pct < 65) return PageClass::kText;
  if (pct < 85) return PageClass::kBinary;
  return PageClass::kRandom;
}

// The digest proper: XXH3-128 of the concatenated chunk hashes, as 32 hex digits.
static std::string DigestOfHashes(const void* hashes, size_t bytes) {
  XXH128_canonical_t out;
  XXH128_canonicalFromHash(&out, XXH3_128bits(hashes, bytes));
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex(32, '0');
  for (int i = 0; i < 16; ++i) {
    hex[2 * i] = kHex[out.digest[i] >> 4];
    hex[2 * i + 1] = kHex[out.digest[i] & 15];
  }
  return hex;
}

std::string MemoryDigest(const uint8_t* data, uint64_t bytes) {
  constexpr uint64_t kChunk = SyntheticGuest::kDigestChunkBytes;
  const uint64_t chunks = (bytes + kChunk - 1) / kChunk;
  std::vector<XXH128_canonical_t> hashes(chunks);
  ParallelFor(chunks, [&](uint64_t c) {
    uint64_t off = c * kChunk;
    XXH128_canonicalFromHash(&hashes[c], XXH3_128bits(data + off, std::min(kChunk, bytes - off)));
  });
  return DigestOfHashes(hashes.data(), hashes.size() * sizeof(hashes[0]));
}

// ---- SyntheticGuest ----

Result<std::unique_ptr<SyntheticGuest>> SyntheticGuest::Create(const GuestSpec& spec,
                                                               Clock& clock) {
  DWCP_RETURN_IF_ERROR(ValidateSpec(spec));
  void* mem = mmap(nullptr, spec.memory_bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) {
    int err = errno;
    return Unavailable("guest " + spec.id + ": cannot map " + std::to_string(spec.memory_bytes) +
                       " bytes of memory: " + std::strerror(err));
  }
  std::unique_ptr<SyntheticGuest> g(new (std::nothrow)
                                        SyntheticGuest(spec, clock, static_cast<uint8_t*>(mem)));
  if (g == nullptr || g->dirty_bits_ == nullptr || g->hash_stale_ == nullptr) {
    if (g == nullptr) munmap(mem, spec.memory_bytes);
    return Unavailable("guest " + spec.id + ": cannot allocate the dirty bitmap");
  }
  return g;
}

SyntheticGuest::SyntheticGuest(const GuestSpec& spec, Clock& clock, uint8_t* mem)
    : spec_(spec),
      clock_(clock),
      mem_(mem),
      pages_(spec.memory_bytes / kPageSize),
      dirty_bits_(new (std::nothrow) std::atomic<uint64_t>[(pages_ + 63) / 64]()),
      dirty_words_((pages_ + 63) / 64),
      hash_stale_(new (std::nothrow) std::atomic<uint64_t>[(pages_ + 63) / 64]()),
      dirty_rate_(spec.dirty_rate) {
  // Every page hash starts stale; bits past the last page stay clear.
  if (hash_stale_ != nullptr) {
    for (uint64_t w = 0; w < dirty_words_; ++w) {
      uint64_t valid = std::min<uint64_t>(64, pages_ - w * 64);
      hash_stale_[w].store(valid == 64 ? ~uint64_t{0} : (uint64_t{1} << valid) - 1,
                           std::memory_order_relaxed);
    }
  }
  // Templates are generated content, not guest memory: kTemplatePages * 4 KiB in all.
  templates_.resize(kTemplatePages * kPageSize + kSlack);
  for (uint64_t t = 0; t < kTemplatePages; ++t) {
    uint64_t rng = Hash(spec_.seed, kTemplateSalt, ~t);
    GenTemplate(spec_.seed, t, &rng, &templates_[t * kPageSize], kPageSize);
  }
  templates_.resize(kTemplatePages * kPageSize);

  const uint64_t blocks = (pages_ + kHotBlockPages - 1) / kHotBlockPages;
  for (uint64_t b = 0; b < blocks; ++b) {
    if (Below(Hash(spec_.seed, kHotSalt, b), 10) == 0) hot_blocks_.push_back(b * kHotBlockPages);
  }
  if (hot_blocks_.empty()) hot_blocks_.push_back(0);
}

Result<std::unique_ptr<SyntheticGuest>> SyntheticGuest::Boot(const GuestSpec& spec, Clock& clock) {
  auto g = Create(spec, clock);
  if (!g.ok()) return g;
  (*g)->Fill();
  (*g)->Resume();
  return g;
}

Result<std::unique_ptr<SyntheticGuest>> SyntheticGuest::CreateIncoming(const GuestSpec& spec,
                                                                       Clock& clock) {
  return Create(spec, clock);
}

SyntheticGuest::~SyntheticGuest() {
  Pause();
  munmap(mem_, spec_.memory_bytes);
}

void SyntheticGuest::Fill() {
  constexpr uint64_t kPagesPerUnit = 256;
  const uint64_t units = (pages_ + kPagesPerUnit - 1) / kPagesPerUnit;
  const uint64_t seed = spec_.seed;
  ParallelFor(units, [&](uint64_t u) {
    alignas(64) uint8_t scratch[kPageSize + kSlack];
    const uint64_t last = std::min(pages_, (u + 1) * kPagesPerUnit);
    for (uint64_t i = u * kPagesPerUnit; i < last; ++i) {
      uint8_t* page = mem_ + i * kPageSize;
      uint64_t rng = Hash(seed, kContentSalt, i);
      switch (ClassOfPage(seed, i)) {
        case PageClass::kZero:
          break;  // untouched: mmap's zero page, no RSS
        case PageClass::kDuplicate:
          std::memcpy(page, &templates_[TemplateOf(seed, i) * kPageSize], kPageSize);
          break;
        case PageClass::kText:
          GenText(&rng, scratch, kPageSize);
          std::memcpy(page, scratch, kPageSize);
          break;
        case PageClass::kBinary:
          GenBinary(MakeLayout(seed, i), &rng, scratch, kPageSize);
          std::memcpy(page, scratch, kPageSize);
          break;
        case PageClass::kRandom:
          GenRandom(&rng, page, kPageSize);
          break;
      }
    }
  });
}

const uint8_t* SyntheticGuest::PageData(uint64_t index) const {
  assert(index < pages_);
  return mem_ + index * kPageSize;
}

void SyntheticGuest::WritePage(uint64_t index, const uint8_t* data) {
  assert(index < pages_);
  std::memcpy(mem_ + index * kPageSize, data, kPageSize);
  MarkHashStale(index);
}

void SyntheticGuest::ZeroPage(uint64_t index) {
  assert(index < pages_);
  alignas(64) static constexpr uint8_t kZeroes[kPageSize] = {};
  uint8_t* page = mem_ + index * kPageSize;
  // Reading an untouched page maps the shared zero page; it never allocates memory.
  if (std::memcmp(page, kZeroes, kPageSize) != 0) {
    std::memset(page, 0, kPageSize);
    MarkHashStale(index);
  }
}

void SyntheticGuest::StartDirtyLog() {
  std::lock_guard<std::mutex> l(write_mu_);
  for (size_t w = 0; w < dirty_words_; ++w) dirty_bits_[w].store(0, std::memory_order_relaxed);
  log_on_ = true;
}

void SyntheticGuest::StopDirtyLog() {
  std::lock_guard<std::mutex> l(write_mu_);
  log_on_ = false;
}

void SyntheticGuest::CollectDirtyPages(std::vector<uint64_t>* out) {
  for (size_t w = 0; w < dirty_words_; ++w) {
    if (dirty_bits_[w].load(std::memory_order_relaxed) == 0) continue;
    uint64_t bits = dirty_bits_[w].exchange(0, std::memory_order_acquire);
    while (bits != 0) {
      out->push_back(w * 64 + std::countr_zero(bits));
      bits &= bits - 1;
    }
  }
}

uint64_t SyntheticGuest::DirtyPageCount() const {
  uint64_t n = 0;
  for (size_t w = 0; w < dirty_words_; ++w) {
    n += std::popcount(dirty_bits_[w].load(std::memory_order_relaxed));
  }
  return n;
}

void SyntheticGuest::Pause() {
  std::lock_guard<std::mutex> c(control_mu_);
  if (!dirtier_.joinable()) return;
  {
    std::lock_guard<std::mutex> l(stop_mu_);
    stop_ = true;
    stop_flag_.store(true, std::memory_order_relaxed);
  }
  stop_cv_.notify_all();
  dirtier_.join();  // after this no guest write is in progress
  running_.store(false, std::memory_order_release);
}

void SyntheticGuest::Resume() {
  std::lock_guard<std::mutex> c(control_mu_);
  if (dirtier_.joinable()) return;
  {
    std::lock_guard<std::mutex> l(stop_mu_);
    stop_ = false;
    stop_flag_.store(false, std::memory_order_relaxed);
  }
  ++resume_count_;
  running_.store(true, std::memory_order_release);
  const uint64_t rng = Hash(spec_.seed, kDirtierSalt, resume_count_);
  dirtier_ = std::thread([this, rng] { DirtierLoop(rng); });
}

void SyntheticGuest::SetDirtyRate(uint64_t bytes_per_second) {
  dirty_rate_.store(bytes_per_second, std::memory_order_relaxed);
}

std::string SyntheticGuest::Digest() const {
  std::lock_guard<std::mutex> l(digest_mu_);
  if (page_hashes_.empty()) page_hashes_.resize(pages_);
  // Re-hash stale pages, 64 at a time per bitmap word, in parallel.
  ParallelFor(dirty_words_, [&](uint64_t w) {
    if (hash_stale_[w].load(std::memory_order_relaxed) == 0) return;
    uint64_t bits = hash_stale_[w].exchange(0, std::memory_order_acquire);
    while (bits != 0) {
      uint64_t index = w * 64 + std::countr_zero(bits);
      bits &= bits - 1;
      XXH128_canonical_t c;
      XXH128_canonicalFromHash(&c, XXH3_128bits(mem_ + index * kPageSize, kPageSize));
      std::memcpy(page_hashes_[index].data(), c.digest, 16);
    }
  });
  return DigestOfHashes(page_hashes_.data(), page_hashes_.size() * 16);
}

uint64_t SyntheticGuest::PickPage(uint64_t* rng) const {
  uint64_t r = Next(rng);
  if (Below(r, 100) < 80) {
    uint64_t page = hot_blocks_[Below(Next(rng), hot_blocks_.size())] + (r & (kHotBlockPages - 1));
    if (page < pages_) return page;
  }
  return Below(Next(rng), pages_);
}

void SyntheticGuest::DirtierLoop(uint64_t rng) {
  std::vector<uint8_t> scratch(kPageSize + kSlack);
  auto last = clock_.Now();
  double tokens = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> l(stop_mu_);
      if (stop_cv_.wait_for(l, kTick, [this] { return stop_; })) return;
    }
    const auto now = clock_.Now();
    const double dt = std::chrono::duration<double>(now - last).count();
    last = now;
    const double pages_per_s =
        static_cast<double>(dirty_rate_.load(std::memory_order_relaxed)) / kPageSize;
    // Long-run accurate; a stalled dirtier catches up on at most one second of writes.
    tokens = std::min(tokens + std::max(dt, 0.0) * pages_per_s, std::max(pages_per_s, 1.0));
    for (; tokens >= 1.0; tokens -= 1.0) {
      if (stop_flag_.load(std::memory_order_relaxed)) return;
      GuestWrite(PickPage(&rng), &rng, scratch.data());
    }
  }
}

void SyntheticGuest::GuestWrite(uint64_t index, uint64_t* rng, uint8_t* scratch) {
  const uint64_t seed = spec_.seed;
  const uint64_t r = Next(rng);
  const bool whole = Below(r, 10) == 0;
  const size_t len = whole ? kPageSize : 64 + Below(Next(rng), 512 - 64 + 1);
  const size_t off = whole ? 0 : Below(Next(rng), kPageSize - len + 1);
  // Generate outside the lock: a prefix long enough to cover [off, off + len).
  const uint8_t* src = scratch + off;
  bool zero_fill = false;
  switch (ClassOfPage(seed, index)) {
    case PageClass::kZero:
      if (whole) {
        zero_fill = true;  // freed again
      } else {
        GenSparse(rng, scratch + off, len);
      }
      break;
    case PageClass::kDuplicate: {
      const uint64_t t = TemplateOf(seed, index);
      if (whole) {
        src = &templates_[t * kPageSize];  // re-shared
      } else {
        GenTemplate(seed, t, rng, scratch, off + len);
      }
      break;
    }
    case PageClass::kText:
      GenText(rng, scratch, off + len);
      break;
    case PageClass::kBinary:
      GenBinary(MakeLayout(seed, index), rng, scratch, off + len);
      break;
    case PageClass::kRandom:
      GenRandom(rng, scratch + off, len);
      break;
  }
  uint8_t* page = mem_ + index * kPageSize;
  std::lock_guard<std::mutex> l(write_mu_);
  if (zero_fill) {
    std::memset(page, 0, kPageSize);
  } else {
    std::memcpy(page + off, src, len);
  }
  // The page's bytes are written before its bit is set: a collector that sees the bit sees
  // this version (or a later one).
  MarkHashStale(index);
  if (log_on_)
    dirty_bits_[index / 64].fetch_or(uint64_t{1} << (index % 64), std::memory_order_release);
  pages_written_.fetch_add(1, std::memory_order_release);
}

}  // namespace dwcp::vm
