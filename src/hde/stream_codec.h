// zstd / lz4 / none over one buffer, with per-thread contexts. Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>

#include "hde/codec_selector.h"

namespace dwcp::hde {

// Room `dst` needs to compress `n` bytes with `s`.
size_t CompressBound(CodecSetting s, size_t n);
// Compresses [src, src + n) into dst (capacity `cap`); the compressed size, or 0 on failure.
size_t CompressStream(CodecSetting s, const uint8_t* src, size_t n, uint8_t* dst, size_t cap);
// Decompresses `wire` bytes that must decode to exactly `n` bytes, into dst (capacity n).
// False for anything else: malformed input, another size, trailing data. Never writes past
// dst + n and allocates nothing beyond the per-thread context.
bool DecompressStream(Codec c, const uint8_t* src, size_t wire, uint8_t* dst, size_t n);

}  // namespace dwcp::hde
