// The data plane on real loopback sockets: striping over several streams with in-order
// reassembly, and a stream lost in the middle of a round.
#include "migration/data_plane.h"

#include <gtest/gtest.h>

#include <future>
#include <optional>
#include <thread>

#include "vm/synthetic_guest.h"

namespace dwcp::migration {
namespace {

using namespace std::chrono_literals;
using asio::awaitable;
using asio::use_awaitable;

class DataPlaneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    work_.emplace(io_.get_executor());
    for (int i = 0; i < 3; ++i) threads_.emplace_back([this] { io_.run(); });
    acceptor_.open(asio::ip::tcp::v4());
    acceptor_.bind({asio::ip::make_address("127.0.0.1"), 0});
    acceptor_.listen();
    ctx_.io = io_.get_executor();
    ctx_.pool = &pool_;
    ctx_.metrics = &metrics_;
    ctx_.hde_stats = &hde_stats_;
    ctx_.clock = &RealClock::Instance();
    ctx_.node_bucket = &bucket_;
    auto src = vm::SyntheticGuest::Boot({"vm-dp", 16ull << 20, 0, 5});
    ASSERT_TRUE(src.ok());
    source_ = std::move(src).value();
    auto dst = vm::SyntheticGuest::CreateIncoming({"vm-dp", 16ull << 20, 0, 5});
    ASSERT_TRUE(dst.ok());
    dest_ = std::shared_ptr<vm::Guest>(std::move(dst).value());
  }
  void TearDown() override {
    work_.reset();
    io_.stop();
    for (auto& t : threads_) t.join();
    pool_.join();
  }

  // A connected pair of connections: {source side, destination side}, each on its own strand.
  std::pair<std::shared_ptr<amst::Connection>, std::shared_ptr<amst::Connection>> Pair() {
    auto accepted = acceptor_.async_accept(asio::make_strand(io_), asio::use_future);
    const uint16_t port = acceptor_.local_endpoint().port();
    auto client = asio::co_spawn(
        asio::make_strand(io_),
        [this, port]() -> awaitable<std::shared_ptr<amst::Connection>> {
          auto c = co_await amst::Connect("127.0.0.1", port, metrics_, 5000ms);
          if (!c.ok()) co_return nullptr;
          co_return std::shared_ptr<amst::Connection>(std::move(c).value());
        },
        asio::use_future);
    auto src = client.get();
    EXPECT_NE(src, nullptr);
    auto dst = std::make_shared<amst::Connection>(accepted.get(), metrics_);
    src->set_protocol(3);
    dst->set_protocol(3);
    return {src, dst};
  }

  // Reads PAGES frames into `pages` until StreamEnd; a stream that fails (or that the test
  // cuts after `cut_after` batches) fails the migration as the engine's readers do.
  void Read(std::shared_ptr<amst::Connection> conn, std::shared_ptr<IncomingPages> pages,
            std::atomic<int>* batches, int cut_after = -1) {
    asio::co_spawn(
        conn->executor(),
        [conn, pages, batches, cut_after]() -> awaitable<void> {
          for (;;) {
            if (cut_after >= 0 && batches->load() >= cut_after) {
              conn->Close();  // the network path of this stream dies
              pages->Fail(Unavailable("data stream lost"));
              co_return;
            }
            auto frame = co_await conn->Receive(10000ms);
            if (!frame.ok()) {
              pages->Fail(Unavailable("data stream lost: " + frame.status().message()));
              co_return;
            }
            if (frame->header.type != amst::FrameType::kPages) co_return;  // StreamEnd
            ++*batches;
            if (!(co_await pages->Deliver(std::move(frame->payload))).ok()) co_return;
          }
        },
        asio::detached);
  }

  // Declared before the io_context and the pool: coroutine frames still suspended when the
  // test ends (a reader on a cut stream, a writer waiting for its window) are destroyed with
  // io_, and they touch these.
  obs::Metrics metrics_;
  hde::HdeStats hde_stats_{metrics_};
  amst::TokenBucket bucket_;
  DataPlaneContext ctx_;
  std::unique_ptr<vm::SyntheticGuest> source_;
  std::shared_ptr<vm::Guest> dest_;
  std::atomic<int> per_stream_[3] = {0, 0, 0};  // batches each reader saw

  asio::thread_pool pool_{2};
  asio::io_context io_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::vector<std::thread> threads_;
  asio::ip::tcp::acceptor acceptor_{io_};
};

