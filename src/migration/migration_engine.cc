#include "migration/migration_engine.h"

#include <algorithm>
#include <asio/experimental/as_tuple.hpp>
#include <cinttypes>
#include <cstdio>
#include <future>
#include <random>

#include "amst/connection.h"
#include "hde/page_codec.h"
#include "obs/log.h"
#include "obs/pprof/task_registry.h"
#include "obs/trace/tracer.h"
#include "vm/synthetic_guest.h"

namespace dwcp::migration {
namespace {

using asio::awaitable;
using asio::use_awaitable;
using asio::experimental::as_tuple;
using Ms = std::chrono::milliseconds;
using SteadyTime = std::chrono::steady_clock::time_point;

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// Accumulates the time a migration spends in each component, to name the dominant one.
struct TimeShares {
  double amst = 0, hde = 0, acp = 0;
  obs::Component Dominant() const {
    if (amst >= hde && amst >= acp) return obs::Component::kAmst;
    return hde >= acp ? obs::Component::kHde : obs::Component::kAcp;
  }
};

// Measures one scope into a TimeShares field.
class ScopedTime {
 public:
  ScopedTime(Clock& clock, double* into) : clock_(clock), into_(into), start_(clock.Now()) {}
  ~ScopedTime() { *into_ += Seconds(clock_.Now() - start_); }

 private:
  Clock& clock_;
  double* into_;
  SteadyTime start_;
};

wire::Control MakeAbort(const std::string& reason) {
  wire::Control c;
  c.mutable_abort()->set_reason(reason);
  return c;
}

// error_type label of a failure: the status code's name, "tls" for a refused handshake.
const char* ErrorTypeOf(StatusCode code) {
  return code == StatusCode::kUnauthenticated ? "tls" : StatusCodeName(code);
}

obs::Component ComponentOfError(StatusCode code) {
  switch (code) {
    case StatusCode::kUnauthenticated:
      return obs::Component::kAmst;
    case StatusCode::kDataLoss:
      return obs::Component::kHde;
    case StatusCode::kFailedPrecondition:
    case StatusCode::kInternal:
      return obs::Component::kAcp;
    default:
      return obs::Component::kAmst;
  }
}

}  // namespace

std::string NewMigrationId() {
  static thread_local std::mt19937_64 rng(std::random_device{}() ^ static_cast<uint64_t>(clock())
                                                                       << 32);
  char buf[24];
  std::snprintf(buf, sizeof buf, "mig-%012" PRIx64, rng() & 0xffffffffffffULL);
  return buf;
}

// Something the engine must abort on shutdown: a cancel flag and the connection to close.
struct MigrationEngine::Active {
  std::string key;
  std::atomic<bool> cancel{false};
  std::atomic<bool> committed{false};
  std::mutex mu;
  std::shared_ptr<amst::Connection> conn;  // guarded by mu

  void SetConnection(std::shared_ptr<amst::Connection> c) {
    std::lock_guard lock(mu);
    conn = std::move(c);
  }
  void Cancel() {
    cancel = true;
    std::lock_guard lock(mu);
    if (conn && !committed) conn->Close();
  }
};

struct MigrationEngine::Outgoing : Active {
  obs::trace::Span root;  // migrate_vm, from admission to the end
  acp::MigrationRecord record;
  acp::VmRecord vm_before;  // the VM record as marked migrating
  std::shared_ptr<vm::Guest> guest;
  MigrationRequest request;
  std::string dest_address;
};

IncomingGuestFactory SyntheticIncomingGuests() {
  return [](const vm::GuestSpec& spec) -> Result<std::shared_ptr<vm::Guest>> {
    auto g = vm::SyntheticGuest::CreateIncoming(spec);
    if (!g.ok()) return g.status();
    return std::shared_ptr<vm::Guest>(std::move(g).value());
  };
}

MigrationEngine::MigrationEngine(EngineConfig config, acp::StateStore& store, vm::VmTable& vms,
                                 obs::Metrics& metrics, Clock& clock, asio::io_context& io,
                                 IncomingGuestFactory incoming_guests, obs::trace::Tracer* tracer)
    : config_(std::move(config)),
      store_(store),
      vms_(vms),
      metrics_(metrics),
      clock_(clock),
      io_(io),
      incoming_guests_(std::move(incoming_guests)),
      tracer_(tracer) {}

obs::trace::Span MigrationEngine::StartSpan(std::string_view name, std::string_view component,
                                            const obs::trace::SpanContext* parent) {
  return tracer_ ? tracer_->StartSpan(name, component, parent) : obs::trace::Span();
}

MigrationEngine::~MigrationEngine() { Shutdown(Ms(5000)); }

size_t MigrationEngine::active_migrations() const {
  std::lock_guard lock(mu_);
  return active_.size();
}

void MigrationEngine::Register(const std::shared_ptr<Active>& a) {
  std::lock_guard lock(mu_);
  active_[a->key] = a;
}

void MigrationEngine::Unregister(const std::string& key) {
  std::lock_guard lock(mu_);
  active_.erase(key);
  idle_cv_.notify_all();
}

void MigrationEngine::Shutdown(Ms grace) {
  if (!stopping_.exchange(true)) {
    obs::LogInfo("migration", "engine shutting down: aborting uncommitted migrations",
                 {{"active", active_migrations()}});
  }
  if (acceptor_) {
    asio::post(acceptor_->get_executor(), [this] {
      asio::error_code ec;
      acceptor_->close(ec);
    });
  }
  std::unique_lock lock(mu_);
  for (auto& [_, a] : active_) a->Cancel();
  idle_cv_.wait_for(lock, grace, [this] { return active_.empty(); });
}

Status MigrationEngine::Listen(const std::string& host, uint16_t port) {
  asio::error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec) return InvalidArgument("data listen address '" + host + "' is not an IP address");
  acceptor_ = std::make_unique<asio::ip::tcp::acceptor>(io_);
  asio::ip::tcp::endpoint ep(address, port);
  acceptor_->open(ep.protocol(), ec);
  if (!ec) acceptor_->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_->bind(ep, ec);
  if (!ec) acceptor_->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return Unavailable("cannot listen for data on " + host + ":" + std::to_string(port) + ": " +
                       ec.message());
  }
  listen_port_ = acceptor_->local_endpoint().port();
  listening_ = true;
  asio::co_spawn(acceptor_->get_executor(), AcceptLoop(), asio::detached);
  return Status::Ok();
}

