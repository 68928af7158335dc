#include "amst/frame.h"

#include <xxhash.h>

#include <cstring>

#include "common/little_endian.h"

namespace dwcp::amst {
namespace {

using le::Get16;
using le::Get32;
using le::Get64;
using le::Put16;
using le::Put32;
using le::Put64;

uint64_t Checksum(const uint8_t* header16, std::span<const uint8_t> payload) {
  // Chained: the payload hash is seeded with the header hash (no streaming state needed).
  uint64_t h = XXH3_64bits(header16, 16);
  return XXH3_64bits_withSeed(payload.data(), payload.size(), h);
}

}  // namespace

std::array<uint8_t, kFrameHeaderSize> EncodeFrameHeader(uint8_t protocol, FrameType type,
                                                        uint32_t seq,
                                                        std::span<const uint8_t> payload) {
  std::array<uint8_t, kFrameHeaderSize> h{};
  Put32(&h[0], kFrameMagic);
  h[4] = protocol;
  h[5] = static_cast<uint8_t>(type);
  Put16(&h[6], 0);
  Put32(&h[8], seq);
  Put32(&h[12], static_cast<uint32_t>(payload.size()));
  Put64(&h[16], Checksum(h.data(), payload));
  return h;
}

Result<FrameHeader> DecodeFrameHeader(std::span<const uint8_t, kFrameHeaderSize> b,
                                      uint32_t max_payload) {
  if (Get32(&b[0]) != kFrameMagic) return Status(ProtocolError("bad frame magic"));
  FrameHeader h;
  h.protocol = b[4];
  uint8_t type = b[5];
  if (type != static_cast<uint8_t>(FrameType::kControl) &&
      type != static_cast<uint8_t>(FrameType::kPages)) {
    return Status(ProtocolError("unknown frame type " + std::to_string(type)));
  }
  h.type = static_cast<FrameType>(type);
  h.flags = Get16(&b[6]);
  if (h.flags != 0) return Status(ProtocolError("unknown frame flags " + std::to_string(h.flags)));
  h.seq = Get32(&b[8]);
  h.length = Get32(&b[12]);
  if (h.length > max_payload) {
    return Status(ProtocolError("frame payload of " + std::to_string(h.length) +
                                " bytes exceeds the limit of " + std::to_string(max_payload) +
                                " (max_frame_bytes)"));
  }
  h.checksum = Get64(&b[16]);
  return h;
}

uint32_t RawFrameLength(std::span<const uint8_t, kFrameHeaderSize> b) {
  return Get32(&b[0]) == kFrameMagic ? Get32(&b[12]) : 0;
}

Status CheckControlSize(const FrameHeader& h, uint32_t max_control) {
  if (h.type != FrameType::kControl || h.length <= max_control) return Status::Ok();
  return ProtocolError("control message of " + std::to_string(h.length) +
                       " bytes exceeds the limit of " + std::to_string(max_control) +
                       " (max_control_bytes)");
}

Status CheckFrameOrder(const FrameHeader& h, uint32_t expected_seq, uint8_t protocol) {
  if (h.seq != expected_seq) {
    return ProtocolError("out-of-order frame: sequence " + std::to_string(h.seq) + ", expected " +
                         std::to_string(expected_seq));
  }
  if (h.protocol != protocol) {
    return ProtocolError("frame speaks protocol " + std::to_string(h.protocol) +
                         ", connection negotiated " + std::to_string(protocol));
  }
  return Status::Ok();
}

bool VerifyFrameChecksum(std::span<const uint8_t, kFrameHeaderSize> raw_header,
                         std::span<const uint8_t> payload, uint64_t checksum) {
  return Checksum(raw_header.data(), payload) == checksum;
}

}  // namespace dwcp::amst
