#include "amst/connection.h"

#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <charconv>
#include <cstdio>
#include <cstring>

#include "amst/tls.h"

namespace dwcp::amst {
namespace {

using asio::awaitable;
using asio::use_awaitable;
using asio::experimental::as_tuple;
using namespace asio::experimental::awaitable_operators;

Status FromError(const asio::error_code& ec, const char* what) {
  if (ec == asio::error::eof || ec == asio::error::connection_reset ||
      ec == asio::error::broken_pipe) {
    return Unavailable(std::string(what) + ": peer closed the connection");
  }
  if (ec == asio::error::operation_aborted) return Aborted(std::string(what) + ": cancelled");
  return Unavailable(std::string(what) + ": " + ec.message());
}

// Runs a read or write with a deadline; returns {error, bytes}.
template <typename Op>
awaitable<std::tuple<asio::error_code, size_t, bool>> WithDeadline(Op op, Millis deadline) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  timer.expires_after(deadline);
  auto result = co_await (std::move(op) || timer.async_wait(as_tuple(use_awaitable)));
  if (result.index() == 1) co_return std::make_tuple(asio::error::timed_out, size_t{0}, true);
  auto [ec, n] = std::get<0>(result);
  co_return std::make_tuple(ec, n, false);
}

}  // namespace

template <typename Buffers>
awaitable<std::tuple<asio::error_code, size_t, bool>> Connection::Write(const Buffers& buffers,
                                                                        Millis deadline) {
  if (tls_) {
    co_return co_await WithDeadline(asio::async_write(*tls_, buffers, as_tuple(use_awaitable)),
                                    deadline);
  }
  co_return co_await WithDeadline(asio::async_write(socket_, buffers, as_tuple(use_awaitable)),
                                  deadline);
}

template <typename Buffers>
awaitable<std::tuple<asio::error_code, size_t, bool>> Connection::Read(const Buffers& buffers,
                                                                       Millis deadline) {
  if (tls_) {
    co_return co_await WithDeadline(asio::async_read(*tls_, buffers, as_tuple(use_awaitable)),
                                    deadline);
  }
  co_return co_await WithDeadline(asio::async_read(socket_, buffers, as_tuple(use_awaitable)),
                                  deadline);
}

awaitable<Status> Connection::StartTls(asio::ssl::context& context, bool server, Millis deadline) {
  tls_ = std::make_unique<asio::ssl::stream<asio::ip::tcp::socket&>>(socket_, context);
  asio::steady_timer timer(co_await asio::this_coro::executor);
  timer.expires_after(deadline);
  auto result = co_await (tls_->async_handshake(server ? asio::ssl::stream_base::server
                                                       : asio::ssl::stream_base::client,
                                                as_tuple(use_awaitable)) ||
                          timer.async_wait(as_tuple(use_awaitable)));
  if (result.index() == 1) {
    tls_failure_ = "handshake_timeout";
    co_return DeadlineExceeded("TLS handshake with " + peer_ + " timed out");
  }
  auto [ec] = std::get<0>(result);
  if (ec) {
    tls_failure_ = TlsFailureReason(tls_->native_handle(), ec);
    co_return Status(StatusCode::kUnauthenticated,
                     "TLS handshake with " + peer_ + " failed: " + ec.message());
  }
  co_return Status::Ok();
}

bool Connection::PeerCertificateNames(const std::string& name) const {
  if (!tls_ || name.empty()) return false;
  SSL* ssl = tls_->native_handle();
  if (SSL_get_verify_result(ssl) != X509_V_OK) return false;
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (cert == nullptr) return false;
  // Exact names only: no wildcards, no partial labels.
  return X509_check_host(cert, name.data(), name.size(),
                         X509_CHECK_FLAG_NO_WILDCARDS | X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS,
                         nullptr) == 1;
}

