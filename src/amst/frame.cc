#include "amst/frame.h"

#include <xxhash.h>

#include <cstring>

namespace dwcp::amst {
namespace {

void Put16(uint8_t* p, uint16_t v) {
  p[0] = v & 0xff;
  p[1] = v >> 8;
}
void Put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = (v >> (8 * i)) & 0xff;
}
void Put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = (v >> (8 * i)) & 0xff;
}
uint16_t Get16(const uint8_t* p) { return p[0] | (p[1] << 8); }
uint32_t Get32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint64_t Get64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

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
                                " bytes exceeds the limit of " + std::to_string(max_payload)));
  }
  h.checksum = Get64(&b[16]);
  return h;
}

bool VerifyFrameChecksum(std::span<const uint8_t, kFrameHeaderSize> raw_header,
                         std::span<const uint8_t> payload, uint64_t checksum) {
  return Checksum(raw_header.data(), payload) == checksum;
}

}  // namespace dwcp::amst
