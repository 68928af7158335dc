// HDE end to end on the synthetic guest the engine migrates: every page of a booted guest
// through PageEncoder and PageDecoder into an incoming guest, then a dirty round.
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace dwcp::hde
