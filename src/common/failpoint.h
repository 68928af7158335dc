// Failpoints: named places in the code where a fault test can make the process wait, so that
// it can kill, pause or cut off the process at an exact phase of a migration
// (tests/integration/fault_matrix_test.cc, docs/consensus.md), or misbehave on purpose
// (`on`: e.g. a source that tampers with its round commitments).
//
// They are armed only through the environment, never by configuration or the API:
//   DWCP_FAILPOINTS="migration.source.before_commit=sleep(3000);migration.source.tamper_commitment=on"
// An armed failpoint logs a warning each time it is reached ("failpoint reached", with its
// name) before it waits. Unknown names are allowed (a failpoint is just a name in the code).
#pragma once

#include <chrono>
#include <map>
#include <string>

#include "common/status.h"

namespace dwcp {

// Parses DWCP_FAILPOINTS syntax: `name=sleep(MS)` or `name=on` entries separated by ';'
// (`on` is stored as -1 ms). InvalidArgument naming the bad entry otherwise.
Result<std::map<std::string, std::chrono::milliseconds>> ParseFailpoints(const std::string& spec);

// The process's failpoints, read once from DWCP_FAILPOINTS. Thread-safe.
class Failpoints {
 public:
  // Reads the environment; a malformed DWCP_FAILPOINTS is an error for the process to report.
  static Status Init();
  // How long to wait at `name` (zero when it is not armed, or armed `on`). Logs the hit when
  // armed.
  static std::chrono::milliseconds Hit(const std::string& name);
  // Whether `name` is armed (either form). Logs the hit when it is.
  static bool Armed(const std::string& name);
  // True when any failpoint is armed (dwcpd logs a warning at start).
  static bool Any();
};

}  // namespace dwcp
