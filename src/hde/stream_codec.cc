#include "hde/stream_codec.h"

#include <lz4.h>
#include <zstd.h>

#include <cstring>
#include <memory>

namespace dwcp::hde {
namespace {

// zstd frames of a batch are at most a few MiB; refuse windows beyond 8 MiB.
constexpr int kMaxWindowLog = 23;

struct ZstdContexts {
  ZSTD_CCtx* c = nullptr;
  ZSTD_DCtx* d = nullptr;
  ~ZstdContexts() {
    ZSTD_freeCCtx(c);
    ZSTD_freeDCtx(d);
  }
  ZSTD_CCtx* compressor() {
    if (c == nullptr) c = ZSTD_createCCtx();
    return c;
  }
  ZSTD_DCtx* decompressor() {
    if (d == nullptr) {
      d = ZSTD_createDCtx();
      if (d != nullptr) ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax, kMaxWindowLog);
    }
    return d;
  }
};

ZstdContexts& Zstd() {
  thread_local ZstdContexts contexts;
  return contexts;
}

void* Lz4State() {
  thread_local std::unique_ptr<uint64_t[]> state(
      new uint64_t[(LZ4_sizeofState() + sizeof(uint64_t) - 1) / sizeof(uint64_t)]);
  return state.get();
}

}  // namespace

size_t CompressBound(CodecSetting s, size_t n) {
  switch (s.codec) {
    case Codec::kZstd:
      return ZSTD_compressBound(n);
    case Codec::kLz4:
      return static_cast<size_t>(LZ4_compressBound(static_cast<int>(n)));
    case Codec::kNone:
      return n;
  }
  return n;
}

size_t CompressStream(CodecSetting s, const uint8_t* src, size_t n, uint8_t* dst, size_t cap) {
  switch (s.codec) {
    case Codec::kZstd: {
      ZSTD_CCtx* cctx = Zstd().compressor();
      if (cctx == nullptr) return 0;
      size_t r = ZSTD_compressCCtx(cctx, dst, cap, src, n, s.level);
      return ZSTD_isError(r) ? 0 : r;
    }
    case Codec::kLz4: {
      if (n > static_cast<size_t>(LZ4_MAX_INPUT_SIZE)) return 0;
      int r = LZ4_compress_fast_extState(Lz4State(), reinterpret_cast<const char*>(src),
                                         reinterpret_cast<char*>(dst), static_cast<int>(n),
                                         static_cast<int>(cap), 1);
      return r > 0 ? static_cast<size_t>(r) : 0;
    }
    case Codec::kNone:
      if (n > cap) return 0;
      std::memcpy(dst, src, n);
      return n;
  }
  return 0;
}

bool DecompressStream(Codec c, const uint8_t* src, size_t wire, uint8_t* dst, size_t n) {
  switch (c) {
    case Codec::kZstd: {
      // Exactly one frame, announcing exactly n bytes.
      if (ZSTD_findFrameCompressedSize(src, wire) != wire) return false;
      if (ZSTD_getFrameContentSize(src, wire) != n) return false;
      ZSTD_DCtx* dctx = Zstd().decompressor();
      if (dctx == nullptr) return false;
      size_t r = ZSTD_decompressDCtx(dctx, dst, n, src, wire);
      return !ZSTD_isError(r) && r == n;
    }
    case Codec::kLz4: {
      if (wire > static_cast<size_t>(LZ4_MAX_INPUT_SIZE) ||
          n > static_cast<size_t>(LZ4_MAX_INPUT_SIZE)) {
        return false;
      }
      int r = LZ4_decompress_safe(reinterpret_cast<const char*>(src), reinterpret_cast<char*>(dst),
                                  static_cast<int>(wire), static_cast<int>(n));
      return r >= 0 && static_cast<size_t>(r) == n;
    }
    case Codec::kNone:
      if (wire != n) return false;
      std::memcpy(dst, src, n);
      return true;
  }
  return false;
}

}  // namespace dwcp::hde
