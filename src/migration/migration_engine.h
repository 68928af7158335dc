// The migration engine: iterative pre-copy live migration of a local guest to a peer node,
// and the receiving side. The flow and its safety argument are in docs/migration.md.
//
// Safety contract: the VM record in the state store names the one node allowed to run the
// VM, under a fencing epoch. The source changes owner (epoch + 1) only after the
// destination verified the content digest; the destination resumes only once the store
// says it owns the VM at that epoch; anything that fails before the commit leaves (or puts)
// the VM running on the source.
#pragma once

#include <array>
#include <asio.hpp>
#include <asio/ssl.hpp>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "acp/round_commitment.h"
#include "acp/state_store.h"
#include "amst/mode_detector.h"
#include "amst/stream_controller.h"
#include "amst/token_bucket.h"
#include "common/clock.h"
#include "common/status.h"
#include "hde/hde_stats.h"
#include "hde/page_encoder.h"
#include "migration/buffer_budget.h"
#include "migration/data_plane.h"
#include "obs/metrics.h"
#include "pba/bandwidth_predictor.h"
#include "vm/vm_table.h"

namespace dwcp::amst {
class Connection;
}
namespace dwcp::wire {
class StreamJoin;
}
namespace dwcp::obs::trace {
class Tracer;
class Span;
struct SpanContext;
}  // namespace dwcp::obs::trace

namespace dwcp::migration {

// Called once per successful migration (source side), e.g. to feed anomaly detection.
struct FinishedMigration {
  double latency_seconds = 0;
  double throughput_bytes_per_second = 0;
  double compression_ratio = 0;  // logical / wire bytes
  std::string trace_id, vm_id, migration_id;
};
using MigrationObserver = std::function<void(const FinishedMigration&)>;

struct EngineConfig {
  std::string node_id;
  int64_t downtime_budget_ms = 300;
  uint32_t max_rounds = 30;
  bool force_on_round_limit = true;  // at the round limit: true = switch over, false = abort
  uint32_t batch_pages = 256;        // pages per PAGES frame (1 MiB of 4 KiB pages)
  std::vector<uint32_t> protocols = {3, 1};  // wire versions this node speaks
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds io_timeout{15000};         // any single frame send or receive
  std::chrono::milliseconds verify_timeout{120000};    // digest of a large guest
  std::chrono::milliseconds node_alive_window{10000};  // heartbeat age of a live node
  uint32_t max_tasks = 4096;  // concurrent migration coroutines (both directions) at most
  // Limits (docs/security.md#limits). Each refusal counts
  // dwcp_v3_limit_rejections_total{limit}; 0 in a count limit means unlimited.
  uint32_t max_frame_bytes = 4 * 1024 * 1024;  // AMST frame payload (amst/frame.h)
  uint32_t max_control_bytes = 64 * 1024;      // control message (a CONTROL frame's payload)
  uint32_t max_migrations = 16;                // running here, incoming + outgoing
  uint32_t max_migrations_per_peer = 4;        // with one peer node, both directions
  uint32_t max_connections = 1024;             // open on the data listener
  uint32_t max_connections_per_peer = 128;     // open on the data listener per remote IP
  std::chrono::milliseconds handshake_timeout{10000};  // accept to Hello/StreamJoin, TLS included
  uint64_t max_buffer_memory = 512ull << 20;  // page batches in flight (buffer_budget.h); 0: none
  // Mutual TLS 1.3 on data connections (amst/tls.h); both null = plain TCP.
  std::shared_ptr<asio::ssl::context> tls_client;
  std::shared_ptr<asio::ssl::context> tls_server;
  // With TLS: a peer's certificate must name the node id it claims (config
  // tls.check_node_id), on both ends of a connection.
  bool tls_check_node_id = true;
  // Link mode detection per peer; `pinned` fixes the mode (config `amst_mode`).
  amst::ModeDetectorConfig link_modes;
  // Parallel data streams per v3 migration (config `streams`, `min_streams`, `max_streams`).
  amst::StreamControllerConfig streams;
  // v3 page encoding (config `hde_*`); compress_threads is set from worker_threads.
  hde::EncoderConfig hde;
  uint32_t worker_threads = 0;        // encode/decode pool; 0 = one per core
  uint32_t batch_window = 16;         // batches between planned and written, per migration
  uint64_t node_bandwidth_limit = 0;  // bytes/s over all outgoing migrations; 0 = none
  MigrationObserver on_success;       // may be empty
  // Byzantine detection (docs/consensus.md): whether this node, receiving, asks the source
  // for signed round commitments — auto: when the link to the source is in internet mode.
  enum class Commitments { kAuto, kOn, kOff };
  Commitments round_commitments = Commitments::kAuto;
  std::shared_ptr<const acp::NodeKey> node_key;  // signs this node's commitments; null: none
  std::chrono::milliseconds quarantine{600000};  // how long a Byzantine peer is refused
};

// A peer this node refuses after a Byzantine detection.
struct QuarantineEntry {
  std::string peer;    // node id
  std::string reason;  // the dwcp_v3_acp_byzantine_detections_total reason
  std::string detail;
  int64_t since_ms = 0, until_ms = 0;
};

struct MigrationRequest {
  std::string vm_id;
  std::string dest_node;
  uint32_t protocol = 3;            // highest wire version to offer: 3 or 1
  int64_t downtime_budget_ms = -1;  // -1: EngineConfig's
  int64_t max_rounds = -1;          // -1: EngineConfig's
  int on_round_limit = -1;          // -1: EngineConfig's, 0 abort, 1 force
  uint64_t bandwidth_limit = 0;     // bytes/s, 0 = unlimited
};

// Creates the empty, paused guest an incoming migration fills.
using IncomingGuestFactory =
    std::function<Result<std::shared_ptr<vm::Guest>>(const vm::GuestSpec& spec)>;
// The default: a SyntheticGuest (vm/synthetic_guest.h).
IncomingGuestFactory SyntheticIncomingGuests();

// Thread-safe. Migrations run as coroutines on `io`, which the owner runs on several threads.
class MigrationEngine {
 public:
  MigrationEngine(EngineConfig config, acp::StateStore& store, vm::VmTable& vms,
                  obs::Metrics& metrics, Clock& clock, asio::io_context& io,
                  IncomingGuestFactory incoming_guests = SyntheticIncomingGuests(),
                  obs::trace::Tracer* tracer = nullptr);
  ~MigrationEngine();

