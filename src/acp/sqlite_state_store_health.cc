// SqliteStateStore::Health: the SQLite store has one member, its file.
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "acp/sqlite_state_store.h"

namespace dwcp::acp {

Result<StoreHealth> SqliteStateStore::Health() {
  // SQLite keeps using a file that was deleted or made read-only under it; ask the file system.
  if (path_ != ":memory:" && !path_.empty() && access(path_.c_str(), R_OK | W_OK) != 0) {
    return Status(Unavailable("sqlite store " + path_ + ": " + std::strerror(errno)));
  }
  std::lock_guard<std::mutex> lock(mu_);
  Status st = RunTxn(TxnKind::kRead, [&]() -> Status { return Exec("SELECT 1 FROM vms LIMIT 1"); });
  if (!st.ok()) return st;
  StoreHealth health;
  health.members = 1;
  health.healthy = 1;
  health.backend = "sqlite";
  return health;
}

}  // namespace dwcp::acp
