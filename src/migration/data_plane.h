// The data plane of one migration: page batches from the source's guest to the
// destination's, over one or more AMST streams (docs/amst.md, docs/hde.md, docs/protocol.md).
//
// Source (OutgoingPages). v3: batches are planned in order on the migration's coroutine
// (hde::PageEncoder::Plan), compressed on the engine's worker pool, and written by one writer
// coroutine per stream, each taking the next finished batch (striping); every batch carries
// its sequence number. v1: raw pages (hde::PageBatchEncoder) on the primary stream only, in
// order. Writers pace themselves through the per-migration and per-node token buckets. At
// most `window` batches are between planning and written; a round ends when all of its
// batches are written (the round barrier), so control messages on the primary stream never
// overtake page data of their round.
//
// Destination (IncomingPages). Every stream's reader hands PAGES payloads to Deliver(),
// which parses them on the pool; a reorderer releases them to the decoder strictly in
// sequence; the decoder verifies each batch's content hash before it writes the guest. The
// first bad batch, or a stream lost with batches outstanding, fails the whole migration.
#pragma once

#include <array>
#include <asio.hpp>
#include <asio/experimental/concurrent_channel.hpp>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <vector>

#include "amst/connection.h"
#include "amst/reorderer.h"
#include "amst/token_bucket.h"
#include "common/clock.h"
#include "common/status.h"
#include "hde/hde_stats.h"
#include "hde/page_codec.h"
#include "hde/page_decoder.h"
#include "hde/page_encoder.h"
#include "migration/buffer_budget.h"
#include "obs/metrics.h"
#include "vm/guest.h"

namespace dwcp::migration {

// Engine-owned things every migration's data plane uses. All outlive the migrations.
struct DataPlaneContext {
  asio::any_io_executor io;           // the engine's io_context
  asio::thread_pool* pool = nullptr;  // encoding and decoding
  obs::Metrics* metrics = nullptr;
  hde::HdeStats* hde_stats = nullptr;
  Clock* clock = nullptr;
  amst::TokenBucket* node_bucket = nullptr;         // the per-node cap
  std::atomic<uint64_t>* stream_busy_ns = nullptr;  // time writers spend in writes
  // The node-wide budget of batches in flight (null: unlimited): a source charges each batch
  // from planning until written, a destination each v3 batch from receipt until applied.
  BufferBudget* buffers = nullptr;
  // How long a batch may wait for room in `buffers` before the migration fails.
  std::chrono::milliseconds buffer_wait{15000};
};

// What a source charges to the buffer budget for a batch of `pages` pages: an upper bound
// of its encoded size (raw pages plus per-page and batch headers).
uint64_t BatchBufferBound(uint64_t pages);

// What a round (or the whole migration) did, for spans and the migration record.
struct RoundTotals {
  uint64_t pages = 0;
  uint64_t zero_pages = 0, dedup_pages = 0, delta_pages = 0;
  uint64_t logical_bytes = 0;  // pages × page size
  uint64_t payload_bytes = 0;  // encoded batches
  double encode_seconds = 0;   // plan + compress, summed over batches
  uint64_t batches_by_codec[hde::kCodecCount] = {};
  // The codec most batches of the round went out with ("raw" for v1).
  const char* main_algorithm(bool v3) const;
};

// Always owned by a std::shared_ptr (writers and pool tasks keep it alive).
class OutgoingPages : public std::enable_shared_from_this<OutgoingPages> {
 public:
  struct Options {
    uint8_t protocol = 3;
    hde::EncoderConfig hde;
    uint32_t batch_pages = 256;
    uint32_t window = 16;  // batches between planned and written, at most
    // A batch is not planned while one `max_reorder` or more sequence numbers before it is
    // still unwritten: a stalled stream must not let the others run so far ahead that the
    // destination's reorder buffer (1024 batches) overflows.
    uint32_t max_reorder = 256;
    std::chrono::milliseconds io_timeout{15000};
    std::shared_ptr<amst::TokenBucket> migration_bucket;  // the per-migration cap
  };

