#include "amst/frame.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include <array>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <vector>

namespace dwcp::amst {
namespace {

using Header = std::array<uint8_t, kFrameHeaderSize>;

std::vector<uint8_t> Payload(size_t n) {
  std::vector<uint8_t> p(n);
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(i * 31 + 7);
  return p;
}

uint32_t Le32(const Header& h, size_t at) {
  return h[at] | (h[at + 1] << 8) | (h[at + 2] << 16) | (uint32_t{h[at + 3]} << 24);
}
uint64_t Le64(const Header& h, size_t at) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | h[at + i];
  return v;
}

// A frame is accepted iff its header decodes and its checksum verifies.
bool Accepted(const Header& h, std::span<const uint8_t> payload) {
  auto decoded = DecodeFrameHeader(h, kDefaultMaxPayload);
  if (!decoded.ok()) return false;
  if (decoded->length != payload.size()) return false;
  return VerifyFrameChecksum(h, payload, decoded->checksum);
}

TEST(FrameTest, EncodesDocumentedLayout) {
  auto payload = Payload(100);
  Header h = EncodeFrameHeader(3, FrameType::kPages, 0x01020304, payload);
  EXPECT_EQ(h[0], 'D');
  EXPECT_EQ(h[1], 'W');
  EXPECT_EQ(h[2], 'C');
  EXPECT_EQ(h[3], 'P');
  EXPECT_EQ(h[4], 3);
  EXPECT_EQ(h[5], 2);
  EXPECT_EQ(h[6], 0);
  EXPECT_EQ(h[7], 0);
  EXPECT_EQ(h[8], 0x04);  // little-endian seq
  EXPECT_EQ(h[11], 0x01);
  EXPECT_EQ(Le32(h, 12), 100u);
  // Checksum: XXH3-64 of the payload seeded with XXH3-64 of header bytes 0..15.
  uint64_t seed = XXH3_64bits(h.data(), 16);
  EXPECT_EQ(Le64(h, 16), XXH3_64bits_withSeed(payload.data(), payload.size(), seed));
}

TEST(FrameTest, RoundTripsControlFrame) {
  auto payload = Payload(57);
  Header h = EncodeFrameHeader(0, FrameType::kControl, 0, payload);
  auto d = DecodeFrameHeader(h, kDefaultMaxPayload);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->protocol, 0);
  EXPECT_EQ(d->type, FrameType::kControl);
  EXPECT_EQ(d->flags, 0);
  EXPECT_EQ(d->seq, 0u);
  EXPECT_EQ(d->length, 57u);
  EXPECT_EQ(d->checksum, Le64(h, 16));
  EXPECT_TRUE(VerifyFrameChecksum(h, payload, d->checksum));
}

TEST(FrameTest, RoundTripsPagesFrame) {
  auto payload = Payload(8 + 9 + 4096);
  Header h = EncodeFrameHeader(3, FrameType::kPages, 0xfffffffe, payload);
  auto d = DecodeFrameHeader(h, kDefaultMaxPayload);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->protocol, 3);
  EXPECT_EQ(d->type, FrameType::kPages);
  EXPECT_EQ(d->flags, 0);
  EXPECT_EQ(d->seq, 0xfffffffeu);
  EXPECT_EQ(d->length, payload.size());
  EXPECT_TRUE(VerifyFrameChecksum(h, payload, d->checksum));
}

TEST(FrameTest, EmptyPayload) {
  std::vector<uint8_t> empty;
  Header h = EncodeFrameHeader(1, FrameType::kControl, 9, empty);
  auto d = DecodeFrameHeader(h, kDefaultMaxPayload);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->length, 0u);
  EXPECT_EQ(d->seq, 9u);
  EXPECT_TRUE(VerifyFrameChecksum(h, empty, d->checksum));
  EXPECT_TRUE(DecodeFrameHeader(h, 0).ok());  // a zero limit still admits empty frames
  // One stray byte is not an empty payload.
  std::vector<uint8_t> one = {0};
  EXPECT_FALSE(VerifyFrameChecksum(h, one, d->checksum));
}

TEST(FrameTest, ChecksumCoversSeqAndProtocol) {
  auto payload = Payload(32);
  Header a = EncodeFrameHeader(3, FrameType::kControl, 1, payload);
  Header b = EncodeFrameHeader(3, FrameType::kControl, 2, payload);
  Header c = EncodeFrameHeader(1, FrameType::kControl, 1, payload);
  EXPECT_NE(Le64(a, 16), Le64(b, 16));
  EXPECT_NE(Le64(a, 16), Le64(c, 16));
  // Same inputs, same bytes.
  EXPECT_EQ(a, EncodeFrameHeader(3, FrameType::kControl, 1, payload));
}

TEST(FrameTest, EveryHeaderBitFlipIsDetected) {
  auto payload = Payload(300);
  const Header good = EncodeFrameHeader(3, FrameType::kPages, 42, payload);
  ASSERT_TRUE(Accepted(good, payload));
  for (size_t byte = 0; byte < kFrameHeaderSize; ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      Header bad = good;
      bad[byte] ^= static_cast<uint8_t>(1u << bit);
      EXPECT_FALSE(Accepted(bad, payload)) << "byte " << byte << " bit " << bit;
      // The checksum alone catches every flip in bytes 0..15, whether or not it decodes.
      if (byte < 16) {
        EXPECT_FALSE(VerifyFrameChecksum(bad, payload, Le64(good, 16)))
            << "byte " << byte << " bit " << bit;
      }
    }
  }
}

