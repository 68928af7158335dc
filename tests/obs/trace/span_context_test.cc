#include "obs/trace/span_context.h"

#include <gtest/gtest.h>

namespace dwcp::obs::trace {
namespace {

TEST(TraceContextTest, TraceparentRoundTrip) {
  const std::string header = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  auto ctx = SpanContext::FromTraceparent(header);
  ASSERT_TRUE(ctx.has_value());
  EXPECT_TRUE(ctx->valid());
  EXPECT_TRUE(ctx->sampled);
  EXPECT_TRUE(ctx->remote);
  EXPECT_EQ(ctx->TraceIdHex(), "0af7651916cd43dd8448eb211c80319c");
  EXPECT_EQ(ctx->SpanIdHex(), "b7ad6b7169203331");
  EXPECT_EQ(ctx->trace_id[0], 0x0a);
  EXPECT_EQ(ctx->span_id[7], 0x31);
  EXPECT_EQ(ctx->ToTraceparent(), header);

  auto unsampled =
      SpanContext::FromTraceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00");
  ASSERT_TRUE(unsampled.has_value());
  EXPECT_FALSE(unsampled->sampled);
  EXPECT_EQ(unsampled->ToTraceparent(), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00");
  // Unknown flag bits are accepted; only "sampled" is kept.
  auto other_flags =
      SpanContext::FromTraceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03");
  ASSERT_TRUE(other_flags.has_value());
  EXPECT_TRUE(other_flags->sampled);
}

TEST(TraceContextTest, RejectsMalformedTraceparent) {
  const char* bad[] = {
      "",
      "00",
      "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",      // no flags
      "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-",  // too long
      "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1",    // short flags
      "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",   // separator
      "00-0af7651916cd43dd8448eb211c80319cb7ad6b7169203331--01",   // dash moved
      "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",   // upper case
      "00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01",   // not hex
      "00-00000000000000000000000000000000-b7ad6b7169203331-01",   // zero trace id
      "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",   // zero span id
      "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",   // forbidden version
      "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",   // unknown version
      " 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0",   // whitespace
      "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0x",   // flags not hex
  };
  for (const char* h : bad) {
    EXPECT_FALSE(SpanContext::FromTraceparent(h).has_value()) << "accepted: '" << h << "'";
  }
}

TEST(TraceContextTest, DefaultContextIsInvalid) {
  SpanContext ctx;
  EXPECT_FALSE(ctx.valid());
  ctx.trace_id[15] = 1;
  EXPECT_FALSE(ctx.valid());
  ctx.span_id[0] = 1;
  EXPECT_TRUE(ctx.valid());
  EXPECT_EQ(ctx.TraceIdHex(), "00000000000000000000000000000001");
  EXPECT_EQ(ctx.SpanIdHex(), "0100000000000000");
}

}  // namespace
}  // namespace dwcp::obs::trace
