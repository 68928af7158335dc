// HDE end to end on the synthetic guest the engine migrates: every page of a booted guest
// through PageEncoder and PageDecoder into an incoming guest, then a dirty round.
#include <gtest/gtest.h>

#include <array>
#include <future>
#include <memory>
#include <numeric>
#include <vector>

#include "hde/page_decoder.h"
#include "hde/page_encoder.h"
#include "vm/synthetic_guest.h"

namespace dwcp::hde {
namespace {

TEST(SyntheticRoundTripTest, EveryPageAndADirtyRoundArriveIntact) {
  vm::GuestSpec spec{"vm-rt", 64ull << 20, 50'000'000, 7};
  auto src = vm::SyntheticGuest::Boot(spec);
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  auto dst = vm::SyntheticGuest::CreateIncoming(spec);
  ASSERT_TRUE(dst.ok());
  PageEncoder encoder(EncoderConfig{}, (*src)->page_count());
  PageDecoder decoder((*dst)->page_count());
  (*src)->StartDirtyLog();
  auto send = [&](uint32_t round, const std::vector<uint64_t>& pages) {
    for (size_t i = 0; i < pages.size(); i += 256) {
      std::vector<uint64_t> batch(pages.begin() + i,
                                  pages.begin() + std::min(pages.size(), i + 256));
      auto planned = encoder.Plan(round, batch, **src, 1.25e8);
      ASSERT_TRUE(planned.ok());
      // Compress on another thread while the next batch is planned, as the engine does.
      auto p = std::make_shared<PlannedBatch>(std::move(planned).value());
      auto fut = std::async(std::launch::async, [&encoder, p] { return encoder.Compress(std::move(*p)); });
      EncodedBatch e = fut.get();
      encoder.Observe(e.stats());
      std::vector<uint8_t> wire(e.payload().begin(), e.payload().end());
      auto parsed = decoder.Parse(wire);
      ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
      ASSERT_TRUE(decoder.Apply(*parsed, **dst).ok());
    }
  };
  std::vector<uint64_t> all((*src)->page_count());
  std::iota(all.begin(), all.end(), 0);
  send(1, all);
  std::vector<uint64_t> dirty;
  for (uint32_t round = 2; round <= 4; ++round) {
    dirty.clear();
    (*src)->CollectDirtyPages(&dirty);
    send(round, dirty);
  }
  (*src)->Pause();
  dirty.clear();
  (*src)->CollectDirtyPages(&dirty);
  send(5, dirty);
  EXPECT_EQ((*src)->Digest(), (*dst)->Digest());
}

// Round commitments (docs/consensus.md): the leaf the encoder hashes from the snapshot it
// encodes equals the one the decoder hashes from the pages it rebuilt, whatever the entry
// kinds (zero, dedup, delta, raw), across rounds of a running guest.
TEST(SyntheticRoundTripTest, CommitmentLeavesAgreeOnBothSides) {
  vm::GuestSpec spec{"vm-leaves", 16ull << 20, 50'000'000, 9};
  auto src = vm::SyntheticGuest::Boot(spec);
  ASSERT_TRUE(src.ok()) << src.status().ToString();
  auto dst = vm::SyntheticGuest::CreateIncoming(spec);
  ASSERT_TRUE(dst.ok());
  EncoderConfig config;
  config.commit_leaves = true;
  PageEncoder encoder(config, (*src)->page_count());
  PageEncoder plain(EncoderConfig{}, (*src)->page_count());
  PageDecoder decoder((*dst)->page_count());
  (*src)->StartDirtyLog();
  int batches = 0;
  auto send = [&](uint32_t round, const std::vector<uint64_t>& pages) {
    for (size_t i = 0; i < pages.size(); i += 256) {
      std::vector<uint64_t> batch(pages.begin() + i,
                                  pages.begin() + std::min(pages.size(), i + 256));
      auto planned = encoder.Plan(round, batch, **src, 1.25e8);
      ASSERT_TRUE(planned.ok());
      const std::array<uint8_t, 32> sent = planned->leaf();
      EXPECT_NE(sent, (std::array<uint8_t, 32>{}));
      EncodedBatch e = encoder.Compress(std::move(planned).value());
      std::vector<uint8_t> wire(e.payload().begin(), e.payload().end());
      auto parsed = decoder.Parse(wire);
      ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
      std::array<uint8_t, 32> received{};
      ASSERT_TRUE(decoder.Apply(*parsed, **dst, nullptr, &received).ok());
      EXPECT_EQ(received, sent) << "round " << round << " batch " << i / 256;
      ++batches;
    }
  };
  std::vector<uint64_t> all((*src)->page_count());
  std::iota(all.begin(), all.end(), 0);
  send(1, all);
  std::vector<uint64_t> dirty;
  for (uint32_t round = 2; round <= 3; ++round) {
    dirty.clear();
    (*src)->CollectDirtyPages(&dirty);
    send(round, dirty);
  }
  EXPECT_GT(batches, 16);
  // Without commit_leaves the encoder hashes nothing.
  const std::vector<uint64_t> three = {0, 1, 2};
  auto unhashed = plain.Plan(1, three, **src, 1.25e8);
  ASSERT_TRUE(unhashed.ok());
  EXPECT_EQ(unhashed->leaf(), (std::array<uint8_t, 32>{}));
}

}  // namespace
}  // namespace dwcp::hde
