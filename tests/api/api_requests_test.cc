#include "api/api_requests.h"

#include <gtest/gtest.h>

namespace dwcp::api {
namespace {

void ExpectInvalid(const Status& st, const std::string& needle) {
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
  EXPECT_NE(st.message().find(needle), std::string::npos) << st.message();
}

TEST(ApiRequestsTest, BodiesMustBeJsonObjects) {
  ExpectInvalid(ParseJsonObject("").status(), "not valid JSON");
  ExpectInvalid(ParseJsonObject("{\"a\":").status(), "not valid JSON");
  ExpectInvalid(ParseJsonObject("[1]").status(), "must be a JSON object");
  EXPECT_TRUE(ParseJsonObject("{}").ok());
}

TEST(ApiRequestsTest, CreateVmKeepsAbsentFieldsAbsent) {
  auto vm = ParseCreateVmBody(R"({"id": "vm-1"})");
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  EXPECT_EQ(vm->id, "vm-1");
  EXPECT_FALSE(vm->node || vm->memory_bytes || vm->dirty_rate || vm->seed);

  vm = ParseCreateVmBody(
      R"({"id": "vm-2", "node": "node-b", "memory": "1GiB", "dirty_rate": "20MB/s", "seed": 9})");
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  EXPECT_EQ(*vm->node, "node-b");
  EXPECT_EQ(*vm->memory_bytes, 1ull << 30);
  EXPECT_EQ(*vm->dirty_rate, 20'000'000u);
  EXPECT_EQ(*vm->seed, 9u);
  EXPECT_EQ(*ParseCreateVmBody(R"({"id": "v", "memory": 4096})")->memory_bytes, 4096u);
}

TEST(ApiRequestsTest, CreateVmErrorsNameTheField) {
  ExpectInvalid(ParseCreateVmBody("{}").status(), "missing field 'id'");
  ExpectInvalid(ParseCreateVmBody(R"({"id": ""})").status(), "id must not be empty");
  ExpectInvalid(ParseCreateVmBody(R"({"id": "v", "node": 3})").status(), "node must be a string");
  ExpectInvalid(ParseCreateVmBody(R"({"id": "v", "memory": -1})").status(), "memory must be");
  ExpectInvalid(ParseCreateVmBody(R"({"id": "v", "memory": "lots"})").status(), "memory: ");
  ExpectInvalid(ParseCreateVmBody(R"({"id": "v", "seed": "x"})").status(), "seed must be");
  ExpectInvalid(ParseCreateVmBody(R"({"id": "v", "driver": "xen"})").status(),
                "driver 'xen' is not supported");
  ExpectInvalid(ParseCreateVmBody(R"({"id": "v", "kernel": "/boot/vmlinuz"})").status(),
                "kernel is only for driver \"qemu\"");
  ExpectInvalid(ParseCreateVmBody(R"({"id": "v", "driver": "qemu", "append": 1})").status(),
                "append must be a string");
}

TEST(ApiRequestsTest, CreateQemuVm) {
  auto vm = ParseCreateVmBody(
      R"({"id": "vm-q", "driver": "qemu", "memory": "128MiB", "kernel": "/k", "initrd": "/i",)"
      R"( "append": "console=ttyS0", "accel": "tcg", "boot_marker": "ready"})");
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  EXPECT_EQ(vm->driver, "qemu");
  EXPECT_EQ(*vm->memory_bytes, 128ull << 20);
  EXPECT_EQ(vm->kernel, "/k");
  EXPECT_EQ(vm->initrd, "/i");
  EXPECT_EQ(vm->append, "console=ttyS0");
  EXPECT_EQ(vm->accel, "tcg");
  EXPECT_EQ(vm->boot_marker, "ready");
  EXPECT_EQ(vm->qmp_socket, "");
  auto adopt = ParseCreateVmBody(R"({"id": "vm-a", "driver": "qemu", "qmp_socket": "/q.sock"})");
  ASSERT_TRUE(adopt.ok()) << adopt.status().ToString();
  EXPECT_EQ(adopt->qmp_socket, "/q.sock");
}

TEST(ApiRequestsTest, CreateMigration) {
  auto m = ParseCreateMigrationBody(R"({"vm": "vm-1", "to": "node-b"})");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->protocol, 3u);
  EXPECT_FALSE(m->protocol_pinned);
  EXPECT_EQ(m->downtime_budget_ms, -1);
  EXPECT_EQ(m->max_rounds, -1);
  EXPECT_EQ(m->on_round_limit, -1);
  EXPECT_EQ(m->bandwidth_limit, 0u);

  m = ParseCreateMigrationBody(R"({"vm": "vm-1", "to": "node-b", "protocol": "v1",
      "on_round_limit": "abort", "downtime_budget_ms": 50, "max_rounds": 4,
      "bandwidth_limit": "100MB/s"})");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->protocol, 1u);
  EXPECT_TRUE(m->protocol_pinned);
  EXPECT_EQ(m->on_round_limit, 0);
  EXPECT_EQ(m->downtime_budget_ms, 50);
  EXPECT_EQ(m->max_rounds, 4);
  EXPECT_EQ(m->bandwidth_limit, 100'000'000u);

  ExpectInvalid(ParseCreateMigrationBody(R"({"vm": "vm-1"})").status(), "missing field 'to'");
  ExpectInvalid(ParseCreateMigrationBody(R"({"vm": "a", "to": "b", "protocol": "v2"})").status(),
                "protocol must be");
  ExpectInvalid(
      ParseCreateMigrationBody(R"({"vm": "a", "to": "b", "on_round_limit": "retry"})").status(),
      "on_round_limit must be");
  ExpectInvalid(ParseCreateMigrationBody(R"({"vm": "a", "to": "b", "max_rounds": 1.5})").status(),
                "max_rounds must be an integer");
}

TEST(ApiRequestsTest, SmallBodies) {
  auto change = ParseRolloutChangeBody("");
  ASSERT_TRUE(change.ok());
  EXPECT_EQ(change->region, "");
  change = ParseRolloutChangeBody(R"({"region": "eu", "to": "canary", "note": "n"})");
  ASSERT_TRUE(change.ok());
  EXPECT_EQ(change->to, "canary");
  ExpectInvalid(ParseRolloutChangeBody(R"({"note": 1})").status(), "note must be a string");

  EXPECT_EQ(*ParseBandwidthLimitBody(R"({"bandwidth_limit": "50MB/s"})"), 50'000'000u);
  EXPECT_EQ(*ParseBandwidthLimitBody(R"({"bandwidth_limit": 0})"), 0u);
  ExpectInvalid(ParseBandwidthLimitBody("{}").status(), "bandwidth_limit is required");

  EXPECT_EQ(*ParseLogLevelBody(R"({"level": "warn"})"), obs::LogLevel::kWarn);
  ExpectInvalid(ParseLogLevelBody(R"({"level": "loud"})").status(), "level must be");
}

}  // namespace
}  // namespace dwcp::api
