#include "cli/commands.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "cli/api_client.h"
#include "cli/console.h"
#include "cli/demo.h"
#include "cli/format.h"
#include "common/clock.h"
#include "common/units.h"

namespace dwcp::cli {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitInterrupted = 130;
constexpr auto kMigratePollInterval = milliseconds(200);
constexpr auto kPlainProgressEvery = milliseconds(1000);
constexpr auto kLostTrackAfter = std::chrono::seconds(30);

volatile std::sig_atomic_t g_interrupted = 0;
void OnInterrupt(int) { g_interrupted = 1; }

// Flags every command takes.
struct CommonFlags {
  std::string api;         // empty: $DWCP_API, else kDefaultApiUrl
  std::string token;       // empty: token_file, else $DWCP_API_TOKEN, else $DWCP_TOKEN
  std::string token_file;  // empty: $DWCP_API_TOKEN_FILE
  std::string ca_cert, client_cert, client_key;
  bool json = false;
};

void AddCommonFlags(CLI::App* app, CommonFlags* flags) {
  app->add_option("--api", flags->api,
                  "dwcpd API URL, http:// or https:// (default http://127.0.0.1:8080, or "
                  "$DWCP_API)");
  app->add_option("--token", flags->token,
                  "bearer token for mutating calls when dwcpd requires one (shows in `ps`: "
                  "prefer --token-file or $DWCP_API_TOKEN)");
  app->add_option("--token-file", flags->token_file,
                  "file holding the bearer token (or $DWCP_API_TOKEN_FILE)");
  app->add_option("--ca-cert", flags->ca_cert,
                  "https: PEM CA of dwcpd's API certificate (default: the system's CAs)");
  app->add_option("--client-cert", flags->client_cert,
                  "https: PEM client certificate to present (dwcpd's api_client_ca)");
  app->add_option("--client-key", flags->client_key, "https: PEM key of --client-cert");
  app->add_flag("--json", flags->json, "print the raw JSON response(s) instead of tables");
}

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : fallback;
}

