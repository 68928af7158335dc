// The VM driver interface: what the migration engine needs from a guest's memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace dwcp::vm {

inline constexpr size_t kPageSize = 4096;

struct GuestSpec {
  std::string id;
  uint64_t memory_bytes = 0;  // a multiple of kPageSize
  uint64_t dirty_rate = 0;    // bytes per second the running guest dirties (0: idle guest)
  uint64_t seed = 1;          // content model seed
};

// A guest's memory with dirty logging, as a hypervisor exposes it.
// Thread-safety: all methods may be called from any thread. While the guest runs, page
// contents change concurrently; a page written after CollectDirtyPages() cleared its bit is
// reported again by the next call, so pre-copy converges to the true content.
class Guest {
 public:
  virtual ~Guest() = default;

  virtual const GuestSpec& spec() const = 0;
  uint64_t page_count() const { return spec().memory_bytes / kPageSize; }

  // Pointer to the page's kPageSize bytes; valid for the guest's lifetime.
  virtual const uint8_t* PageData(uint64_t index) const = 0;
  // Overwrites one page (used by the destination while the guest is paused). Not logged
  // as dirty.
  virtual void WritePage(uint64_t index, const uint8_t* data) = 0;
  // Makes one page all zeroes (cheap when it already is).
  virtual void ZeroPage(uint64_t index) = 0;

  // Clears the dirty log and starts recording guest writes.
  virtual void StartDirtyLog() = 0;
  virtual void StopDirtyLog() = 0;
  // Appends the indices of pages written since the previous call (or StartDirtyLog), in
  // ascending order, and clears their dirty bits.
  virtual void CollectDirtyPages(std::vector<uint64_t>* out) = 0;
  // Pages currently marked dirty (no clearing); cheap, may be slightly stale.
  virtual uint64_t DirtyPageCount() const = 0;

  // Stops the vCPUs (the dirtier); returns once no guest write is in progress.
  virtual void Pause() = 0;
  virtual void Resume() = 0;
  virtual bool running() const = 0;

  // 128-bit content digest of all memory, 32 lowercase hex digits. Stable only while paused.
  virtual std::string Digest() const = 0;

  // Pages the guest itself has written since it booted (its dirtying activity).
  virtual uint64_t pages_written() const = 0;
};

}  // namespace dwcp::vm
