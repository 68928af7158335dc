#include "migration/data_plane.h"

#include <algorithm>
#include <asio/experimental/as_tuple.hpp>
#include <numeric>

#include "amst/frame.h"
#include "hde/hde_format.h"
#include "obs/log.h"

namespace dwcp::migration {
namespace {

using asio::awaitable;
using asio::use_awaitable;
using asio::experimental::as_tuple;

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

}  // namespace

uint64_t BatchBufferBound(uint64_t pages) {
  // A page costs at most its content plus an entry header (kind and varint index); the
  // batch adds its header. Rounded up generously: the bound only has to be an upper bound.
  return pages * (vm::kPageSize + 16) + 4096;
}

const char* RoundTotals::main_algorithm(bool v3) const {
  if (!v3) return "none";
  int best = 0;
  for (int c = 1; c < hde::kCodecCount; ++c) {
    if (batches_by_codec[c] > batches_by_codec[best]) best = c;
  }
  return hde::CodecName(static_cast<hde::Codec>(best));
}

// ---------------------------------------------------------------------------------------
// Source.

struct OutgoingPages::Batch {
  uint32_t round = 0;
  uint64_t seq = 0;
  uint64_t pages = 0;
  std::vector<uint8_t> legacy;  // v1 payload
  hde::EncodedBatch encoded;    // v3 payload and stats
  bool v3 = false;
  double encode_seconds = 0;
  BufferBudget::Charge charge;  // from planning until written (DataPlaneContext::buffers)

