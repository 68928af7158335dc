#include "api/api_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <cassert>
#include <charconv>
#include <nlohmann/json.hpp>
#include <set>

#include "amst/mode_detector.h"
#include "api/api_requests.h"
#include "api/guarded_server.h"
#include "api/web_assets.h"
#include "common/units.h"
#include "node/node.h"
#include "obs/log.h"
#include "obs/metrics_views.h"

namespace dwcp::api {
namespace {

using nlohmann::json;

void SendJson(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

void SendError(httplib::Response& res, const Status& st) {
  SendJson(res, HttpStatusOf(st.code()),
           {{"error", st.message()}, {"code", StatusCodeName(st.code())}});
}

json VmJson(const acp::VmRecord& v) {
  return {{"id", v.id},
          {"node", v.node_id},
          {"state", v.state},
          {"epoch", v.epoch},
          {"migration_id", v.migration_id},
          {"driver", v.driver},
          {"memory_bytes", v.memory_bytes},
          {"dirty_rate", v.dirty_rate},
          {"seed", v.seed},
          {"created_ms", v.created_ms},
          {"updated_ms", v.updated_ms}};
}

// The live state of a qemu VM's QEMU, as this node sees it (docs/qemu.md).
json QemuJson(vm::QemuGuest& qemu) {
  json out = {{"accel", qemu.accel()},
              {"accel_reason", qemu.accel_reason()},
              {"pid", qemu.pid()},
              {"adopted", qemu.adopted()},
              {"qmp_socket", qemu.qmp_socket()},
              {"console", qemu.console_path()},
              {"qemu_version", qemu.qemu_version()}};
  auto status = qemu.QueryStatus(std::chrono::seconds(2));  // a hung QEMU must not hang the API
  if (status.ok()) {
    out["status"] = status->status;
    out["running"] = status->running;
  } else {
    out["status"] = "unreachable";
    out["running"] = false;
    out["error"] = status.status().message();
  }
  return out;
}

std::string ResultOfPhase(const std::string& phase) {
  if (phase == acp::kPhaseCompleted) return "success";
  if (phase == acp::kPhaseFailed) return "failed";
  if (phase == acp::kPhaseAborted) return "aborted";
  return "";
}

json MigrationJson(const acp::MigrationRecord& m) {
  bool running = m.finished_ms == 0;
  double eta = 0;
  if (running && m.throughput_bps > 0)
    eta = static_cast<double>(m.remaining_bytes) / m.throughput_bps;
  return {{"id", m.id},
          {"vm", m.vm_id},
          {"source", m.source_node},
          {"destination", m.dest_node},
          {"phase", m.phase},
          {"result", ResultOfPhase(m.phase)},
          {"error", m.error},
          {"protocol", m.protocol},
          {"round", m.round},
          {"memory_bytes", m.memory_bytes},
          {"bytes_transferred", m.bytes_transferred},
          {"network_bytes", m.network_bytes},
          {"remaining_bytes", m.remaining_bytes},
          {"throughput_bps", m.throughput_bps},
          {"eta_seconds", eta},
          {"downtime_ms", m.downtime_ms},
          {"total_ms", m.total_ms},
          {"epoch_before", m.epoch_before},
          {"source_digest", m.source_digest},
          {"dest_digest", m.dest_digest},
          {"created_ms", m.created_ms},
          {"updated_ms", m.updated_ms},
          {"finished_ms", m.finished_ms},
          {"trace_id", m.trace_id},
          {"precopy_started_ms", m.precopy_started_ms},
          {"switchover_started_ms", m.switchover_started_ms},
          {"commit_started_ms", m.commit_started_ms},
          {"amst_seconds", m.amst_seconds},
          {"hde_seconds", m.hde_seconds},
          {"acp_seconds", m.acp_seconds}};
}

}  // namespace

int HttpStatusOf(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return 200;
    case StatusCode::kInvalidArgument:
      return 400;
    case StatusCode::kUnauthenticated:
      return 401;
    case StatusCode::kNotFound:
      return 404;
    case StatusCode::kAlreadyExists:
    case StatusCode::kFailedPrecondition:
    case StatusCode::kAborted:
      return 409;
    case StatusCode::kUnimplemented:
      return 501;
    case StatusCode::kUnavailable:
      return 503;
    case StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

ApiServer::ApiServer(node::Node& node)
    : node_(node),
      access_{node.config().api_token, !node.config().api_client_ca.empty()},
      rate_limiter_(node.config().api_rate_per_second, node.config().api_burst) {
  const node::NodeConfig& c = node_.config();
  SslCtxPtr tls(nullptr, [](SSL_CTX*) {});
  if (c.ApiTls()) {
    auto made = MakeApiTlsContext(
        c.api_tls_cert, c.api_tls_key, c.api_client_ca, [this](const std::string& reason) {
          node_.metrics().CountAuthFailure("api", "bad_client_certificate");
          obs::LogDebug("api", "client certificate refused", {{"reason", reason}});
        });
    if (made.ok()) {
      tls = std::move(made).value();
    } else {
      init_status_ = made.status();
    }
  }
  GuardedServerOptions o;
  o.max_connections = c.api_max_connections;
  o.max_connections_per_client = c.api_max_connections_per_client;
  o.read_timeout = std::chrono::milliseconds(c.api_read_timeout_ms);
  o.write_timeout = std::chrono::milliseconds(c.api_write_timeout_ms);
  o.idle_timeout = std::chrono::milliseconds(c.api_idle_timeout_ms);
  o.on_refused = [this](std::string_view limit) { node_.metrics().CountLimitRejection(limit); };
  server_ = std::make_unique<GuardedServer>(std::move(o), std::move(tls));
  server_->set_payload_max_length(c.api_max_body_bytes);
  AddRoutes();
}

ApiServer::~ApiServer() { Stop(); }

void ApiServer::AddRoutes() {
  auto bind = [this](auto method) {
    return
        [this, method](const httplib::Request& q, httplib::Response& s) { (this->*method)(q, s); };
  };
  routes_ = {
      {"GET", "/", "The web dashboard (docs/dashboard.md)", false, ServeWebAsset},
      {"GET", R"(/assets/[^/]+)", "The dashboard's scripts and styles", false, ServeWebAsset},
      {"GET", "/api/v1/", "This index (JSON)", false, bind(&ApiServer::Index)},
      {"GET", "/healthz", "Liveness: 200 while the process serves", false,
       bind(&ApiServer::Healthz)},
      {"GET", "/readyz", "Readiness: 200 once registered and listening", false,
       bind(&ApiServer::Readyz)},
      {"GET", "/metrics", "Prometheus metrics (text exposition)", false, bind(&ApiServer::Metrics)},
      {"GET", "/metrics/summary",
       "JSON summary: migrations, latency quantiles, throughput, "
       "errors, health, resources",
       false, bind(&ApiServer::MetricsSummary)},
      {"GET", "/metrics/summary/history",
       "The last 15 minutes of the summary, a point per 5 s (?node=ID: another node's)", false,
       bind(&ApiServer::MetricsSummaryHistory)},
      {"GET", R"(/metrics/(amst|hde|pba|acp|ass|itp))", "One component's metrics", false,
       bind(&ApiServer::ComponentMetrics)},
      {"GET", "/api/v1/log-level", "The current log level", false, bind(&ApiServer::GetLogLevel)},
      {"PUT", "/api/v1/log-level", "Change the log level: {\"level\": \"debug\"}", true,
       bind(&ApiServer::SetLogLevel)},
      {"GET", "/api/v1/nodes", "Nodes of the cluster", false, bind(&ApiServer::ListNodes)},
      {"GET", "/api/v1/quarantine",
       "Peers this node refuses after a Byzantine detection (reason, until)", false,
       bind(&ApiServer::ListQuarantine)},
      {"DELETE", R"(/api/v1/quarantine/([^/]+))", "Lift a peer's quarantine", true,
       bind(&ApiServer::LiftQuarantine)},
      {"GET", "/api/v1/links",
       "Links between nodes as measured: mode, bandwidth, RTT, PBA's forecast "
       "(?scope=local: this node's only)",
       false, bind(&ApiServer::ListLinks)},
      {"GET", "/api/v1/vms",
       "VMs and where they run, with each qemu VM's QEMU status (?scope=local: this node's)", false,
       bind(&ApiServer::ListVms)},
      {"POST", "/api/v1/vms", "Create and boot a VM (driver synthetic or qemu)", true,
       bind(&ApiServer::CreateVm)},
      {"GET", R"(/api/v1/vms/([^/]+))", "One VM", false, bind(&ApiServer::GetVm)},
      {"GET", "/api/v1/migrations", "Recent migrations, newest first (?limit=N)", false,
       bind(&ApiServer::ListMigrations)},
      {"POST", "/api/v1/migrations", "Start a live migration", true,
       bind(&ApiServer::CreateMigration)},
      {"GET", R"(/api/v1/migrations/([^/]+))", "One migration with its progress", false,
       bind(&ApiServer::GetMigration)},
      {"PUT", R"(/api/v1/migrations/([^/]+)/bandwidth)",
       "Change a running migration's bandwidth cap: {\"bandwidth_limit\": \"50MB/s\"} (0 = "
       "none)",
       true, bind(&ApiServer::SetMigrationBandwidth)},
      {"PUT", R"(/api/v1/nodes/([^/]+)/bandwidth)",
       "Change a node's cap on outgoing migration traffic: {\"bandwidth_limit\": "
       "\"1Gbit/s\"} (0 = none)",
       true, bind(&ApiServer::SetNodeBandwidth)},
      {"GET", "/api/v1/rollout",
       "v1→v3 rollout per region: stage, GO/NO-GO, samples "
       "(?region=R)",
       false, bind(&ApiServer::GetRollout)},
      {"POST", "/api/v1/rollout/advance", "Advance a region's rollout: {\"region\", \"to\"}", true,
       bind(&ApiServer::AdvanceRollout)},
      {"POST", "/api/v1/rollout/rollback", "Roll a region's rollout back: {\"region\", \"to\"}",
       true, bind(&ApiServer::RollbackRollout)},
      // Authenticated by the webhook secret (rollout.webhook_token_file), not the API token.
      {"POST", "/api/v1/rollback",
       "Alertmanager webhook: firing alerts roll the rollout back "
       "to v1",
       false, bind(&ApiServer::AlertmanagerRollback)},
  };
  for (const auto& r : routes_) {
    // Screen() authorizes by method: every route that changes state is POST, PUT or DELETE.
    assert(r.mutating == (r.method != "GET") || r.pattern == "/api/v1/rollback");
    if (r.method == "GET") {
      server_->Get(r.pattern, r.handler);
    } else if (r.method == "PUT") {
      server_->Put(r.pattern, r.handler);
    } else if (r.method == "DELETE") {
      server_->Delete(r.pattern, r.handler);
    } else {
      server_->Post(r.pattern, r.handler);
    }
  }
  server_->set_pre_routing_handler([this](const httplib::Request& q, httplib::Response& s) {
    return Screen(q, s) ? httplib::Server::HandlerResponse::Handled
                        : httplib::Server::HandlerResponse::Unhandled;
  });
  server_->set_logger([this](const httplib::Request&, const httplib::Response& s) {
    node_.metrics().CountApiRequest(s.status);
  });
  server_->set_error_handler([this](const httplib::Request& q, httplib::Response& s) {
    if (s.body.empty()) {
      if (GuardedServer::RequestTimedOut()) {  // counted by the server
        SendJson(s, 408,
                 {{"error", "the request did not arrive whole within api_read_timeout (" +
                                node_.config().api_read_timeout + ")"},
                  {"code", "invalid_argument"}});
      } else if (s.status == 404) {
        SendError(s, NotFound("no such endpoint: " + q.method + " " + q.path));
      } else if (s.status == 413) {  // Screen() refuses first; kept should httplib refuse too
        node_.metrics().CountLimitRejection("api_body_size");
        GuardedServer::CloseAfterResponse();
        SendJson(
            s, 413,
            {{"error", "request body exceeds api_max_body (" + node_.config().api_max_body + ")"},
             {"code", "invalid_argument"}});
      } else {
        SendJson(s, s.status, {{"error", "request failed"}, {"code", "invalid_argument"}});
      }
    }
  });
  server_->set_exception_handler(
      [](const httplib::Request&, httplib::Response& s, std::exception_ptr) {
        SendError(s, Internal("unexpected error while handling the request"));
      });
}

bool ApiServer::Screen(const httplib::Request& req, httplib::Response& res) {
  const node::NodeConfig& c = node_.config();
  const std::string& path = req.path;
  // Scrapes and probes are never rate limited (the connection caps still apply).
  const bool exempt = path == "/healthz" || path == "/readyz" || path == "/metrics" ||
                      path.rfind("/metrics/", 0) == 0;
  const bool has_body = req.has_header("Content-Length") || req.has_header("Transfer-Encoding");
  if (!exempt) {
    auto decision = rate_limiter_.Admit(req.remote_addr, std::chrono::steady_clock::now());
    if (!decision.allowed) {
      node_.metrics().CountLimitRejection("api_rate");
      if (has_body) GuardedServer::CloseAfterResponse();
      res.set_header("Retry-After", std::to_string(decision.retry_after_seconds));
      SendJson(res, 429,
               {{"error", "too many requests from " + req.remote_addr + " (api_rate " + c.api_rate +
                              ", api_burst " + std::to_string(c.api_burst) + ")"},
                {"code", "unavailable"}});
      return true;
    }
  }
  // httplib bounds neither chunked nor compressed bodies: refuse both, the API's clients
  // send plain bodies with a length.
  if (req.has_header("Transfer-Encoding") ||
      (req.has_header("Content-Encoding") &&
       req.get_header_value("Content-Encoding") != "identity")) {
    node_.metrics().CountLimitRejection("api_body_size");
    GuardedServer::CloseAfterResponse();
    const bool chunked = req.has_header("Transfer-Encoding");
    SendJson(res, chunked ? 411 : 415,
             {{"error", chunked ? "request bodies need a Content-Length (no chunked encoding)"
                                : "request bodies must not be compressed (Content-Encoding)"},
              {"code", "invalid_argument"}});
    return true;
  }
  if (req.has_header("Content-Length")) {
    uint64_t length = 0;
    const std::string text = req.get_header_value("Content-Length");
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), length);
    if (ec == std::errc::result_out_of_range ||
        (ec == std::errc() && length > c.api_max_body_bytes)) {
      node_.metrics().CountLimitRejection("api_body_size");
      GuardedServer::CloseAfterResponse();
      SendJson(res, 413,
               {{"error", "request body of " + text + " bytes exceeds api_max_body (" +
                              c.api_max_body + ")"},
                {"code", "invalid_argument"}});
      return true;
    }
  }
  // Every POST, PUT and DELETE changes state; the Alertmanager webhook has its own secret.
  const bool mutating = req.method != "GET" && req.method != "HEAD" && req.method != "OPTIONS" &&
                        path != "/api/v1/rollback";
  if (mutating) {
    auto decision = AuthorizeMutating(
        access_, req.get_header_value("Authorization"),
        access_.client_certificates && GuardedServer::VerifiedClientCertificate(req));
    if (!decision.allowed) {
      node_.metrics().CountAuthFailure("api", decision.reason);
      if (has_body) GuardedServer::CloseAfterResponse();
      const bool wrong = decision.reason == "wrong_token";
      res.set_header("WWW-Authenticate", wrong ? "Bearer realm=\"dwcp\", error=\"invalid_token\""
                                               : "Bearer realm=\"dwcp\"");
      std::string need = !access_.token.empty() && access_.client_certificates
                             ? "the bearer token or a client certificate from api_client_ca"
                         : access_.token.empty() ? "a client certificate from api_client_ca"
                                                 : "the bearer token";
      SendError(res, Status(StatusCode::kUnauthenticated,
                            (wrong ? "wrong bearer token: " : "missing credentials: ") +
                                req.method + " " + path + " needs " + need));
      return true;
    }
  }
  return false;
}

std::unique_ptr<httplib::Client> ApiServer::PeerClient(const std::string& url) const {
  const node::NodeConfig& c = node_.config();
  std::unique_ptr<httplib::Client> client;
  if (url.rfind("https://", 0) == 0 && c.ApiTls()) {
    client = std::make_unique<httplib::Client>(url, c.api_tls_cert, c.api_tls_key);
    if (!c.api_client_ca.empty()) client->set_ca_cert_path(c.api_client_ca);
  } else {
    client = std::make_unique<httplib::Client>(url);
  }
  return client;
}

Status ApiServer::Bind(const std::string& host, uint16_t port) {
  if (!init_status_.ok()) return init_status_;
  if (port == 0) {
    int p = server_->bind_to_any_port(host);
    if (p < 0) return Unavailable("cannot bind the HTTP API on " + host);
    port_ = static_cast<uint16_t>(p);
  } else {
    if (!server_->bind_to_port(host, port)) {
      return Unavailable("cannot bind the HTTP API on " + host + ":" + std::to_string(port) +
                         " (port in use?)");
    }
    port_ = port;
  }
  server_->SetListenBacklog(SOMAXCONN);  // a connection flood must not crowd out the others
  return Status::Ok();
}

void ApiServer::Start() {
  thread_ = std::thread([this] { server_->listen_after_bind(); });
}

void ApiServer::Stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

void ApiServer::Index(const httplib::Request&, httplib::Response& res) {
  json routes = json::array();
  for (const auto& r : routes_) {
    routes.push_back(
        {{"method", r.method}, {"path", r.pattern}, {"help", r.help}, {"mutating", r.mutating}});
  }
  SendJson(res, 200,
           {{"service", "dwcpd"},
            {"version", node::kVersion},
            {"node", node_.config().node_id},
            {"region", node_.config().region},
            {"routes", routes}});
}

void ApiServer::Healthz(const httplib::Request&, httplib::Response& res) {
  SendJson(res, 200, {{"status", "ok"}, {"node", node_.config().node_id}});
}

void ApiServer::Readyz(const httplib::Request&, httplib::Response& res) {
  if (node_.ready()) {
    SendJson(res, 200, {{"status", "ready"}, {"node", node_.config().node_id}});
  } else {
    SendJson(res, 503,
             {{"status", "not_ready"},
              {"node", node_.config().node_id},
              {"reason", "starting or shutting down"}});
  }
}

void ApiServer::Metrics(const httplib::Request&, httplib::Response& res) {
  res.set_content(obs::PrometheusText(node_.metrics().Collect()),
                  "text/plain; version=0.0.4; charset=utf-8");
}

void ApiServer::ComponentMetrics(const httplib::Request& req, httplib::Response& res) {
  auto component = obs::ParseComponent(req.matches[1].str());
  res.set_content(obs::PrometheusText(obs::ComponentView(node_.metrics().Collect(), *component)),
                  "text/plain; version=0.0.4; charset=utf-8");
}

void ApiServer::MetricsSummary(const httplib::Request& req, httplib::Response& res) {
  const std::string node = req.get_param_value("node");
  if (!node.empty() && node != node_.config().node_id) return ForwardGet(node, req.path, res);
  obs::SummaryContext ctx{node_.config().node_id, node_.migrations_per_minute()};
  nlohmann::json summary = obs::Summary(node_.metrics().Collect(), ctx);
  summary["sla"] = node_.sla().SlaSummary();
  summary["anomalies"] = node_.anomaly().AnomalySummary(20);
  SendJson(res, 200, summary);
}

void ApiServer::MetricsSummaryHistory(const httplib::Request& req, httplib::Response& res) {
  const std::string node = req.get_param_value("node");
  if (!node.empty() && node != node_.config().node_id) return ForwardGet(node, req.path, res);
  nlohmann::json history = node_.summary_history().ToJson();
  history["node"] = node_.config().node_id;
  SendJson(res, 200, history);
}

void ApiServer::GetLogLevel(const httplib::Request&, httplib::Response& res) {
  SendJson(res, 200, {{"level", obs::LogLevelName(obs::CurrentLogLevel())}});
}

void ApiServer::SetLogLevel(const httplib::Request& req, httplib::Response& res) {
  auto parsed = ParseLogLevelBody(req.body);
  if (!parsed.ok()) return SendError(res, parsed.status());
  const obs::LogLevel level = *parsed;
  obs::LogLevel before = obs::CurrentLogLevel();
  obs::SetLogLevel(level);
  obs::LogInfo("node", "log level changed",
               {{"from", obs::LogLevelName(before)}, {"to", obs::LogLevelName(level)}});
  SendJson(res, 200, {{"level", obs::LogLevelName(level)}});
}

void ApiServer::ListNodes(const httplib::Request&, httplib::Response& res) {
  auto nodes = node_.store().ListNodes();
  if (!nodes.ok()) return SendError(res, nodes.status());
  auto vms = node_.store().ListVms();
  if (!vms.ok()) return SendError(res, vms.status());
  json out = json::array();
  int64_t now = node_.clock().WallMillis();
  for (const auto& n : *nodes) {
    int owned = 0;
    for (const auto& v : *vms) owned += v.node_id == n.id;
    bool alive = n.state == "up" && now - n.heartbeat_ms < node_.node_alive_window_ms();
    out.push_back({{"id", n.id},
                   {"region", n.region},
                   {"api_url", n.api_url},
                   {"data_address", n.data_address},
                   {"state", n.state},
                   {"alive", alive},
                   {"version", n.version},
                   {"started_ms", n.started_ms},
                   {"heartbeat_ms", n.heartbeat_ms},
                   {"public_key", n.public_key},
                   {"vms", owned}});
  }
  SendJson(res, 200, {{"nodes", out}});
}

void ApiServer::ListQuarantine(const httplib::Request&, httplib::Response& res) {
  json out = json::array();
  for (const auto& e : node_.engine().Quarantined()) {
    out.push_back({{"peer", e.peer},
                   {"reason", e.reason},
                   {"detail", e.detail},
                   {"since_ms", e.since_ms},
                   {"until_ms", e.until_ms}});
  }
  SendJson(res, 200, {{"node", node_.config().node_id}, {"quarantined", out}});
}

void ApiServer::LiftQuarantine(const httplib::Request& req, httplib::Response& res) {
  const std::string peer = req.matches[1];
  if (!node_.engine().LiftQuarantine(peer)) {
    return SendError(res, NotFound("node " + peer + " is not quarantined on " +
                                   node_.config().node_id));
  }
  SendJson(res, 200, {{"node", node_.config().node_id}, {"lifted", peer}});
}

void ApiServer::ListVms(const httplib::Request& req, httplib::Response& res) {
  auto vms = node_.store().ListVms();
  if (!vms.ok()) return SendError(res, vms.status());
  const std::string& self = node_.config().node_id;
  const bool local_only = req.get_param_value("scope") == "local";
  json out = json::array();
  std::set<std::string> remote_qemu_owners;
  for (const auto& v : *vms) {
    if (local_only && v.node_id != self) continue;
    json vm = VmJson(v);
    if (v.driver == "qemu") {
      auto qemu = v.node_id == self ? node_.FindQemuVm(v.id) : nullptr;
      vm["qemu"] = qemu ? QemuJson(*qemu) : json(nullptr);
      if (v.node_id != self) remote_qemu_owners.insert(v.node_id);
    }
    out.push_back(std::move(vm));
  }
  // Only its owner talks to a QEMU: ask each owner of a qemu VM for its local view.
  for (const auto& owner : remote_qemu_owners) {
    auto target = node_.store().GetNode(owner);
    if (!target.ok()) continue;
    auto client = PeerClient(target->api_url);
    client->set_connection_timeout(1);
    client->set_read_timeout(3);
    auto reply = client->Get("/api/v1/vms?scope=local");
    json body = reply && reply->status == 200
                    ? json::parse(reply->body, nullptr, /*allow_exceptions=*/false)
                    : json();
    if (!body.is_object() || !body.contains("vms") || !body["vms"].is_array()) continue;
    for (const auto& theirs : body["vms"]) {
      if (!theirs.is_object() || !theirs.contains("qemu")) continue;
      for (auto& vm : out) {
        if (vm["id"] == theirs.value("id", "") && vm["node"] == owner) vm["qemu"] = theirs["qemu"];
      }
    }
  }
  SendJson(res, 200, {{"vms", out}});
}

void ApiServer::GetVm(const httplib::Request& req, httplib::Response& res) {
  auto vm = node_.store().GetVm(req.matches[1]);
  if (!vm.ok()) {
    return SendError(res, vm.status().code() == StatusCode::kNotFound
                              ? NotFound("vm " + std::string(req.matches[1]) + " does not exist")
                              : vm.status());
  }
  json out = VmJson(*vm);
  auto local = node_.vms().Find(vm->id);
  out["runs_here"] = local.guest != nullptr && local.guest->running();
  if (vm->driver == "qemu") {
    auto qemu = node_.FindQemuVm(vm->id);
    out["qemu"] = qemu ? QemuJson(*qemu) : json(nullptr);
    out["runs_here"] = qemu != nullptr && out["qemu"].value("running", false);
  }
  // ?digest=true: the local guest's content digest (hashes all its memory; stable only while
  // the guest is idle or paused). Null when the guest is not here.
  if (req.has_param("digest") && req.get_param_value("digest") != "false") {
    out["digest"] = local.guest ? json(local.guest->Digest()) : json(nullptr);
  }
  SendJson(res, 200, out);
}

void ApiServer::CreateVm(const httplib::Request& req, httplib::Response& res) {
  auto body = ParseCreateVmBody(req.body);
  if (!body.ok()) return SendError(res, body.status());
  node::VmCreateRequest r;
  r.id = body->id;
  if (body->memory_bytes) r.memory_bytes = *body->memory_bytes;
  if (body->dirty_rate) r.dirty_rate = *body->dirty_rate;
  if (body->seed) r.seed = *body->seed;
  r.driver = body->driver;
  r.kernel = body->kernel;
  r.initrd = body->initrd;
  r.append = body->append;
  r.qmp_socket = body->qmp_socket;
  if (!body->accel.empty()) r.accel = body->accel;
  r.boot_marker = body->boot_marker;
  const std::string target = body->node.value_or(node_.config().node_id);
  if (target != node_.config().node_id) return Forward(target, req, res);
  auto vm = node_.CreateVm(r);
  if (!vm.ok()) return SendError(res, vm.status());
  json out = VmJson(*vm);
  out["runs_here"] = true;
  if (auto qemu = node_.FindQemuVm(vm->id)) out["qemu"] = QemuJson(*qemu);
  SendJson(res, 201, out);
}

void ApiServer::ListMigrations(const httplib::Request& req, httplib::Response& res) {
  size_t limit = 20;
  if (req.has_param("limit")) {
    try {
      long v = std::stol(req.get_param_value("limit"));
      if (v < 1 || v > 1000) throw std::out_of_range("limit");
      limit = static_cast<size_t>(v);
    } catch (const std::exception&) {
      return SendError(res, InvalidArgument("limit must be an integer between 1 and 1000"));
    }
  }
  auto list = node_.store().ListMigrations(limit);
  if (!list.ok()) return SendError(res, list.status());
  json out = json::array();
  for (const auto& m : *list) out.push_back(MigrationJson(m));
  SendJson(res, 200, {{"migrations", out}});
}

void ApiServer::GetMigration(const httplib::Request& req, httplib::Response& res) {
  auto m = node_.store().GetMigration(req.matches[1]);
  if (!m.ok()) {
    return SendError(res,
                     m.status().code() == StatusCode::kNotFound
                         ? NotFound("migration " + std::string(req.matches[1]) + " does not exist")
                         : m.status());
  }
  SendJson(res, 200, MigrationJson(*m));
}

void ApiServer::CreateMigration(const httplib::Request& req, httplib::Response& res) {
  auto body = ParseCreateMigrationBody(req.body);
  if (!body.ok()) return SendError(res, body.status());
  migration::MigrationRequest r;
  r.vm_id = body->vm;
  r.dest_node = body->to;
  r.protocol = body->protocol;
  r.downtime_budget_ms = body->downtime_budget_ms;
  r.max_rounds = body->max_rounds;
  r.on_round_limit = body->on_round_limit;
  r.bandwidth_limit = body->bandwidth_limit;
  const bool protocol_pinned = body->protocol_pinned;
  auto vm = node_.store().GetVm(r.vm_id);
  if (!vm.ok()) {
    return SendError(res, vm.status().code() == StatusCode::kNotFound
                              ? NotFound("vm " + r.vm_id + " does not exist")
                              : vm.status());
  }
  if (!node_.store().GetNode(r.dest_node).ok()) {
    return SendError(res, NotFound("node " + r.dest_node + " does not exist"));
  }
  if (vm->node_id != node_.config().node_id && vm->node_id != r.dest_node) {
    return Forward(vm->node_id, req, res);
  }
  auto m = node_.StartMigration(r, protocol_pinned);
  if (!m.ok()) return SendError(res, m.status());
  SendJson(res, 202, MigrationJson(*m));
}

void ApiServer::GetRollout(const httplib::Request& req, httplib::Response& res) {
  auto status = node_.rollout().StatusJson(req.get_param_value("region"));
  if (!status.ok()) return SendError(res, status.status());
  SendJson(res, 200, *status);
}

namespace {

// Reads the optional {"region", "to", "note"} of an advance or rollback.
Status ReadRolloutChange(const httplib::Request& req, std::string* region, std::string* to,
                         std::string* note) {
  auto body = ParseRolloutChangeBody(req.body);
  if (!body.ok()) return body.status();
  *region = body->region;
  *to = body->to;
  *note = body->note;
  return Status::Ok();
}

}  // namespace

void ApiServer::AdvanceRollout(const httplib::Request& req, httplib::Response& res) {
  std::string region, to, note;
  Status st = ReadRolloutChange(req, &region, &to, &note);
  if (!st.ok()) return SendError(res, st);
  auto status = node_.rollout().Advance(region, to, note);
  if (!status.ok()) return SendError(res, status.status());
  SendJson(res, 200, *status);
}

void ApiServer::RollbackRollout(const httplib::Request& req, httplib::Response& res) {
  std::string region, to, note;
  Status st = ReadRolloutChange(req, &region, &to, &note);
  if (!st.ok()) return SendError(res, st);
  auto status = node_.rollout().Rollback(region, to, note);
  if (!status.ok()) return SendError(res, status.status());
  SendJson(res, 200, *status);
}

void ApiServer::AlertmanagerRollback(const httplib::Request& req, httplib::Response& res) {
  rollout::RolloutController& rollout = node_.rollout();
  Status auth = rollout.AuthorizeWebhook(req.get_header_value("Authorization"));
  if (!auth.ok()) return SendError(res, auth);
  auto notification = rollout::ParseAlertmanagerWebhook(req.body);
  if (!notification.ok()) {
    rollout.CountWebhook("invalid");
    return SendError(res, notification.status());
  }
  auto result = rollout.HandleAlert(*notification);
  if (!result.ok()) return SendError(res, result.status());
  SendJson(res, 200, *result);
}

// The body of PUT .../bandwidth: {"bandwidth_limit": "50MB/s" | bytes_per_second}.
Result<uint64_t> ReadBandwidthLimit(const httplib::Request& req) {
  return ParseBandwidthLimitBody(req.body);
}

void ApiServer::SetMigrationBandwidth(const httplib::Request& req, httplib::Response& res) {
  auto parsed = ReadBandwidthLimit(req);
  if (!parsed.ok()) return SendError(res, parsed.status());
  const uint64_t limit = *parsed;
  const std::string id = req.matches[1];
  auto m = node_.store().GetMigration(id);
  if (!m.ok()) {
    return SendError(res, m.status().code() == StatusCode::kNotFound
                              ? NotFound("migration " + id + " does not exist")
                              : m.status());
  }
  if (m->source_node != node_.config().node_id) return Forward(m->source_node, req, res);
  Status st = node_.engine().SetMigrationBandwidthLimit(id, limit);
  if (!st.ok()) {
    return SendError(
        res, st.code() == StatusCode::kNotFound
                 ? FailedPrecondition("migration " + id + " is " + m->phase + ", not running")
                 : st);
  }
  SendJson(res, 200, {{"migration", id}, {"bandwidth_limit", limit}});
}

void ApiServer::SetNodeBandwidth(const httplib::Request& req, httplib::Response& res) {
  auto parsed = ReadBandwidthLimit(req);
  if (!parsed.ok()) return SendError(res, parsed.status());
  const uint64_t limit = *parsed;
  const std::string id = req.matches[1];
  if (id != node_.config().node_id) return Forward(id, req, res);
  node_.engine().SetNodeBandwidthLimit(limit);
  SendJson(res, 200, {{"node", id}, {"bandwidth_limit", limit}});
}

void ApiServer::ListLinks(const httplib::Request& req, httplib::Response& res) {
  const std::string& self = node_.config().node_id;
  json links = json::array();
  for (const auto& l : node_.engine().Links()) {
    json link = {{"source", l.outgoing ? self : l.peer},
                 {"destination", l.outgoing ? l.peer : self},
                 {"measured_by", self},
                 {"mode", amst::LinkModeName(l.mode)},
                 {"rtt_ms", l.sample.rtt_ms},
                 {"bandwidth_bytes_per_second", l.sample.bandwidth_bytes_per_second},
                 {"loss_ratio", l.sample.loss_ratio},
                 {"predicted_bandwidth_bytes_per_second", nullptr},
                 {"model", nullptr},
                 {"accuracy_percent", nullptr},
                 {"updated_ms", l.updated_ms}};
    if (l.forecast) {
      link["predicted_bandwidth_bytes_per_second"] = l.forecast->bandwidth;
      link["model"] = l.forecast->model;
      link["accuracy_percent"] = l.forecast->accuracy_percent;
    }
    links.push_back(std::move(link));
  }
  if (req.get_param_value("scope") == "local") return SendJson(res, 200, {{"links", links}});

  // The cluster's view: every other live node's own measurements.
  auto nodes = node_.store().ListNodes();
  if (!nodes.ok()) return SendError(res, nodes.status());
  json unreachable = json::array();
  const int64_t now = node_.clock().WallMillis();
  for (const auto& n : *nodes) {
    if (n.id == self || n.state != "up" || now - n.heartbeat_ms > node_.node_alive_window_ms()) {
      continue;
    }
    auto client = PeerClient(n.api_url);
    client->set_connection_timeout(1);
    client->set_read_timeout(2);
    auto reply = client->Get("/api/v1/links?scope=local");
    json body = reply && reply->status == 200
                    ? json::parse(reply->body, nullptr, /*allow_exceptions=*/false)
                    : json();
    if (!body.is_object() || !body.contains("links") || !body["links"].is_array()) {
      unreachable.push_back(n.id);
      continue;
    }
    for (auto& link : body["links"]) links.push_back(std::move(link));
  }
  SendJson(res, 200, {{"links", links}, {"unreachable", unreachable}});
}

void ApiServer::ForwardGet(const std::string& node_id, const std::string& path,
                           httplib::Response& res) {
  auto target = node_.store().GetNode(node_id);
  if (!target.ok()) return SendError(res, NotFound("node " + node_id + " does not exist"));
  auto client = PeerClient(target->api_url);
  client->set_connection_timeout(2);
  client->set_read_timeout(5);
  auto reply = client->Get(path, {{"X-Dwcp-Forwarded", node_.config().node_id}});
  if (!reply) {
    return SendError(res, Unavailable("node " + node_id + " at " + target->api_url +
                                      " is unreachable: " + httplib::to_string(reply.error())));
  }
  res.status = reply->status;
  res.set_content(reply->body, reply->get_header_value("Content-Type"));
}

void ApiServer::Forward(const std::string& node_id, const httplib::Request& req,
                        httplib::Response& res) {
  auto target = node_.store().GetNode(node_id);
  if (!target.ok()) return SendError(res, NotFound("node " + node_id + " does not exist"));
  if (req.has_header("X-Dwcp-Forwarded")) {
    return SendError(res, Unavailable("request already forwarded once; node " + node_id +
                                      " disagrees about ownership"));
  }
  auto client = PeerClient(target->api_url);
  client->set_connection_timeout(3);
  client->set_read_timeout(120);
  httplib::Headers headers = {{"X-Dwcp-Forwarded", node_.config().node_id}};
  if (req.has_header("Authorization"))
    headers.emplace("Authorization", req.get_header_value("Authorization"));
  auto reply = req.method == "PUT" ? client->Put(req.path, headers, req.body, "application/json")
                                   : client->Post(req.path, headers, req.body, "application/json");
  if (!reply) {
    return SendError(res, Unavailable("node " + node_id + " at " + target->api_url +
                                      " is unreachable: " + httplib::to_string(reply.error())));
  }
  res.status = reply->status;
  res.set_content(reply->body, reply->get_header_value("Content-Type"));
}

}  // namespace dwcp::api
