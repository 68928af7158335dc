#include "migration/buffer_budget.h"

#include <gtest/gtest.h>

#include <asio.hpp>
#include <chrono>
#include <optional>

namespace dwcp::migration {
namespace {

using namespace std::chrono_literals;

TEST(BufferBudgetTest, TakesWhatFitsAndGivesItBackOnRelease) {
  BufferBudget budget(100, nullptr);
  BufferBudget::Charge a, b;
  ASSERT_TRUE(budget.TryTake(60, &a));
  EXPECT_EQ(budget.used(), 60u);
  EXPECT_FALSE(budget.TryTake(41, &b));
  EXPECT_EQ(b.bytes(), 0u);
  ASSERT_TRUE(budget.TryTake(40, &b));
  EXPECT_EQ(budget.used(), 100u);
  {
    BufferBudget::Charge forced = budget.Force(10);  // past the limit, on purpose
    EXPECT_EQ(budget.used(), 110u);
  }
  EXPECT_EQ(budget.used(), 100u);
  BufferBudget::Charge moved = std::move(a);
  EXPECT_EQ(budget.used(), 100u);
  moved.Release();
  b = BufferBudget::Charge();
  EXPECT_EQ(budget.used(), 0u);
}

TEST(BufferBudgetTest, UnlimitedWhenZero) {
  BufferBudget budget(0, nullptr);
  BufferBudget::Charge c;
  EXPECT_TRUE(budget.TryTake(1ull << 40, &c));
}

TEST(BufferBudgetTest, WaitersProceedWhenRoomFreesAndCountOnce) {
  obs::Metrics metrics;
  BufferBudget budget(100, &metrics);
  asio::io_context io;
  BufferBudget::Charge held;
  ASSERT_TRUE(budget.TryTake(80, &held));
  std::optional<Result<BufferBudget::Charge>> got;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        got.emplace(co_await budget.Take(50, nullptr, nullptr, 5s));
      },
      asio::detached);
  asio::steady_timer release(io);
  release.expires_after(20ms);
  release.async_wait([&](const asio::error_code&) { held.Release(); });
  io.run();
  ASSERT_TRUE(got.has_value());
  ASSERT_TRUE(got->ok()) << got->status().ToString();
  EXPECT_EQ(budget.used(), 50u);
  EXPECT_EQ(budget.waits(), 1u);
}

TEST(BufferBudgetTest, ForcedOrStoppedOrTimedOut) {
  BufferBudget budget(10, nullptr);
  BufferBudget::Charge held;
  ASSERT_TRUE(budget.TryTake(10, &held));
  asio::io_context io;
  std::optional<Result<BufferBudget::Charge>> forced, stopped, timed_out;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        forced.emplace(co_await budget.Take(
            5, [] { return true; }, nullptr, 5s));
        stopped.emplace(co_await budget.Take(
            5, nullptr, [] { return Aborted("migration failed"); }, 5s));
        timed_out.emplace(co_await budget.Take(5, nullptr, nullptr, 20ms));
      },
      asio::detached);
  io.run();
  ASSERT_TRUE(forced->ok());
  EXPECT_EQ((*forced)->bytes(), 5u);
  EXPECT_EQ(stopped->status().code(), StatusCode::kAborted);
  EXPECT_EQ(timed_out->status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(timed_out->status().message().find("max_buffer_memory"), std::string::npos);
}

}  // namespace
}  // namespace dwcp::migration