  // `guest` must outlive this object. Options must be valid (hde validated by the caller).
  OutgoingPages(DataPlaneContext context, Options options, vm::Guest& guest);
  ~OutgoingPages();
  OutgoingPages(const OutgoingPages&) = delete;
  OutgoingPages& operator=(const OutgoingPages&) = delete;

  // Starts a writer on `stream` (connected, handshaken and, unless primary, joined). Its
  // coroutine runs on the stream's executor. False once Finish() or Close() ran: after a
  // failure the stream is closed; after Finish() it first says StreamEnd (no batches), since
  // the destination counts a joined stream that just vanishes as lost.
  bool AddStream(std::shared_ptr<amst::Connection> stream, bool primary);
  // Finish() ran or the data plane failed: a stream still being opened is not needed.
  bool closing() const { return finished_ || !error().ok(); }
  // Asks one additional stream to end after its current batch. False when only the primary
  // is left.
  bool RetireStream();

  // Sends pages `indices` (all pages in order when null) as batches of `round`, choosing codecs
  // for `link_bytes_per_second`. Returns once every batch is written, or with the first
  // error. `after_batch` runs on the caller's coroutine after each planned batch and returns
  // the link rate to use from then on (it may also open or retire streams).
  asio::awaitable<Status> SendRound(uint32_t round, const std::vector<uint64_t>* indices,
                                    double link_bytes_per_second,
                                    const std::function<double()>& after_batch);

  // Ends every writer: additional streams send StreamEnd and close, the primary's writer
  // stops (the connection stays open for control). Waits for all of them. Idempotent; call
  // only between rounds.
  asio::awaitable<void> Finish();
  // Fails pending work and closes every stream, the primary included. Thread-safe.
  void Close();

  // The first failure of a writer, the planner or Close(); OK while healthy.
  Status error() const;
  uint32_t streams() const { return streams_.load(); }
  uint64_t batches() const { return next_seq_; }
  uint64_t logical_bytes() const { return logical_written_.load(); }
  uint64_t payload_bytes() const { return payload_written_.load(); }
  // Time the writers spent in writes (summed over streams).
  uint64_t busy_ns() const { return busy_ns_.load(); }
  // Bytes on the additional streams, framing included (the primary's are its own count).
  uint64_t extra_wire_bytes() const;
  // The kernel's delivery-rate estimate summed over the open streams (0: unknown).
  double LinkBandwidth() const;
  // One stream's TCP_INFO (the primary's), for mode detection.
  amst::LinkSample SampleLink() const;
  RoundTotals round_totals() const;  // the round in progress or last sent
  // With Options::hde.commit_leaves: the leaves of the last round's batches in sequence
  // order, from sequence number `first_seq` (for its RoundCommitment).
  struct RoundLeaves {
    uint64_t first_seq = 0;
    std::vector<std::array<uint8_t, 32>> leaves;
  };
  RoundLeaves round_leaves() const;
  RoundTotals totals() const;        // every round

 private:
  struct Batch;
  struct Stream;

  asio::awaitable<void> WriterLoop(std::shared_ptr<Stream> stream);
  // Ends a stream that joined after Finish(): StreamEnd with no batches, then close.
  asio::awaitable<void> EndUnusedStream(std::shared_ptr<amst::Connection> stream);
  asio::awaitable<Status> Write(Stream& stream, const Batch& batch);
  void Enqueue(std::shared_ptr<Batch> batch);
  void RecordWritten(const Batch& batch);
  void SetError(const Status& status);