awaitable<void> MigrationEngine::AcceptLoop() {
  auto task = obs::pprof::TaskRegistry::Global().Register(
      "amst.accept", "data listener :" + std::to_string(listen_port_));
  task.SetState("accepting");
  while (!stopping_) {
    auto [ec, socket] =
        co_await acceptor_->async_accept(asio::make_strand(io_), as_tuple(use_awaitable));
    if (ec) {
      if (stopping_ || ec == asio::error::operation_aborted) {
        listening_ = false;
        co_return;
      }
      obs::LogWarn("amst", "accept failed", {{"error", ec.message()}});
      continue;
    }
    auto conn = std::make_shared<amst::Connection>(std::move(socket), metrics_);
    auto executor = conn->executor();
    asio::co_spawn(executor, ServeIncoming(std::move(conn)), [](std::exception_ptr e) {
      if (e) obs::LogError("migration", "incoming migration ended with an exception");
    });
  }
}

Result<acp::MigrationRecord> MigrationEngine::Start(const MigrationRequest& req) {
  if (stopping_) return Status(Aborted("node is shutting down"));
  if (active_migrations() >= config_.max_tasks) {
    return Status(FailedPrecondition("node runs " + std::to_string(config_.max_tasks) +
                                     " migration tasks already (max_tasks)"));
  }
  if (req.protocol != 1 && req.protocol != 3) {
    return Status(InvalidArgument("protocol must be v1 or v3"));
  }
  if (req.downtime_budget_ms == 0 || req.downtime_budget_ms < -1) {
    return Status(InvalidArgument("downtime budget must be positive"));
  }
  if (req.max_rounds == 0 || req.max_rounds < -1 || req.max_rounds > 1000) {
    return Status(InvalidArgument("max rounds must be between 1 and 1000"));
  }
  auto vm = store_.GetVm(req.vm_id);
  if (!vm.ok()) return vm.status();
  if (req.dest_node == vm->node_id) {
    return Status(InvalidArgument("vm " + req.vm_id + " already runs on " + req.dest_node +
                                  ": the destination must differ from the source"));
  }
  if (vm->node_id != config_.node_id) {
    return Status(FailedPrecondition("vm " + req.vm_id + " runs on " + vm->node_id + ", not on " +
                                     config_.node_id));
  }
  if (vm->state == acp::kVmMigrating) {
    return Status(
        FailedPrecondition("vm " + req.vm_id + " is already migrating (" + vm->migration_id + ")"));
  }
  if (vm->state != acp::kVmRunning) {
    return Status(FailedPrecondition("vm " + req.vm_id + " is " + vm->state + ", not running"));
  }
  auto dest = store_.GetNode(req.dest_node);
  if (!dest.ok()) {
    if (dest.status().code() == StatusCode::kNotFound) {
      return Status(NotFound("node " + req.dest_node + " does not exist"));
    }
    return dest.status();
  }
  if (dest->state != "up" ||
      clock_.WallMillis() - dest->heartbeat_ms > config_.node_alive_window.count()) {
    return Status(FailedPrecondition("destination node " + req.dest_node + " is down"));
  }
  auto local = vms_.Find(req.vm_id);
  if (!local.guest) {
    return Status(FailedPrecondition("vm " + req.vm_id + " is not running on " + config_.node_id));
  }

  auto m = std::make_shared<Outgoing>();
  m->record.id = NewMigrationId();
  m->key = m->record.id;
  m->record.vm_id = req.vm_id;
  m->record.source_node = config_.node_id;
  m->record.dest_node = req.dest_node;
  m->record.phase = acp::kPhasePending;
  m->record.memory_bytes = vm->memory_bytes;
  m->record.remaining_bytes = vm->memory_bytes;
  m->record.epoch_before = vm->epoch;
  m->record.protocol = "v" + std::to_string(req.protocol);  // offered; the handshake may lower it
  m->record.created_ms = clock_.WallMillis();
  m->guest = local.guest;
  m->request = req;
  m->dest_address = dest->data_address;

  m->root = StartSpan("migrate_vm", "migration", nullptr);
  m->root.SetAttribute("vm.id", req.vm_id);
  m->root.SetAttribute("migration.id", m->record.id);
  m->root.SetAttribute("source.node", config_.node_id);
  m->root.SetAttribute("destination.node", req.dest_node);
  m->root.SetAttribute("memory_bytes", vm->memory_bytes);
  m->root.SetAttribute("phase", acp::kPhasePending);

  acp::VmRecord desired = *vm;
  desired.state = acp::kVmMigrating;
  desired.migration_id = m->record.id;
  {
    auto span = StartSpan("acp_consensus", "acp", &m->root.context());
    span.SetAttribute("operation", "mark_migrating");
    Status st = store_.CompareAndSwapVm(*vm, desired, &m->record);
    if (!st.ok()) {
      span.SetError(st.ToString());
      m->root.SetError(st.ToString());
      return st;
    }
  }
  m->vm_before = desired;

  Register(m);
  metrics_.migrations_out.Increment();
  obs::LogInfo("migration", "migration started",
               {{"vm_id", req.vm_id},
                {"migration_id", m->record.id},
                {"trace_id", m->root.context().valid() ? m->root.context().TraceIdHex() : ""},
                {"span_id", m->root.context().valid() ? m->root.context().SpanIdHex() : ""},
                {"source", config_.node_id},
                {"destination", req.dest_node},
                {"memory_bytes", vm->memory_bytes}});
  asio::co_spawn(asio::make_strand(io_), RunOutgoing(m), [](std::exception_ptr e) {
    if (e) obs::LogError("migration", "outgoing migration ended with an exception");
  });
  return m->record;
}

// ---------------------------------------------------------------------------------------
// Source side.

