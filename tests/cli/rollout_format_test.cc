// `dwcp rollout` rendering (src/cli/format.h).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "cli/format.h"

namespace dwcp::cli {
namespace {

using nlohmann::json;

json Region(const std::string& name, const std::string& stage, double percent) {
  return {
      {"region", name},
      {"stage", stage},
      {"percent", percent},
      {"halted", false},
      {"changed_ms", 1'000},
      {"changed_by", "node-a"},
      {"change_reason", "manual"},
      {"change_detail", "advanced by an operator"},
      {"decision", "go"},
      {"reasons", {"v3 success 100.0% vs v1 100.0%"}},
      {"samples",
       {{"v1", {{"migrations", 12}, {"failed", 0}}}, {"v3", {{"migrations", 10}, {"failed", 1}}}}},
      {"next_advance_ms", 601'000},
      {"next_stage", "early"}};
}

TEST(RolloutFormatTest, StatusTableAndNotes) {
  json eu = Region("eu-west", "canary", 5);
  json us = Region("us-east", "v1", 0);
  us["halted"] = true;
  us["decision"] = "pending";
  us["next_advance_ms"] = nullptr;
  us["change_reason"] = "alert";
  us["change_detail"] = "Alertmanager (dwcp-rollback): DwcpRolloutNoGo";
  std::string out = RenderRolloutStatus({{"regions", {eu, us}}}, 121'000);
  EXPECT_NE(out.find("REGION   STAGE"), std::string::npos) << out;
  EXPECT_NE(out.find("eu-west  canary (5%)"), std::string::npos) << out;
  EXPECT_NE(out.find("GO"), std::string::npos) << out;
  EXPECT_NE(out.find("10 (1 failed)"), std::string::npos) << out;
  EXPECT_NE(out.find("2m00s"), std::string::npos) << out;
  EXPECT_NE(out.find("us-east  v1 (0%) halted  pending"), std::string::npos) << out;
  EXPECT_NE(out.find("eu-west: advances to early in 8m00s if GO holds"), std::string::npos) << out;
  EXPECT_NE(out.find("us-east: stage set by node-a (alert: Alertmanager (dwcp-rollback): "
                     "DwcpRolloutNoGo)"),
            std::string::npos)
      << out;
  EXPECT_EQ(RenderRolloutStatus(json::object(), 0), "no rollout regions\n");
  EXPECT_EQ(RenderRolloutStatus("garbage", 0), "no rollout regions\n");
}

TEST(RolloutFormatTest, ChangeLine) {
  json before = Region("eu-west", "canary", 5);
  json after = {{"region", "eu-west"}, {"regions", {Region("eu-west", "early", 25)}}};
  EXPECT_EQ(RenderRolloutChange("eu-west", before, after),
            "eu-west: canary (5%) \u2192 early (25%)\n");
  after["regions"][0]["halted"] = true;
  EXPECT_EQ(RenderRolloutChange("eu-west", json(), after),
            "eu-west: early (25%), automatic advance halted until `dwcp rollout advance`\n");
  EXPECT_EQ(RenderRolloutChange("mars", before, after), "mars: changed\n");
}

}  // namespace
}  // namespace dwcp::cli