TEST_F(DataPlaneTest, StripesOverThreeStreamsAndReassemblesInOrder) {
  OutgoingPages::Options opts;
  opts.batch_pages = 64;  // 64 batches for 16 MiB: plenty of interleaving
  auto out = std::make_shared<OutgoingPages>(ctx_, opts, *source_);
  auto in = std::make_shared<IncomingPages>(ctx_, 3, dest_, nullptr);
  for (int s = 0; s < 3; ++s) {
    auto [src, dst] = Pair();
    Read(dst, in, &per_stream_[s]);
    out->AddStream(src, /*primary=*/s == 0);
  }
  auto sent = asio::co_spawn(
      asio::make_strand(io_),
      [out]() -> awaitable<Status> {
        Status st = co_await out->SendRound(1, nullptr, 1.25e9, nullptr);
        co_await out->Finish();
        co_return st;
      },
      asio::use_future);
  ASSERT_TRUE(sent.get().ok());
  auto applied = asio::co_spawn(asio::make_strand(io_), in->WaitApplied(out->batches(), 10000ms),
                                asio::use_future);
  ASSERT_TRUE(applied.get().ok());
  EXPECT_EQ(out->batches(), 64u);
  EXPECT_EQ(in->applied(), 64u);
  // Every stream carried batches, so they arrived interleaved and were put back in order.
  for (auto& n : per_stream_) EXPECT_GT(n.load(), 0);
  EXPECT_EQ(source_->Digest(), dest_->Digest());
  EXPECT_EQ(out->logical_bytes(), 16ull << 20);
}

TEST_F(DataPlaneTest, ALostStreamFailsTheMigrationAndNothingPastTheGapIsApplied) {
  OutgoingPages::Options opts;
  opts.batch_pages = 64;
  auto out = std::make_shared<OutgoingPages>(ctx_, opts, *source_);
  auto in = std::make_shared<IncomingPages>(ctx_, 3, dest_, nullptr);
  for (int s = 0; s < 3; ++s) {
    auto [src, dst] = Pair();
    Read(dst, in, &per_stream_[s], /*cut_after=*/s == 2 ? 2 : -1);
    out->AddStream(src, s == 0);
  }
  auto sent = asio::co_spawn(
      asio::make_strand(io_),
      [out]() -> awaitable<Status> {
        Status st = co_await out->SendRound(1, nullptr, 1.25e9, nullptr);
        if (st.ok()) co_await out->Finish();
        co_return st;
      },
      asio::use_future);
  (void)sent.get();  // the writes may have fitted in socket buffers: the source cannot tell
  auto applied = asio::co_spawn(asio::make_strand(io_), in->WaitApplied(out->batches(), 5000ms),
                                asio::use_future);
  Status st = applied.get();
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
  EXPECT_LT(in->applied(), out->batches());
  EXPECT_NE(source_->Digest(), dest_->Digest());
}

TEST_F(DataPlaneTest, AStreamThatJoinsAfterFinishEndsCleanly) {
  // The stream controller opened one more stream; its join completed just after the last
  // round: the destination already counts it, so it must end with StreamEnd, not vanish.
  OutgoingPages::Options opts;
  opts.batch_pages = 256;
  auto out = std::make_shared<OutgoingPages>(ctx_, opts, *source_);
  auto in = std::make_shared<IncomingPages>(ctx_, 3, dest_, nullptr);
  auto [src, dst] = Pair();
  Read(dst, in, &per_stream_[0]);
  out->AddStream(src, /*primary=*/true);
  auto sent = asio::co_spawn(
      asio::make_strand(io_),
      [out]() -> awaitable<Status> {
        Status st = co_await out->SendRound(1, nullptr, 1.25e9, nullptr);
        co_await out->Finish();
        co_return st;
      },
      asio::use_future);
  ASSERT_TRUE(sent.get().ok());
  auto [late_src, late_dst] = Pair();
  Read(late_dst, in, &per_stream_[1]);
  EXPECT_FALSE(out->AddStream(late_src, /*primary=*/false));
  auto applied = asio::co_spawn(asio::make_strand(io_), in->WaitApplied(out->batches(), 10000ms),
                                asio::use_future);
  ASSERT_TRUE(applied.get().ok());
  // The late reader saw StreamEnd (a lost stream would have failed the migration).
  std::this_thread::sleep_for(300ms);
  EXPECT_TRUE(in->error().ok()) << in->error().ToString();
  EXPECT_EQ(per_stream_[1].load(), 0);
  EXPECT_EQ(source_->Digest(), dest_->Digest());
}

}  // namespace
}  // namespace dwcp::migration