awaitable<void> MigrationEngine::RunOutgoing(std::shared_ptr<Outgoing> m) {
  auto& rec = m->record;
  auto& guest = *m->guest;
  const SteadyTime t_start = clock_.Now();
  TimeShares shares;
  const int64_t budget_ms = m->request.downtime_budget_ms > 0 ? m->request.downtime_budget_ms
                                                              : config_.downtime_budget_ms;
  const uint32_t max_rounds =
      m->request.max_rounds > 0 ? static_cast<uint32_t>(m->request.max_rounds) : config_.max_rounds;
  const bool force =
      m->request.on_round_limit < 0 ? config_.force_on_round_limit : m->request.on_round_limit == 1;
  bool paused = false;
  SteadyTime t_pause{};
  SteadyTime last_progress{};
  uint64_t logical_sent = 0;    // VM bytes sent in all rounds
  double transfer_seconds = 0;  // time spent sending pages (for the bandwidth estimate)
  std::shared_ptr<amst::Connection> conn;
  auto task = obs::pprof::TaskRegistry::Global().Register(
      "migration.send", rec.vm_id + " " + rec.id + " -> " + rec.dest_node);
  task.SetState("connecting");
  const obs::trace::SpanContext root_ctx = m->root.context();
  const std::string trace_id = root_ctx.valid() ? root_ctx.TraceIdHex() : "";
  const std::string span_id = root_ctx.valid() ? root_ctx.SpanIdHex() : "";
  obs::trace::Span transfer;  // transfer_data: every round, pre-copy and stop-and-copy
  obs::trace::Span step;      // the current step's span, failed with the migration

  // Writes progress to the store at most four times a second (or when forced).
  auto progress = [&](bool force_write) {
    auto now = clock_.Now();
    if (!force_write && now - last_progress < Ms(250)) return;
    last_progress = now;
    ScopedTime t(clock_, &shares.acp);
    Status st = store_.PutMigration(rec);
    if (!st.ok()) {
      obs::LogWarn("acp", "cannot record migration progress",
                   {{"migration_id", rec.id}, {"error", st.ToString()}});
    }
  };

  // Ends the migration without moving the VM: it keeps (or resumes) running on the source.
  auto fail = [&](Status why, bool aborted) -> void {
    if (conn && why.code() != StatusCode::kUnavailable) {
      // Best effort: tell the destination to discard what it has (no waiting).
      conn->Close();
    }
    guest.StopDirtyLog();
    acp::VmRecord back = m->vm_before;
    back.state = acp::kVmRunning;
    back.migration_id.clear();
    rec.phase = aborted ? acp::kPhaseAborted : acp::kPhaseFailed;
    rec.error = why.message();
    if (step.recording()) step.SetError(why.ToString());
    if (transfer.recording()) transfer.SetError(why.ToString());
    m->root.SetError(why.ToString());
    m->root.SetAttribute("phase", rec.phase);
    m->root.SetAttribute("rounds", rec.round);
    rec.finished_ms = clock_.WallMillis();
    rec.total_ms = Seconds(clock_.Now() - t_start) * 1e3;
    Status st;
    {
      ScopedTime t(clock_, &shares.acp);
      st = store_.CompareAndSwapVm(m->vm_before, back, &rec);
    }
    bool resume = st.ok();
    if (!st.ok()) {
      // Someone (the destination resolving an in-doubt migration) already put the VM back;
      // resume only if the store still says this node owns it at the same epoch.
      auto now = store_.GetVm(rec.vm_id);
      resume = now.ok() && now->node_id == config_.node_id && now->epoch == m->vm_before.epoch &&
               now->state == acp::kVmRunning;
      Status put = store_.PutMigration(rec);
      (void)put;
    }
    if (resume) {
      if (paused) guest.Resume();
    } else {
      // Fenced: never run a VM the store does not give us.
      vms_.Remove(rec.vm_id);
      metrics_.vms_running.Set(static_cast<double>(vms_.size()));
      obs::LogError("acp", "vm fenced after failed migration: the store no longer gives it to us",
                    {{"vm_id", rec.vm_id}, {"migration_id", rec.id}});
      metrics_.CountError(obs::Component::kAcp, "fenced", "critical");
    }
    auto result = aborted ? obs::MigrationResult::kAborted : obs::MigrationResult::kFailed;
    metrics_.migrations(result, conn ? conn->protocol() : m->request.protocol).Increment();
    metrics_.CountError(ComponentOfError(why.code()), ErrorTypeOf(why.code()),
                        aborted ? "warning" : "critical");
    metrics_.migration_latency(shares.Dominant()).Observe(rec.total_ms / 1e3);
    metrics_.rounds.Observe(rec.round);
    obs::LogError("migration", aborted ? "migration aborted" : "migration failed",
                  {{"vm_id", rec.vm_id},
                   {"migration_id", rec.id},
                   {"trace_id", trace_id},
                   {"span_id", span_id},
                   {"error", why.ToString()},
                   {"latency_ms", rec.total_ms},
                   {"round", rec.round},
                   {"vm_resumed_on_source", resume}});
  };

  auto finish = [&] {
    step.End();
    transfer.End();
    m->root.End();
    metrics_.migrations_out.Decrement();
    Unregister(m->key);
  };

  // --- connect and handshake
  Status st;
  step = StartSpan("amst_connect", "amst", &root_ctx);
  step.SetAttribute("peer.address", m->dest_address);
  step.SetAttribute("transport", "tcp");
  {
    std::string host;
    uint16_t port = 0;
    Status st = amst::SplitHostPort(m->dest_address, &host, &port);
    if (!st.ok()) {
      fail(st, false);
      finish();
      co_return;
    }
    Result<std::unique_ptr<amst::Connection>> c = Status(Internal("unset"));
    {
      ScopedTime t(clock_, &shares.amst);
      c = co_await amst::Connect(host, port, metrics_, config_.connect_timeout);
    }
    if (!c.ok()) {
      fail(c.status(), false);
      finish();
      co_return;
    }
    conn = std::shared_ptr<amst::Connection>(std::move(c).value());
    m->SetConnection(conn);
    if (m->cancel) conn->Close();
    if (config_.tls_client) {
      ScopedTime t(clock_, &shares.amst);
      st = co_await conn->StartTls(*config_.tls_client, /*server=*/false, config_.connect_timeout);
      if (!st.ok()) {
        fail(st, false);
        finish();
        co_return;
      }
    }
    step.SetAttribute("tls", conn->tls());
  }

  auto send_ctl = [&](const wire::Control& msg) -> awaitable<Status> {
    ScopedTime t(clock_, &shares.amst);
    co_return co_await conn->SendControl(msg, config_.io_timeout);
  };
  auto recv_ctl = [&](Ms deadline) -> awaitable<Result<wire::Control>> {
    ScopedTime t(clock_, &shares.amst);
    co_return co_await conn->ReceiveControl(deadline);
  };
  // Converts a control reply that is an Abort, or not the expected message, into an error.
  auto expect = [&](const Result<wire::Control>& r, wire::Control::MsgCase want) -> Status {
    if (!r.ok()) return r.status();
    if (r->msg_case() == wire::Control::kAbort) {
      return Aborted("destination aborted: " + r->abort().reason());
    }
    if (r->msg_case() != want)
      return ProtocolError("out-of-order control message from destination");
    return Status::Ok();
  };
  auto abort_out = [&](Status why) -> awaitable<void> {
    if (why.code() != StatusCode::kUnavailable && why.code() != StatusCode::kProtocol) {
      Status ignored = co_await conn->SendControl(MakeAbort(why.message()), Ms(1000));
      (void)ignored;
    }
    fail(why, m->cancel || why.code() == StatusCode::kAborted);
    finish();
  };

  {
    wire::Control hello;
    hello.mutable_hello()->set_node_id(config_.node_id);
    for (uint32_t v : config_.protocols) {
      if (v <= m->request.protocol) hello.mutable_hello()->add_versions(v);
    }
    SteadyTime sent_at = clock_.Now();
    st = co_await send_ctl(hello);
    auto ack = co_await recv_ctl(config_.io_timeout);
    // The handshake's round trip is the first measurement of the link; rounds add TCP_INFO.
    double rtt_ms = Seconds(clock_.Now() - sent_at) * 1e3;
    step.SetAttribute("net.rtt_ms", rtt_ms);
    m->root.SetAttribute("mode", amst::LinkModeName(ObserveLink(rec.dest_node, {rtt_ms, 0, 0})));
    if (st.ok()) st = expect(ack, wire::Control::kHelloAck);
    if (st.ok() && ack->hello_ack().version() == 0) {
      st = FailedPrecondition("no common protocol version: " + ack->hello_ack().error());
    }
    if (!st.ok()) {
      co_await abort_out(st);
      co_return;
    }
    conn->set_protocol(static_cast<uint8_t>(ack->hello_ack().version()));
    rec.protocol = "v" + std::to_string(conn->protocol());
    m->root.SetAttribute("protocol", rec.protocol);
  }
  {
    wire::Control begin;
    auto* b = begin.mutable_begin();
    b->set_migration_id(rec.id);
    b->set_vm_id(rec.vm_id);
    b->set_memory_bytes(guest.spec().memory_bytes);
    b->set_page_size(vm::kPageSize);
    b->set_dirty_rate(guest.spec().dirty_rate);
    b->set_seed(guest.spec().seed);
    b->set_epoch(m->vm_before.epoch);
    b->set_source_node(config_.node_id);
    if (root_ctx.valid()) b->set_traceparent(root_ctx.ToTraceparent());
    st = co_await send_ctl(begin);
    auto ready = co_await recv_ctl(config_.io_timeout);
    if (st.ok()) st = expect(ready, wire::Control::kReady);
    if (st.ok() && !ready->ready().ok()) {
      st = FailedPrecondition("destination refused: " + ready->ready().error());
    }
    if (!st.ok()) {
      co_await abort_out(st);
      co_return;
    }
  }

  // --- pre-copy rounds
  hde::PageBatchEncoder encoder(conn->protocol() >= 3);
  const uint64_t limit = m->request.bandwidth_limit;
  const SteadyTime t_transfer_start = clock_.Now();
  uint64_t paced_bytes = 0;
  asio::steady_timer pacer(co_await asio::this_coro::executor);
  std::vector<uint64_t> pages;

  // Sends `pages` as one round; pacing to the bandwidth limit. Rounds 1..kTracedRounds and
  // the stop-and-copy round get amst_transfer + hde_compress spans; the rest are counted on
  // transfer_data, so a trace stays under 50 spans whatever the round count.
  constexpr uint32_t kTracedRounds = 10;
  auto send_round = [&](uint32_t round, bool all_pages, bool last) -> awaitable<Status> {
    uint64_t count = all_pages ? guest.page_count() : pages.size();
    obs::trace::Span round_span, hde_span;
    if (round <= kTracedRounds || last) {
      round_span = StartSpan("amst_transfer", "amst", &transfer.context());
      round_span.SetAttribute("round", round);
      round_span.SetAttribute("pages", count);
      round_span.SetAttribute("stop_and_copy", last);
      hde_span = StartSpan("hde_compress", "hde", &round_span.context());
      hde_span.SetAttribute("algorithm", conn->protocol() >= 3 ? "zero" : "none");
    }
    const uint64_t logical_before = logical_sent, wire_before = conn->wire_bytes_sent();
    double encode_total = 0;
    uint64_t zero_pages = 0;
    wire::Control rb;
    rb.mutable_round_begin()->set_round(round);
    rb.mutable_round_begin()->set_pages(count);
    DWCP_CO_RETURN_IF_ERROR(co_await send_ctl(rb));
    SteadyTime t0 = clock_.Now();
    uint64_t i = 0;
    while (i < count) {
      if (m->cancel) co_return Aborted("migration cancelled (node shutting down)");
      SteadyTime e0 = clock_.Now();
      encoder.Reset(round);
      for (uint32_t n = 0; n < config_.batch_pages && i < count; ++n, ++i) {
        uint64_t index = all_pages ? i : pages[i];
        encoder.Add(index, guest.PageData(index));
      }
      auto payload = encoder.Finish();
      double encode_seconds = Seconds(clock_.Now() - e0);
      shares.hde += encode_seconds;
      encode_total += encode_seconds;
      zero_pages += encoder.stats().zero_pages;
      metrics_.encode_latency.Observe(encode_seconds);
      {
        ScopedTime t(clock_, &shares.amst);
        DWCP_CO_RETURN_IF_ERROR(
            co_await conn->Send(amst::FrameType::kPages, payload, config_.io_timeout));
      }
      uint64_t logical = uint64_t{encoder.count()} * vm::kPageSize;
      logical_sent += logical;
      metrics_.hde_input_bytes.Increment(static_cast<double>(logical));
      metrics_.hde_output_bytes.Increment(static_cast<double>(payload.size()));
      (conn->protocol() >= 3 ? metrics_.compression_v3 : metrics_.compression_v1)
          .Observe(static_cast<double>(logical) / static_cast<double>(payload.size()));
      metrics_.bytes_sent.Increment(static_cast<double>(logical));
      metrics_.pages_zero.Increment(static_cast<double>(encoder.stats().zero_pages));
      metrics_.pages_raw.Increment(
          static_cast<double>(encoder.stats().pages - encoder.stats().zero_pages));
      rec.bytes_transferred = logical_sent;
      rec.network_bytes = conn->wire_bytes_sent();
      rec.remaining_bytes = (count - i) * vm::kPageSize;
      double elapsed = Seconds(clock_.Now() - t_transfer_start);
      rec.throughput_bps = elapsed > 0 ? logical_sent / elapsed : 0;
      progress(false);
      if (limit > 0) {
        paced_bytes += payload.size() + amst::kFrameHeaderSize;
        auto due =
            t_transfer_start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                   std::chrono::duration<double>(double(paced_bytes) / limit));
        auto now = clock_.Now();
        if (due > now) {
          ScopedTime t(clock_, &shares.amst);
          pacer.expires_after(due - now);
          co_await pacer.async_wait(as_tuple(use_awaitable));
        }
      }
    }
    transfer_seconds += Seconds(clock_.Now() - t0);
    const uint64_t logical = logical_sent - logical_before;
    const uint64_t wire = conn->wire_bytes_sent() - wire_before;
    hde_span.SetAttribute("encode_seconds", encode_total);
    hde_span.SetAttribute("zero_pages", zero_pages);
    hde_span.SetAttribute("ratio", wire > 0 ? double(logical) / double(wire) : 0.0);
    hde_span.End();
    round_span.SetAttribute("bytes", logical);
    round_span.SetAttribute("wire_bytes", wire);
    amst::LinkSample link = conn->SampleLink();
    amst::LinkMode mode = ObserveLink(rec.dest_node, link);
    round_span.SetAttribute("mode", amst::LinkModeName(mode));
    round_span.SetAttribute("net.rtt_ms", link.rtt_ms);
    m->root.SetAttribute("mode", amst::LinkModeName(mode));
    co_return Status::Ok();
  };

  step.End();
  transfer = StartSpan("transfer_data", "migration", &root_ctx);
  rec.phase = acp::kPhasePrecopy;
  task.SetState("precopy round 1");
  progress(true);
  guest.StartDirtyLog();
  uint32_t round = 1;
  rec.round = round;
  st = co_await send_round(round, /*all_pages=*/true, /*last=*/false);
  if (st.ok()) {
    // Warm the guest's page-hash cache while it still runs, so the digest at the pause only
    // re-hashes the pages written after this point.
    ScopedTime t(clock_, &shares.hde);
    (void)guest.Digest();
  }
  while (st.ok()) {
    uint64_t remaining = guest.DirtyPageCount() * vm::kPageSize;
    double bw = transfer_seconds > 0 ? logical_sent / transfer_seconds : 0;
    if (limit > 0 && bw > static_cast<double>(limit)) bw = static_cast<double>(limit);
    double predicted_ms = bw > 0 ? remaining / bw * 1e3 : 1e18;
    rec.remaining_bytes = remaining;
    if (predicted_ms <= static_cast<double>(budget_ms)) break;
    if (round >= max_rounds) {
      if (!force) {
        st = Aborted("did not converge in " + std::to_string(max_rounds) + " rounds (" +
                     std::to_string(remaining) + " bytes dirty, predicted downtime " +
                     std::to_string(static_cast<int64_t>(predicted_ms)) + " ms)");
        break;
      }
      obs::LogWarn("migration", "round limit reached: forcing switchover",
                   {{"vm_id", rec.vm_id},
                    {"migration_id", rec.id},
                    {"predicted_downtime_ms", predicted_ms}});
      break;
    }
    ++round;
    rec.round = round;
    task.SetState("precopy round " + std::to_string(round));
    pages.clear();
    guest.CollectDirtyPages(&pages);
    st = co_await send_round(round, false, false);
  }
  if (!st.ok()) {
    co_await abort_out(st);
    co_return;
  }

  // --- stop and copy
  rec.phase = acp::kPhaseSwitchover;
  task.SetState("switchover: guest paused, sending the last pages");
  progress(true);
  guest.Pause();
  paused = true;
  t_pause = clock_.Now();
  ++round;
  rec.round = round;
  pages.clear();
  guest.CollectDirtyPages(&pages);
  st = co_await send_round(round, false, true);
  transfer.SetAttribute("rounds", round);
  transfer.SetAttribute("bytes", logical_sent);
  transfer.End();
  std::string digest;
  if (st.ok()) {
    {
      step = StartSpan("hde_digest", "hde", &root_ctx);
      ScopedTime t(clock_, &shares.hde);
      digest = guest.Digest();
      step.SetAttribute("digest", digest);
    }
    rec.source_digest = digest;
    wire::Control done;
    done.mutable_complete()->set_digest(digest);
    done.mutable_complete()->set_rounds(round);
    done.mutable_complete()->set_pages_sent(logical_sent / vm::kPageSize);
    st = co_await send_ctl(done);
  }
  Result<wire::Control> verified = Status(Internal("unset"));
  if (st.ok()) {
    step = StartSpan("await_verification", "hde", &root_ctx);
    verified = co_await recv_ctl(config_.verify_timeout);
    st = expect(verified, wire::Control::kVerified);
  }
  if (st.ok()) {
    rec.dest_digest = verified->verified().digest();
    if (!verified->verified().ok()) {
      ++digest_mismatches_;  // counted in errors_total by fail() (source) and the destination
      st = DataLoss("destination digest " + rec.dest_digest + " does not match source " + digest +
                    ": " + verified->verified().error());
    }
  }
  if (st.ok() && m->cancel) st = Aborted("migration cancelled (node shutting down)");
  if (!st.ok()) {
    co_await abort_out(st);
    co_return;
  }

  // --- commit the ownership change (the point of no return)
  rec.phase = acp::kPhaseCommitting;
  task.SetState("committing ownership");
  acp::VmRecord moved = m->vm_before;
  moved.node_id = rec.dest_node;
  moved.state = acp::kVmRunning;
  moved.migration_id.clear();
  moved.epoch = m->vm_before.epoch + 1;
  step = StartSpan("acp_consensus", "acp", &root_ctx);
  step.SetAttribute("operation", "commit_ownership");
  step.SetAttribute("epoch", moved.epoch);
  {
    ScopedTime t(clock_, &shares.acp);
    SteadyTime c0 = clock_.Now();
    st = store_.CompareAndSwapVm(m->vm_before, moved, &rec);
    metrics_.commit_latency.Observe(Seconds(clock_.Now() - c0));
  }
  if (!st.ok()) {
    co_await abort_out(Status(st.code() == StatusCode::kFailedPrecondition
                                  ? FailedPrecondition("commit lost: " + st.message())
                                  : st));
    co_return;
  }
  {
    std::lock_guard lock(m->mu);
    m->committed = true;
  }
  // The store now gives the VM to the destination: this node must never run it again.
  guest.StopDirtyLog();
  vms_.Remove(rec.vm_id);
  metrics_.vms_running.Set(static_cast<double>(vms_.size()));

  step = StartSpan("resume_vm", "migration", &root_ctx);
  wire::Control commit;
  commit.mutable_commit()->set_epoch(moved.epoch);
  st = co_await send_ctl(commit);
  Result<wire::Control> resumed = Status(Internal("unset"));
  if (st.ok()) {
    resumed = co_await recv_ctl(config_.io_timeout);
    st = expect(resumed, wire::Control::kResumed);
  }
  SteadyTime t_resume = clock_.Now();
  rec.downtime_ms = Seconds(t_resume - t_pause) * 1e3;
  if (!st.ok()) {
    // Committed: the destination resumes from the store on its own (ResolveInDoubt).
    obs::LogWarn("migration", "destination did not confirm resume; it owns the vm per the store",
                 {{"vm_id", rec.vm_id}, {"migration_id", rec.id}, {"error", st.ToString()}});
    metrics_.CountError(obs::Component::kAmst, "resume_unconfirmed", "warning");
    rec.error = "destination did not confirm resume: " + st.message();
    step.SetError(rec.error);
  }
  step.End();
  rec.phase = acp::kPhaseCompleted;
  rec.finished_ms = clock_.WallMillis();
  rec.total_ms = Seconds(clock_.Now() - t_start) * 1e3;
  rec.remaining_bytes = 0;
  rec.network_bytes = conn->wire_bytes_sent();
  double elapsed = Seconds(clock_.Now() - t_transfer_start);
  rec.throughput_bps = elapsed > 0 ? logical_sent / elapsed : 0;
  progress(true);

  metrics_.migrations(obs::MigrationResult::kSuccess, conn->protocol()).Increment();
  metrics_.migration_latency(shares.Dominant()).Observe(rec.total_ms / 1e3);
  metrics_.downtime.Observe(rec.downtime_ms / 1e3);
  if (config_.on_success) {
    config_.on_success(
        {rec.total_ms / 1e3, rec.throughput_bps,
         rec.network_bytes > 0 ? double(rec.bytes_transferred) / rec.network_bytes : 0, trace_id,
         rec.vm_id, rec.id});
  }
  metrics_.rounds.Observe(round);
  m->root.SetAttribute("phase", rec.phase);
  m->root.SetAttribute("rounds", round);
  m->root.SetAttribute("downtime_ms", rec.downtime_ms);
  m->root.SetAttribute("bytes_transferred", rec.bytes_transferred);
  m->root.SetAttribute("network_bytes", rec.network_bytes);
  obs::LogInfo("migration", "Migration completed",
               {{"vm_id", rec.vm_id},
                {"migration_id", rec.id},
                {"trace_id", trace_id},
                {"span_id", span_id},
                {"destination", rec.dest_node},
                {"latency_ms", rec.total_ms},
                {"downtime_ms", rec.downtime_ms},
                {"rounds", round},
                {"bytes_transferred", rec.bytes_transferred},
                {"network_bytes", rec.network_bytes},
                {"throughput_gbps", rec.throughput_bps * 8 / 1e9},
                {"dominant_component", obs::ComponentName(shares.Dominant())}});
  conn->Close();
  finish();
}

