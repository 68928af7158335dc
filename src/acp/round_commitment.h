// Byzantine detection of a migration's page data (docs/consensus.md, "Byzantine peers"):
// every round's page batches are committed to with a Merkle root over BLAKE2b-256 leaves,
// signed by the sender's Ed25519 node key; the receiver recomputes the root from the pages it
// rebuilt and checks the signature against the sender's public key in the state store.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "common/status.h"

namespace dwcp::acp {

using Hash256 = std::array<uint8_t, 32>;

// The leaf of one page batch: BLAKE2b-256 over a domain tag, the round, the batch's sequence
// number, then each page's index (little-endian 64-bit) and its 4096 bytes, in batch order.
// Not thread-safe; one per batch.
class BatchLeafHasher {
 public:
  BatchLeafHasher(uint32_t round, uint64_t seq);
  void AddPage(uint64_t index, const uint8_t* page);  // kPageSize bytes
  Hash256 Finish();

 private:
  alignas(64) unsigned char state_[384];  // crypto_generichash_state (opaque, 384 bytes)
};

// The Merkle root of `leaves` in order: interior nodes hash a tag and both children; an odd
// node is carried up unchanged. The root of no leaves is the hash of the empty tag.
Hash256 MerkleRoot(std::span<const Hash256> leaves);

// What a round commitment signs: every field that names the data, so that a signature
// cannot be replayed for another migration, VM, epoch, round or batch range.
std::string RoundCommitmentMessage(std::string_view migration_id, std::string_view vm_id,
                                   uint64_t epoch, uint32_t round, uint64_t first_seq,
                                   uint64_t batches, const Hash256& root);

// A node's Ed25519 key pair, kept in a file of its data directory.
class NodeKey {
 public:
  // Loads the 64-byte secret key at `path`, or creates one (mode 0600) when the file does not
  // exist. Unavailable on I/O errors, DataLoss when the file is not a key, FailedPrecondition
  // when it is readable by others.
  static Result<NodeKey> LoadOrCreate(const std::string& path);

  std::string public_key_hex() const;                // 64 hex digits
  std::string Sign(std::string_view message) const;  // 64-byte detached signature

  // Verifies a detached signature against a hex public key (false for a malformed key).
  static bool Verify(std::string_view public_key_hex, std::string_view message,
                     std::string_view signature);

 private:
  std::array<uint8_t, 64> secret_{};
  std::array<uint8_t, 32> public_{};
};

std::string ToHex(std::span<const uint8_t> bytes);

}  // namespace dwcp::acp
