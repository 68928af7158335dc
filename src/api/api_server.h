// dwcpd's HTTP API (/api/v1/, docs/api.md), /metrics and health checks. Every endpoint is
// one row of the route table, which also renders the JSON index at "/api/v1/"; "/" is the web
// dashboard (web_assets.h).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace dwcp::node {
class Node;
}

namespace dwcp::api {

// The HTTP status of a Status code (docs/api.md).
int HttpStatusOf(StatusCode code);

class ApiServer {
 public:
  explicit ApiServer(node::Node& node);
  ~ApiServer();

  // Binds host:port (port 0 picks a free one). Unavailable when the port is taken.
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
  std::unique_ptr<httplib::Server> server_;
  std::vector<Route> routes_;
  std::thread thread_;
  uint16_t port_ = 0;
};

}  // namespace dwcp::api
