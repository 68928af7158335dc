// TLS 1.3 with mutual authentication between nodes: both sides present a certificate signed
// by the cluster's CA, and a peer without one is refused (docs/security.md).
#pragma once

#include <asio/ssl.hpp>
#include <memory>
#include <string>

#include "common/status.h"

namespace dwcp::amst {

struct TlsConfig {
  bool enabled = true;
  std::string ca_file;    // PEM: the CA that signs every node's certificate
  std::string cert_file;  // PEM: this node's certificate (chain)
  std::string key_file;   // PEM: this node's private key
};

// A context for one side (server = accepts connections) that speaks only TLS 1.3, presents
// this node's certificate and requires and verifies the peer's. InvalidArgument naming the
// file that cannot be read or does not match.
Result<std::shared_ptr<asio::ssl::context>> MakeTlsContext(const TlsConfig& config, bool server);

// Why a TLS handshake on `ssl` failed with `ec`, as a dwcp_v3_auth_failures_total reason:
// "expired_certificate", "bad_client_certificate" (does not verify: another CA, not yet
// valid, ...), "no_client_certificate" (the peer sent none), "not_tls" (the peer does not
// speak TLS 1.3: plain TCP, garbage, an older version), "tls_handshake" (anything else).
// Read it right after the failure: it consults the connection's verify result.
const char* TlsFailureReason(SSL* ssl, const asio::error_code& ec);

}  // namespace dwcp::amst
