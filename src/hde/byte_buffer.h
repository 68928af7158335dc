// A growable byte buffer that does not zero what it allocates (HDE batches are written once,
// front to back). Movable, not copyable.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>

namespace dwcp::hde {

class ByteBuffer {
 public:
  ByteBuffer() = default;
  ByteBuffer(ByteBuffer&& o) noexcept { *this = std::move(o); }
  ByteBuffer& operator=(ByteBuffer&& o) noexcept {
    data_ = std::move(o.data_);
    size_ = o.size_;
    capacity_ = o.capacity_;
    o.size_ = o.capacity_ = 0;
    return *this;
  }

  uint8_t* data() { return data_.get(); }
  const uint8_t* data() const { return data_.get(); }
  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }
  std::span<const uint8_t> span() const { return {data_.get(), size_}; }

  // Ensures room for `n` bytes in all, keeping the contents.
  void Reserve(size_t n) {
    if (n <= capacity_) return;
    std::unique_ptr<uint8_t[]> bigger(new uint8_t[n]);
    if (size_ > 0) std::memcpy(bigger.get(), data_.get(), size_);
    data_ = std::move(bigger);
    capacity_ = n;
  }
  // Sets the size (within capacity; new bytes are uninitialised).
  void Resize(size_t n) {
    Reserve(n);
    size_ = n;
  }
  void Append(const uint8_t* p, size_t n) {
    Reserve(size_ + n);
    std::memcpy(data_.get() + size_, p, n);
    size_ += n;
  }

 private:
  std::unique_ptr<uint8_t[]> data_;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

}  // namespace dwcp::hde