// The bearer token: --token, else --token-file ($DWCP_API_TOKEN_FILE), else $DWCP_API_TOKEN,
// else $DWCP_TOKEN. A token file that cannot be read is an error, never silently no token.
Result<std::string> BearerToken(const CommonFlags& flags) {
  if (!flags.token.empty()) return flags.token;
  const std::string file =
      flags.token_file.empty() ? EnvOr("DWCP_API_TOKEN_FILE", "") : flags.token_file;
  if (!file.empty()) {
    std::ifstream in(file, std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto space = [](unsigned char c) { return std::isspace(c) != 0; };
    text.erase(text.begin(), std::find_if_not(text.begin(), text.end(), space));
    text.erase(std::find_if_not(text.rbegin(), text.rend(), space).base(), text.end());
    if (!in.is_open() || text.empty()) {
      return Status(InvalidArgument("cannot read a token from --token-file " + file));
    }
    return text;
  }
  return EnvOr("DWCP_API_TOKEN", EnvOr("DWCP_TOKEN", ""));
}

// `read_timeout`: for calls that take long (booting a QEMU guest); zero keeps the default.
// Exits with the usage status when the token file cannot be read: nothing is sent.
ApiClient MakeClient(const CommonFlags& flags, milliseconds read_timeout = milliseconds(0)) {
  ApiClientOptions options;
  if (read_timeout.count() > 0) options.read_timeout = read_timeout;
  auto token = BearerToken(flags);
  if (!token.ok()) {
    std::cerr << "dwcp: " << token.status().message() << "\n";
    std::exit(kExitUsage);
  }
  options.bearer_token = *token;
  options.ca_cert = flags.ca_cert;
  options.client_cert = flags.client_cert;
  options.client_key = flags.client_key;
  return ApiClient(flags.api.empty() ? EnvOr("DWCP_API", kDefaultApiUrl) : flags.api, options);
}

int UsageError(const std::string& message) {
  std::cerr << "dwcp: " << message << "\nRun with --help for more information.\n";
  return kExitUsage;
}

// A failed call: prints the server's message (or why it could not be reached); exit 1.
int CallFailed(const Status& status) {
  std::cerr << "dwcp: " << status.message() << "\n";
  return kExitFailed;
}

// Parses a size/rate/duration flag for a good message before anything is sent.
template <typename T>
bool ParseFlag(const std::string& flag, const std::string& text,
               Result<T> (*parse)(std::string_view), T* out, int* exit_code) {
  Result<T> parsed = parse(text);
  if (!parsed.ok()) {
    *exit_code = UsageError("invalid " + flag + " '" + text + "': " + parsed.status().message());
    return false;
  }
  *out = *parsed;
  return true;
}

// ---- dwcp vm create / list ----

struct VmCreateFlags {
  std::string vm;
  std::string node;
  std::string driver;
  std::string memory;
  std::string dirty_rate;
  uint64_t seed = 0;
  CLI::Option* seed_option = nullptr;
  // --driver qemu (docs/qemu.md)
  std::string kernel, initrd, append, qmp_socket, accel;
};

// Paths go to dwcpd as absolute paths: it resolves them on its host, from its own directory.
std::string AbsolutePath(const std::string& path) {
  if (path.empty() || path[0] == '/') return path;
  std::error_code ec;
  auto abs = std::filesystem::absolute(path, ec);
  return ec ? path : abs.lexically_normal().string();
}

int VmCreate(const CommonFlags& common, const VmCreateFlags& flags) {
  json body = {{"id", flags.vm}};
  if (!flags.node.empty()) body["node"] = flags.node;
  int exit_code = kExitOk;
  if (!flags.memory.empty()) {
    uint64_t memory = 0;
    if (!ParseFlag<uint64_t>("--memory", flags.memory, ParseBytes, &memory, &exit_code)) {
      return exit_code;
    }
    if (memory == 0) return UsageError("invalid --memory '" + flags.memory + "': must be > 0");
    body["memory"] = memory;
  }
  if (!flags.dirty_rate.empty()) {
    uint64_t rate = 0;
    if (!ParseFlag<uint64_t>("--dirty-rate", flags.dirty_rate, ParseRate, &rate, &exit_code)) {
      return exit_code;
    }
    body["dirty_rate"] = rate;
  }
  if (flags.seed_option != nullptr && flags.seed_option->count() > 0) body["seed"] = flags.seed;
  const bool qemu = flags.driver == "qemu";
  if (!flags.driver.empty()) body["driver"] = flags.driver;
  for (auto [name, value] : {std::pair{"--kernel", &flags.kernel},
                             {"--initrd", &flags.initrd},
                             {"--append", &flags.append},
                             {"--qmp-socket", &flags.qmp_socket},
                             {"--accel", &flags.accel}}) {
    if (!value->empty() && !qemu) return UsageError(std::string(name) + " needs --driver qemu");
  }
  if (qemu) {
    if (!flags.dirty_rate.empty() || (flags.seed_option && flags.seed_option->count() > 0)) {
      return UsageError("--dirty-rate and --seed are for synthetic guests");
    }
    if (flags.kernel.empty() == flags.qmp_socket.empty()) {
      return UsageError(
          "--driver qemu needs --kernel (to start a guest) or --qmp-socket (to "
          "adopt a running QEMU)");
    }
    if (!flags.kernel.empty()) body["kernel"] = AbsolutePath(flags.kernel);
    if (!flags.initrd.empty()) body["initrd"] = AbsolutePath(flags.initrd);
    if (!flags.append.empty()) body["append"] = flags.append;
    if (!flags.qmp_socket.empty()) body["qmp_socket"] = AbsolutePath(flags.qmp_socket);
    if (!flags.accel.empty()) body["accel"] = flags.accel;
  }
  // A qemu create returns once QEMU runs; with a KVM probe, once the guest booted (<= 30 s).
  ApiClient client = MakeClient(common, qemu ? milliseconds(120000) : milliseconds(0));
  Result<json> vm = client.Post("/api/v1/vms", body);
  if (!vm.ok()) return CallFailed(vm.status());
  if (common.json) {
    std::cout << DumpJson(*vm) << "\n";
    return kExitOk;
  }
  std::string id = JsonString(*vm, "id");
  std::string node = JsonString(*vm, "node");
  if (JsonString(*vm, "driver") == "qemu") {
    const json q = vm->contains("qemu") ? (*vm)["qemu"] : json::object();
    std::cout << (JsonBool(q, "adopted") ? "adopted " : "created ") << (id.empty() ? flags.vm : id)
              << " on " << (node.empty() ? "?" : node) << " (qemu, "
              << FormatBytes(JsonUint(*vm, "memory_bytes")) << ", " << JsonString(q, "accel")
              << (JsonInt(q, "pid") > 0 ? ", pid " + std::to_string(JsonInt(q, "pid")) : "") << ", "
              << JsonString(q, "status") << ")\n";
    if (!JsonString(q, "console").empty())
      std::cout << "console: " << JsonString(q, "console") << "\n";
    return kExitOk;
  }
  std::cout << "created " << (id.empty() ? flags.vm : id) << " on " << (node.empty() ? "?" : node)
            << " (" << FormatBytes(JsonUint(*vm, "memory_bytes")) << ", dirtying "
            << FormatRate(JsonDouble(*vm, "dirty_rate")) << ")\n";
  return kExitOk;
}

int VmList(const CommonFlags& common) {
  ApiClient client = MakeClient(common);
  Result<json> vms = client.Get("/api/v1/vms");
  if (!vms.ok()) return CallFailed(vms.status());
  if (common.json) {
    std::cout << DumpJson(*vms) << "\n";
  } else {
    std::cout << RenderVmTable(vms->contains("vms") ? (*vms)["vms"] : json::array());
  }
  return kExitOk;
}

// ---- dwcp status ----

int ShowStatus(const CommonFlags& common) {
  ApiClient client = MakeClient(common);
  Result<json> nodes = client.Get("/api/v1/nodes");
  if (!nodes.ok()) return CallFailed(nodes.status());
  Result<json> vms = client.Get("/api/v1/vms");
  if (!vms.ok()) return CallFailed(vms.status());
  Result<json> migrations = client.Get("/api/v1/migrations?limit=10");
  if (!migrations.ok()) return CallFailed(migrations.status());
  if (common.json) {
    json all = {{"nodes", nodes->contains("nodes") ? (*nodes)["nodes"] : json::array()},
                {"vms", vms->contains("vms") ? (*vms)["vms"] : json::array()},
                {"migrations",
                 migrations->contains("migrations") ? (*migrations)["migrations"] : json::array()}};
    std::cout << DumpJson(all) << "\n";
    return kExitOk;
  }
  auto field = [](const json& j, const char* key) {
    return j.is_object() && j.contains(key) ? j[key] : json::array();
  };
  std::cout << RenderStatus(field(*nodes, "nodes"), field(*vms, "vms"),
                            field(*migrations, "migrations"), RealClock::Instance().WallMillis());
  return kExitOk;
}

// ---- dwcp migrate ----

struct MigrateFlags {
  std::string vm;
  std::string to;
  std::string protocol;
  std::string bandwidth_limit;
  std::string downtime_budget;
  int64_t max_rounds = 0;
  CLI::Option* max_rounds_option = nullptr;
  std::string on_round_limit;
  bool no_wait = false;
};

// Sleeps `d`, waking early on Ctrl-C.
void SleepUnlessInterrupted(milliseconds d) {
  auto until = SteadyClock::now() + d;
  while (!g_interrupted && SteadyClock::now() < until) {
    std::this_thread::sleep_for(milliseconds(20));
  }
}

// Polls the migration until it ends; draws progress. Returns the exit code.
int WatchMigration(ApiClient& client, const CommonFlags& common, MigrationInfo m, json last) {
  Console console(common.json);
  ProgressTracker tracker;
  auto last_ok = SteadyClock::now();
  auto last_plain = SteadyClock::time_point{};
  std::string last_plain_key;
  while (!m.finished()) {
    if (g_interrupted) {
      console.KeepProgress();
      std::cerr << "stopped watching " << m.id << "; the migration continues on "
                << (m.source.empty() ? "the node" : m.source) << " (see `dwcp status`)\n";
      return kExitInterrupted;
    }
    double fraction = tracker.Update(m);
    if (!common.json) {
      std::string line = RenderProgressLine(m, fraction);
      if (console.interactive()) {
        console.Progress(line);
      } else {
        // Plain output (a pipe or a file): a line per phase/round change, else every second.
        std::string key = m.phase + "/" + std::to_string(m.round);
        if (key != last_plain_key || SteadyClock::now() - last_plain >= kPlainProgressEvery) {
          console.Info(line);
          last_plain = SteadyClock::now();
          last_plain_key = key;
        }
      }
    }
    SleepUnlessInterrupted(kMigratePollInterval);
    if (g_interrupted) continue;
    Result<json> polled = client.Get("/api/v1/migrations/" + m.id);
    if (polled.ok()) {
      last_ok = SteadyClock::now();
      last = std::move(*polled);
      m = ParseMigration(last);
    } else if (polled.status().code() == StatusCode::kNotFound ||
               SteadyClock::now() - last_ok > kLostTrackAfter) {
      console.KeepProgress();
      std::cerr << "dwcp: lost track of " << m.id << ": " << polled.status().message() << "\n";
      return kExitFailed;
    }
  }
  if (common.json) {
    std::cout << DumpJson(last) << "\n";
  } else {
    if (console.interactive()) {
      console.Progress(RenderProgressLine(m, tracker.Update(m)));
      console.KeepProgress();
    }
    std::cout << RenderSummary(m);
  }
  if (m.succeeded()) return kExitOk;
  std::cerr << "dwcp: migration " << m.id << " " << (m.result.empty() ? m.phase : m.result)
            << (m.error.empty() ? "" : ": " + m.error) << "\n";
  return kExitFailed;
}

int Migrate(const CommonFlags& common, const MigrateFlags& flags) {
  json body = {{"vm", flags.vm}, {"to", flags.to}};
  if (!flags.protocol.empty()) body["protocol"] = flags.protocol;
  int exit_code = kExitOk;
  if (!flags.bandwidth_limit.empty()) {
    uint64_t rate = 0;
    if (!ParseFlag<uint64_t>("--bandwidth-limit", flags.bandwidth_limit, ParseRate, &rate,
                             &exit_code)) {
      return exit_code;
    }
    if (rate == 0) {
      return UsageError("invalid --bandwidth-limit '" + flags.bandwidth_limit + "': must be > 0");
    }
    body["bandwidth_limit"] = rate;
  }
  if (!flags.downtime_budget.empty()) {
    int64_t budget_ms = 0;
    if (!ParseFlag<int64_t>("--downtime-budget", flags.downtime_budget, ParseDurationMillis,
                            &budget_ms, &exit_code)) {
      return exit_code;
    }
    if (budget_ms <= 0) {
      return UsageError("invalid --downtime-budget '" + flags.downtime_budget + "': must be > 0");
    }
    body["downtime_budget_ms"] = budget_ms;
  }
  if (flags.max_rounds_option != nullptr && flags.max_rounds_option->count() > 0) {
    body["max_rounds"] = flags.max_rounds;
  }
  if (!flags.on_round_limit.empty()) body["on_round_limit"] = flags.on_round_limit;

  ApiClient client = MakeClient(common);
  Result<json> started = client.Post("/api/v1/migrations", body);
  if (!started.ok()) return CallFailed(started.status());
  MigrationInfo m = ParseMigration(*started);
  if (flags.no_wait || m.id.empty()) {
    if (common.json) {
      std::cout << DumpJson(*started) << "\n";
    } else {
      std::cout << "started " << (m.id.empty() ? "a migration" : m.id) << ": " << flags.vm << " "
                << FormatRoute(m.source, flags.to) << "; follow it with `dwcp status`\n";
    }
    return kExitOk;
  }
  if (!common.json) {
    std::cout << "migrating " << flags.vm << " " << FormatRoute(m.source, flags.to) << " (" << m.id
              << ", protocol "
              << (!flags.protocol.empty() ? flags.protocol
                  : m.protocol.empty()    ? "chosen by the rollout"
                                          : m.protocol + " (rollout)")
              << ")\n";
  }
  g_interrupted = 0;
  struct sigaction action = {};
  struct sigaction old_int = {};
  action.sa_handler = OnInterrupt;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, &old_int);
  int rc = WatchMigration(client, common, m, *started);
  sigaction(SIGINT, &old_int, nullptr);
  return rc;
}

