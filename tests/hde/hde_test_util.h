// Helpers shared by the HDE unit tests: an in-memory guest and pages of every content class.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "vm/guest.h"
#include "vm/synthetic_guest.h"

namespace dwcp::hde::testing {

using vm::kPageSize;

// A flat in-memory guest that counts the writes made to it (writes(): every WritePage and
// ZeroPage; page_writes() and zeroes() separately). No dirty logging, no vCPUs.
class MemoryGuest final : public vm::Guest {
 public:
  explicit MemoryGuest(uint64_t pages) : mem_(pages * kPageSize, 0) {
    spec_.id = "memory";
    spec_.memory_bytes = pages * kPageSize;
  }

  const vm::GuestSpec& spec() const override { return spec_; }
  const uint8_t* PageData(uint64_t index) const override { return &mem_[index * kPageSize]; }
  uint8_t* MutablePage(uint64_t index) { return &mem_[index * kPageSize]; }
  void WritePage(uint64_t index, const uint8_t* data) override {
    std::memmove(MutablePage(index), data, kPageSize);
    ++page_writes_;
  }
  void ZeroPage(uint64_t index) override {
    std::memset(MutablePage(index), 0, kPageSize);
    ++zeroes_;
  }
  void StartDirtyLog() override {}
  void StopDirtyLog() override {}
  void CollectDirtyPages(std::vector<uint64_t>*) override {}
  uint64_t DirtyPageCount() const override { return 0; }
  void Pause() override {}
  void Resume() override {}
  bool running() const override { return false; }
  std::string Digest() const override { return vm::MemoryDigest(mem_.data(), mem_.size()); }
  uint64_t pages_written() const override { return 0; }

  void Set(uint64_t index, const std::vector<uint8_t>& page) {
    std::memcpy(MutablePage(index), page.data(), kPageSize);
  }
  std::vector<uint8_t> Page(uint64_t index) const {
    return {mem_.begin() + index * kPageSize, mem_.begin() + (index + 1) * kPageSize};
  }
  const std::vector<uint8_t>& bytes() const { return mem_; }
  int writes() const { return page_writes_ + zeroes_; }
  int page_writes() const { return page_writes_; }
  int zeroes() const { return zeroes_; }

 private:
  vm::GuestSpec spec_;
  std::vector<uint8_t> mem_;
  int page_writes_ = 0;
  int zeroes_ = 0;
};

// Pages of the synthetic content model, by class: a booted idle guest to copy them from.
class ContentModel {
 public:
  explicit ContentModel(uint64_t pages = 1024, uint64_t seed = 7) {
    vm::GuestSpec spec;
    spec.id = "model";
    spec.memory_bytes = pages * kPageSize;
    spec.seed = seed;
    guest_ = std::move(vm::SyntheticGuest::Boot(spec).value());
    guest_->Pause();
    for (uint64_t i = 0; i < pages; ++i) {
      by_class_[static_cast<int>(vm::ClassOfPage(seed, i))].push_back(i);
    }
  }
  const vm::SyntheticGuest& guest() const { return *guest_; }
  // The n-th page of class c (wrapping).
  std::vector<uint8_t> Page(vm::PageClass c, size_t n) const {
    const auto& v = by_class_[static_cast<int>(c)];
    const uint8_t* p = guest_->PageData(v[n % v.size()]);
    return {p, p + kPageSize};
  }
  const std::vector<uint64_t>& Indices(vm::PageClass c) const {
    return by_class_[static_cast<int>(c)];
  }
  // Copies the model's first `pages` pages into `g`.
  void FillPrefix(MemoryGuest& g) const {
    for (uint64_t i = 0; i < g.page_count() && i < guest_->page_count(); ++i) {
      std::memcpy(g.MutablePage(i), guest_->PageData(i), kPageSize);
    }
  }

 private:
  std::unique_ptr<vm::SyntheticGuest> guest_;
  std::vector<uint64_t> by_class_[5];
};

// Overwrites `len` bytes at `off` with a pattern derived from `salt` (a small guest write).
inline void Scribble(uint8_t* page, size_t off, size_t len, uint64_t salt) {
  uint64_t s = salt * 0x9e3779b97f4a7c15ULL + 1;
  for (size_t i = 0; i < len; ++i) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    page[off + i] = static_cast<uint8_t>(s | 1);
  }
}

inline std::vector<uint64_t> Range(uint64_t first, uint64_t n) {
  std::vector<uint64_t> v(n);
  for (uint64_t i = 0; i < n; ++i) v[i] = first + i;
  return v;
}

}  // namespace dwcp::hde::testing
