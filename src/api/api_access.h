// Who may call the HTTP API's mutating endpoints (docs/security.md): holders of the bearer
// token and, with TLS and a client CA, holders of a client certificate the CA signed.
#pragma once

#include <string>
#include <string_view>

namespace dwcp::api {

struct AccessPolicy {
  std::string token;                 // "" = no token configured
  bool client_certificates = false;  // api_client_ca is set
  // Whether mutating calls need credentials at all.
  bool Required() const { return !token.empty() || client_certificates; }
};

struct AccessDecision {
  bool allowed = true;
  // When refused, the dwcp_v3_auth_failures_total reason: missing_token, wrong_token.
  std::string_view reason;
};

// Authorizes a mutating request from its Authorization header and whether its TLS client
// certificate was verified against api_client_ca. The token is compared in constant time.
AccessDecision AuthorizeMutating(const AccessPolicy& policy, std::string_view authorization,
                                 bool verified_client_certificate);

}  // namespace dwcp::api
