#include "acp/round_commitment.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <vector>

#include "vm/guest.h"

namespace dwcp::acp {
namespace {

Hash256 Leaf(uint32_t round, uint64_t seq, std::vector<std::pair<uint64_t, uint8_t>> pages) {
  BatchLeafHasher h(round, seq);
  std::vector<uint8_t> page(vm::kPageSize);
  for (auto [index, fill] : pages) {
    std::fill(page.begin(), page.end(), fill);
    h.AddPage(index, page.data());
  }
  return h.Finish();
}

TEST(RoundCommitmentTest, LeavesBindRoundSequenceIndicesAndContent) {
  const Hash256 base = Leaf(1, 0, {{0, 1}, {1, 2}});
  EXPECT_EQ(Leaf(1, 0, {{0, 1}, {1, 2}}), base);
  EXPECT_NE(Leaf(2, 0, {{0, 1}, {1, 2}}), base);  // round
  EXPECT_NE(Leaf(1, 1, {{0, 1}, {1, 2}}), base);  // sequence number
  EXPECT_NE(Leaf(1, 0, {{0, 1}, {2, 2}}), base);  // a page index
  EXPECT_NE(Leaf(1, 0, {{0, 1}, {1, 3}}), base);  // a page's bytes
  EXPECT_NE(Leaf(1, 0, {{1, 2}, {0, 1}}), base);  // page order
}

TEST(RoundCommitmentTest, MerkleRootCoversEveryLeafInOrder) {
  std::vector<Hash256> leaves;
  for (uint64_t i = 0; i < 5; ++i) leaves.push_back(Leaf(1, i, {{i, 7}}));
  const Hash256 root = MerkleRoot(leaves);
  EXPECT_EQ(MerkleRoot(leaves), root);
  EXPECT_EQ(MerkleRoot(std::span(leaves).first(1)), leaves[0]);  // one leaf is the root
  EXPECT_NE(MerkleRoot(std::span(leaves).first(4)), root);       // a missing leaf
  for (size_t i = 0; i < leaves.size(); ++i) {
    auto changed = leaves;
    changed[i][0] ^= 1;
    EXPECT_NE(MerkleRoot(changed), root) << "leaf " << i;
  }
  auto swapped = leaves;
  std::swap(swapped[1], swapped[2]);
  EXPECT_NE(MerkleRoot(swapped), root);
  EXPECT_NE(MerkleRoot({}), root);
  EXPECT_EQ(MerkleRoot({}), MerkleRoot({}));
}

TEST(RoundCommitmentTest, MessageNamesEveryField) {
  Hash256 root{};
  const std::string base = RoundCommitmentMessage("mig-1", "vm-1", 3, 2, 10, 5, root);
  Hash256 other{};
  other[31] = 1;
  for (const std::string& changed : {RoundCommitmentMessage("mig-2", "vm-1", 3, 2, 10, 5, root),
                                     RoundCommitmentMessage("mig-1", "vm-2", 3, 2, 10, 5, root),
                                     RoundCommitmentMessage("mig-1v", "m-1", 3, 2, 10, 5, root),
                                     RoundCommitmentMessage("mig-1", "vm-1", 4, 2, 10, 5, root),
                                     RoundCommitmentMessage("mig-1", "vm-1", 3, 3, 10, 5, root),
                                     RoundCommitmentMessage("mig-1", "vm-1", 3, 2, 11, 5, root),
                                     RoundCommitmentMessage("mig-1", "vm-1", 3, 2, 10, 6, root),
                                     RoundCommitmentMessage("mig-1", "vm-1", 3, 2, 10, 5, other)}) {
    EXPECT_NE(changed, base);
  }
}

class NodeKeyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/dwcp-nodekey-XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(NodeKeyTest, CreatedOnceThenLoadedAndSignaturesVerify) {
  const std::string path = dir_ + "/node.key";
  auto created = NodeKey::LoadOrCreate(path);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_size, 64);
  auto loaded = NodeKey::LoadOrCreate(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->public_key_hex(), created->public_key_hex());
  EXPECT_EQ(created->public_key_hex().size(), 64u);

  const std::string sig = loaded->Sign("round 1");
  EXPECT_TRUE(NodeKey::Verify(created->public_key_hex(), "round 1", sig));
  EXPECT_FALSE(NodeKey::Verify(created->public_key_hex(), "round 2", sig));
  std::string bad = sig;
  bad[10] ^= 1;
  EXPECT_FALSE(NodeKey::Verify(created->public_key_hex(), "round 1", bad));
  auto other = NodeKey::LoadOrCreate(dir_ + "/other.key");
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(NodeKey::Verify(other->public_key_hex(), "round 1", sig));
  EXPECT_FALSE(NodeKey::Verify("zz", "round 1", sig));
  EXPECT_FALSE(NodeKey::Verify(created->public_key_hex(), "round 1", sig.substr(1)));
}

TEST_F(NodeKeyTest, RefusesKeysOthersCanReadAndFilesThatAreNotKeys) {
  const std::string path = dir_ + "/node.key";
  ASSERT_TRUE(NodeKey::LoadOrCreate(path).ok());
  chmod(path.c_str(), 0644);
  auto shared = NodeKey::LoadOrCreate(path);
  ASSERT_FALSE(shared.ok());
  EXPECT_EQ(shared.status().code(), StatusCode::kFailedPrecondition);
  const std::string junk = dir_ + "/junk.key";
  std::ofstream(junk) << "not a key";
  chmod(junk.c_str(), 0600);
  auto bad = NodeKey::LoadOrCreate(junk);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kDataLoss);
  auto missing_dir = NodeKey::LoadOrCreate(dir_ + "/no/such/dir/node.key");
  ASSERT_FALSE(missing_dir.ok());
  EXPECT_EQ(missing_dir.status().code(), StatusCode::kUnavailable);
}

}  // namespace
}  // namespace dwcp::acp
