// dwcpd's HTTP API (/api/v1/, docs/api.md), /metrics and health checks. Every endpoint is
// one row of the route table, which also renders the JSON index at "/api/v1/"; "/" is the web
// dashboard (web_assets.h).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "api/api_access.h"
#include "api/api_limits.h"
#include "common/status.h"

namespace httplib {
class Client;
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace dwcp::node {
class Node;
}

namespace dwcp::api {

class GuardedServer;

// The HTTP status of a Status code (docs/api.md).
int HttpStatusOf(StatusCode code);

// Serves the node's API with its access control and limits (docs/security.md): mutating
// calls need the bearer token or a verified client certificate when either is configured;
// per-client request rate, body size, open connections and slow requests are limited.
class ApiServer {
 public:
  explicit ApiServer(node::Node& node);
  ~ApiServer();

  // Binds host:port (port 0 picks a free one). Unavailable when the port is taken;
  // InvalidArgument when the API's TLS certificate, key or client CA do not load.
  Status Bind(const std::string& host, uint16_t port);
  uint16_t port() const { return port_; }
  // Serves on a background thread until Stop().
  void Start();
  void Stop();

 private:
  struct Route {
    std::string method;
    std::string pattern;  // httplib regex
    std::string help;
    bool mutating;
    std::function<void(const httplib::Request&, httplib::Response&)> handler;
  };
  void AddRoutes();
  // The rate, body-size and access checks every request passes before routing; true when
  // it answered the request itself.
  bool Screen(const httplib::Request& req, httplib::Response& res);
  // A client for another node's API at `url` (http or https: then verified against
  // api_client_ca, presenting this node's API certificate).
  std::unique_ptr<httplib::Client> PeerClient(const std::string& url) const;

  void Index(const httplib::Request& req, httplib::Response& res);
  void Healthz(const httplib::Request& req, httplib::Response& res);
  void Readyz(const httplib::Request& req, httplib::Response& res);
  void Metrics(const httplib::Request& req, httplib::Response& res);
  void ComponentMetrics(const httplib::Request& req, httplib::Response& res);
  void MetricsSummary(const httplib::Request& req, httplib::Response& res);
  void MetricsSummaryHistory(const httplib::Request& req, httplib::Response& res);
  void ListLinks(const httplib::Request& req, httplib::Response& res);
  void GetLogLevel(const httplib::Request& req, httplib::Response& res);
  void SetLogLevel(const httplib::Request& req, httplib::Response& res);
  void ListNodes(const httplib::Request& req, httplib::Response& res);
  void ListQuarantine(const httplib::Request& req, httplib::Response& res);
  void LiftQuarantine(const httplib::Request& req, httplib::Response& res);
  void ListVms(const httplib::Request& req, httplib::Response& res);
  void GetVm(const httplib::Request& req, httplib::Response& res);
  void CreateVm(const httplib::Request& req, httplib::Response& res);
  void ListMigrations(const httplib::Request& req, httplib::Response& res);
  void GetMigration(const httplib::Request& req, httplib::Response& res);
  void CreateMigration(const httplib::Request& req, httplib::Response& res);
  void SetMigrationBandwidth(const httplib::Request& req, httplib::Response& res);
  void SetNodeBandwidth(const httplib::Request& req, httplib::Response& res);
  void GetRollout(const httplib::Request& req, httplib::Response& res);
  void AdvanceRollout(const httplib::Request& req, httplib::Response& res);
  void RollbackRollout(const httplib::Request& req, httplib::Response& res);
  void AlertmanagerRollback(const httplib::Request& req, httplib::Response& res);

  // Relays a mutating request to the node that must execute it.
  void Forward(const std::string& node_id, const httplib::Request& req, httplib::Response& res);
  // GET `path` (no query) from another node and relay its answer.
  void ForwardGet(const std::string& node_id, const std::string& path, httplib::Response& res);

  node::Node& node_;
  Status init_status_;  // why the server could not be built (TLS files), else OK
  AccessPolicy access_;
  ClientRateLimiter rate_limiter_;
  std::unique_ptr<GuardedServer> server_;
  std::vector<Route> routes_;
  std::thread thread_;
  uint16_t port_ = 0;
};

}  // namespace dwcp::api
