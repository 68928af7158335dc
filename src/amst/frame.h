// DWCP frames: a compact binary header plus payload, checksummed (docs/protocol.md).
//
//   offset size field
//   0      4    magic     "DWCP" (0x44 0x57 0x43 0x50)
//   4      1    protocol  0 before the handshake, then the negotiated version (1 or 3)
//   5      1    type      FrameType
//   6      2    flags     reserved, must be 0
//   8      4    seq       per-connection, per-direction sequence number, from 0
//   12     4    length    payload bytes, at most the receiver's limit
//   16     8    checksum  XXH3-64 of the payload seeded with XXH3-64 of header bytes 0..15
//   24     ...  payload
// Integers are little-endian.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace dwcp::amst {

inline constexpr size_t kFrameHeaderSize = 24;
inline constexpr uint32_t kFrameMagic = 0x50435744;  // "DWCP" in little-endian byte order
// Default payload limit: a page batch of 1 MiB plus per-page headers, with room to spare.
inline constexpr uint32_t kDefaultMaxPayload = 4 * 1024 * 1024;
// Default limit of a CONTROL frame's payload (a serialized dwcp.wire.Control): the largest
// message, a MigrationReady or Abort with its error text, is a few hundred bytes.
inline constexpr uint32_t kDefaultMaxControl = 64 * 1024;

enum class FrameType : uint8_t {
  kControl = 1,  // payload: a serialized dwcp.wire.Control message
  kPages = 2,    // payload: a page batch (hde/page_codec.h)
};

struct FrameHeader {
  uint8_t protocol = 0;
  FrameType type = FrameType::kControl;
  uint16_t flags = 0;
  uint32_t seq = 0;
  uint32_t length = 0;
  uint64_t checksum = 0;
};

// Serialises a header for `payload`, computing the checksum.
std::array<uint8_t, kFrameHeaderSize> EncodeFrameHeader(uint8_t protocol, FrameType type,
                                                        uint32_t seq,
                                                        std::span<const uint8_t> payload);

// Parses and validates the fixed header fields: magic, known type, zero flags, length within
// `max_payload`. Returns a Protocol error naming the problem otherwise.
Result<FrameHeader> DecodeFrameHeader(std::span<const uint8_t, kFrameHeaderSize> bytes,
                                      uint32_t max_payload);

// The length field of a header whose magic is right, unvalidated (0 for a wrong magic):
// tells an oversized frame from other malformed ones.
uint32_t RawFrameLength(std::span<const uint8_t, kFrameHeaderSize> bytes);

// A CONTROL frame whose payload exceeds `max_control` is refused before its payload is read:
// Protocol error naming both sizes (config max_control_bytes); Ok for page frames.
Status CheckControlSize(const FrameHeader& header, uint32_t max_control);

// Checks a decoded header against the receiving connection: `expected_seq` is the next
// sequence number, `protocol` the negotiated version (0 before the handshake). Returns a
// Protocol error naming the mismatch otherwise.
Status CheckFrameOrder(const FrameHeader& header, uint32_t expected_seq, uint8_t protocol);

// True iff `header.checksum` matches the raw header bytes and the payload.
bool VerifyFrameChecksum(std::span<const uint8_t, kFrameHeaderSize> raw_header,
                         std::span<const uint8_t> payload, uint64_t checksum);

}  // namespace dwcp::amst