  // Validates the request, records the migration and marks the VM migrating in one store
  // transaction, and starts it. Returns the new record (phase pending). Errors: NotFound
  // (VM, node), InvalidArgument (destination is the source, bad options),
  // FailedPrecondition (VM not running here, already migrating, destination down, this node
  // at max_migrations or max_migrations_per_peer with the destination), Aborted (shutting
  // down).
  Result<acp::MigrationRecord> Start(const MigrationRequest& request);

  // Binds the data listener and starts accepting incoming migrations.
  Status Listen(const std::string& host, uint16_t port);
  uint16_t listen_port() const { return listen_port_; }

  // Refuses new work, aborts every migration that has not committed, and waits up to
  // `grace` for all of them to end. Idempotent.
  void Shutdown(std::chrono::milliseconds grace);

  // Bandwidth caps, adjustable while migrations run (bytes/s, 0 = unlimited). The
  // per-migration one applies to an outgoing migration of this node: NotFound otherwise.
  void SetNodeBandwidthLimit(uint64_t bytes_per_second);
  uint64_t node_bandwidth_limit() const { return node_bucket_.rate(); }
  Status SetMigrationBandwidthLimit(const std::string& migration_id, uint64_t bytes_per_second);

  // Time data-stream writers spent writing (for dwcp_v3_amst_stream_saturation_ratio).
  uint64_t stream_busy_ns() const { return stream_busy_ns_.load(); }
  // Data-plane bytes (page payloads, both directions) per link mode, in amst::LinkMode order:
  // the node turns them into dwcp_v3_amst_throughput_bytes_per_second{mode}.
  std::array<uint64_t, 3> bytes_by_mode() const;

  size_t active_migrations() const;
  // Peers refused after a Byzantine detection (expired ones dropped), and lifting one by
  // hand (false when it was not quarantined).
  std::vector<QuarantineEntry> Quarantined();
  bool LiftQuarantine(const std::string& peer);
  // A non-empty reason while `peer` is quarantined.
  std::string QuarantineReason(const std::string& peer);

