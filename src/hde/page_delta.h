// Delta encoding of a page against the version the destination holds (docs/protocol.md,
// "v3 HDE batch", kDelta). The runs are found by XOR-ing the two versions; each run carries
// the page's new bytes, which the destination writes over its current content (as QEMU's
// XBZRLE does): new bytes compress better than XOR bytes (about 10% smaller dirty rounds on
// the synthetic content model). Pure functions, thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dwcp::hde {

// Encodes `cur` against `base` (kPageSize bytes each) as runs: for each maximal stretch of
// differing 8-byte words, trimmed to its first and last differing byte, varint skip | varint
// len | the len new bytes. Writes at most `limit` bytes to `out` and returns their number
// with the run count in *runs, or SIZE_MAX when the encoding would exceed `limit`. Identical
// pages give 0 bytes and 0 runs.
size_t EncodeDelta(const uint8_t* cur, const uint8_t* base, uint8_t* out, size_t limit,
                   uint32_t* runs);

// Reads a kDelta body (varint runs, then the runs) from [*p, end). Returns false, leaving *p
// and `page` unspecified, when it is malformed: truncated, a zero-length run, or a run past
// the page end. Otherwise advances *p past the body and, when `page` is not null, writes the
// runs into its kPageSize bytes.
bool ReadDelta(const uint8_t** p, const uint8_t* end, uint8_t* page);

}  // namespace dwcp::hde
