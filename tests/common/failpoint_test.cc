#include "common/failpoint.h"

#include <gtest/gtest.h>

#include <cstdlib>

namespace dwcp {
namespace {

using std::chrono::milliseconds;

TEST(FailpointTest, ParsesSleepEntries) {
  auto fp = ParseFailpoints(" a.b=sleep(1500) ; c=sleep(0);;d=on");
  ASSERT_TRUE(fp.ok()) << fp.status().ToString();
  ASSERT_EQ(fp->size(), 3u);
  EXPECT_EQ(fp->at("d"), milliseconds(-1));
  EXPECT_EQ(fp->at("a.b"), milliseconds(1500));
  EXPECT_EQ(fp->at("c"), milliseconds(0));
  auto empty = ParseFailpoints("");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

TEST(FailpointTest, RejectsMalformedEntries) {
  for (const char* bad : {"a", "a=", "=sleep(1)", "a=sleep()", "a=sleep(1", "a=sleep(-1)",
                          "a=pause(1)", "a=sleep(1x)", "a=sleep(9999999999)"}) {
    auto fp = ParseFailpoints(bad);
    ASSERT_FALSE(fp.ok()) << bad;
    EXPECT_EQ(fp.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(fp.status().message().find("NAME=sleep(MILLISECONDS) or NAME=on"), std::string::npos);
  }
}

TEST(FailpointTest, ArmedOnlyThroughTheEnvironment) {
  ::setenv("DWCP_FAILPOINTS", "test.point=sleep(25);test.switch=on", 1);
  ASSERT_TRUE(Failpoints::Init().ok());
  EXPECT_TRUE(Failpoints::Any());
  EXPECT_EQ(Failpoints::Hit("test.point"), milliseconds(25));
  EXPECT_EQ(Failpoints::Hit("test.switch"), milliseconds(0));
  EXPECT_TRUE(Failpoints::Armed("test.switch"));
  EXPECT_TRUE(Failpoints::Armed("test.point"));
  EXPECT_FALSE(Failpoints::Armed("other.point"));
  EXPECT_EQ(Failpoints::Hit("other.point"), milliseconds(0));
  ::setenv("DWCP_FAILPOINTS", "broken", 1);
  EXPECT_FALSE(Failpoints::Init().ok());
  ::unsetenv("DWCP_FAILPOINTS");
  ASSERT_TRUE(Failpoints::Init().ok());
  EXPECT_FALSE(Failpoints::Any());
  EXPECT_EQ(Failpoints::Hit("test.point"), milliseconds(0));
}

}  // namespace
}  // namespace dwcp