Connection::Connection(asio::ip::tcp::socket socket, obs::Metrics& metrics, uint32_t max_payload,
                       uint32_t max_control)
    : socket_(std::move(socket)),
      metrics_(metrics),
      max_payload_(max_payload),
      max_control_(max_control) {
  asio::error_code ec;
  auto ep = socket_.remote_endpoint(ec);
  peer_ = ec ? "unknown" : ep.address().to_string() + ":" + std::to_string(ep.port());
  socket_.set_option(asio::ip::tcp::no_delay(true), ec);
  // Socket buffers stay with the kernel's autotuning (tcp_wmem / tcp_rmem): a fixed size
  // would cap each stream at buffer / RTT on a long link. BBR where the kernel has it: it
  // keeps a lossy long link full where loss-based control backs off.
  static constexpr char kBbr[] = "bbr";
  (void)setsockopt(socket_.native_handle(), IPPROTO_TCP, TCP_CONGESTION, kBbr, sizeof kBbr - 1);
  // Keep little unsent data in the kernel: a write completes about when its bytes leave, so
  // a stalled stream blocks its writer (and stops taking batches) instead of burying them
  // in a deep send buffer while the other streams run ahead.
  const int notsent_lowat = 256 << 10;
  (void)setsockopt(socket_.native_handle(), IPPROTO_TCP, TCP_NOTSENT_LOWAT, &notsent_lowat,
                   sizeof notsent_lowat);
  metrics_.active_connections.Increment();
  metrics_.amst_streams.Increment();
}

Connection::~Connection() {
  asio::error_code ec;
  socket_.close(ec);
  metrics_.active_connections.Decrement();
  metrics_.amst_streams.Decrement();
}

void Connection::Close() {
  asio::post(socket_.get_executor(), [self = shared_from_this()] {
    asio::error_code ec;
    self->socket_.shutdown(asio::socket_base::shutdown_both, ec);
    self->socket_.close(ec);
  });
}

awaitable<Status> Connection::Send(FrameType type, std::span<const uint8_t> payload,
                                   Millis deadline) {
  auto header = EncodeFrameHeader(protocol_, type, send_seq_, payload);
  std::array<asio::const_buffer, 2> bufs = {asio::buffer(header),
                                            asio::buffer(payload.data(), payload.size())};
  auto [ec, n, timed_out] = co_await Write(bufs, deadline);
  if (timed_out) co_return DeadlineExceeded("send to " + peer_ + " timed out");
  if (ec) co_return FromError(ec, ("send to " + peer_).c_str());
  ++send_seq_;
  wire_sent_ += n;
  metrics_.wire_sent.Increment(static_cast<double>(n));
  co_return Status::Ok();
}

