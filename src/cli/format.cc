#include "cli/format.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>

#include "cli/api_client.h"
#include "common/units.h"

namespace dwcp::cli {
namespace {

using nlohmann::json;

std::string Printf(const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

const json& Array(const json& j) {
  static const json kEmpty = json::array();
  return j.is_array() ? j : kEmpty;
}

std::string Section(const std::string& title, const std::vector<std::string>& headers,
                    const std::vector<std::vector<std::string>>& rows) {
  std::string out = title + "\n";
  out += rows.empty() ? "  (none)\n" : RenderTable(headers, rows);
  return out;
}

std::string ResultWord(const MigrationInfo& m) {
  if (m.succeeded()) return "ok";
  std::string word = m.result.empty() ? m.phase : m.result;
  std::transform(word.begin(), word.end(), word.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return word;
}

}  // namespace

bool MigrationInfo::finished() const {
  return !result.empty() || phase == "completed" || phase == "failed" || phase == "aborted";
}

bool MigrationInfo::succeeded() const {
  return result == "success" || (result.empty() && phase == "completed");
}

bool MigrationInfo::digest_verified() const {
  return !source_digest.empty() && source_digest == dest_digest;
}

double MigrationInfo::total_seconds() const {
  if (total_ms > 0) return total_ms / 1e3;
  if (finished_ms > created_ms && created_ms > 0) return (finished_ms - created_ms) / 1e3;
  return 0;
}

MigrationInfo ParseMigration(const json& j) {
  MigrationInfo m;
  m.id = JsonString(j, "id");
  m.vm = JsonString(j, "vm");
  m.source = JsonString(j, "source");
  m.destination = JsonString(j, "destination");
  m.phase = JsonString(j, "phase");
  m.result = JsonString(j, "result");
  m.error = JsonString(j, "error");
  m.protocol = JsonString(j, "protocol");
  m.round = JsonInt(j, "round");
  m.memory_bytes = JsonUint(j, "memory_bytes");
  m.bytes_transferred = JsonUint(j, "bytes_transferred");
  m.network_bytes = JsonUint(j, "network_bytes");
  m.remaining_bytes = JsonUint(j, "remaining_bytes");
  m.throughput_bps = JsonDouble(j, "throughput_bps");
  m.eta_seconds = JsonDouble(j, "eta_seconds");
  m.downtime_ms = JsonInt(j, "downtime_ms");
  m.total_ms = JsonInt(j, "total_ms");
  m.source_digest = JsonString(j, "source_digest");
  m.dest_digest = JsonString(j, "dest_digest");
  m.created_ms = JsonInt(j, "created_ms");
  m.finished_ms = JsonInt(j, "finished_ms");
  return m;
}

double MigrationFraction(const MigrationInfo& m) {
  if (m.succeeded()) return 1.0;
  if (m.memory_bytes == 0) return 0.0;
  double memory = static_cast<double>(m.memory_bytes);
  double f = m.round <= 1 ? m.bytes_transferred / memory : 1.0 - m.remaining_bytes / memory;
  if (m.phase == "switchover" || m.phase == "committing") f = std::max(f, 0.99);
  if (!std::isfinite(f)) f = 0;
  return std::clamp(f, 0.0, 0.999);
}

double ProgressTracker::Update(const MigrationInfo& m) {
  shown_ = std::max(shown_, MigrationFraction(m));
  return shown_;
}

std::string FormatEta(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "-";
  if (seconds < 0.05) return "<0.1 s";
  if (seconds < 59.95) return Printf("%.1f s", seconds);
  return FormatDuration(seconds);
}

std::string FormatSeconds(double seconds) {
  if (seconds < 60) return Printf("%.2f s", std::max(seconds, 0.0));
  return FormatDuration(seconds);
}

std::string FormatReduction(uint64_t logical_bytes, uint64_t wire_bytes) {
  if (wire_bytes == 0) return "n/a";
  return Printf("%.2fx", static_cast<double>(logical_bytes) / static_cast<double>(wire_bytes));
}

std::string FormatRoute(std::string_view source, std::string_view destination) {
  return std::string(source.empty() ? "?" : source) + " \u2192 " +
         std::string(destination.empty() ? "?" : destination);
}

std::string RenderProgressBar(double fraction, int width) {
  if (!std::isfinite(fraction)) fraction = 0;
  fraction = std::clamp(fraction, 0.0, 1.0);
  int filled = static_cast<int>(std::floor(fraction * width + 1e-9));
  return "[" + std::string(filled, '#') + std::string(width - filled, '-') + "]";
}

std::string RenderProgressLine(const MigrationInfo& m, double fraction) {
  fraction = std::clamp(std::isfinite(fraction) ? fraction : 0.0, 0.0, 1.0);
  std::string line = RenderProgressBar(fraction);
  line += " round " + (m.round > 0 ? std::to_string(m.round) : std::string("-"));
  auto done = static_cast<uint64_t>(std::llround(fraction * static_cast<double>(m.memory_bytes)));
  line += " | " + FormatBytes(done) + " / " + FormatBytes(m.memory_bytes);
  line += " | " + FormatRate(m.throughput_bps);
  line += " | ETA " + (m.eta_seconds > 0 ? FormatEta(m.eta_seconds) : std::string("-"));
  line += " | " + (m.phase.empty() ? std::string("pending") : m.phase);
  return line;
}

std::string RenderSummary(const MigrationInfo& m) {
  std::vector<std::vector<std::string>> rows;
  std::string result = m.result.empty() ? m.phase : m.result;
  if (!m.succeeded() && !m.error.empty()) result += ": " + m.error;
  rows.push_back({"result", result});
  rows.push_back({"total time", FormatSeconds(m.total_seconds())});
  rows.push_back({"downtime", std::to_string(m.downtime_ms) + " ms"});
  rows.push_back({"rounds", std::to_string(m.round)});
  rows.push_back({"bytes moved", FormatBytes(m.bytes_transferred)});
  std::string wire = FormatBytes(m.network_bytes);
  if (m.network_bytes > 0) {
    wire += " (" + FormatReduction(m.bytes_transferred, m.network_bytes) + " reduction)";
  }
  rows.push_back({"on the wire", wire});
  double seconds = m.total_seconds();
  rows.push_back(
      {"throughput", seconds > 0 ? FormatRate(m.bytes_transferred / seconds) + " average" : "-"});
  std::string digest;
  if (m.digest_verified()) {
    digest = "verified yes (" + m.source_digest.substr(0, 16) + ")";
  } else if (m.source_digest.empty() || m.dest_digest.empty()) {
    digest = "verified no (digest not reported)";
  } else {
    digest = "verified no (source " + m.source_digest.substr(0, 16) + " != destination " +
             m.dest_digest.substr(0, 16) + ")";
  }
  rows.push_back({"digest", digest});

  std::string out = "migration " + m.id + "  " + m.vm + "  " + FormatRoute(m.source, m.destination);
  if (!m.protocol.empty()) out += "  (" + m.protocol + ")";
  out += "\n";
  for (const auto& row : rows) {
    std::string label = row[0] + ":";
    label.resize(14, ' ');
    out += "  " + label + row[1] + "\n";
  }
  return out;
}

std::string RenderDemoProgressLine(const MigrationInfo& m, double fraction) {
  std::string line = m.id + " " + m.vm + " " + FormatRoute(m.source, m.destination) + "  ";
  line += RenderProgressBar(fraction, 12);
  line += " round " + (m.round > 0 ? std::to_string(m.round) : std::string("-"));
  line += "  " + FormatRate(m.throughput_bps);
  line += "  " + (m.phase.empty() ? std::string("pending") : m.phase);
  return line;
}

std::string RenderDemoResultLine(const MigrationInfo& m) {
  std::string line = m.id + " " + m.vm + " " + FormatRoute(m.source, m.destination) + "  ";
  if (!m.protocol.empty()) line += m.protocol + "  ";
  line += ResultWord(m);
  line += "  " + std::to_string(m.round) + (m.round == 1 ? " round" : " rounds");
  line += "  " + FormatSeconds(m.total_seconds());
  if (m.succeeded()) {
    line += "  downtime " + std::to_string(m.downtime_ms) + " ms";
    line += "  " + FormatBytes(m.bytes_transferred) + " moved";
    line += "  " + FormatBytes(m.network_bytes) + " on wire";
  } else if (!m.error.empty()) {
    line += "  " + m.error;
  }
  return line;
}

size_t DisplayWidth(std::string_view utf8) {
  size_t width = 0;
  for (unsigned char c : utf8) {
    if ((c & 0xC0) != 0x80) ++width;  // count lead bytes, skip continuation bytes
  }
  return width;
}

std::string TruncateToWidth(std::string_view utf8, size_t width) {
  size_t seen = 0;
  for (size_t i = 0; i < utf8.size(); ++i) {
    if ((static_cast<unsigned char>(utf8[i]) & 0xC0) != 0x80) {
      if (seen == width) return std::string(utf8.substr(0, i));
      ++seen;
    }
  }
  return std::string(utf8);
}

std::string RenderTable(const std::vector<std::string>& headers,
                        const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths(headers.size(), 0);
  for (size_t c = 0; c < headers.size(); ++c) widths[c] = DisplayWidth(headers[c]);
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size() && c < widths.size(); ++c) {
      widths[c] = std::max(widths[c], DisplayWidth(row[c]));
    }
  }
  auto render_row = [&](const std::vector<std::string>& cells) {
    std::string line;
    for (size_t c = 0; c < widths.size(); ++c) {
      const std::string cell = c < cells.size() ? cells[c] : "";
      line += cell;
      if (c + 1 < widths.size()) line += std::string(widths[c] - DisplayWidth(cell) + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    return line + "\n";
  };
  std::string out = render_row(headers);
  for (const auto& row : rows) out += render_row(row);
  return out;
}

std::string RenderVmTable(const json& vms) {
  std::vector<std::vector<std::string>> rows;
  bool any_qemu = false;
  for (const json& vm : Array(vms)) {
    std::string state = JsonString(vm, "state");
    std::string migration = JsonString(vm, "migration_id");
    if (!migration.empty()) state += " (" + migration + ")";
    std::string driver = JsonString(vm, "driver");
    const bool qemu = driver == "qemu";
    any_qemu |= qemu;
    // QEMU's own view from the owning node: "running, tcg, pid 4242"; "unknown" when the owner
    // did not report it (unreachable, or it runs no QEMU for a VM that should run).
    std::string qemu_status = "-";
    if (qemu) {
      const json q = vm.contains("qemu") ? vm["qemu"] : json();
      if (!q.is_object()) {
        qemu_status = JsonString(vm, "state") == "stopped" ? "-" : "unknown";
      } else {
        qemu_status = JsonString(q, "status") + ", " + JsonString(q, "accel");
        if (JsonInt(q, "pid") > 0) qemu_status += ", pid " + std::to_string(JsonInt(q, "pid"));
        if (JsonBool(q, "adopted")) qemu_status += ", adopted";
      }
    }
    rows.push_back({JsonString(vm, "id"), JsonString(vm, "node"),
                    driver.empty() ? "synthetic" : driver, state,
                    FormatBytes(JsonUint(vm, "memory_bytes")),
                    qemu ? "-" : FormatRate(JsonDouble(vm, "dirty_rate")),
                    std::to_string(JsonInt(vm, "epoch")), qemu_status});
  }
  if (rows.empty()) return "no VMs (create one with `dwcp vm create --vm vm-1 --memory 256MiB`)\n";
  std::vector<std::string> header = {"ID",     "NODE",       "DRIVER", "STATE",
                                     "MEMORY", "DIRTY RATE", "EPOCH",  "QEMU"};
  if (!any_qemu) {
    header.pop_back();
    for (auto& row : rows) row.pop_back();
  }
  return RenderTable(header, rows);
}

std::string RenderStatus(const json& nodes, const json& vms, const json& migrations,
                         int64_t now_ms) {
  std::vector<std::vector<std::string>> node_rows;
  for (const json& n : Array(nodes)) {
    std::string alive = "yes";
    if (!JsonBool(n, "alive")) {
      alive = "no";
      int64_t heartbeat = JsonInt(n, "heartbeat_ms");
      if (heartbeat > 0 && now_ms >= heartbeat) {
        alive += " (last heartbeat " + FormatDuration((now_ms - heartbeat) / 1e3) + " ago)";
      }
    }
    node_rows.push_back({JsonString(n, "id"), JsonString(n, "region"), JsonString(n, "state"),
                         alive, JsonString(n, "api_url"), std::to_string(JsonInt(n, "vms"))});
  }
  std::vector<std::vector<std::string>> vm_rows;
  for (const json& vm : Array(vms)) {
    vm_rows.push_back({JsonString(vm, "id"), JsonString(vm, "node"), JsonString(vm, "state"),
                       FormatBytes(JsonUint(vm, "memory_bytes")),
                       std::to_string(JsonInt(vm, "epoch"))});
  }
  std::vector<std::vector<std::string>> mig_rows;
  for (const json& j : Array(migrations)) {
    if (mig_rows.size() == 10) break;
    MigrationInfo m = ParseMigration(j);
    bool done = m.finished();
    std::string phase = m.phase;
    if (!m.succeeded() && !m.error.empty()) phase += ": " + TruncateToWidth(m.error, 40);
    mig_rows.push_back({m.id, m.vm, FormatRoute(m.source, m.destination), phase,
                        std::to_string(m.round), done ? FormatSeconds(m.total_seconds()) : "-",
                        done ? std::to_string(m.downtime_ms) + " ms" : "-",
                        FormatBytes(m.bytes_transferred)});
  }
  std::string out;
  out += Section("NODES", {"ID", "REGION", "STATE", "ALIVE", "API", "VMS"}, node_rows);
  out += "\n";
  out += Section("VMS", {"ID", "NODE", "STATE", "MEMORY", "EPOCH"}, vm_rows);
  out += "\n";
  out += Section("RECENT MIGRATIONS",
                 {"ID", "VM", "ROUTE", "PHASE", "ROUNDS", "TOTAL", "DOWNTIME", "BYTES"}, mig_rows);
  return out;
}

namespace {

// The "regions" array of a GET /api/v1/rollout answer; empty when there is none.
const json& Regions(const json& status) {
  static const json kEmpty = json::array();
  return status.is_object() && status.contains("regions") ? Array(status["regions"]) : kEmpty;
}

std::string StageLabel(const json& region) {
  char pct[32];
  std::snprintf(pct, sizeof pct, "%g%%", JsonDouble(region, "percent"));
  return JsonString(region, "stage") + " (" + pct + ")";
}

std::string DecisionLabel(const json& region) {
  const std::string d = JsonString(region, "decision");
  if (d == "go") return "GO";
  if (d == "no_go") return "NO-GO";
  return d.empty() ? "-" : d;
}

std::string Samples(const json& region, const char* protocol) {
  const json& s = region.contains("samples") && region["samples"].is_object() &&
                          region["samples"].contains(protocol)
                      ? region["samples"][protocol]
                      : json::object();
  const int64_t n = JsonInt(s, "migrations");
  const int64_t failed = JsonInt(s, "failed");
  return std::to_string(n) + (failed > 0 ? " (" + std::to_string(failed) + " failed)" : "");
}

}  // namespace

std::string RenderRolloutStatus(const json& status, int64_t now_ms) {
  std::vector<std::vector<std::string>> rows;
  std::string notes;
  for (const json& r : Regions(status)) {
    const int64_t since = JsonInt(r, "changed_ms");
    std::string age = since > 0 && now_ms >= since ? FormatDuration((now_ms - since) / 1e3) : "-";
    std::string stage = StageLabel(r);
    if (JsonBool(r, "halted")) stage += " halted";
    rows.push_back({JsonString(r, "region"), stage, DecisionLabel(r), Samples(r, "v1"),
                    Samples(r, "v3"), age});
    const std::string region = JsonString(r, "region");
    if (r.contains("reasons") && r["reasons"].is_array()) {
      for (const json& reason : r["reasons"]) {
        if (reason.is_string()) notes += "  " + region + ": " + reason.get<std::string>() + "\n";
      }
    }
    if (r.contains("next_advance_ms") && r["next_advance_ms"].is_number()) {
      const int64_t at = r["next_advance_ms"].get<int64_t>();
      notes +=
          "  " + region + ": advances to " + JsonString(r, "next_stage") +
          (at > now_ms ? " in " + FormatDuration((at - now_ms) / 1e3) : " at the next evaluation") +
          " if GO holds\n";
    }
    const std::string reason = JsonString(r, "change_reason");
    if (!reason.empty()) {
      std::string detail = JsonString(r, "change_detail");
      notes += "  " + region + ": stage set by " + JsonString(r, "changed_by") + " (" + reason +
               (detail.empty() ? "" : ": " + TruncateToWidth(detail, 100)) + ")\n";
    }
  }
  if (rows.empty()) return "no rollout regions\n";
  std::string out =
      RenderTable({"REGION", "STAGE", "DECISION", "V1 RUNS", "V3 RUNS", "SINCE"}, rows);
  if (!notes.empty()) out += "\n" + notes;
  return out;
}

std::string RenderRolloutChange(const std::string& region, const json& before, const json& after) {
  const json* now = nullptr;
  for (const json& r : Regions(after)) {
    if (JsonString(r, "region") == region || region.empty()) {
      now = &r;
      break;
    }
  }
  if (now == nullptr) return region + ": changed\n";
  std::string line = JsonString(*now, "region") + ": ";
  if (before.is_object() && !JsonString(before, "stage").empty()) {
    line += StageLabel(before) + " \u2192 ";
  }
  line += StageLabel(*now);
  if (JsonBool(*now, "halted")) line += ", automatic advance halted until `dwcp rollout advance`";
  return line + "\n";
}

}  // namespace dwcp::cli
