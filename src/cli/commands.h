// The `dwcp` command line: vm create|list, migrate, status, rollout, demo.
#pragma once

namespace dwcp::cli {

inline constexpr char kCliVersion[] = "3.0.0";

// Parses argv and runs one command against dwcpd's HTTP API. Returns the process exit code:
// 0 on success; 1 when dwcpd refused the request, could not be reached, or the migration
// failed or was aborted; 2 on a usage error (unknown flag, bad size/rate/duration);
// 130 when Ctrl-C stopped `dwcp migrate` from watching (the migration goes on).
// Errors are printed on stderr. Not thread-safe (installs signal handlers while waiting).
int RunCli(int argc, char** argv);

}  // namespace dwcp::cli
