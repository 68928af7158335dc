#include "rollout/webhook.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

namespace dwcp::rollout {
namespace {

using nlohmann::json;

std::string StringField(const json& j, const char* key) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_string()) return "";
  return j[key].get<std::string>();
}

}  // namespace

Result<AlertNotification> ParseAlertmanagerWebhook(std::string_view body) {
  json j = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Status(InvalidArgument("webhook body is not a JSON object"));
  }
  if (!j.contains("alerts") || !j["alerts"].is_array()) {
    return Status(
        InvalidArgument("webhook body has no 'alerts' list (not an Alertmanager payload?)"));
  }
  AlertNotification n;
  n.status = StringField(j, "status");
  n.receiver = StringField(j, "receiver");
  n.group_key = StringField(j, "groupKey");
  std::set<std::string> regions;
  for (const json& alert : j["alerts"]) {
    if (!alert.is_object()) return Status(InvalidArgument("webhook alert is not an object"));
    // An alert without its own status takes the group's.
    std::string status = StringField(alert, "status");
    if (status.empty()) status = n.status;
    if (status != "firing") continue;
    const json labels =
        alert.contains("labels") && alert["labels"].is_object() ? alert["labels"] : json::object();
    n.firing.push_back(StringField(labels, "alertname"));
    const std::string region = StringField(labels, "region");
    if (region.empty()) {
      n.all_regions = true;
    } else {
      regions.insert(region);
    }
  }
  n.regions.assign(regions.begin(), regions.end());
  return n;
}

Result<std::string> ReadSecretFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status(Unavailable("cannot read the webhook secret file " + path));
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  auto space = [](unsigned char c) { return std::isspace(c) != 0; };
  s.erase(s.begin(), std::find_if_not(s.begin(), s.end(), space));
  s.erase(std::find_if_not(s.rbegin(), s.rend(), space).base(), s.end());
  if (s.empty()) return Status(FailedPrecondition("the webhook secret file " + path + " is empty"));
  return s;
}

bool BearerMatches(std::string_view authorization, std::string_view secret) {
  constexpr std::string_view kScheme = "bearer ";
  if (secret.empty() || authorization.size() < kScheme.size()) return false;
  for (size_t i = 0; i < kScheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(authorization[i])) != kScheme[i]) return false;
  }
  const std::string_view presented = authorization.substr(kScheme.size());
  unsigned char a[SHA256_DIGEST_LENGTH], b[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(presented.data()), presented.size(), a);
  SHA256(reinterpret_cast<const unsigned char*>(secret.data()), secret.size(), b);
  return CRYPTO_memcmp(a, b, sizeof a) == 0;
}

}  // namespace dwcp::rollout
