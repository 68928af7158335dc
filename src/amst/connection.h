// A framed DWCP connection over one TCP stream, driven by C++20 coroutines. Every operation
// takes a deadline. The connection validates every frame it receives (magic, type, flags,
// length limit, sequence number, protocol version, checksum); the first bad frame fails the
// receive with a Protocol error and the caller closes the connection.
#pragma once

#include <asio.hpp>
#include <asio/ssl.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "amst/frame.h"
#include "amst/host_port.h"  // SplitHostPort
#include "amst/mode_detector.h"
#include "common/status.h"
#include "dwcp.pb.h"
#include "obs/metrics.h"

namespace dwcp::amst {

using Millis = std::chrono::milliseconds;

struct Frame {
  FrameHeader header;
  std::vector<uint8_t> payload;
};

// Not thread-safe: one coroutine drives it, on the socket's executor (a strand). Close()
// may be called from any thread. Always owned by a std::shared_ptr.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  // Takes a connected socket. Counts itself in dwcp_v3_active_connections while alive and
  // its bytes in dwcp_v3_network_bytes_total.
  // A frame longer than `max_payload`, or a control frame longer than `max_control`, fails
  // Receive() with a Protocol error and counts dwcp_v3_limit_rejections_total{limit=
  // "frame_size" | "message_size"} (docs/security.md#limits).
  Connection(asio::ip::tcp::socket socket, obs::Metrics& metrics,
             uint32_t max_payload = kDefaultMaxPayload, uint32_t max_control = kDefaultMaxControl);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  asio::awaitable<Status> Send(FrameType type, std::span<const uint8_t> payload, Millis deadline);
  asio::awaitable<Status> SendControl(const wire::Control& message, Millis deadline);
  // The next frame. Unavailable when the peer closed, DeadlineExceeded on timeout, Protocol
  // for a malformed, oversized, out-of-sequence or corrupt frame.
  asio::awaitable<Result<Frame>> Receive(Millis deadline);
  // The next frame, which must be a control frame that parses.
  asio::awaitable<Result<wire::Control>> ReceiveControl(Millis deadline);

  // Runs the TLS 1.3 handshake (as the accepting side when `server`); every frame after it
  // is encrypted. Unauthenticated when the peer's certificate does not verify.
  asio::awaitable<Status> StartTls(asio::ssl::context& context, bool server, Millis deadline);
  bool tls() const { return tls_ != nullptr; }
  // After a failed StartTls: why, as a dwcp_v3_auth_failures_total reason (amst/tls.h
  // TlsFailureReason); empty before.
  const std::string& tls_failure() const { return tls_failure_; }
  // True iff TLS is on and the peer's verified certificate names `name` (a SAN DNS entry,
  // or the subject CN when it has no SAN).
  bool PeerCertificateNames(const std::string& name) const;

  // Frame limits for frames received from now on (before the first Receive, typically).
  void SetFrameLimits(uint32_t max_payload, uint32_t max_control) {
    max_payload_ = max_payload;
    max_control_ = max_control;
  }

  // Frames after the handshake carry the negotiated version; before it, 0.
  void set_protocol(uint8_t version) { protocol_ = version; }
  uint8_t protocol() const { return protocol_; }

  // Closes the socket, failing any pending operation. Thread-safe.
  void Close();

  // The kernel's view of the link (TCP_INFO): minimum RTT (smoothed when unknown), delivery
  // rate, retransmitted share. Zeroes when the socket is closed.
  LinkSample SampleLink() const;

  uint64_t wire_bytes_sent() const { return wire_sent_; }
  uint64_t wire_bytes_received() const { return wire_received_; }
  std::string peer() const { return peer_; }
  asio::any_io_executor executor() { return socket_.get_executor(); }
  const asio::ip::tcp::socket& socket() const { return socket_; }

 private:
  template <typename Buffers>
  asio::awaitable<std::tuple<asio::error_code, size_t, bool>> Write(const Buffers& buffers,
                                                                    Millis deadline);
  template <typename Buffers>
  asio::awaitable<std::tuple<asio::error_code, size_t, bool>> Read(const Buffers& buffers,
                                                                   Millis deadline);

  asio::ip::tcp::socket socket_;
  std::unique_ptr<asio::ssl::stream<asio::ip::tcp::socket&>> tls_;  // set by StartTls
  obs::Metrics& metrics_;
  uint32_t max_payload_;
  uint32_t max_control_;
  std::string tls_failure_;
  uint8_t protocol_ = 0;
  uint32_t send_seq_ = 0;
  uint32_t recv_seq_ = 0;
  uint64_t wire_sent_ = 0;
  uint64_t wire_received_ = 0;
  std::string peer_;
};

// Connects to host:port within `deadline`, with TCP_NODELAY, autotuned socket buffers and
// BBR where the kernel has it. The socket lives on `executor` (default: the caller's).
asio::awaitable<Result<std::unique_ptr<Connection>>> Connect(const std::string& host, uint16_t port,
                                                             obs::Metrics& metrics,
                                                             Millis deadline);
asio::awaitable<Result<std::unique_ptr<Connection>>> Connect(const std::string& host, uint16_t port,
                                                             obs::Metrics& metrics,
                                                             Millis deadline,
                                                             asio::any_io_executor executor);

// The socket's congestion control algorithm ("bbr", "cubic", ...; "" if unknown).
std::string CongestionControl(const asio::ip::tcp::socket& socket);

// How many bytes one stream keeps in flight at most: the kernel's send buffer limit
// (tcp_wmem max), 4 MiB when unreadable. The stream controller's BDP guess divides by it.
uint64_t DefaultStreamWindowBytes();

}  // namespace dwcp::amst
