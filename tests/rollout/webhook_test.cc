#include "rollout/webhook.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

namespace dwcp::rollout {
namespace {

// An Alertmanager v4 webhook body as Alertmanager sends it.
constexpr char kFiring[] = R"({
  "version": "4", "groupKey": "{}:{alertname=\"DwcpRolloutNoGo\"}", "truncatedAlerts": 0,
  "status": "firing", "receiver": "dwcp-rollback",
  "groupLabels": {"alertname": "DwcpRolloutNoGo"},
  "commonLabels": {"alertname": "DwcpRolloutNoGo", "severity": "critical"},
  "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
  "alerts": [
    {"status": "firing", "labels": {"alertname": "DwcpRolloutNoGo", "region": "eu-west"},
     "annotations": {}, "startsAt": "2025-11-10T18:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
     "generatorURL": "http://prometheus:9090/graph", "fingerprint": "a1"},
    {"status": "firing", "labels": {"alertname": "DwcpHighErrorRate", "region": "us-east"},
     "fingerprint": "a2"},
    {"status": "resolved", "labels": {"alertname": "DwcpRolloutNoGo", "region": "ap-south"},
     "fingerprint": "a3"},
    {"status": "firing", "labels": {"alertname": "DwcpRolloutNoGo", "region": "eu-west"},
     "fingerprint": "a4"}
  ]
})";

TEST(AlertmanagerWebhookTest, ParsesFiringAlertsAndTheirRegions) {
  auto n = ParseAlertmanagerWebhook(kFiring);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(n->status, "firing");
  EXPECT_EQ(n->receiver, "dwcp-rollback");
  EXPECT_EQ(n->firing.size(), 3u);
  EXPECT_EQ(n->regions, (std::vector<std::string>{"eu-west", "us-east"}));
  EXPECT_FALSE(n->all_regions);
}

TEST(AlertmanagerWebhookTest, ResolvedNotificationsFireNothing) {
  auto n = ParseAlertmanagerWebhook(
      R"({"status": "resolved", "alerts": [{"labels": {"alertname": "X", "region": "eu"}}]})");
  ASSERT_TRUE(n.ok());
  EXPECT_TRUE(n->firing.empty());
  EXPECT_TRUE(n->regions.empty());
}

TEST(AlertmanagerWebhookTest, AnAlertWithoutRegionConcernsEveryRegion) {
  auto n = ParseAlertmanagerWebhook(
      R"({"status": "firing", "alerts": [{"labels": {"alertname": "DwcpNodeDown"}}]})");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->firing, (std::vector<std::string>{"DwcpNodeDown"}));
  EXPECT_TRUE(n->all_regions);
}

TEST(AlertmanagerWebhookTest, RejectsWhatIsNotAnAlertmanagerPayload) {
  for (const char* body : {"", "not json", "[]", R"({"status": "firing"})", R"({"alerts": "many"})",
                           R"({"alerts": [1]})"}) {
    EXPECT_EQ(ParseAlertmanagerWebhook(body).status().code(), StatusCode::kInvalidArgument) << body;
  }
}

TEST(WebhookSecretTest, BearerMatchesOnlyTheExactSecret) {
  EXPECT_TRUE(BearerMatches("Bearer s3cret-token", "s3cret-token"));
  EXPECT_TRUE(BearerMatches("bearer s3cret-token", "s3cret-token"));
  EXPECT_FALSE(BearerMatches("Bearer s3cret-tokeN", "s3cret-token"));
  EXPECT_FALSE(BearerMatches("Bearer s3cret-token2", "s3cret-token"));
  EXPECT_FALSE(BearerMatches("Bearer s3cret", "s3cret-token"));
  EXPECT_FALSE(BearerMatches("s3cret-token", "s3cret-token"));
  EXPECT_FALSE(BearerMatches("Basic s3cret-token", "s3cret-token"));
  EXPECT_FALSE(BearerMatches("", "s3cret-token"));
  EXPECT_FALSE(BearerMatches("Bearer ", ""));
}

TEST(WebhookSecretTest, ReadsTheFileWithoutSurroundingWhitespace) {
  char path[] = "/tmp/webhook_secret_XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  { std::ofstream(path) << "  s3cret-token\n"; }
  auto secret = ReadSecretFile(path);
  ASSERT_TRUE(secret.ok()) << secret.status().ToString();
  EXPECT_EQ(*secret, "s3cret-token");
  { std::ofstream(path) << "\n"; }
  EXPECT_EQ(ReadSecretFile(path).status().code(), StatusCode::kFailedPrecondition);
  std::remove(path);
  EXPECT_EQ(ReadSecretFile(path).status().code(), StatusCode::kUnavailable);
}

}  // namespace
}  // namespace dwcp::rollout
