#include "acp/round_commitment.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "common/little_endian.h"
#include "vm/guest.h"

namespace dwcp::acp {
namespace {

static_assert(sizeof(crypto_generichash_state) <= 384, "BatchLeafHasher::state_ too small");

constexpr char kLeafTag[] = "dwcp-v3 batch leaf";
constexpr char kNodeTag[] = "dwcp-v3 merkle node";
constexpr char kEmptyTag[] = "dwcp-v3 merkle empty";
constexpr char kCommitTag[] = "dwcp-v3 round commitment";

void EnsureSodium() {
  static const int ready = sodium_init();  // thread-safe; 1 when already initialised
  (void)ready;
}

crypto_generichash_state* State(unsigned char* raw) {
  return reinterpret_cast<crypto_generichash_state*>(raw);
}

void PutU64(std::string* out, uint64_t v) {
  uint8_t b[8];
  le::Put64(b, v);
  out->append(reinterpret_cast<const char*>(b), 8);
}

}  // namespace

std::string ToHex(std::span<const uint8_t> bytes) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 15]);
  }
  return out;
}

BatchLeafHasher::BatchLeafHasher(uint32_t round, uint64_t seq) {
  EnsureSodium();
  crypto_generichash_init(State(state_), nullptr, 0, 32);
  uint8_t head[12];
  le::Put32(head, round);
  le::Put64(head + 4, seq);
  crypto_generichash_update(State(state_), reinterpret_cast<const unsigned char*>(kLeafTag),
                            sizeof kLeafTag);
  crypto_generichash_update(State(state_), head, sizeof head);
}

void BatchLeafHasher::AddPage(uint64_t index, const uint8_t* page) {
  uint8_t idx[8];
  le::Put64(idx, index);
  crypto_generichash_update(State(state_), idx, sizeof idx);
  crypto_generichash_update(State(state_), page, vm::kPageSize);
}

Hash256 BatchLeafHasher::Finish() {
  Hash256 out;
  crypto_generichash_final(State(state_), out.data(), out.size());
  return out;
}

Hash256 MerkleRoot(std::span<const Hash256> leaves) {
  EnsureSodium();
  Hash256 out;
  if (leaves.empty()) {
    crypto_generichash(out.data(), out.size(), reinterpret_cast<const unsigned char*>(kEmptyTag),
                       sizeof kEmptyTag, nullptr, 0);
    return out;
  }
  std::vector<Hash256> level(leaves.begin(), leaves.end());
  while (level.size() > 1) {
    std::vector<Hash256> next;
    next.reserve((level.size() + 1) / 2);
    for (size_t i = 0; i + 1 < level.size(); i += 2) {
      crypto_generichash_state st;
      crypto_generichash_init(&st, nullptr, 0, 32);
      crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(kNodeTag),
                                sizeof kNodeTag);
      crypto_generichash_update(&st, level[i].data(), 32);
      crypto_generichash_update(&st, level[i + 1].data(), 32);
      Hash256 h;
      crypto_generichash_final(&st, h.data(), h.size());
      next.push_back(h);
    }
    if (level.size() % 2 == 1) next.push_back(level.back());
    level = std::move(next);
  }
  return level[0];
}

std::string RoundCommitmentMessage(std::string_view migration_id, std::string_view vm_id,
                                   uint64_t epoch, uint32_t round, uint64_t first_seq,
                                   uint64_t batches, const Hash256& root) {
  std::string m(kCommitTag, sizeof kCommitTag);
  // Length-prefixed strings: no two different (migration, vm) pairs give the same bytes.
  PutU64(&m, migration_id.size());
  m.append(migration_id);
  PutU64(&m, vm_id.size());
  m.append(vm_id);
  PutU64(&m, epoch);
  PutU64(&m, round);
  PutU64(&m, first_seq);
  PutU64(&m, batches);
  m.append(reinterpret_cast<const char*>(root.data()), root.size());
  return m;
}

Result<NodeKey> NodeKey::LoadOrCreate(const std::string& path) {
  EnsureSodium();
  NodeKey key;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    crypto_sign_keypair(key.public_.data(), key.secret_.data());
    const std::string tmp = path + ".tmp";
    int out = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0) {
      return Status(Unavailable("cannot create node key " + tmp + ": " + std::strerror(errno)));
    }
    const bool written = write(out, key.secret_.data(), key.secret_.size()) ==
                         static_cast<ssize_t>(key.secret_.size());
    const bool synced = fsync(out) == 0;
    close(out);
    if (!written || !synced || rename(tmp.c_str(), path.c_str()) != 0) {
      unlink(tmp.c_str());
      return Status(Unavailable("cannot write node key " + path + ": " + std::strerror(errno)));
    }
    return key;
  }
  if (fd < 0) {
    return Status(Unavailable("cannot read node key " + path + ": " + std::strerror(errno)));
  }
  struct stat st {};
  fstat(fd, &st);
  if (st.st_mode & (S_IRWXG | S_IRWXO)) {
    close(fd);
    return Status(
        FailedPrecondition("node key " + path + " is readable by other users: chmod 600 it"));
  }
  ssize_t n = read(fd, key.secret_.data(), key.secret_.size());
  char extra;
  const bool more = read(fd, &extra, 1) > 0;
  close(fd);
  if (n != static_cast<ssize_t>(key.secret_.size()) || more) {
    return Status(DataLoss("node key " + path + " is not a 64-byte Ed25519 secret key"));
  }
  crypto_sign_ed25519_sk_to_pk(key.public_.data(), key.secret_.data());
  return key;
}

std::string NodeKey::public_key_hex() const { return ToHex(public_); }

std::string NodeKey::Sign(std::string_view message) const {
  std::string sig(crypto_sign_BYTES, '\0');
  crypto_sign_detached(reinterpret_cast<unsigned char*>(sig.data()), nullptr,
                       reinterpret_cast<const unsigned char*>(message.data()), message.size(),
                       secret_.data());
  return sig;
}

bool NodeKey::Verify(std::string_view public_key_hex, std::string_view message,
                     std::string_view signature) {
  EnsureSodium();
  unsigned char pk[crypto_sign_PUBLICKEYBYTES];
  size_t len = 0;
  if (public_key_hex.size() != 2 * sizeof pk ||
      sodium_hex2bin(pk, sizeof pk, public_key_hex.data(), public_key_hex.size(), nullptr, &len,
                     nullptr) != 0 ||
      len != sizeof pk || signature.size() != crypto_sign_BYTES) {
    return false;
  }
  return crypto_sign_verify_detached(reinterpret_cast<const unsigned char*>(signature.data()),
                                     reinterpret_cast<const unsigned char*>(message.data()),
                                     message.size(), pk) == 0;
}

}  // namespace dwcp::acp
