#include "amst/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

namespace dwcp::amst {
namespace {

std::string OpenSslError() {
  unsigned long e = ERR_get_error();
  if (e == 0) return "unknown error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}

}  // namespace

const char* TlsFailureReason(SSL* ssl, const asio::error_code& ec) {
  const long verify = ssl != nullptr ? SSL_get_verify_result(ssl) : X509_V_OK;
  if (verify == X509_V_ERR_CERT_HAS_EXPIRED) return "expired_certificate";
  if (ec.category() == asio::error::get_ssl_category()) {
    const int reason = ERR_GET_REASON(static_cast<unsigned long>(ec.value()));
    switch (reason) {
      case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
        return "no_client_certificate";
      case SSL_R_CERTIFICATE_VERIFY_FAILED:
        return "bad_client_certificate";
      case SSL_R_WRONG_VERSION_NUMBER:
      case SSL_R_HTTP_REQUEST:
      case SSL_R_HTTPS_PROXY_REQUEST:
      case SSL_R_PACKET_LENGTH_TOO_LONG:
      case SSL_R_UNSUPPORTED_PROTOCOL:
      case SSL_R_UNKNOWN_PROTOCOL:
      case SSL_R_RECORD_LENGTH_MISMATCH:
        return "not_tls";
      default:
        break;
    }
  }
  if (verify != X509_V_OK) return "bad_client_certificate";
  return "tls_handshake";
}

Result<std::shared_ptr<asio::ssl::context>> MakeTlsContext(const TlsConfig& config, bool server) {
  if (config.ca_file.empty() || config.cert_file.empty() || config.key_file.empty()) {
    return Status(InvalidArgument(
        "TLS is on: give tls.ca, tls.cert and tls.key (--tls-ca, --tls-cert, --tls-key; "
        "scripts/make-certs.sh makes a test CA), or turn it off with --tls false"));
  }
  auto ctx = std::make_shared<asio::ssl::context>(server ? asio::ssl::context::tls_server
                                                         : asio::ssl::context::tls_client);
  SSL_CTX* native = ctx->native_handle();
  SSL_CTX_set_min_proto_version(native, TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(native, TLS1_3_VERSION);
  asio::error_code ec;
  ctx->load_verify_file(config.ca_file, ec);
  if (ec) {
    return Status(InvalidArgument("cannot load the TLS CA " + config.ca_file + ": " + OpenSslError()));
  }
  ctx->use_certificate_chain_file(config.cert_file, ec);
  if (ec) {
    return Status(
        InvalidArgument("cannot load the TLS certificate " + config.cert_file + ": " + OpenSslError()));
  }
  ctx->use_private_key_file(config.key_file, asio::ssl::context::pem, ec);
  if (ec) {
    return Status(InvalidArgument("cannot load the TLS key " + config.key_file + ": " + OpenSslError()));
  }
  if (SSL_CTX_check_private_key(native) != 1) {
    return Status(InvalidArgument("TLS key " + config.key_file + " does not match certificate " +
                                  config.cert_file));
  }
  ctx->set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert, ec);
  return ctx;
}

}  // namespace dwcp::amst
