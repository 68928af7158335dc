#include "migration/buffer_budget.h"

#include <asio/experimental/as_tuple.hpp>

namespace dwcp::migration {

bool BufferBudget::TryTake(uint64_t bytes, Charge* out) {
  uint64_t used = used_.load();
  do {
    if (limit_ != 0 && bytes != 0 && used + bytes > limit_) return false;
  } while (!used_.compare_exchange_weak(used, used + bytes));
  *out = Charge(this, bytes);
  return true;
}

BufferBudget::Charge BufferBudget::Force(uint64_t bytes) {
  used_ += bytes;
  return Charge(this, bytes);
}

asio::awaitable<Result<BufferBudget::Charge>> BufferBudget::Take(
    uint64_t bytes, std::function<bool()> force, std::function<Status()> stop,
    std::chrono::milliseconds deadline) {
  Charge charge;
  if (TryTake(bytes, &charge)) co_return charge;
  ++waits_;
  if (metrics_ != nullptr) metrics_->CountLimitRejection("buffer_memory");
  const auto until = std::chrono::steady_clock::now() + deadline;
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (;;) {
    if (stop) {
      if (Status st = stop(); !st.ok()) co_return st;
    }
    if (force && force()) co_return Force(bytes);
    if (TryTake(bytes, &charge)) co_return charge;
    if (std::chrono::steady_clock::now() >= until) {
      co_return Status(
          DeadlineExceeded("data-plane buffers stayed full for " +
                           std::to_string(deadline.count()) + " ms: " + std::to_string(used()) +
                           " of " + std::to_string(limit_) + " bytes in use (max_buffer_memory)"));
    }
    timer.expires_after(std::chrono::milliseconds(1));
    co_await timer.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
  }
}

}  // namespace dwcp::migration
