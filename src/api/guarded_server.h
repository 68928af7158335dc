// An httplib::Server that defends its thread pool (docs/security.md, "API limits"): it caps
// open connections per client address and in total, gives each request a deadline for
// arriving whole (TLS handshake, headers and body: slow clients cannot hold a thread), closes
// idle keep-alive connections, and runs connections on a pool that grows to the connection
// cap so that admitted clients never wait behind each other. Optionally serves TLS with
// client certificates. Routes, handlers and the rest are httplib's.
//
// httplib (0.11, a shared library here) lets a subclass take over a connection through
// process_and_close_socket and hands requests to its process_request with any Stream; the
// socket I/O, deadlines and TLS below are ours.
#pragma once

#include <httplib.h>
#include <openssl/ssl.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "api/api_limits.h"
#include "common/status.h"

namespace dwcp::api {

struct GuardedServerOptions {
  uint32_t max_connections = 256;
  uint32_t max_connections_per_client = 32;
  std::chrono::milliseconds read_timeout{10000};   // one whole request, handshake included
  std::chrono::milliseconds write_timeout{10000};  // each write must progress within
  std::chrono::milliseconds idle_timeout{5000};    // between requests of a connection
  uint32_t max_requests_per_connection = 100;
  // Called (on a connection thread) with the limit of every connection refused:
  // "api_connections".
  std::function<void(std::string_view limit)> on_refused;
};

// A server TLS context for the API: `cert` (PEM chain) and `key`; with `client_ca`, client
// certificates are requested and verified against it (a client without one is still
// admitted; its requests then carry no certificate). `on_bad_client_certificate` is called
// with OpenSSL's reason each time a presented certificate fails verification, which fails
// the handshake. InvalidArgument naming the file that does not load.
using SslCtxPtr = std::unique_ptr<SSL_CTX, void (*)(SSL_CTX*)>;
Result<SslCtxPtr> MakeApiTlsContext(
    const std::string& cert, const std::string& key, const std::string& client_ca,
    std::function<void(const std::string& reason)> on_bad_client_certificate);

class GuardedServer : public httplib::Server {
 public:
  // `tls`: null for plain HTTP.
  GuardedServer(GuardedServerOptions options, SslCtxPtr tls);
  ~GuardedServer() override;

  // Whether the request being handled on this thread came with a client certificate that
  // verified against the client CA. For handlers only.
  static bool VerifiedClientCertificate(const httplib::Request& req);
  // Asks to close this thread's connection after the response being built (the request's
  // body was not read, so the connection cannot carry another request). For handlers only.
  static void CloseAfterResponse();
  // Whether this thread's request failed because it did not arrive whole within
  // read_timeout (httplib then answers 400; an error handler may make it 408). The
  // connection is closed after the response.
  static bool RequestTimedOut();

  // Raises the bound socket's accept backlog (httplib listens with 5, which a connection
  // flood fills, so that other clients' connects stall). Call after binding.
  void SetListenBacklog(int backlog);

  uint32_t open_connections() const { return connections_.open(); }

 private:
  bool process_and_close_socket(socket_t sock) override;
  bool Stopping() const;

  GuardedServerOptions options_;
  SslCtxPtr tls_;
  ConnectionLimiter connections_;
};

}  // namespace dwcp::api
