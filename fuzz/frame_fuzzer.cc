// Fuzzes the AMST frame parser (src/amst/frame.h) the way Connection::Receive uses it: the
// input is the byte stream a receiver reads, frame after frame, until the first bad one.
//
// Input: one flags byte, then the stream. Flag bit 0 "seals" each frame before it is checked
// (the fuzzer rewrites its checksum field to the right value), so mutations reach the code
// behind the checksum instead of failing it; bit 1 starts with a negotiated protocol (3)
// instead of 0. Control payloads are parsed as wire::Control, as ReceiveControl does.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "amst/frame.h"
#include "common/little_endian.h"
#include "dwcp.pb.h"

namespace {

using dwcp::amst::kFrameHeaderSize;

// Keeps a fuzz run fast; the wire limit (kDefaultMaxPayload) is exercised by the header check.
constexpr uint32_t kMaxPayload = 64 * 1024;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool seal = data[0] & 1;
  const uint8_t protocol = (data[0] & 2) ? 3 : 0;
  std::vector<uint8_t> stream(data + 1, data + size);
  size_t at = 0;
  uint32_t seq = 0;
  while (stream.size() - at >= kFrameHeaderSize) {
    std::span<uint8_t, kFrameHeaderSize> raw(stream.data() + at, kFrameHeaderSize);
    auto header = dwcp::amst::DecodeFrameHeader(raw, kMaxPayload);
    if (!header.ok()) break;
    if (header->length > kMaxPayload) std::abort();  // the limit is the decoder's contract
    if (!dwcp::amst::CheckFrameOrder(*header, seq, protocol).ok()) break;
    at += kFrameHeaderSize;
    if (stream.size() - at < header->length) break;  // the peer closed mid-frame
    std::span<const uint8_t> payload(stream.data() + at, header->length);
    at += header->length;
    if (seal) {
      // Reseal: the header the real encoder would produce for this payload.
      auto good =
          dwcp::amst::EncodeFrameHeader(header->protocol, header->type, header->seq, payload);
      std::memcpy(raw.data() + 16, good.data() + 16, 8);
      header->checksum = dwcp::le::Get64(raw.data() + 16);
    }
    if (!dwcp::amst::VerifyFrameChecksum(raw, payload, header->checksum)) break;
    // A frame that verifies is exactly what the encoder makes of its fields.
    auto again =
        dwcp::amst::EncodeFrameHeader(header->protocol, header->type, header->seq, payload);
    if (std::memcmp(again.data(), raw.data(), kFrameHeaderSize) != 0) std::abort();
    if (header->type == dwcp::amst::FrameType::kControl) {
      dwcp::wire::Control message;
      if (!message.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) break;
    }
    ++seq;
  }
  return 0;
}