// ---- dwcp rollout status / advance / rollback ----

struct RolloutFlags {
  std::string region;  // empty: every region (status), the answering node's (changes)
  std::string to;      // empty: the next (advance) or previous (rollback) stage
  std::string note;
};

// Percent-encodes a query parameter value.
std::string QueryEscape(const std::string& value) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : value) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string RolloutPath(const std::string& region) {
  return region.empty() ? "/api/v1/rollout" : "/api/v1/rollout?region=" + QueryEscape(region);
}

int RolloutStatus(const CommonFlags& common, const RolloutFlags& flags) {
  ApiClient client = MakeClient(common);
  Result<json> status = client.Get(RolloutPath(flags.region));
  if (!status.ok()) return CallFailed(status.status());
  if (common.json) {
    std::cout << DumpJson(*status) << "\n";
  } else {
    std::cout << RenderRolloutStatus(*status, RealClock::Instance().WallMillis());
  }
  return kExitOk;
}

int RolloutChange(const CommonFlags& common, const RolloutFlags& flags, bool advance) {
  ApiClient client = MakeClient(common);
  // The stage before, for the "from → to" line; the change itself does not depend on it.
  json before;
  if (!common.json) {
    Result<json> status = client.Get(RolloutPath(flags.region));
    if (status.ok() && status->is_object() && status->contains("regions")) {
      const std::string region =
          flags.region.empty() ? JsonString(*status, "region") : flags.region;
      for (const json& r : (*status)["regions"]) {
        if (JsonString(r, "region") == region) before = r;
      }
    }
  }
  json body = json::object();
  if (!flags.region.empty()) body["region"] = flags.region;
  if (!flags.to.empty()) body["to"] = flags.to;
  if (!flags.note.empty()) body["note"] = flags.note;
  Result<json> after =
      client.Post(advance ? "/api/v1/rollout/advance" : "/api/v1/rollout/rollback", body);
  if (!after.ok()) return CallFailed(after.status());
  if (common.json) {
    std::cout << DumpJson(*after) << "\n";
  } else {
    std::cout << RenderRolloutChange(
        flags.region.empty() ? JsonString(*after, "region") : flags.region, before, *after);
  }
  return kExitOk;
}