  // True while a migration with this id runs here (either direction).
  bool IsActive(const std::string& migration_id) const;
  // A VM record this node owns that still says `migrating` for a migration that no longer
  // runs here (it ended while the store was unreachable): puts it back to running and
  // finishes the migration record as failed. Ok when there is nothing to repair.
  Status RepairStranded(const acp::VmRecord& vm);
  // Migrations counted against max_migrations (both directions), and those with `peer`.
  uint32_t limited_migrations() const;
  uint32_t limited_migrations_with(const std::string& peer) const;
  // Bytes of page batches in flight now (against max_buffer_memory).
  uint64_t buffer_bytes() const { return buffers_.used(); }
  // For health checks: whether the data listener accepts, and error counts since start.
  bool listening() const { return listening_; }
  uint64_t protocol_errors() const { return protocol_errors_; }
  uint64_t digest_mismatches() const { return digest_mismatches_; }
  // Bandwidth forecasts per peer, fed after every pre-copy round (PBA).
  const pba::BandwidthPredictor& bandwidth_predictor() const { return pba_; }
  // Additional data streams that joined incoming migrations since start.
  uint64_t streams_joined() const { return streams_joined_; }

  // What this node last measured of its links, one per peer and direction, with PBA's
  // forecast for the links it sends on (GET /api/v1/links).
  struct LinkReport {
    std::string peer;
    bool outgoing = true;  // measured while sending to the peer, else while receiving
    amst::LinkMode mode = amst::LinkMode::kDatacenter;
    amst::LinkSample sample;
    int64_t updated_ms = 0;
    std::optional<pba::LinkForecast> forecast;  // outgoing links PBA has scored
  };
  std::vector<LinkReport> Links();

 private:
  struct Active;
  struct Outgoing;

  asio::awaitable<void> AcceptLoop();
  asio::awaitable<void> RunOutgoing(std::shared_ptr<Outgoing> m);
  asio::awaitable<void> ServeIncoming(std::shared_ptr<amst::Connection> conn);
  // An additional data stream joining an incoming migration (after StreamJoin).
  asio::awaitable<void> ServeJoinedStream(std::shared_ptr<amst::Connection> conn,
                                          wire::StreamJoin join);
  // Opens, authenticates and joins one more data stream of an outgoing migration.
  asio::awaitable<void> OpenExtraStream(std::shared_ptr<Outgoing> m, uint32_t index);
  // Feeds a link measurement for `peer`, taken while sending to it (`outgoing`) or
  // receiving from it; logs and counts a mode switch. Returns the mode.
  amst::LinkMode ObserveLink(const std::string& peer, const amst::LinkSample& sample,
                             bool outgoing);

  DataPlaneContext DataContext();
  // The current link mode of `peer` (datacenter before its first measurement).
  amst::LinkMode LinkModeOf(const std::string& peer);

  // Resolves an incoming migration after verification: true (resume) once the store says
  // this node owns the VM at epoch + 1; false once the source keeps it (cancelling the
  // migration in the store if it is still open). While the store does not answer, the
  // verified guest stays paused and this keeps asking (until the node stops).
  asio::awaitable<bool> ResolveInDoubt(const std::string& vm_id, const std::string& migration_id,
                                       const std::string& source_node, uint64_t epoch);
  // Decides a commit CAS whose answer was lost (source side): true when it landed. Keeps
  // asking while the store does not answer; false on shutdown (the caller then never
  // resumes the guest).
  asio::awaitable<bool> ResolveOwnCommit(const acp::MigrationRecord& rec,
                                         const acp::VmRecord& before, const acp::VmRecord& moved);
  // Counts a Byzantine detection, logs it and refuses the peer for config.quarantine.
  void Quarantine(const std::string& peer, std::string_view reason, const std::string& detail);

  // Waits as long as DWCP_FAILPOINTS says at `name` (common/failpoint.h).
  static asio::awaitable<void> FailpointWait(const char* name);
  // Back-off between store attempts: 100 ms doubling up to 1 s.
  static asio::awaitable<void> StoreRetryDelay(int attempt);

