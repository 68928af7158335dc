// The `synthetic` VM driver: an in-process guest whose memory behaves like a real VM's for
// migration purposes (realistic page content, a skewed dirtying workload, dirty logging).
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "vm/guest.h"

namespace dwcp::vm {

// Class of a page in the content model.
enum class PageClass {
  kZero,       // all zero bytes (never touched at boot: costs no RSS)
  kDuplicate,  // a byte-exact copy of one of kTemplatePages template pages
  kText,       // ASCII log lines from a small word list
  kBinary,     // structs of small integers, pointer-like values, counters (~2-3x by zstd)
  kRandom,     // incompressible PRNG output
};

// Stable lowercase name ("zero", "duplicate", ...).
const char* PageClassName(PageClass c);

// The class of page `index` of a guest booted with `seed`: a pure function of its arguments.
// Targets: 25% zero, 15% duplicate, 25% text, 20% binary, 15% random.
PageClass ClassOfPage(uint64_t seed, uint64_t index);

// Computes Digest() (see SyntheticGuest) over any memory image of `bytes` bytes, e.g. one
// assembled by a migration destination. `bytes` need not be a multiple of the page size.
std::string MemoryDigest(const uint8_t* data, uint64_t bytes);

// A synthetic guest.
//
// Memory is one private anonymous mapping of spec.memory_bytes; no other copy of guest memory
// is held. Booted content is a deterministic function of spec.seed (see ClassOfPage), so two
// guests booted with the same spec have the same Digest().
//
// While running, one dirtier thread writes spec.dirty_rate bytes/s as whole-page writes
// (rate / kPageSize pages per second, token bucket refilled from the clock every ~10 ms).
// 80% of writes go to a hot set of ~10% of the pages (64 KiB blocks chosen from the seed), the
// rest are uniform. A write replaces a random 64-512 byte range of the page with fresh content
// of the page's class; 10% of writes rewrite the whole page (zero-class pages: a range write
// stores sparse small integers, a whole-page rewrite zeroes the page again).
//
// Dirty logging: the dirtier finishes writing a page's bytes before it marks the page dirty
// (release), and CollectDirtyPages() clears bits with acquire exchanges, so a page read after
// its bit was collected is at least as new as the write that set it.
//
// Digest(): XXH3-128 (libxxhash XXH3_128bits, no seed) over the concatenation of the
// 16-byte canonical forms (XXH128_canonicalFromHash, i.e. high64 then low64, big-endian) of
// the XXH3-128 hashes of consecutive 4 KiB chunks (pages) of memory, the last chunk possibly
// short. The result is printed as the 32 lowercase hex digits of its canonical form.
// The guest caches the page hashes: every write marks its page's hash stale after writing
// it, and Digest() re-hashes only stale pages (clearing the mark before reading), in
// parallel. The first call hashes all memory; a call right after a pause that follows an
// earlier call costs about the pages written in between — which keeps the digest out of a
// migration's downtime.
//
// Thread-safety: all methods may be called from any thread.
class SyntheticGuest final : public Guest {
 public:
  static constexpr size_t kTemplatePages = 64;
  static constexpr uint64_t kDigestChunkBytes = kPageSize;

  // A booted, running guest: memory filled by the content model, dirtier thread started.
  // InvalidArgument for a bad spec, Unavailable when the memory cannot be mapped. `clock`
  // paces the dirtier and must outlive the guest.
  static Result<std::unique_ptr<SyntheticGuest>> Boot(const GuestSpec& spec,
                                                      Clock& clock = RealClock::Instance());
  // An all-zero, paused guest for a migration destination to fill with WritePage/ZeroPage.
  // Resume() starts it dirtying with the content model of spec.seed.
  static Result<std::unique_ptr<SyntheticGuest>> CreateIncoming(
      const GuestSpec& spec, Clock& clock = RealClock::Instance());

  // Stops the dirtier and unmaps memory.
  ~SyntheticGuest() override;

  SyntheticGuest(const SyntheticGuest&) = delete;
  SyntheticGuest& operator=(const SyntheticGuest&) = delete;

  // The spec the guest was created with (dirty_rate is the initial rate).
  const GuestSpec& spec() const override { return spec_; }

  const uint8_t* PageData(uint64_t index) const override;
  void WritePage(uint64_t index, const uint8_t* data) override;
  void ZeroPage(uint64_t index) override;

  void StartDirtyLog() override;
  void StopDirtyLog() override;
  void CollectDirtyPages(std::vector<uint64_t>* out) override;
  // Popcount of the dirty bitmap.
  uint64_t DirtyPageCount() const override;

  void Pause() override;
  void Resume() override;
  bool running() const override { return running_.load(std::memory_order_acquire); }

  std::string Digest() const override;

  uint64_t pages_written() const override { return pages_written_.load(std::memory_order_acquire); }

  // Changes the dirty rate (bytes/s) from the next dirtier tick on; 0 idles the guest.
  void SetDirtyRate(uint64_t bytes_per_second);
  uint64_t dirty_rate() const { return dirty_rate_.load(std::memory_order_relaxed); }

 private:
  SyntheticGuest(const GuestSpec& spec, Clock& clock, uint8_t* mem);

  static Result<std::unique_ptr<SyntheticGuest>> Create(const GuestSpec& spec, Clock& clock);
  // Fills memory with the content model, in parallel.
  void Fill();
  void DirtierLoop(uint64_t rng);
  // One guest write to `index` (the bytes, then the dirty bit).
  void GuestWrite(uint64_t index, uint64_t* rng_state, uint8_t* scratch);
  uint64_t PickPage(uint64_t* rng_state) const;

  const GuestSpec spec_;
  Clock& clock_;
  uint8_t* const mem_;
  const uint64_t pages_;
  std::vector<uint8_t> templates_;    // kTemplatePages pages of duplicate-class content
  std::vector<uint64_t> hot_blocks_;  // first page of each hot 64 KiB block

  std::unique_ptr<std::atomic<uint64_t>[]> dirty_bits_;
  const size_t dirty_words_;

  // Digest cache: one canonical XXH3-128 per page and a bitmap of pages whose hash is stale
  // (all stale at first). Writers set the stale bit after writing; Digest() clears it before
  // hashing. digest_mu_ serializes Digest() calls.
  void MarkHashStale(uint64_t index) {
    hash_stale_[index / 64].fetch_or(uint64_t{1} << (index % 64), std::memory_order_release);
  }
  std::unique_ptr<std::atomic<uint64_t>[]> hash_stale_;
  mutable std::vector<std::array<uint8_t, 16>> page_hashes_;
  mutable std::mutex digest_mu_;

  // Guards log_on_ transitions against in-flight guest writes: a write and its dirty mark
  // happen under it, so StartDirtyLog() never misses a write it did not see complete.
  std::mutex write_mu_;
  bool log_on_ = false;

  std::atomic<uint64_t> dirty_rate_;
  std::atomic<uint64_t> pages_written_{0};
  std::atomic<bool> running_{false};

  std::mutex control_mu_;  // serializes Pause/Resume/destruction
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stop_ = false;                   // guarded by stop_mu_
  std::atomic<bool> stop_flag_{false};  // mirrors stop_ for the dirtier's inner loop
  uint64_t resume_count_ = 0;           // guarded by control_mu_; varies dirtier streams
  std::thread dirtier_;
};

}  // namespace dwcp::vm
