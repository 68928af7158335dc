#include "api/api_access.h"

#include "common/secret.h"

namespace dwcp::api {

AccessDecision AuthorizeMutating(const AccessPolicy& policy, std::string_view authorization,
                                 bool verified_client_certificate) {
  if (!policy.Required()) return {};
  if (policy.client_certificates && verified_client_certificate) return {};
  const std::string_view presented = BearerCredentials(authorization);
  if (presented.empty()) return {false, "missing_token"};
  if (!SecretEquals(presented, policy.token)) return {false, "wrong_token"};
  return {};
}

}  // namespace dwcp::api