// ---------------------------------------------------------------------------------------
// Destination side.

awaitable<void> MigrationEngine::ServeIncoming(std::shared_ptr<amst::Connection> conn) {
  auto task = obs::pprof::TaskRegistry::Global().Register("migration.receive", conn->peer());
  task.SetState("handshake");
  auto a = std::make_shared<Active>();
  a->key = "incoming-" + std::to_string(next_incoming_++);
  a->SetConnection(conn);
  Register(a);
  if (stopping_) a->Cancel();

  std::string vm_id, migration_id, source_node;
  uint64_t epoch = 0;
  bool counted = false;
  std::shared_ptr<vm::Guest> guest;
  bool verified = false;
  obs::trace::Span span;  // receive_migration, continuing the source's trace
  std::string trace_id, span_id;

  // Logs and counts a failed incoming migration (or a bad connection) and discards state.
  auto reject = [&](const Status& why) {
    bool protocol = why.code() == StatusCode::kProtocol;
    bool tls = why.code() == StatusCode::kUnauthenticated;
    if (protocol) ++protocol_errors_;
    metrics_.CountError(protocol || tls ? obs::Component::kAmst : ComponentOfError(why.code()),
                        protocol ? "protocol"
                        : tls    ? "tls"
                                 : StatusCodeName(why.code()),
                        protocol || tls ? "critical" : "warning");
    span.SetError(why.ToString());
    obs::LogError(protocol ? "amst" : "migration",
                  protocol ? "closing connection after a bad frame" : "incoming migration failed",
                  {{"peer", conn->peer()},
                   {"trace_id", trace_id},
                   {"span_id", span_id},
                   {"error", why.ToString()},
                   {"vm_id", vm_id},
                   {"migration_id", migration_id}});
  };
  auto done = [&] {
    conn->Close();
    if (counted) metrics_.migrations_in.Decrement();
    Unregister(a->key);
  };

  if (config_.tls_server) {
    Status tls = co_await conn->StartTls(*config_.tls_server, /*server=*/true, config_.io_timeout);
    if (!tls.ok()) {
      reject(tls.code() == StatusCode::kDeadlineExceeded
                 ? tls
                 : Status(StatusCode::kUnauthenticated, "refused peer: " + tls.message()));
      done();
      co_return;
    }
  }
  // Handshake.
  auto hello = co_await conn->ReceiveControl(config_.io_timeout);
  if (!hello.ok() || hello->msg_case() != wire::Control::kHello) {
    reject(hello.ok() ? ProtocolError("first frame is not a hello") : hello.status());
    done();
    co_return;
  }
  uint32_t version = 0;
  for (uint32_t offered : hello->hello().versions()) {
    for (uint32_t mine : config_.protocols) {
      if (offered == mine) version = std::max(version, offered);
    }
  }
  {
    wire::Control ack;
    ack.mutable_hello_ack()->set_node_id(config_.node_id);
    ack.mutable_hello_ack()->set_version(version);
    if (version == 0) ack.mutable_hello_ack()->set_error("no common protocol version");
    Status st = co_await conn->SendControl(ack, config_.io_timeout);
    if (version == 0 || !st.ok()) {
      reject(version == 0
                 ? FailedPrecondition("no common protocol version with " + hello->hello().node_id())
                 : st);
      done();
      co_return;
    }
    conn->set_protocol(static_cast<uint8_t>(version));
  }

  auto begin = co_await conn->ReceiveControl(config_.io_timeout);
  if (!begin.ok() || begin->msg_case() != wire::Control::kBegin) {
    reject(begin.ok() ? ProtocolError("out-of-order control message: expected begin")
                      : begin.status());
    done();
    co_return;
  }
  const auto& b = begin->begin();
  vm_id = b.vm_id();
  migration_id = b.migration_id();
  source_node = b.source_node();
  epoch = b.epoch();
  {
    auto remote = obs::trace::SpanContext::FromTraceparent(b.traceparent());
    span = StartSpan("receive_migration", "migration", remote ? &*remote : nullptr);
    span.SetAttribute("vm.id", vm_id);
    span.SetAttribute("migration.id", migration_id);
    span.SetAttribute("source.node", source_node);
    span.SetAttribute("destination.node", config_.node_id);
    if (span.context().valid()) {
      trace_id = span.context().TraceIdHex();
      span_id = span.context().SpanIdHex();
    }
  }
  metrics_.migrations_in.Increment();
  counted = true;

  // Check the request against the store: the VM must be migrating to us under this id.
  Status st;
  {
    auto vm = store_.GetVm(vm_id);
    auto mig = store_.GetMigration(migration_id);
    if (!vm.ok()) {
      st = vm.status();
    } else if (!mig.ok()) {
      st = mig.status();
    } else if (vm->state != acp::kVmMigrating || vm->migration_id != migration_id ||
               vm->node_id != source_node || vm->epoch != epoch ||
               mig->dest_node != config_.node_id) {
      st = FailedPrecondition("store does not show vm " + vm_id + " migrating from " + source_node +
                              " to " + config_.node_id + " as " + migration_id);
    } else if (b.page_size() != vm::kPageSize) {
      st = InvalidArgument("unsupported page size " + std::to_string(b.page_size()));
    } else if (vms_.Find(vm_id).guest) {
      st = AlreadyExists("vm " + vm_id + " already runs here");
    } else if (stopping_) {
      st = Aborted("node is shutting down");
    }
  }
  if (st.ok()) {
    vm::GuestSpec spec{vm_id, b.memory_bytes(), b.dirty_rate(), b.seed()};
    auto g = incoming_guests_(spec);
    if (g.ok()) {
      guest = std::move(g).value();
    } else {
      st = g.status();
    }
  }
  {
    wire::Control ready;
    ready.mutable_ready()->set_ok(st.ok());
    if (!st.ok()) ready.mutable_ready()->set_error(st.message());
    Status sent = co_await conn->SendControl(ready, config_.io_timeout);
    if (st.ok()) st = sent;
  }
  if (!st.ok()) {
    reject(st);
    done();
    co_return;
  }
  task.SetState("receiving " + vm_id + " " + migration_id + " from " + source_node);
  obs::LogInfo("migration", "receiving vm",
               {{"vm_id", vm_id},
                {"migration_id", migration_id},
                {"trace_id", trace_id},
                {"span_id", span_id},
                {"source", source_node},
                {"memory_bytes", b.memory_bytes()},
                {"protocol", "v" + std::to_string(version)}});

  // Pages until MigrationComplete.
  uint32_t current_round = 0;
  uint64_t round_pages = 0, round_received = 0;
  std::future<void> warm_digest;  // fills the page-hash cache once round 1 has landed
  std::string source_digest;
  while (st.ok()) {
    auto frame = co_await conn->Receive(config_.io_timeout);
    if (!frame.ok()) {
      st = frame.status();
      break;
    }
    if (frame->header.type == amst::FrameType::kPages) {
      if (current_round == 0) {
        st = ProtocolError("out-of-order frame: pages before a round began");
        break;
      }
      uint32_t batch_round = 0;
      hde::BatchStats stats;
      st = hde::ApplyPageBatch(frame->payload, *guest, &batch_round, &stats);
      if (st.ok() && batch_round != current_round) {
        st = ProtocolError("out-of-order frame: pages of round " + std::to_string(batch_round) +
                           " during round " + std::to_string(current_round));
      }
      if (st.ok()) metrics_.bytes_received.Increment(double(stats.pages * vm::kPageSize));
      round_received += stats.pages;
      if (st.ok() && current_round == 1 && round_received == round_pages) {
        warm_digest = std::async(std::launch::async, [guest] { (void)guest->Digest(); });
      }
      continue;
    }
    wire::Control c;
    if (!c.ParseFromArray(frame->payload.data(), static_cast<int>(frame->payload.size()))) {
      st = ProtocolError("control message does not parse");
      break;
    }
    if (c.msg_case() == wire::Control::kRoundBegin) {
      if (c.round_begin().round() != current_round + 1) {
        st = ProtocolError("out-of-order round " + std::to_string(c.round_begin().round()));
      }
      current_round = c.round_begin().round();
      round_pages = c.round_begin().pages();
      round_received = 0;
    } else if (c.msg_case() == wire::Control::kComplete) {
      source_digest = c.complete().digest();
      break;
    } else if (c.msg_case() == wire::Control::kAbort) {
      st = Aborted("source aborted: " + c.abort().reason());
    } else {
      st = ProtocolError("out-of-order control message during pre-copy");
    }
  }
  if (warm_digest.valid()) warm_digest.wait();
  span.SetAttribute("rounds", current_round);
  if (st.ok()) {
    auto verify_span = StartSpan("hde_verify", "hde", &span.context());
    std::string digest = guest->Digest();
    verify_span.SetAttribute("digest", digest);
    if (digest != source_digest) verify_span.SetError("content digest mismatch");
    verified = digest == source_digest;
    wire::Control v;
    v.mutable_verified()->set_ok(verified);
    v.mutable_verified()->set_digest(digest);
    if (!verified) {
      v.mutable_verified()->set_error("content digest mismatch");
      metrics_.CountError(obs::Component::kHde, "digest_mismatch", "critical");
      ++digest_mismatches_;
    }
    st = co_await conn->SendControl(v, config_.io_timeout);
    if (st.ok() && !verified)
      st = DataLoss("content digest mismatch: got " + digest + ", source has " + source_digest);
  }
  bool commit_received = false;
  if (st.ok()) {
    auto c = co_await conn->ReceiveControl(config_.verify_timeout);
    if (!c.ok()) {
      st = c.status();
    } else if (c->msg_case() == wire::Control::kCommit) {
      commit_received = c->commit().epoch() == epoch + 1;
      if (!commit_received) st = ProtocolError("commit at an unexpected epoch");
    } else if (c->msg_case() == wire::Control::kAbort) {
      st = Aborted("source aborted: " + c->abort().reason());
    } else {
      st = ProtocolError("out-of-order control message: expected commit");
    }
  }

  // Resume only what the store gives us.
  bool resume = false;
  if (verified) resume = ResolveInDoubt(vm_id, migration_id, source_node, epoch);
  if (resume) {
    auto resume_span = StartSpan("resume_vm", "migration", &span.context());
    vms_.Add(vm_id, guest, epoch + 1);
    guest->Resume();
    metrics_.vms_running.Set(static_cast<double>(vms_.size()));
    obs::LogInfo("migration", "vm resumed on destination",
                 {{"vm_id", vm_id},
                  {"migration_id", migration_id},
                  {"trace_id", trace_id},
                  {"span_id", span_id},
                  {"epoch", epoch + 1}});
    if (commit_received) {
      wire::Control r;
      r.mutable_resumed()->set_ok(true);
      Status ignored = co_await conn->SendControl(r, config_.io_timeout);
      (void)ignored;
    }
  } else if (!st.ok()) {
    reject(st);
  }
  done();
}

