#include "api/api_access.h"

#include <gtest/gtest.h>

#include "common/secret.h"

namespace dwcp::api {
namespace {

TEST(ApiAccessTest, NothingConfiguredAdmitsEveryone) {
  EXPECT_TRUE(AuthorizeMutating({}, "", false).allowed);
}

TEST(ApiAccessTest, TokenMissingOrWrongIsRefusedWithTheReason) {
  AccessPolicy p{"s3cret-token", false};
  EXPECT_TRUE(AuthorizeMutating(p, "Bearer s3cret-token", false).allowed);
  EXPECT_TRUE(AuthorizeMutating(p, "bearer s3cret-token", false).allowed);
  auto missing = AuthorizeMutating(p, "", false);
  EXPECT_FALSE(missing.allowed);
  EXPECT_EQ(missing.reason, "missing_token");
  EXPECT_EQ(AuthorizeMutating(p, "Basic czNjcmV0", false).reason, "missing_token");
  EXPECT_EQ(AuthorizeMutating(p, "Bearer ", false).reason, "missing_token");
  EXPECT_EQ(AuthorizeMutating(p, "Bearer s3cret-toke", false).reason, "wrong_token");
  EXPECT_EQ(AuthorizeMutating(p, "Bearer s3cret-token ", false).reason, "wrong_token");
  // Without a client CA, a certificate is no credential.
  EXPECT_FALSE(AuthorizeMutating(p, "", true).allowed);
}

TEST(ApiAccessTest, VerifiedClientCertificateStandsInForTheToken) {
  AccessPolicy both{"tok", true};
  EXPECT_TRUE(AuthorizeMutating(both, "", true).allowed);
  EXPECT_TRUE(AuthorizeMutating(both, "Bearer tok", false).allowed);
  EXPECT_EQ(AuthorizeMutating(both, "Bearer nope", false).reason, "wrong_token");
  AccessPolicy certs_only{"", true};
  EXPECT_TRUE(AuthorizeMutating(certs_only, "", true).allowed);
  EXPECT_FALSE(AuthorizeMutating(certs_only, "", false).allowed);
  EXPECT_FALSE(AuthorizeMutating(certs_only, "Bearer anything", false).allowed);
}

TEST(SecretTest, ComparesExactlyAndEmptyMatchesNothing) {
  EXPECT_TRUE(SecretEquals("abc", "abc"));
  EXPECT_FALSE(SecretEquals("abd", "abc"));
  EXPECT_FALSE(SecretEquals("abcd", "abc"));
  EXPECT_FALSE(SecretEquals("", ""));
  EXPECT_EQ(BearerCredentials("BEARER x y"), "x y");
  EXPECT_EQ(BearerCredentials("Bearerx"), "");
}

}  // namespace
}  // namespace dwcp::api
