// Pure rendering for the command line: progress bars, summaries, tables. No I/O here, so
// everything is unit-tested (tests/cli/format_test.cc).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace dwcp::cli {

// The fields of a Migration (docs/api.md) that the CLI shows. Missing fields read as empty/0.
struct MigrationInfo {
  std::string id;
  std::string vm;
  std::string source;
  std::string destination;
  std::string phase;
  std::string result;
  std::string error;
  std::string protocol;
  int64_t round = 0;
  uint64_t memory_bytes = 0;
  uint64_t bytes_transferred = 0;
  uint64_t network_bytes = 0;
  uint64_t remaining_bytes = 0;
  double throughput_bps = 0;
  double eta_seconds = 0;
  int64_t downtime_ms = 0;
  int64_t total_ms = 0;
  std::string source_digest;
  std::string dest_digest;
  int64_t created_ms = 0;
  int64_t finished_ms = 0;

  // True once the migration reached completed, failed or aborted.
  bool finished() const;
  // True when it finished with result "success".
  bool succeeded() const;
  // True when both digests are present and equal.
  bool digest_verified() const;
  // total_ms in seconds, or finished_ms - created_ms when total_ms is not set.
  double total_seconds() const;
};

MigrationInfo ParseMigration(const nlohmann::json& j);

// Raw progress in [0, 1]: round 1 counts bytes sent of memory, later rounds 1 - remaining/memory;
// switchover/committing are at least 0.99, completed is 1. Unfinished never reaches 1.
double MigrationFraction(const MigrationInfo& m);

// Keeps the shown progress of one migration from going backwards between polls.
class ProgressTracker {
 public:
  // Returns max(previous, MigrationFraction(m)), or 1 once the migration completed.
  double Update(const MigrationInfo& m);

 private:
  double shown_ = 0;
};

// "0.4 s", "12.0 s", "2m03s"; "<0.1 s" below 0.05 s.
std::string FormatEta(double seconds);
// "1.42 s" below a minute, FormatDuration's "2m03s" above.
std::string FormatSeconds(double seconds);
// logical / wire as "1.31x"; "n/a" when wire is 0.
std::string FormatReduction(uint64_t logical_bytes, uint64_t wire_bytes);
// "node-a → node-b".
std::string FormatRoute(std::string_view source, std::string_view destination);

// "[########------------]" with `width` cells; fraction is clamped to [0, 1].
std::string RenderProgressBar(double fraction, int width = 20);
// "[####----] round 3 | 812.00 MiB / 1.00 GiB | 1.20 GB/s | ETA 0.4 s | precopy"
std::string RenderProgressLine(const MigrationInfo& m, double fraction);
// The multi-line block `dwcp migrate` prints at the end (ends with '\n').
std::string RenderSummary(const MigrationInfo& m);

// `dwcp demo`: the in-place line of a running migration and its final line
// ("mig-1 vm-2 node-a → node-c  ok  3 rounds  1.42 s  downtime 12 ms  ...").
std::string RenderDemoProgressLine(const MigrationInfo& m, double fraction);
std::string RenderDemoResultLine(const MigrationInfo& m);

// Columns separated by two spaces and padded by display width (UTF-8 aware); ends with '\n'.
std::string RenderTable(const std::vector<std::string>& headers,
                        const std::vector<std::vector<std::string>>& rows);
// Number of code points, which is the terminal width of the text the CLI prints.
size_t DisplayWidth(std::string_view utf8);
// The longest prefix of `utf8` that is at most `width` code points wide.
std::string TruncateToWidth(std::string_view utf8, size_t width);

// `dwcp vm list`: a table of the "vms" array of GET /api/v1/vms.
std::string RenderVmTable(const nlohmann::json& vms);
// `dwcp status`: NODES, VMS and RECENT MIGRATIONS sections from the three list responses.
// `now_ms` (wall clock) dates the last heartbeat of nodes that are not alive.
std::string RenderStatus(const nlohmann::json& nodes, const nlohmann::json& vms,
                         const nlohmann::json& migrations, int64_t now_ms);

// `dwcp rollout status`: one row per region of GET /api/v1/rollout (stage, v3 share,
// decision, samples, age of the stage), then each region's reasons and last change.
std::string RenderRolloutStatus(const nlohmann::json& status, int64_t now_ms);
// `dwcp rollout advance|rollback`: "eu-west: canary (5%) → early (25%)" from the stage
// before and the region's status after.
std::string RenderRolloutChange(const std::string& region, const nlohmann::json& before,
                                const nlohmann::json& after);

}  // namespace dwcp::cli