TEST(FrameTest, EveryPayloadBitFlipIsDetected) {
  auto payload = Payload(64);
  const Header h = EncodeFrameHeader(3, FrameType::kControl, 7, payload);
  auto d = DecodeFrameHeader(h, kDefaultMaxPayload);
  ASSERT_TRUE(d.ok());
  for (size_t byte = 0; byte < payload.size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      auto bad = payload;
      bad[byte] ^= static_cast<uint8_t>(1u << bit);
      EXPECT_FALSE(VerifyFrameChecksum(h, bad, d->checksum)) << "byte " << byte << " bit " << bit;
    }
  }
}

TEST(FrameTest, TruncatedPayloadFailsVerification) {
  auto payload = Payload(64);
  const Header h = EncodeFrameHeader(3, FrameType::kControl, 7, payload);
  std::span<const uint8_t> shorter(payload.data(), payload.size() - 1);
  EXPECT_FALSE(VerifyFrameChecksum(h, shorter, Le64(h, 16)));
}

void ExpectProtocolError(const Header& h, uint32_t limit, const std::string& needle) {
  auto d = DecodeFrameHeader(h, limit);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), StatusCode::kProtocol);
  EXPECT_NE(d.status().message().find(needle), std::string::npos)
      << "'" << d.status().message() << "' lacks '" << needle << "'";
}

TEST(FrameTest, RejectsBadMagic) {
  Header h = EncodeFrameHeader(3, FrameType::kControl, 0, Payload(4));
  h[0] = 'X';
  ExpectProtocolError(h, kDefaultMaxPayload, "magic");
  Header zero{};
  ExpectProtocolError(zero, kDefaultMaxPayload, "magic");
}

TEST(FrameTest, RejectsUnknownType) {
  for (uint8_t type : {0, 3, 0x81, 0xff}) {
    Header h = EncodeFrameHeader(3, FrameType::kControl, 0, Payload(4));
    h[5] = type;
    ExpectProtocolError(h, kDefaultMaxPayload, "type " + std::to_string(type));
  }
}

TEST(FrameTest, RejectsNonZeroFlags) {
  Header h = EncodeFrameHeader(3, FrameType::kControl, 0, Payload(4));
  h[6] = 0x01;
  ExpectProtocolError(h, kDefaultMaxPayload, "flags 1");
  h[6] = 0;
  h[7] = 0x80;
  ExpectProtocolError(h, kDefaultMaxPayload, "flags 32768");
}

TEST(FrameTest, EnforcesPayloadLimit) {
  auto payload = Payload(1000);
  Header h = EncodeFrameHeader(3, FrameType::kPages, 0, payload);
  EXPECT_TRUE(DecodeFrameHeader(h, 1000).ok());  // exactly at the limit
  ExpectProtocolError(h, 999, "1000");
  ExpectProtocolError(h, 999, "999");
  // A forged length field above the default limit.
  Header big = h;
  uint32_t len = kDefaultMaxPayload + 1;
  for (int i = 0; i < 4; ++i) big[12 + i] = (len >> (8 * i)) & 0xff;
  ExpectProtocolError(big, kDefaultMaxPayload, std::to_string(len));
  for (int i = 0; i < 4; ++i) big[12 + i] = 0xff;
  ExpectProtocolError(big, kDefaultMaxPayload, "4294967295");
}

}  // namespace
}  // namespace dwcp::amst

namespace dwcp::amst {
namespace {

TEST(FrameLimitTest, OversizedFramesAreRefusedAndTheirLengthIsReadable) {
  std::vector<uint8_t> payload(100, 7);
  auto h = EncodeFrameHeader(3, FrameType::kPages, 0, payload);
  EXPECT_EQ(RawFrameLength(h), 100u);
  auto refused = DecodeFrameHeader(h, 99);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kProtocol);
  EXPECT_NE(refused.status().message().find("max_frame_bytes"), std::string::npos);
  EXPECT_TRUE(DecodeFrameHeader(h, 100).ok());
  // A wrong magic has no length to speak of.
  h[0] ^= 0xff;
  EXPECT_EQ(RawFrameLength(h), 0u);
}

TEST(FrameLimitTest, ControlMessagesHaveTheirOwnLimit) {
  FrameHeader control;
  control.type = FrameType::kControl;
  control.length = 4097;
  Status st = CheckControlSize(control, 4096);
  EXPECT_EQ(st.code(), StatusCode::kProtocol);
  EXPECT_NE(st.message().find("4097"), std::string::npos);
  EXPECT_NE(st.message().find("max_control_bytes"), std::string::npos);
  control.length = 4096;
  EXPECT_TRUE(CheckControlSize(control, 4096).ok());
  FrameHeader pages;
  pages.type = FrameType::kPages;
  pages.length = 1 << 20;  // page frames answer to max_frame_bytes only
  EXPECT_TRUE(CheckControlSize(pages, 4096).ok());
}

}  // namespace
}  // namespace dwcp::amst
