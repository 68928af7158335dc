#include "hde/page_delta.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "hde/hde_format.h"
#include "hde_test_util.h"

namespace dwcp::hde {
namespace {

using testing::Scribble;
using vm::kPageSize;

std::vector<uint8_t> Base() {
  std::vector<uint8_t> p(kPageSize);
  for (size_t i = 0; i < kPageSize; ++i) p[i] = static_cast<uint8_t>(i * 31 + 7);
  return p;
}

// Encodes cur against base, decodes it onto base and checks the result is cur.
size_t RoundTrip(const std::vector<uint8_t>& cur, const std::vector<uint8_t>& base,
                 uint32_t* runs_out = nullptr) {
  std::vector<uint8_t> body(kPageSize + 64);
  uint32_t runs = 0;
  size_t n = EncodeDelta(cur.data(), base.data(), body.data(), kPageSize + 16, &runs);
  EXPECT_NE(n, SIZE_MAX);
  // The wire form: varint runs, then the runs.
  std::vector<uint8_t> wire(kMaxVarintBytes);
  wire.resize(PutVarint(wire.data(), runs));
  wire.insert(wire.end(), body.begin(), body.begin() + n);
  std::vector<uint8_t> page = base;
  const uint8_t* p = wire.data();
  EXPECT_TRUE(ReadDelta(&p, wire.data() + wire.size(), page.data()));
  EXPECT_EQ(p, wire.data() + wire.size());
  EXPECT_EQ(page, cur);
  if (runs_out) *runs_out = runs;
  return n;
}

TEST(HdeDeltaTest, IdenticalPagesGiveNoRuns) {
  auto base = Base();
  uint32_t runs = 99;
  EXPECT_EQ(RoundTrip(base, base, &runs), 0u);
  EXPECT_EQ(runs, 0u);
}

TEST(HdeDeltaTest, SmallWritesAnywhere) {
  auto base = Base();
  for (size_t off :
       {size_t{0}, size_t{1}, size_t{7}, size_t{8}, size_t{100}, size_t{4000}, kPageSize - 1}) {
    for (size_t len : {size_t{1}, size_t{3}, size_t{9}, size_t{64}}) {
      if (off + len > kPageSize) continue;
      auto cur = base;
      for (size_t i = off; i < off + len; ++i) cur[i] ^= 0x5a;
      uint32_t runs = 0;
      size_t n = RoundTrip(cur, base, &runs);
      EXPECT_EQ(runs, 1u) << off << "+" << len;
      EXPECT_LE(n, len + 4) << "byte-exact trimming";
    }
  }
}

TEST(HdeDeltaTest, SeveralRegionsAndDenseChanges) {
  auto base = Base();
  auto cur = base;
  Scribble(&cur[64], 0, 300, 1);
  Scribble(&cur[2000], 0, 64, 2);
  Scribble(&cur[3500], 0, 512, 3);
  uint32_t runs = 0;
  size_t n = RoundTrip(cur, base, &runs);
  EXPECT_GE(runs, 3u);
  EXPECT_LT(n, 300 + 64 + 512 + 64);
  // Every byte different: one run of the whole page.
  for (auto& b : cur) b = static_cast<uint8_t>(~b);
  n = RoundTrip(cur, base, &runs);
  EXPECT_EQ(runs, 1u);
  EXPECT_EQ(n, kPageSize + 3);
}

TEST(HdeDeltaTest, LimitRefusesLargeDeltas) {
  auto base = Base();
  auto cur = base;
  Scribble(cur.data(), 0, 3000, 9);
  std::vector<uint8_t> body(kPageSize + 64);
  uint32_t runs = 0;
  EXPECT_EQ(EncodeDelta(cur.data(), base.data(), body.data(), 2048, &runs), SIZE_MAX);
  EXPECT_NE(EncodeDelta(cur.data(), base.data(), body.data(), 3100, &runs), SIZE_MAX);
}

TEST(HdeDeltaTest, MalformedBodiesAreRefused) {
  auto page = Base();
  auto read = [&](std::vector<uint8_t> w) {
    const uint8_t* p = w.data();
    return ReadDelta(&p, w.data() + w.size(), nullptr);
  };
  EXPECT_TRUE(read({0}));                        // no runs
  EXPECT_TRUE(read({1, 0, 1, 0xff}));            // one byte at 0
  EXPECT_FALSE(read({}));                        // no run count
  EXPECT_FALSE(read({1, 0, 0}));                 // zero-length run
  EXPECT_FALSE(read({1, 0, 2, 0xff}));           // literal truncated
  EXPECT_FALSE(read({2, 0, 1, 0xff}));           // second run missing
  EXPECT_TRUE(read({1, 0xff, 0x1f, 1, 0xff}));   // skip 4095, len 1: the last byte
  EXPECT_FALSE(read({1, 0x80, 0x20, 1, 0xff}));  // skip 4096: past the page
  EXPECT_FALSE(read({1, 0, 0x81, 0x20}));        // len 4097
  EXPECT_FALSE(read({0x81, 0x20}));              // 4097 runs
  // A second run that ends past the page.
  EXPECT_FALSE(read({2, 0, 1, 0xaa, 0xff, 0x1f, 1, 0xbb}));
  // Overlong varint.
  EXPECT_FALSE(read({0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}));
  (void)page;
}

}  // namespace
}  // namespace dwcp::hde
