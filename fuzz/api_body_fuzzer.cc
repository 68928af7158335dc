// Fuzzes the HTTP API's JSON request bodies (src/api/api_requests.h and the Alertmanager
// webhook, src/rollout/webhook.h). The first input byte picks the endpoint, the rest is the
// body. Every body must give a value or an InvalidArgument, never a crash or an exception.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "api/api_requests.h"
#include "rollout/webhook.h"

namespace {

void ExpectInvalidArgumentOnError(const dwcp::Status& st) {
  if (!st.ok() && st.code() != dwcp::StatusCode::kInvalidArgument) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (data[0] % 7) {
    case 0: {
      auto r = dwcp::api::ParseCreateVmBody(body);
      ExpectInvalidArgumentOnError(r.status());
      if (r.ok() && r->id.empty()) std::abort();  // id is required
      break;
    }
    case 1: {
      auto r = dwcp::api::ParseCreateMigrationBody(body);
      ExpectInvalidArgumentOnError(r.status());
      if (r.ok() && (r->vm.empty() || r->to.empty() || (r->protocol != 3 && r->protocol != 1))) {
        std::abort();
      }
      break;
    }
    case 2:
      ExpectInvalidArgumentOnError(dwcp::api::ParseRolloutChangeBody(body).status());
      break;
    case 3:
      ExpectInvalidArgumentOnError(dwcp::api::ParseBandwidthLimitBody(body).status());
      break;
    case 4:
      ExpectInvalidArgumentOnError(dwcp::api::ParseLogLevelBody(body).status());
      break;
    case 5:
      ExpectInvalidArgumentOnError(dwcp::rollout::ParseAlertmanagerWebhook(body).status());
      break;
    case 6:
      ExpectInvalidArgumentOnError(dwcp::api::ParseJsonObject(body).status());
      break;
  }
  return 0;
}