// ---- dwcp bandwidth ----

struct BandwidthFlags {
  std::string migration;  // one of the two
  std::string node;
  std::string limit;  // "100MB/s", "1Gbit/s", "0" or "unlimited"
};

int SetBandwidth(const CommonFlags& common, const BandwidthFlags& flags) {
  if (flags.migration.empty() == flags.node.empty()) {
    return UsageError("give exactly one of --migration and --node");
  }
  std::string limit = flags.limit == "unlimited" ? "0" : flags.limit;
  auto rate = ParseRate(limit);
  if (!rate.ok())
    return UsageError("bad bandwidth limit '" + flags.limit + "': " + rate.status().message());
  ApiClient client = MakeClient(common);
  const std::string path = flags.migration.empty()
                               ? "/api/v1/nodes/" + flags.node + "/bandwidth"
                               : "/api/v1/migrations/" + flags.migration + "/bandwidth";
  Result<json> reply = client.Put(path, json{{"bandwidth_limit", *rate}});
  if (!reply.ok()) return CallFailed(reply.status());
  if (common.json) {
    std::cout << DumpJson(*reply) << "\n";
  } else {
    std::cout << (flags.migration.empty() ? "node " + flags.node : "migration " + flags.migration)
              << ": bandwidth limit "
              << (*rate == 0 ? std::string("removed") : FormatRate(static_cast<double>(*rate)))
              << "\n";
  }
  return kExitOk;
}

