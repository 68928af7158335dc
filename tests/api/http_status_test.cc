#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "api/api_server.h"
#include "common/status.h"

namespace dwcp::api {
namespace {

// docs/api.md's error table; codes it does not list use the statuses common/status.h gives
// them, and anything else is a server-side failure (500).
TEST(HttpStatusTest, EveryCodeMapsPerTheApiDocs) {
  const std::vector<std::pair<StatusCode, int>> table = {
      {StatusCode::kOk, 200},
      {StatusCode::kInvalidArgument, 400},
      {StatusCode::kUnauthenticated, 401},
      {StatusCode::kNotFound, 404},
      {StatusCode::kAlreadyExists, 409},
      {StatusCode::kFailedPrecondition, 409},
      {StatusCode::kAborted, 409},
      {StatusCode::kUnavailable, 503},
      {StatusCode::kInternal, 500},
      {StatusCode::kDeadlineExceeded, 504},
      {StatusCode::kUnimplemented, 501},
      {StatusCode::kDataLoss, 500},
      {StatusCode::kProtocol, 500},
  };
  for (const auto& [code, http] : table) {
    EXPECT_EQ(HttpStatusOf(code), http) << StatusCodeName(code);
  }
}

TEST(HttpStatusTest, TableCoversEveryCode) {
  // Every enumerator from kOk to kUnimplemented has a stable name and a real HTTP status.
  for (int i = 0; i <= static_cast<int>(StatusCode::kUnimplemented); ++i) {
    auto code = static_cast<StatusCode>(i);
    EXPECT_NE(std::string(StatusCodeName(code)), "unknown") << i;
    int http = HttpStatusOf(code);
    if (code == StatusCode::kOk) {
      EXPECT_EQ(http, 200);
    } else {
      EXPECT_GE(http, 400) << StatusCodeName(code);
      EXPECT_LE(http, 599) << StatusCodeName(code);
    }
  }
}

TEST(HttpStatusTest, ErrorCodeNamesMatchTheApiDocs) {
  EXPECT_STREQ(StatusCodeName(StatusCode::kInvalidArgument), "invalid_argument");
  EXPECT_STREQ(StatusCodeName(StatusCode::kUnauthenticated), "unauthenticated");
  EXPECT_STREQ(StatusCodeName(StatusCode::kNotFound), "not_found");
  EXPECT_STREQ(StatusCodeName(StatusCode::kAlreadyExists), "already_exists");
  EXPECT_STREQ(StatusCodeName(StatusCode::kFailedPrecondition), "failed_precondition");
  EXPECT_STREQ(StatusCodeName(StatusCode::kAborted), "aborted");
  EXPECT_STREQ(StatusCodeName(StatusCode::kUnavailable), "unavailable");
  EXPECT_STREQ(StatusCodeName(StatusCode::kInternal), "internal");
}

}  // namespace
}  // namespace dwcp::api
