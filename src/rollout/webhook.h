// The Alertmanager side of the rollout: the webhook payload (version 4) that
// POST /api/v1/rollback receives, and the shared secret that authenticates it.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace dwcp::rollout {

// What a notification asks for. Only firing alerts roll back; a notification whose alerts
// are all resolved (send_resolved) changes nothing.
struct AlertNotification {
  std::string status;    // the group's status: "firing" | "resolved"
  std::string receiver;  // the Alertmanager receiver that sent it
  std::string group_key;
  std::vector<std::string> firing;  // alertname of each firing alert, in payload order
  // The `region` labels of the firing alerts, sorted and unique. all_regions is true when a
  // firing alert carries no region label: it concerns every region.
  std::vector<std::string> regions;
  bool all_regions = false;
};

// Parses the JSON body Alertmanager POSTs to a webhook receiver
// ({"version": "4", "status", "receiver", "groupKey", "alerts": [{"status", "labels", ...}],
// ...}). InvalidArgument when the body is not JSON, or `alerts` is missing or malformed.
Result<AlertNotification> ParseAlertmanagerWebhook(std::string_view body);

// The secret in `path`: the file's content without surrounding whitespace (a trailing
// newline is usual). Unavailable when the file cannot be read, FailedPrecondition when it is
// empty. Read on every call, so a rotated secret takes effect without a restart.
Result<std::string> ReadSecretFile(const std::string& path);

// True iff `authorization` is "Bearer <secret>" (the scheme case-insensitive). Compares
// SHA-256 digests in constant time, so neither the content nor the length of the secret
// leaks through timing. An empty secret matches nothing.
bool BearerMatches(std::string_view authorization, std::string_view secret);

}  // namespace dwcp::rollout