// ---- dwcp quarantine ----

// Peers the answering node refuses after a Byzantine detection (docs/consensus.md).
int QuarantineList(const CommonFlags& common) {
  ApiClient client = MakeClient(common);
  Result<json> reply = client.Get("/api/v1/quarantine");
  if (!reply.ok()) return CallFailed(reply.status());
  if (common.json) {
    std::cout << DumpJson(*reply) << "\n";
    return kExitOk;
  }
  const json list = reply->value("quarantined", json::array());
  const std::string node = JsonString(*reply, "node");
  if (list.empty()) {
    std::cout << node << " refuses no peer\n";
    return kExitOk;
  }
  const int64_t now = RealClock::Instance().WallMillis();
  std::cout << "PEER              REASON              ENDS IN     DETAIL\n";
  for (const json& e : list) {
    std::string peer = JsonString(e, "peer"), reason = JsonString(e, "reason");
    peer.resize(std::max<size_t>(peer.size(), 17), ' ');
    reason.resize(std::max<size_t>(reason.size(), 19), ' ');
    std::string ends = FormatSeconds((JsonInt(e, "until_ms") - now) / 1e3);
    ends.resize(std::max<size_t>(ends.size(), 11), ' ');
    std::cout << peer << " " << reason << " " << ends << " " << JsonString(e, "detail") << "\n";
  }
  return kExitOk;
}

int QuarantineLift(const CommonFlags& common, const std::string& peer) {
  ApiClient client = MakeClient(common);
  Result<json> reply = client.Delete("/api/v1/quarantine/" + peer);
  if (!reply.ok()) return CallFailed(reply.status());
  if (common.json) {
    std::cout << DumpJson(*reply) << "\n";
  } else {
    std::cout << JsonString(*reply, "node") << " accepts " << peer << " again\n";
  }
  return kExitOk;
}

// ---- dwcp demo ----

struct DemoFlags {
  int nodes = 3;
  int vms = 4;
  std::string data_dir = ".demo";
  std::string memory = "256MiB";
  std::string dirty_rate = "20MB/s";
  std::string bandwidth_limit = "250MB/s";
  std::string interval = "1s";
  std::string dwcpd;
  int64_t count = 0;
  bool stack = false;
  std::string deploy_dir = "deploy";
};

