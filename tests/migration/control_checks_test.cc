#include "migration/control_checks.h"

#include <gtest/gtest.h>

#include <vector>

#include "vm/guest.h"

namespace dwcp::migration {
namespace {

const std::vector<uint32_t> kBoth = {3, 1};

TEST(ControlChecksTest, NegotiateVersionPicksTheHighestCommonOne) {
  wire::Hello hello;
  EXPECT_EQ(NegotiateVersion(hello, kBoth), 0u);
  for (uint32_t v : {7u, 1u, 0u, 3u, 2u}) hello.add_versions(v);
  EXPECT_EQ(NegotiateVersion(hello, kBoth), 3u);
  EXPECT_EQ(NegotiateVersion(hello, std::vector<uint32_t>{1}), 1u);
  wire::Hello future;
  future.add_versions(4);
  EXPECT_EQ(NegotiateVersion(future, kBoth), 0u);
}

// Found by reading the handshake for fuzz/control_fuzzer: the source took any non-zero
// version from HelloAck and cast it to the frame's protocol byte, so a destination answering
// 256 made the source speak protocol 0, and 2 a version it does not implement.
TEST(ControlChecksTest, AcceptedVersionMustBeOneTheSourceOffered) {
  wire::HelloAck ack;
  ack.set_version(3);
  auto v = AcceptedVersion(ack, kBoth);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, 3);
  for (uint32_t bad : {2u, 256u, 259u}) {
    ack.set_version(bad);
    EXPECT_EQ(AcceptedVersion(ack, kBoth).status().code(), StatusCode::kProtocol) << bad;
  }
  ack.set_version(3);
  EXPECT_EQ(AcceptedVersion(ack, std::vector<uint32_t>{1}).status().code(), StatusCode::kProtocol);
  ack.set_version(0);
  ack.set_error("no common protocol version");
  auto none = AcceptedVersion(ack, kBoth);
  EXPECT_EQ(none.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(none.status().message().find("no common protocol version"), std::string::npos);
}

class BeginTest : public ::testing::Test {
 protected:
  void SetUp() override {
    vm_.id = "vm-1";
    vm_.node_id = "node-a";
    vm_.state = acp::kVmMigrating;
    vm_.epoch = 4;
    vm_.migration_id = "mig-1";
    vm_.memory_bytes = 32ull << 20;
    mig_.id = "mig-1";
    mig_.dest_node = "node-b";
    begin_.set_migration_id("mig-1");
    begin_.set_vm_id("vm-1");
    begin_.set_memory_bytes(32ull << 20);
    begin_.set_page_size(vm::kPageSize);
    begin_.set_epoch(4);
    begin_.set_source_node("node-a");
  }
  Status Check() { return CheckMigrationBegin(begin_, vm_, mig_, "node-b"); }

  acp::VmRecord vm_;
  acp::MigrationRecord mig_;
  wire::MigrationBegin begin_;
};

TEST_F(BeginTest, AcceptsWhatTheStoreSays) { EXPECT_TRUE(Check().ok()); }

TEST_F(BeginTest, RefusesAnythingTheStoreDoesNotSay) {
  begin_.set_epoch(5);
  EXPECT_EQ(Check().code(), StatusCode::kFailedPrecondition);
  begin_.set_epoch(4);
  begin_.set_source_node("node-c");
  EXPECT_EQ(Check().code(), StatusCode::kFailedPrecondition);
  begin_.set_source_node("node-a");
  EXPECT_EQ(CheckMigrationBegin(begin_, vm_, mig_, "node-c").code(),
            StatusCode::kFailedPrecondition);
  begin_.set_page_size(2 * vm::kPageSize);
  EXPECT_EQ(Check().code(), StatusCode::kInvalidArgument);
}

TEST_F(BeginTest, RefusesAGuestSizeOtherThanTheStores) {
  for (uint64_t bytes : {uint64_t{64} << 20, uint64_t{1} << 50, uint64_t{0}}) {
    begin_.set_memory_bytes(bytes);
    Status st = Check();
    EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition) << bytes;
    EXPECT_NE(st.message().find("memory"), std::string::npos) << st.message();
  }
}

}  // namespace
}  // namespace dwcp::migration