  std::span<const uint8_t> payload() const {
    return v3 ? encoded.payload() : std::span<const uint8_t>(legacy);
  }
};

struct OutgoingPages::Stream {
  std::shared_ptr<amst::Connection> conn;
  bool primary = false;
  std::atomic<bool> retire{false};
  std::atomic<bool> ended{false};
  std::atomic<uint64_t> wire{0};  // conn->wire_bytes_sent(), refreshed by the writer
  uint64_t batches = 0;           // writer only
};

OutgoingPages::OutgoingPages(DataPlaneContext context, Options options, vm::Guest& guest)
    : ctx_(std::move(context)),
      options_(std::move(options)),
      guest_(guest),
      ready_(ctx_.io, options_.window),
      window_(ctx_.io, options_.window),
      exited_(ctx_.io, 1024) {
  for (uint32_t i = 0; i < options_.window; ++i) window_.try_send(asio::error_code{}, 0);
  if (options_.protocol >= 3) {
    encoder_ = std::make_unique<hde::PageEncoder>(options_.hde, guest_.page_count(), *ctx_.clock);
  }
}

OutgoingPages::~OutgoingPages() = default;

bool OutgoingPages::AddStream(std::shared_ptr<amst::Connection> stream, bool primary) {
  if (closing()) {
    if (!primary && error().ok()) {
      auto executor = stream->executor();
      asio::co_spawn(executor, EndUnusedStream(std::move(stream)), asio::detached);
    } else {
      stream->Close();
    }
    return false;
  }
  auto s = std::make_shared<Stream>();
  s->conn = std::move(stream);
  s->primary = primary;
  {
    std::lock_guard lock(mu_);
    all_streams_.push_back(s);
  }
  ++streams_;
  ++started_writers_;
  auto executor = s->conn->executor();
  asio::co_spawn(executor, WriterLoop(std::move(s)), asio::detached);
  return true;
}

awaitable<void> OutgoingPages::EndUnusedStream(std::shared_ptr<amst::Connection> stream) {
  auto self = shared_from_this();
  wire::Control end;
  end.mutable_stream_end()->set_batches(0);
  (void)co_await stream->SendControl(end, options_.io_timeout);  // best effort: it is unused
  stream->Close();
}

bool OutgoingPages::RetireStream() {
  std::lock_guard lock(mu_);
  for (auto it = all_streams_.rbegin(); it != all_streams_.rend(); ++it) {
    auto& s = *it;
    if (!s->primary && !s->retire && !s->ended) {
      s->retire = true;
      return true;
    }
  }
  return false;
}

void OutgoingPages::SetError(const Status& status) {
  {
    std::lock_guard lock(mu_);
    if (!error_.ok()) return;
    error_ = status;
  }
  // Wake the planner (waiting for a window token) and every writer.
  window_.close();
  ready_.close();
}

Status OutgoingPages::error() const {
  std::lock_guard lock(mu_);
  return error_;
}

void OutgoingPages::Close() {
  SetError(Aborted("data streams closed"));
  std::lock_guard lock(mu_);
  for (auto& s : all_streams_) s->conn->Close();
}

uint64_t OutgoingPages::extra_wire_bytes() const {
  std::lock_guard lock(mu_);
  uint64_t n = 0;
  for (auto& s : all_streams_) {
    if (!s->primary) n += s->wire;
  }
  return n;
}

double OutgoingPages::LinkBandwidth() const {
  std::lock_guard lock(mu_);
  double sum = 0;
  for (auto& s : all_streams_) {
    if (!s->ended) sum += s->conn->SampleLink().bandwidth_bytes_per_second;
  }
  return sum;
}

amst::LinkSample OutgoingPages::SampleLink() const {
  std::lock_guard lock(mu_);
  for (auto& s : all_streams_) {
    if (s->primary) return s->conn->SampleLink();
  }
  return {};
}

OutgoingPages::RoundLeaves OutgoingPages::round_leaves() const {
  std::lock_guard lock(mu_);
  return round_leaves_;
}

Result<std::vector<std::array<uint8_t, 32>>> IncomingPages::Leaves(uint64_t first_seq,
                                                                   uint64_t count) const {
  std::lock_guard lock(mu_);
  if (first_seq > leaves_.size() || count > leaves_.size() - first_seq) {
    return Status(FailedPrecondition("batches " + std::to_string(first_seq) + ".." +
                                     std::to_string(first_seq + count) + " are not all applied (" +
                                     std::to_string(leaves_.size()) + " are)"));
  }
  return std::vector<std::array<uint8_t, 32>>(leaves_.begin() + first_seq,
                                              leaves_.begin() + first_seq + count);
}

RoundTotals OutgoingPages::round_totals() const {
  std::lock_guard lock(mu_);
  return round_;
}

RoundTotals OutgoingPages::totals() const {
  std::lock_guard lock(mu_);
  return total_;
}

void OutgoingPages::Enqueue(std::shared_ptr<Batch> batch) {
  // Never full: a batch holds a window token, and the channel has room for every token.
  (void)ready_.try_send(asio::error_code{}, std::move(batch));
}

void OutgoingPages::RecordWritten(const Batch& b) {
  const uint64_t logical = b.pages * vm::kPageSize;
  const uint64_t payload = b.payload().size();
  logical_written_ += logical;
  payload_written_ += payload;
  ctx_.metrics->bytes_sent.Increment(static_cast<double>(logical));
  std::lock_guard lock(mu_);
  unwritten_.erase(b.seq);
  for (RoundTotals* t : {&round_, &total_}) {
    t->pages += b.pages;
    t->logical_bytes += logical;
    t->payload_bytes += payload;
    t->encode_seconds += b.encode_seconds;
    if (b.v3) {
      const auto& s = b.encoded.stats();
      t->zero_pages += s.zero_pages;
      t->dedup_pages += s.dedup_pages;
      t->delta_pages += s.delta_pages;
      ++t->batches_by_codec[static_cast<int>(s.codec)];
    } else {
      ++t->batches_by_codec[static_cast<int>(hde::Codec::kNone)];
    }
  }
}

awaitable<Status> OutgoingPages::Write(Stream& s, const Batch& b) {
  const auto payload = b.payload();
  const uint64_t frame_bytes = payload.size() + amst::kFrameHeaderSize;
  const auto now = ctx_.clock->Now();
  auto wait =
      ctx_.node_bucket ? ctx_.node_bucket->Take(frame_bytes, now) : std::chrono::nanoseconds(0);
  if (options_.migration_bucket) {
    wait = std::max(wait, options_.migration_bucket->Take(frame_bytes, now));
  }
  if (wait.count() > 0) {
    asio::steady_timer pacer(co_await asio::this_coro::executor);
    pacer.expires_after(wait);
    co_await pacer.async_wait(as_tuple(use_awaitable));
  }
  const auto t0 = std::chrono::steady_clock::now();
  Status st = co_await s.conn->Send(amst::FrameType::kPages, payload, options_.io_timeout);
  const auto busy =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  busy_ns_ += busy;
  if (ctx_.stream_busy_ns) *ctx_.stream_busy_ns += busy;
  s.wire = s.conn->wire_bytes_sent();
  if (st.ok()) {
    ++s.batches;
    RecordWritten(b);
  }
  co_return st;
}

awaitable<void> OutgoingPages::WriterLoop(std::shared_ptr<Stream> s) {
  auto self = shared_from_this();
  bool clean = false;
  for (;;) {
    if (s->retire) {
      clean = true;
      break;
    }
    auto [ec, batch] = co_await ready_.async_receive(as_tuple(use_awaitable));
    if (ec || !batch) {
      clean = error().ok();  // closed by Finish (clean) or by a failure
      break;
    }
    Status st = co_await Write(*s, *batch);
    (void)window_.try_send(asio::error_code{}, 0);  // the batch is out of flight
    if (!st.ok()) {
      SetError(st);
      break;
    }
  }
  if (!s->primary && clean) {
    // Tell the destination this stream carried everything it will: a stream that just
    // vanishes is a lost stream.
    wire::Control end;
    end.mutable_stream_end()->set_batches(s->batches);
    Status st = co_await s->conn->SendControl(end, options_.io_timeout);
    if (!st.ok()) SetError(st);
    s->wire = s->conn->wire_bytes_sent();
    s->conn->Close();
  }
  s->ended = true;
  --streams_;
  (void)exited_.try_send(asio::error_code{}, 0);
}

awaitable<Status> OutgoingPages::SendRound(uint32_t round, const std::vector<uint64_t>* indices,
                                           double link_bytes_per_second,
                                           const std::function<double()>& after_batch) {
  auto self = shared_from_this();
  const uint64_t total = indices ? indices->size() : guest_.page_count();
  {
    std::lock_guard lock(mu_);
    round_ = RoundTotals{};
    round_leaves_ = RoundLeaves{next_seq_, {}};
  }
  std::vector<uint64_t> batch_indices;
  uint64_t i = 0;
  while (i < total) {
    auto [ec, unused] = co_await window_.async_receive(as_tuple(use_awaitable));
    if (Status e = error(); !e.ok()) co_return e;
    if (ec) co_return Aborted("data plane closed");
    // Bound the reordering a stalled stream can cause (Options::max_reorder).
    for (;;) {
      {
        std::lock_guard lock(mu_);
        if (unwritten_.empty() || next_seq_ - *unwritten_.begin() < options_.max_reorder) {
          unwritten_.insert(next_seq_);
          break;
        }
      }
      if (Status e = error(); !e.ok()) co_return e;
      asio::steady_timer wait(co_await asio::this_coro::executor);
      wait.expires_after(std::chrono::milliseconds(1));
      co_await wait.async_wait(as_tuple(use_awaitable));
    }
    const uint64_t n = std::min<uint64_t>(options_.batch_pages, total - i);
    auto batch = std::make_shared<Batch>();
    if (ctx_.buffers != nullptr) {
      // Backpressure: wait for room in the node's budget (the writers of every migration
      // give it back as batches leave).
      auto charge = co_await ctx_.buffers->Take(
          BatchBufferBound(n), nullptr, [this] { return error(); }, ctx_.buffer_wait);
      if (!charge.ok()) {
        SetError(charge.status());
        co_return charge.status();
      }
      batch->charge = std::move(charge).value();
    }
    batch->round = round;
    batch->seq = next_seq_++;
    batch->pages = n;
    batch->v3 = encoder_ != nullptr;
    if (indices) {
      batch_indices.assign(indices->begin() + i, indices->begin() + i + n);
    } else {
      batch_indices.resize(n);
      std::iota(batch_indices.begin(), batch_indices.end(), i);
    }
    if (encoder_) {
      Result<hde::PlannedBatch> planned = Status(Internal("unset"));
      {
        std::lock_guard lock(encoder_mu_);
        planned = encoder_->Plan(round, batch_indices, guest_, link_bytes_per_second);
      }
      if (!planned.ok()) {
        SetError(planned.status());
        co_return planned.status();
      }
      if (options_.hde.commit_leaves) {
        std::lock_guard lock(mu_);
        round_leaves_.leaves.push_back(planned->leaf());
      }
      auto p = std::make_shared<hde::PlannedBatch>(std::move(planned).value());
      asio::post(*ctx_.pool, [self, batch, p] {
        batch->encoded = self->encoder_->Compress(std::move(*p));
        const auto& st = batch->encoded.stats();
        batch->encode_seconds = st.encode_seconds();
        {
          std::lock_guard lock(self->encoder_mu_);
          self->encoder_->Observe(st);
        }
        self->ctx_.hde_stats->RecordEncoded(st);
        self->Enqueue(batch);
      });
    } else {
      const auto e0 = ctx_.clock->Now();
      legacy_encoder_.Reset(round);
      for (uint64_t index : batch_indices) legacy_encoder_.Add(index, guest_.PageData(index));
      auto payload = legacy_encoder_.Finish();
      batch->legacy.assign(payload.begin(), payload.end());
      batch->encode_seconds = Seconds(ctx_.clock->Now() - e0);
      auto& m = *ctx_.metrics;
      const double logical = static_cast<double>(n * vm::kPageSize);
      m.encode_latency.Observe(batch->encode_seconds);
      m.hde_input_bytes.Increment(logical);
      m.hde_output_bytes.Increment(static_cast<double>(payload.size()));
      m.compression_v1.Observe(logical / static_cast<double>(payload.size()));
      m.pages_raw.Increment(static_cast<double>(n));
      Enqueue(batch);
    }
    i += n;
    if (after_batch) link_bytes_per_second = after_batch();
  }
  // The round barrier: every token back means every batch of the round is written.
  for (uint32_t k = 0; k < options_.window; ++k) {
    auto [ec, unused] = co_await window_.async_receive(as_tuple(use_awaitable));
    if (ec) break;
  }
  if (Status e = error(); !e.ok()) co_return e;
  for (uint32_t k = 0; k < options_.window; ++k) window_.try_send(asio::error_code{}, 0);
  co_return Status::Ok();
}

awaitable<void> OutgoingPages::Finish() {
  auto self = shared_from_this();
  if (finished_.exchange(true)) co_return;
  ready_.close();
  const uint32_t writers = started_writers_;
  for (uint32_t k = 0; k < writers; ++k) {
    auto [ec, unused] = co_await exited_.async_receive(as_tuple(use_awaitable));
    if (ec) break;
  }
}

// ---------------------------------------------------------------------------------------
// Destination.

struct IncomingPages::Pending {
  std::vector<uint8_t> payload;  // never moved once parsed: `parsed` points into it
  hde::ParsedBatch parsed;
  std::shared_ptr<BufferBudget::Charge> charge;  // until applied (or dropped)
};

IncomingPages::IncomingPages(DataPlaneContext context, uint8_t protocol,
                             std::shared_ptr<vm::Guest> guest,
                             std::function<void(const Status&)> on_fail)
    : ctx_(std::move(context)),
      protocol_(protocol),
      guest_(std::move(guest)),
      on_fail_(std::move(on_fail)),
      decoder_(guest_->page_count(), hde::DecoderConfig{}, *ctx_.clock),
      in_flight_(ctx_.io, kMaxInFlight),
      reorder_(1024) {
  for (uint32_t i = 0; i < kMaxInFlight; ++i) in_flight_.try_send(asio::error_code{}, 0);
}

std::function<void(const Status&)> IncomingPages::FailLocked(const Status& why) {
  if (!error_.ok()) return nullptr;
  error_ = why;
  return std::move(on_fail_);
}

void IncomingPages::Fail(const Status& why) {
  std::function<void(const Status&)> callback;
  {
    std::lock_guard lock(mu_);
    callback = FailLocked(why);
  }
  if (callback) callback(why);
}

Status IncomingPages::error() const {
  std::lock_guard lock(mu_);
  return error_;
}

uint64_t IncomingPages::applied() const {
  std::lock_guard lock(mu_);
  return applied_;
}

uint64_t IncomingPages::pages_applied() const {
  std::lock_guard lock(mu_);
  return pages_;
}

Status IncomingPages::ApplyLocked(const Pending& p) {
  if (p.parsed.round() < round_) {
    return ProtocolError("batch " + std::to_string(p.parsed.seq()) + " of round " +
                         std::to_string(p.parsed.round()) + " after round " +
                         std::to_string(round_));
  }
  hde::DecodeStats ds;
  std::array<uint8_t, 32> leaf{};
  Status st = decoder_.Apply(p.parsed, *guest_, &ds, keep_leaves_ ? &leaf : nullptr);
  if (!st.ok()) {
    ctx_.hde_stats->RecordRejected(st);
    return st;
  }
  if (keep_leaves_) leaves_.push_back(leaf);  // applied in sequence order: index = seq
  round_ = p.parsed.round();
  ++applied_;
  pages_ += ds.pages;
  ctx_.hde_stats->RecordDecoded(ds);
  ctx_.metrics->bytes_received.Increment(static_cast<double>(ds.output_bytes));
  return Status::Ok();
}

Status IncomingPages::DeliverOnPool(std::vector<uint8_t> payload,
                                    std::shared_ptr<BufferBudget::Charge> charge) {
  auto pending = std::make_shared<Pending>();
  pending->charge = std::move(charge);
  pending->payload = std::move(payload);
  auto parsed = decoder_.Parse(pending->payload);  // const, thread-safe
  std::function<void(const Status&)> callback;
  Status st;
  {
    std::lock_guard lock(mu_);
    if (!error_.ok()) return error_;
    if (!parsed.ok()) {
      ctx_.hde_stats->RecordRejected(parsed.status());
      st = parsed.status();
    } else {
      pending->parsed = std::move(parsed).value();
      st = reorder_.Offer(pending->parsed.seq(), pending);
    }
    while (st.ok()) {
      auto next = reorder_.Pop();
      if (!next) break;
      st = ApplyLocked(**next);
    }
    if (!st.ok()) callback = FailLocked(st);
  }
  if (st.code() == StatusCode::kDataLoss) ctx_.metrics->CountByzantine("corrupt_batch");
  if (callback) callback(st);
  return st;
}

awaitable<Status> IncomingPages::Deliver(std::vector<uint8_t> payload) {
  payload_bytes_ += payload.size();
  if (protocol_ < 3) {
    // v1: one stream, raw pages in order; applied on the reader's coroutine.
    std::function<void(const Status&)> callback;
    Status st;
    {
      std::lock_guard lock(mu_);
      if (!error_.ok()) co_return error_;
      uint32_t round = 0;
      hde::BatchStats stats;
      st = hde::ApplyPageBatch(payload, *guest_, &round, &stats);
      if (st.ok() && round < round_) {
        st = ProtocolError("pages of round " + std::to_string(round) + " after round " +
                           std::to_string(round_));
      }
      if (st.ok()) {
        round_ = round;
        ++applied_;
        pages_ += stats.pages;
        ctx_.metrics->bytes_received.Increment(static_cast<double>(stats.pages * vm::kPageSize));
      } else {
        callback = FailLocked(st);
      }
    }
    if (callback) callback(st);
    co_return st;
  }
  // v3: decode on the pool while this stream reads on. A token per batch in flight bounds
  // the memory; the pool returns it. Failures land in error_ (and on_fail_).
  auto self = shared_from_this();
  std::shared_ptr<BufferBudget::Charge> charge;
  if (ctx_.buffers != nullptr) {
    // The next batch in sequence always goes ahead: it lets every waiting one apply.
    auto header = hde::ReadHeader(payload);
    const uint64_t seq = header.ok() ? header->seq : ~uint64_t{0};
    auto taken = co_await ctx_.buffers->Take(
        payload.size(),
        [this, seq, bad = !header.ok()] {
          std::lock_guard lock(mu_);
          return bad || reorder_.next_seq() == seq;
        },
        [this] { return error(); }, ctx_.buffer_wait);
    if (!taken.ok()) {
      Fail(taken.status());
      co_return taken.status();
    }
    charge = std::make_shared<BufferBudget::Charge>(std::move(taken).value());
  }
  auto [ec, unused] = co_await in_flight_.async_receive(as_tuple(use_awaitable));
  if (ec) co_return Aborted("data plane closed");
  if (Status e = error(); !e.ok()) {
    (void)in_flight_.try_send(asio::error_code{}, 0);
    co_return e;
  }
  asio::post(*ctx_.pool, [self, p = std::move(payload), charge = std::move(charge)]() mutable {
    (void)self->DeliverOnPool(std::move(p), std::move(charge));
    (void)self->in_flight_.try_send(asio::error_code{}, 0);
  });
  co_return Status::Ok();
}

awaitable<Status> IncomingPages::WaitApplied(uint64_t batches, std::chrono::milliseconds deadline,
                                             bool at_least) {
  auto self = shared_from_this();
  asio::steady_timer timer(co_await asio::this_coro::executor);
  const auto until = std::chrono::steady_clock::now() + deadline;
  for (;;) {
    {
      std::lock_guard lock(mu_);
      if (!error_.ok()) co_return error_;
      if (at_least && applied_ >= batches) co_return Status::Ok();
      if (applied_ == batches && reorder_.pending() == 0) co_return Status::Ok();
      if (applied_ > batches || (applied_ == batches && reorder_.pending() > 0)) {
        co_return ProtocolError("source announced " + std::to_string(batches) +
                                " batches but sent more");
      }
    }
    if (std::chrono::steady_clock::now() >= until) {
      co_return DeadlineExceeded("only " + std::to_string(applied()) + " of " +
                                 std::to_string(batches) + " page batches arrived");
    }
    timer.expires_after(std::chrono::milliseconds(2));
    co_await timer.async_wait(as_tuple(use_awaitable));
  }
}

}  // namespace dwcp::migration
