// A plain in-memory vm::Guest for the fuzzers: page contents only, no dirty logging.
#pragma once

#include <cstring>
#include <string>
#include <vector>

#include "vm/guest.h"

namespace dwcp::fuzz {

class MemoryGuest : public vm::Guest {
 public:
  explicit MemoryGuest(uint64_t pages)
      : spec_{"fuzz", pages * vm::kPageSize, 0, 1}, mem_(pages * vm::kPageSize) {}

  // Page i holds bytes derived from i (every page differs), except the zero pages i % 4 == 3.
  void Fill() {
    for (uint64_t i = 0; i < page_count(); ++i) {
      uint8_t* p = &mem_[i * vm::kPageSize];
      for (size_t b = 0; b < vm::kPageSize; ++b) {
        p[b] = i % 4 == 3 ? 0 : static_cast<uint8_t>(i * 31 + b / 64);
      }
    }
  }

  const vm::GuestSpec& spec() const override { return spec_; }
  const uint8_t* PageData(uint64_t i) const override { return &mem_[i * vm::kPageSize]; }
  void WritePage(uint64_t i, const uint8_t* d) override {
    std::memcpy(&mem_[i * vm::kPageSize], d, vm::kPageSize);
  }
  void ZeroPage(uint64_t i) override { std::memset(&mem_[i * vm::kPageSize], 0, vm::kPageSize); }
  void StartDirtyLog() override {}
  void StopDirtyLog() override {}
  void CollectDirtyPages(std::vector<uint64_t>*) override {}
  uint64_t DirtyPageCount() const override { return 0; }
  void Pause() override {}
  void Resume() override {}
  bool running() const override { return false; }
  std::string Digest() const override { return ""; }
  uint64_t pages_written() const override { return 0; }

 private:
  vm::GuestSpec spec_;
  std::vector<uint8_t> mem_;
};

}  // namespace dwcp::fuzz
