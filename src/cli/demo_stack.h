// `dwcp demo --stack` (make demo STACK=1): a local Prometheus and Alertmanager next to the
// demo cluster, configured from the shipped deploy/ files so that the demo exercises the
// same scrape config, recording rules and alerts as production (docs/deploy.md).
#pragma once

#include <string>
#include <vector>

#include "cli/demo.h"
#include "common/status.h"

namespace dwcp::cli {

struct DemoStackPlan {
  std::string deploy_dir;           // the repository's deploy/ (shipped configuration)
  std::string dir;                  // where the generated files and the servers' data go
  int prometheus_port = 0;          // 127.0.0.1:prometheus_port
  int alertmanager_port = 0;        // 127.0.0.1:alertmanager_port
  std::string region = "local";     // the demo nodes' region (target label)
  std::string rollback_token_file;  // the demo nodes' rollout.webhook_token_file
};

// Writes, under plan.dir:
//   prometheus/prometheus.yml      deploy/prometheus/prometheus.yml, every interval 5 s,
//                                  Alertmanager and the self-scrape on this plan's ports
//   prometheus/rules/*.yml         the shipped recording and alert rules
//   prometheus/targets/dwcp-v3.yml the demo nodes' API ports
//   alertmanager/alertmanager.yml  deploy/alertmanager/alertmanager.yml with the rollback
//                                  webhook pointed at the first node and no Slack receivers
//                                  (alerts show in Alertmanager's UI)
// InvalidArgument naming the file when a shipped file is missing or malformed.
Status WriteDemoStackConfig(const DemoStackPlan& plan, const std::vector<DemoNode>& nodes);

// argv of the two servers, logs aside.
std::vector<std::string> PrometheusArgs(const std::string& binary, const DemoStackPlan& plan);
std::vector<std::string> AlertmanagerArgs(const std::string& binary, const DemoStackPlan& plan);

}  // namespace dwcp::cli