awaitable<Status> Connection::SendControl(const wire::Control& message, Millis deadline) {
  std::string bytes;
  if (!message.SerializeToString(&bytes)) co_return Internal("cannot serialise control message");
  co_return co_await Send(FrameType::kControl,
                          {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, deadline);
}

awaitable<Result<Frame>> Connection::Receive(Millis deadline) {
  std::array<uint8_t, kFrameHeaderSize> raw{};
  {
    auto [ec, n, timed_out] = co_await Read(asio::buffer(raw), deadline);
    if (timed_out) co_return DeadlineExceeded("receive from " + peer_ + " timed out");
    if (ec) co_return FromError(ec, ("receive from " + peer_).c_str());
  }
  auto header = DecodeFrameHeader(raw, max_payload_);
  if (!header.ok()) {
    if (RawFrameLength(raw) > max_payload_) metrics_.CountLimitRejection("frame_size");
    co_return header.status();
  }
  if (Status size = CheckControlSize(*header, max_control_); !size.ok()) {
    metrics_.CountLimitRejection("message_size");
    co_return size;
  }
  if (Status order = CheckFrameOrder(*header, recv_seq_, protocol_); !order.ok()) co_return order;
  Frame frame{*header, std::vector<uint8_t>(header->length)};
  if (header->length > 0) {
    auto [ec, n, timed_out] = co_await Read(asio::buffer(frame.payload), deadline);
    if (timed_out) co_return DeadlineExceeded("receive from " + peer_ + " timed out");
    if (ec) co_return FromError(ec, ("receive from " + peer_).c_str());
  }
  if (!VerifyFrameChecksum(raw, frame.payload, header->checksum)) {
    co_return ProtocolError("frame checksum mismatch (sequence " + std::to_string(header->seq) +
                            ")");
  }
  ++recv_seq_;
  uint64_t n = kFrameHeaderSize + frame.payload.size();
  wire_received_ += n;
  metrics_.wire_received.Increment(static_cast<double>(n));
  co_return frame;
}

awaitable<Result<wire::Control>> Connection::ReceiveControl(Millis deadline) {
  auto frame = co_await Receive(deadline);
  if (!frame.ok()) co_return frame.status();
  if (frame->header.type != FrameType::kControl) {
    co_return ProtocolError("unexpected page frame where a control message was due");
  }
  wire::Control message;
  if (!message.ParseFromArray(frame->payload.data(), static_cast<int>(frame->payload.size()))) {
    co_return ProtocolError("control message does not parse");
  }
  co_return message;
}

// glibc's tcp_info stops at tcpi_total_retrans; the kernel's UAPI struct goes on with these
// fields (linux/tcp.h, stable since 4.10), filled when the buffer is large enough.
struct TcpInfoExtended {
  tcp_info base;
  uint64_t pacing_rate, max_pacing_rate, bytes_acked, bytes_received;
  uint32_t segs_out, segs_in, notsent_bytes, min_rtt, data_segs_in, data_segs_out;
  uint64_t delivery_rate;
};

LinkSample Connection::SampleLink() const {
  LinkSample s;
  TcpInfoExtended info{};
  socklen_t len = sizeof info;
  if (getsockopt(const_cast<asio::ip::tcp::socket&>(socket_).native_handle(), IPPROTO_TCP, TCP_INFO,
                 &info, &len) != 0) {
    return s;
  }
  s.rtt_ms = info.base.tcpi_rtt / 1000.0;
  // The path's RTT is the minimum seen: the smoothed RTT of a busy stream includes its own
  // queueing, which would make a loaded LAN look like a WAN.
  if (len >= offsetof(TcpInfoExtended, min_rtt) + sizeof(uint32_t) && info.min_rtt > 0 &&
      info.min_rtt != ~0u) {
    s.rtt_ms = info.min_rtt / 1000.0;
  }
  if (len >= offsetof(TcpInfoExtended, delivery_rate) + sizeof(uint64_t)) {
    s.bandwidth_bytes_per_second = static_cast<double>(info.delivery_rate);
    if (info.segs_out > 0) {
      s.loss_ratio = static_cast<double>(info.base.tcpi_total_retrans) / info.segs_out;
    }
  }
  return s;
}

awaitable<Result<std::unique_ptr<Connection>>> Connect(const std::string& host, uint16_t port,
                                                       obs::Metrics& metrics, Millis deadline) {
  co_return co_await Connect(host, port, metrics, deadline, co_await asio::this_coro::executor);
}

awaitable<Result<std::unique_ptr<Connection>>> Connect(const std::string& host, uint16_t port,
                                                       obs::Metrics& metrics, Millis deadline,
                                                       asio::any_io_executor executor) {
  asio::ip::tcp::resolver resolver(executor);
  auto [rec, endpoints] =
      co_await resolver.async_resolve(host, std::to_string(port), as_tuple(use_awaitable));
  if (rec) co_return Unavailable("cannot resolve " + host + ": " + rec.message());
  asio::ip::tcp::socket socket(executor);
  asio::steady_timer timer(executor);
  timer.expires_after(deadline);
  auto result = co_await (asio::async_connect(socket, endpoints, as_tuple(use_awaitable)) ||
                          timer.async_wait(as_tuple(use_awaitable)));
  std::string target = host + ":" + std::to_string(port);
  if (result.index() == 1) co_return DeadlineExceeded("connect to " + target + " timed out");
  auto [ec, ep] = std::get<0>(result);
  if (ec) co_return Unavailable("connect to " + target + ": " + ec.message());
  co_return std::make_unique<Connection>(std::move(socket), metrics);
}

std::string CongestionControl(const asio::ip::tcp::socket& socket) {
  char name[16] = {};
  socklen_t len = sizeof name;
  if (getsockopt(const_cast<asio::ip::tcp::socket&>(socket).native_handle(), IPPROTO_TCP,
                 TCP_CONGESTION, name, &len) != 0) {
    return "";
  }
  return std::string(name, strnlen(name, len));
}

uint64_t DefaultStreamWindowBytes() {
  // The third field of tcp_wmem: the most a stream's send buffer autotunes to.
  FILE* f = std::fopen("/proc/sys/net/ipv4/tcp_wmem", "r");
  unsigned long long min = 0, def = 0, max = 0;
  int n = f ? std::fscanf(f, "%llu %llu %llu", &min, &def, &max) : 0;
  if (f) std::fclose(f);
  return n == 3 && max >= (64u << 10) ? max : 4ull << 20;
}

}  // namespace dwcp::amst