int Demo(const CommonFlags& common, const DemoFlags& flags) {
  DemoOptions options;
  options.nodes = flags.nodes;
  options.vms = flags.vms;
  options.data_dir = flags.data_dir;
  options.dwcpd = flags.dwcpd;
  options.count = flags.count;
  options.json = common.json;
  options.stack = flags.stack;
  options.deploy_dir = flags.deploy_dir;
  int exit_code = kExitOk;
  if (!ParseFlag<uint64_t>("--memory", flags.memory, ParseBytes, &options.memory_bytes,
                           &exit_code) ||
      !ParseFlag<uint64_t>("--dirty-rate", flags.dirty_rate, ParseRate, &options.dirty_rate,
                           &exit_code) ||
      !ParseFlag<uint64_t>("--bandwidth-limit", flags.bandwidth_limit, ParseRate,
                           &options.bandwidth_limit, &exit_code) ||
      !ParseFlag<int64_t>("--interval", flags.interval, ParseDurationMillis, &options.interval_ms,
                          &exit_code)) {
    return exit_code;
  }
  if (options.memory_bytes == 0) return UsageError("invalid --memory '0': must be > 0");
  if (options.data_dir.empty()) return UsageError("--data-dir must not be empty");
  return RunDemo(options);
}

}  // namespace