  // Runs a blocking store call on store_pool_ so that no io thread waits for the store (an
  // etcd leader election can take seconds); resumes on the calling coroutine's executor.
  template <class F>
  asio::awaitable<std::invoke_result_t<F>> Blocking(F f) {
    using R = std::invoke_result_t<F>;
    std::optional<R> out = co_await asio::co_spawn(
        store_pool_, [&f]() -> asio::awaitable<std::optional<R>> { co_return f(); },
        asio::use_awaitable);
    co_return std::move(*out);
  }

  // A span from the tracer, or a no-op span without one.
  obs::trace::Span StartSpan(std::string_view name, std::string_view component,
                             const obs::trace::SpanContext* parent);

  void Register(const std::shared_ptr<Active>& a);
  void Unregister(const std::string& id);

  // Counts a migration with `peer` against max_migrations and max_migrations_per_peer, or
  // refuses it (FailedPrecondition naming the limit; *limit = its config key) and counts the
  // refusal. `incoming`: this node is the destination. Each admitted one needs a
  // ReleaseMigration(peer).
  Status AdmitMigration(const std::string& peer, bool incoming, std::string* limit);
  void ReleaseMigration(const std::string& peer);
  // A data connection from `address` (remote IP) against max_connections and
  // max_connections_per_peer: a slot to hold while it is open, or null (refused, counted and
  // logged at most once per 10 s).
  std::shared_ptr<void> AdmitConnection(const std::string& address);
  // Logs a refusal of `what` at most once per 10 s, with how many were refused meanwhile.
  void LogLimited(std::string_view limit, std::string_view message, nlohmann::json fields);

  EngineConfig config_;
  acp::StateStore& store_;
  vm::VmTable& vms_;
  obs::Metrics& metrics_;
  Clock& clock_;
  asio::io_context& io_;
  IncomingGuestFactory incoming_guests_;
  obs::trace::Tracer* tracer_;
  std::unique_ptr<asio::ip::tcp::acceptor> acceptor_;
  uint16_t listen_port_ = 0;

  mutable std::mutex mu_;
  std::condition_variable idle_cv_;
  std::map<std::string, std::shared_ptr<Active>> active_;  // by migration id (or conn key)
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> next_incoming_{0};
  std::atomic<bool> listening_{false};
  std::mutex links_mu_;
  std::map<std::string, amst::ModeDetector> links_;  // by peer node id
  // The last measurement of each link: (peer, outgoing) → sample, wall ms. links_mu_.
  std::map<std::pair<std::string, bool>, std::pair<amst::LinkSample, int64_t>> link_samples_;
  std::atomic<uint64_t> protocol_errors_{0};
  std::atomic<uint64_t> digest_mismatches_{0};
  std::atomic<uint64_t> streams_joined_{0};
  asio::thread_pool pool_;  // HDE encode and decode
  asio::thread_pool store_pool_{4};  // blocking store calls of coroutines (Blocking())
  hde::HdeStats hde_stats_;
  pba::BandwidthPredictor pba_;
  amst::TokenBucket node_bucket_;
  std::atomic<uint64_t> stream_busy_ns_{0};
  std::array<std::atomic<uint64_t>, 3> bytes_by_mode_{};
  struct IncomingSession;
  std::map<std::string, std::shared_ptr<IncomingSession>> sessions_;  // by migration id; mu_
  BufferBudget buffers_;
  uint32_t migrations_ = 0;                          // mu_
  std::map<std::string, uint32_t> peer_migrations_;  // by peer node id; mu_
  std::mutex conn_mu_;
  uint32_t connections_ = 0;                          // conn_mu_
  std::map<std::string, uint32_t> peer_connections_;  // by remote IP; conn_mu_
  std::mutex limit_log_mu_;
  // Per limit: when it was last logged, and refusals since (limit_log_mu_).
  std::map<std::string, std::pair<int64_t, uint64_t>, std::less<>> limit_log_;
  std::mutex quarantine_mu_;
  std::map<std::string, QuarantineEntry> quarantine_;  // by peer; quarantine_mu_
};

// "mig-" followed by 12 random hex digits.
std::string NewMigrationId();

}  // namespace dwcp::migration