  DataPlaneContext ctx_;
  Options options_;
  vm::Guest& guest_;
  std::unique_ptr<hde::PageEncoder> encoder_;    // v3
  std::mutex encoder_mu_;                        // Plan and Observe
  hde::PageBatchEncoder legacy_encoder_{false};  // v1
  using BatchChannel =
      asio::experimental::concurrent_channel<void(asio::error_code, std::shared_ptr<Batch>)>;
  // (Asio 1.22 cannot instantiate a channel of void(error_code): the int is unused.)
  using TokenChannel = asio::experimental::concurrent_channel<void(asio::error_code, int)>;
  BatchChannel ready_;   // finished batches for the writers
  TokenChannel window_;  // one token per batch allowed in flight
  TokenChannel exited_;  // one message per writer that ended
  uint64_t next_seq_ = 0;
  std::atomic<bool> finished_{false};  // Finish() ran: no stream may be added
  std::atomic<uint32_t> streams_{0};
  std::atomic<uint32_t> started_writers_{0};
  std::atomic<uint64_t> logical_written_{0}, payload_written_{0}, busy_ns_{0};
  mutable std::mutex mu_;  // below
  std::vector<std::shared_ptr<Stream>> all_streams_;
  std::set<uint64_t> unwritten_;  // planned, not yet written
  Status error_;
  RoundTotals round_, total_;
  RoundLeaves round_leaves_;
};

// Always owned by a std::shared_ptr (pool tasks keep it alive).
class IncomingPages : public std::enable_shared_from_this<IncomingPages> {
 public:
  // `guest` is the paused, empty guest being filled. `on_fail` runs once, on the first
  // failure (e.g. to close the primary connection so its reader wakes up).
  IncomingPages(DataPlaneContext context, uint8_t protocol, std::shared_ptr<vm::Guest> guest,
                std::function<void(const Status&)> on_fail);

  // Hands one PAGES payload from any stream to the pool, which decodes it and applies it in
  // sequence order (waiting batches are kept until their turn). Waits while kMaxInFlight
  // batches are being decoded, and (v3) while the node's buffer budget is full, unless this
  // batch is the next to apply (which always goes ahead, so waiting never deadlocks). Returns the
  // migration's error once it has one; a batch that fails later shows in error() and WaitApplied().
  asio::awaitable<Status> Deliver(std::vector<uint8_t> payload);
  // Waits until `batches` batches are applied, the migration failed, or `deadline` passed.
  // More than `batches` (applied or waiting) is a protocol error, unless `at_least`: then
  // later batches may already be arriving.
  asio::awaitable<Status> WaitApplied(uint64_t batches, std::chrono::milliseconds deadline,
                                      bool at_least = false);
  // Fails the migration (e.g. a data stream was lost). The first failure wins.
  void Fail(const Status& why);
  // Keeps every applied batch's round-commitment leaf (call before the first batch).
  void KeepLeaves() { keep_leaves_ = true; }
  // The leaves of batches first_seq .. first_seq+count-1, all applied; FailedPrecondition
  // while some are not.
  Result<std::vector<std::array<uint8_t, 32>>> Leaves(uint64_t first_seq, uint64_t count) const;

  Status error() const;
  uint64_t applied() const;
  uint64_t pages_applied() const;
  uint64_t payload_bytes() const { return payload_bytes_.load(); }  // PAGES payloads taken

 private:
  struct Pending;
  Status DeliverOnPool(std::vector<uint8_t> payload, std::shared_ptr<BufferBudget::Charge> charge);
  Status ApplyLocked(const Pending& p);
  // Records the first failure; returns the callback to run (outside the lock) if it was.
  std::function<void(const Status&)> FailLocked(const Status& why);

  static constexpr uint32_t kMaxInFlight = 16;
  // (Asio 1.22 cannot instantiate a channel of void(error_code): the int is unused.)
  using TokenChannel = asio::experimental::concurrent_channel<void(asio::error_code, int)>;

  DataPlaneContext ctx_;
  uint8_t protocol_;
  std::shared_ptr<vm::Guest> guest_;
  std::function<void(const Status&)> on_fail_;
  hde::PageDecoder decoder_;
  TokenChannel in_flight_;  // one token per batch being decoded
  std::atomic<uint64_t> payload_bytes_{0};
  mutable std::mutex mu_;  // below
  amst::Reorderer<std::shared_ptr<Pending>> reorder_;
  uint64_t applied_ = 0;
  uint64_t pages_ = 0;
  uint32_t round_ = 0;  // highest round applied: batches never go back in rounds
  Status error_;
  std::atomic<bool> keep_leaves_{false};
  std::vector<std::array<uint8_t, 32>> leaves_;  // by sequence number
};

}  // namespace dwcp::migration