int RunCli(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"dwcp: the command line for DWCP v3 live migration (talks to dwcpd)", "dwcp"};
  app.set_version_flag("--version", std::string("dwcp ") + kCliVersion, "print the version");
  app.require_subcommand(1);
  app.footer(
      "Examples:\n"
      "  dwcp demo                                  start a local 3-node cluster\n"
      "  dwcp status\n"
      "  dwcp vm create --vm vm-1 --node node-a --memory 1GiB --dirty-rate 20MB/s\n"
      "  dwcp migrate --vm vm-1 --to node-b --bandwidth-limit 100MB/s\n"
      "  dwcp rollout status\n"
      "Exit codes: 0 ok, 1 failed (server said no, migration failed), 2 usage error.");
  CommonFlags common;
  AddCommonFlags(&app, &common);

  // vm
  CLI::App* vm = app.add_subcommand("vm", "create and list VMs");
  vm->require_subcommand(1);
  AddCommonFlags(vm, &common);
  VmCreateFlags create_flags;
  CLI::App* vm_create = vm->add_subcommand("create", "create and boot a VM (POST /api/v1/vms)");
  AddCommonFlags(vm_create, &common);
  vm_create->add_option("--vm", create_flags.vm, "VM id, [A-Za-z0-9._-]{1,64}")->required();
  vm_create->add_option("--node", create_flags.node,
                        "node to boot on (default: the answering node)");
  vm_create
      ->add_option("--driver", create_flags.driver,
                   "synthetic (in-process guest, default) or qemu (a real QEMU guest)")
      ->check(CLI::IsMember({"synthetic", "qemu"}));
  vm_create->add_option("--memory", create_flags.memory,
                        "guest memory, e.g. 1GiB (default 256MiB; qemu: a multiple of 1MiB, "
                        "taken from QEMU when adopting)");
  vm_create->add_option("--dirty-rate", create_flags.dirty_rate,
                        "synthetic: bytes the guest dirties per second, e.g. 20MB/s (default 0)");
  create_flags.seed_option = vm_create->add_option(
      "--seed", create_flags.seed, "synthetic: content-model seed (default random)");
  vm_create->add_option("--kernel", create_flags.kernel,
                        "qemu: kernel to boot (a path on the node's host)");
  vm_create->add_option("--initrd", create_flags.initrd, "qemu: initramfs to boot with it");
  vm_create->add_option("--append", create_flags.append,
                        "qemu: kernel command line (default console=ttyS0)");
  vm_create->add_option("--qmp-socket", create_flags.qmp_socket,
                        "qemu: adopt the running QEMU behind this QMP unix socket instead");
  vm_create
      ->add_option("--accel", create_flags.accel,
                   "qemu: auto (KVM when it boots the guest, else TCG; default), kvm or tcg")
      ->check(CLI::IsMember({"auto", "kvm", "tcg"}));
  vm_create->footer(
      "Examples:\n"
      "  dwcp vm create --vm vm-1 --memory 1GiB --dirty-rate 20MB/s\n"
      "  make guest && dwcp vm create --vm vm-q --driver qemu --memory 256MiB \\\n"
      "      --kernel build/guest/vmlinuz --initrd build/guest/initramfs.cpio.gz \\\n"
      "      --append \"$(cat build/guest/cmdline)\"\n"
      "  dwcp vm create --vm vm-a --driver qemu --qmp-socket /run/vm-a/qmp.sock");
  CLI::App* vm_list = vm->add_subcommand("list", "list VMs (GET /api/v1/vms)");
  AddCommonFlags(vm_list, &common);

  // migrate
  MigrateFlags migrate_flags;
  CLI::App* migrate =
      app.add_subcommand("migrate", "live-migrate a VM and watch it (POST /api/v1/migrations)");
  AddCommonFlags(migrate, &common);
  migrate->add_option("--vm", migrate_flags.vm, "the VM to move")->required();
  migrate->add_option("--to", migrate_flags.to, "destination node id")->required();
  migrate
      ->add_option("--protocol", migrate_flags.protocol,
                   "wire protocol: v3 or v1 (default: the region's rollout stage decides)")
      ->check(CLI::IsMember({"v3", "v1"}));
  migrate->add_option("--bandwidth-limit", migrate_flags.bandwidth_limit,
                      "cap for this migration, e.g. 100MB/s or 1Gbit/s (default unlimited)");
  migrate->add_option("--downtime-budget", migrate_flags.downtime_budget,
                      "switch over once the rest fits this, e.g. 300ms (default: node config)");
  migrate_flags.max_rounds_option = migrate
                                        ->add_option("--max-rounds", migrate_flags.max_rounds,
                                                     "pre-copy round limit (default: node config)")
                                        ->check(CLI::Range(int64_t{1}, int64_t{100000}));
  migrate
      ->add_option("--on-round-limit", migrate_flags.on_round_limit,
                   "at the round limit: force switchover or abort (default: node config)")
      ->check(CLI::IsMember({"force", "abort"}));
  migrate->add_flag("--no-wait", migrate_flags.no_wait,
                    "return once the migration is accepted instead of watching it");
  migrate->footer(
      "Ctrl-C stops watching; the migration continues on the node.\n"
      "Exit codes: 0 success, 1 failed or aborted, 2 usage error, 130 stopped watching.");

  // rollout
  RolloutFlags rollout_flags;
  CLI::App* rollout = app.add_subcommand(
      "rollout", "the v1→v3 rollout per region: status, advance, rollback (docs/rollout.md)");
  rollout->require_subcommand(1);
  AddCommonFlags(rollout, &common);
  CLI::App* rollout_status = rollout->add_subcommand(
      "status", "stage, v3 share, GO/NO-GO and its reasons per region (GET /api/v1/rollout)");
  AddCommonFlags(rollout_status, &common);
  rollout_status->add_option("--region", rollout_flags.region, "only this region");
  CLI::App* rollout_advance = rollout->add_subcommand(
      "advance",
      "move a region to its next stage, or --to a later one, and resume automatic advance "
      "(POST /api/v1/rollout/advance)");
  AddCommonFlags(rollout_advance, &common);
  CLI::App* rollout_rollback = rollout->add_subcommand(
      "rollback",
      "move a region back to its previous stage, or --to an earlier one (v1 = no v3 at all), "
      "and halt automatic advance (POST /api/v1/rollout/rollback)");
  AddCommonFlags(rollout_rollback, &common);
  for (CLI::App* change : {rollout_advance, rollout_rollback}) {
    change->add_option("--region", rollout_flags.region,
                       "the region (default: the answering node's)");
    change->add_option("--to", rollout_flags.to, "target stage name (default: the adjacent one)");
    change->add_option("--note", rollout_flags.note, "why, recorded with the change");
  }
  rollout->footer(
      "Examples:\n"
      "  dwcp rollout status\n"
      "  dwcp rollout advance --region eu-west\n"
      "  dwcp rollout rollback --region eu-west --to v1 --note 'incident 4711'");

  // bandwidth
  BandwidthFlags bandwidth_flags;
  CLI::App* bandwidth = app.add_subcommand(
      "bandwidth", "change a bandwidth cap while migrations run (PUT .../bandwidth)");
  AddCommonFlags(bandwidth, &common);
  bandwidth->add_option("--migration", bandwidth_flags.migration,
                        "a running migration's id: caps that migration");
  bandwidth->add_option("--node", bandwidth_flags.node,
                        "a node id: caps all outgoing migration traffic of that node");
  bandwidth
      ->add_option("limit", bandwidth_flags.limit,
                   "the new cap, e.g. 100MB/s or 1Gbit/s; 0 or unlimited removes it")
      ->required();
  bandwidth->footer(
      "Examples:\n"
      "  dwcp bandwidth --migration mig-0123456789ab 50MB/s\n"
      "  dwcp bandwidth --node node-a 1Gbit/s\n"
      "  dwcp bandwidth --node node-a unlimited");

  // quarantine
  std::string quarantine_peer;
  CLI::App* quarantine = app.add_subcommand(
      "quarantine",
      "peers a node refuses after a Byzantine detection: list, lift (docs/consensus.md)");
  quarantine->require_subcommand(1);
  AddCommonFlags(quarantine, &common);
  CLI::App* quarantine_list = quarantine->add_subcommand(
      "list", "the peers the node at --api refuses, why and until when (GET /api/v1/quarantine)");
  AddCommonFlags(quarantine_list, &common);
  CLI::App* quarantine_lift = quarantine->add_subcommand(
      "lift", "accept a quarantined peer again (DELETE /api/v1/quarantine/NODE)");
  AddCommonFlags(quarantine_lift, &common);
  quarantine_lift->add_option("node", quarantine_peer, "the quarantined node's id")->required();
  quarantine->footer(
      "Examples:\n"
      "  dwcp quarantine list --api http://node-b:8080\n"
      "  dwcp quarantine lift node-a --api http://node-b:8080");

  // status
  CLI::App* status =
      app.add_subcommand("status", "nodes, VMs and the last 10 migrations of the cluster");
  AddCommonFlags(status, &common);

  // demo
  DemoFlags demo_flags;
  CLI::App* demo = app.add_subcommand(
      "demo", "start a local cluster of dwcpd processes and migrate VMs between them");
  AddCommonFlags(demo, &common);  // --api is unused: the demo talks to the nodes it starts
  demo->add_option("--nodes", demo_flags.nodes, "number of dwcpd nodes")
      ->check(CLI::Range(2, 26))
      ->capture_default_str();
  demo->add_option("--vms", demo_flags.vms, "number of VMs (vm-1 … vm-N)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  demo->add_option("--data-dir", demo_flags.data_dir, "state, node data and logs")
      ->capture_default_str();
  demo->add_option("--memory", demo_flags.memory, "memory of each VM")->capture_default_str();
  demo->add_option("--dirty-rate", demo_flags.dirty_rate, "dirty rate of each VM")
      ->capture_default_str();
  demo->add_option("--bandwidth-limit", demo_flags.bandwidth_limit,
                   "bandwidth cap of each migration (0 = unlimited)")
      ->capture_default_str();
  demo->add_option("--interval", demo_flags.interval, "pause between migrations")
      ->capture_default_str();
  demo->add_option("--dwcpd", demo_flags.dwcpd,
                   "dwcpd binary (default: the one next to dwcp, then $PATH)");
  demo->add_option("--count", demo_flags.count, "migrations to run, then stop (0 = forever)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  demo->add_flag("--stack", demo_flags.stack,
                 "also run Prometheus and Alertmanager (Debian packages) with the shipped rules, "
                 "scraping the demo (make demo STACK=1)");
  demo->add_option("--deploy-dir", demo_flags.deploy_dir,
                   "the shipped deploy/ configuration that --stack uses")
      ->capture_default_str();
  demo->footer(
      "The dashboard is at the first node's API URL (http://127.0.0.1:8080/ when free).\n"
      "Ctrl-C (or SIGTERM) lets the running migration finish, stops every dwcpd and exits 0.\n"
      "Exit 1 when a node fails to start or dies, or (with --count) a migration failed.");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);  // prints help, the version, or the error and a hint
    return rc == 0 ? kExitOk : kExitUsage;
  }

  if (vm_create->parsed()) return VmCreate(common, create_flags);
  if (vm_list->parsed()) return VmList(common);
  if (migrate->parsed()) return Migrate(common, migrate_flags);
  if (status->parsed()) return ShowStatus(common);
  if (quarantine_list->parsed()) return QuarantineList(common);
  if (quarantine_lift->parsed()) return QuarantineLift(common, quarantine_peer);
  if (bandwidth->parsed()) return SetBandwidth(common, bandwidth_flags);
  if (rollout_status->parsed()) return RolloutStatus(common, rollout_flags);
  if (rollout_advance->parsed()) return RolloutChange(common, rollout_flags, /*advance=*/true);
  if (rollout_rollback->parsed()) return RolloutChange(common, rollout_flags, /*advance=*/false);
  if (demo->parsed()) return Demo(common, demo_flags);
  return UsageError("no command given");
}

}  // namespace dwcp::cli