amst::LinkMode MigrationEngine::ObserveLink(const std::string& peer,
                                            const amst::LinkSample& sample) {
  std::lock_guard lock(links_mu_);
  auto [it, added] = links_.try_emplace(peer, config_.link_modes);
  amst::ModeDetector& d = it->second;
  const amst::LinkMode before = d.mode();
  if (added) metrics_.links_in_mode(static_cast<int>(before)).Increment();
  if (d.Observe(sample)) {
    const amst::LinkMode after = d.mode();
    metrics_.links_in_mode(static_cast<int>(before)).Decrement();
    metrics_.links_in_mode(static_cast<int>(after)).Increment();
    metrics_.mode_switches(static_cast<int>(after)).Increment();
    obs::LogInfo("amst", "link mode changed",
                 {{"peer", peer},
                  {"from", amst::LinkModeName(before)},
                  {"to", amst::LinkModeName(after)},
                  {"rtt_ms", sample.rtt_ms},
                  {"bandwidth_bytes_per_second", sample.bandwidth_bytes_per_second},
                  {"loss_ratio", sample.loss_ratio}});
  }
  return d.mode();
}

bool MigrationEngine::ResolveInDoubt(const std::string& vm_id, const std::string& migration_id,
                                     const std::string& source_node, uint64_t epoch) {
  for (int attempt = 0; attempt < 50; ++attempt) {
    auto vm = store_.GetVm(vm_id);
    if (vm.ok()) {
      if (vm->node_id == config_.node_id && vm->epoch == epoch + 1) return true;
      if (vm->state != acp::kVmMigrating || vm->migration_id != migration_id) return false;
      // Still migrating and the source went quiet: cancel it in the store. If the source's
      // commit lands first, this CAS fails and the next read shows us as the owner.
      acp::VmRecord back = *vm;
      back.state = acp::kVmRunning;
      back.migration_id.clear();
      auto mig = store_.GetMigration(migration_id);
      acp::MigrationRecord* rec = nullptr;
      if (mig.ok()) {
        mig->phase = acp::kPhaseAborted;
        mig->error = "destination lost the source before the commit";
        mig->finished_ms = clock_.WallMillis();
        rec = &mig.value();
      }
      Status st = store_.CompareAndSwapVm(*vm, back, rec);
      if (st.ok()) {
        obs::LogWarn("migration", "in-doubt migration cancelled: vm stays on source",
                     {{"vm_id", vm_id}, {"migration_id", migration_id}, {"source", source_node}});
        return false;
      }
    }
    std::this_thread::sleep_for(Ms(100));
  }
  return false;
}

}  // namespace dwcp::migration
