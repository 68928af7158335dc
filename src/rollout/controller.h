// The v1→v3 rollout controller of one node (docs/rollout.md).
//
// The rollout state of every region lives in the ACP state store (acp::RolloutRecord), so
// every node of a region applies the same stage; each change is a compare-and-swap on the
// record's version, so two nodes deciding at once change it once. Every node:
//  - picks the protocol of each unpinned migration it starts from its region's record
//    (ChooseProtocol: v3 iff the VM's bucket is below the stage's percent);
//  - evaluates its region every `interval` (Tick): v3 against v1 over the window from the
//    store's migration records, plus this node's critical anomalies (rollout::Evaluate);
//  - acts on the verdict: NO-GO rolls back one stage and halts automatic advance; a GO that
//    held for go_period advances one stage;
//  - exports, for its region,
//      dwcp_v3_rollout_progress_percent{region,stage}   v3 share of the current stage
//      dwcp_v3_rollout_decision{region}                  1 GO, 0 NO-GO, 0.5 pending
//      dwcp_v3_rollout_stage{region}                     stage index, 0 = v1
//    and counts what it did in dwcp_v3_rollout_rollbacks_total{region,reason},
//    dwcp_v3_rollout_advances_total{region,reason} and
//    dwcp_v3_rollout_webhook_requests_total{result}.
// Operators (API, CLI) and Alertmanager (the webhook) act through Advance, Rollback and
// HandleAlert, on any region.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "acp/state_store.h"
#include "common/clock.h"
#include "common/status.h"
#include "obs/metrics.h"
#include "rollout/decision.h"
#include "rollout/rollout_config.h"
#include "rollout/webhook.h"

namespace dwcp::rollout {

// The critical anomalies this node detected, any age (the controller filters by time).
// Must be thread-safe.
using AnomalySource = std::function<std::vector<AnomalySample>()>;

// `reason` label values of dwcp_v3_rollout_rollbacks_total.
inline constexpr char kReasonNoGo[] = "no_go";     // the controller's NO-GO
inline constexpr char kReasonAlert[] = "alert";    // Alertmanager's webhook
inline constexpr char kReasonManual[] = "manual";  // an operator (API, CLI)
// ... and of dwcp_v3_rollout_advances_total.
inline constexpr char kReasonGo[] = "go";  // a GO held for go_period

// The protocol of one unpinned migration and why.
struct ProtocolChoice {
  uint32_t protocol = 3;  // 1 or 3, for MigrationRequest::protocol
  std::string region;
  std::string stage;
  double percent = 100;
  uint32_t bucket = 0;     // BucketOf(vm_id)
  bool from_store = true;  // false: the store did not answer; the last known stage was used
};

class RolloutController {
 public:
  // Registers the rollout families in `metrics` with this node's region at its initial
  // stage (every series exists from start-up). `config` must pass ValidateRolloutConfig
  // (asserted). `store`, `metrics` and `clock` must outlive the controller. `anomalies` may
  // be empty (no anomaly input).
  RolloutController(RolloutConfig config, std::string node_id, std::string region,
                    acp::StateStore& store, obs::Metrics& metrics, const Clock& clock,
                    AnomalySource anomalies = {});
  RolloutController(const RolloutController&) = delete;
  RolloutController& operator=(const RolloutController&) = delete;

  // Reads this node's region's record, creating it at the initial stage when the store has
  // none, and exports it. Unavailable when the store cannot answer. Thread-safe.
  Status Start();

  // Call about once a second. Every `interval`: evaluates the region, takes the automatic
  // action the verdict calls for and refreshes the metrics. Store failures are logged (once
  // per outage) and leave the last state exported. Thread-safe; meant for one caller.
  void Tick();

  // The protocol for an unpinned migration of `vm_id` started by this node: the region's
  // record is read from the store at every call, so an advance or rollback applies to the
  // next migration on every node. Never fails: without the store it uses the last record
  // seen. Thread-safe.
  ProtocolChoice ChooseProtocol(const std::string& vm_id);

  // Moves `region` (empty: this node's) forward to the stage named `to` (empty: the next
  // one) and re-enables automatic advance. Returns that region's status (as Status()).
  // NotFound for a region no node or record names; InvalidArgument for an unknown stage or
  // one that is not ahead of the current; FailedPrecondition at the last stage; Unavailable
  // when the store cannot answer. Thread-safe.
  Result<nlohmann::json> Advance(const std::string& region, const std::string& to,
                                 const std::string& note = "");
  // Moves `region` back to `to` (empty: the previous stage; "v1" for 0 %) and halts
  // automatic advance until an operator advances. Errors as Advance (FailedPrecondition at
  // v1). Counts dwcp_v3_rollout_rollbacks_total{reason="manual"}. Thread-safe.
  Result<nlohmann::json> Rollback(const std::string& region, const std::string& to,
                                  const std::string& note = "");
  // Alertmanager's webhook: every region of the notification's firing alerts (every known
  // region when one has no region label) goes to v1 and halts; regions already at v1 are
  // left alone (a repeated notification changes nothing). A notification without firing
  // alerts is ignored. Returns {"action": "rolled_back" | "ignored", "regions": [...]}.
  // Counts the webhook result and each rollback (reason "alert"). Thread-safe.
  Result<nlohmann::json> HandleAlert(const AlertNotification& notification);
  // OK iff `authorization` carries the webhook secret (rollout.webhook_token_file).
  // Unauthenticated when it does not, or no secret is configured; Unavailable when the file
  // cannot be read. Counts refusals (result "unauthenticated"). Thread-safe.
  Status AuthorizeWebhook(std::string_view authorization);
  // dwcp_v3_rollout_webhook_requests_total{result}; results: rolled_back, ignored,
  // unauthenticated, invalid, failed. Thread-safe.
  void CountWebhook(std::string_view result);

  // GET /api/v1/rollout: the stages, and for every region (or only `region`) its record,
  // live verdict (this node's anomalies count for its own region only), samples and, for
  // this node's region, since when GO holds and when the next automatic advance is due.
  // NotFound for an unknown region. Thread-safe.
  Result<nlohmann::json> StatusJson(const std::string& region = "");

  const RolloutConfig& config() const { return config_; }
  const std::string& region() const { return region_; }
  // The verdict of the last Tick (pending before the first). Thread-safe.
  Verdict last_verdict() const;

 private:
  // The region's record, created at the initial stage when missing (only for a region some
  // node or record names, or this node's own).
  Result<acp::RolloutRecord> LoadOrCreate(const std::string& region);
  // The index of the record's stage in stages_ (by name, else by percent).
  size_t IndexOf(const acp::RolloutRecord& record) const;
  // Writes `from` moved to stages_[to] by compare-and-swap; logs and counts the change.
  Result<acp::RolloutRecord> Transition(const acp::RolloutRecord& from, size_t to, bool halted,
                                        const std::string& reason, const std::string& detail);
  // Finished migrations of `region` from the store.
  Result<std::vector<MigrationSample>> LoadSamples(const std::string& region);
  std::vector<AnomalySample> Anomalies() const;
  nlohmann::json RegionJson(const acp::RolloutRecord& record, const Verdict& verdict,
                            bool own) const;
  // Exports `record` for this node's region. Requires mu_.
  void ExportRecord(const acp::RolloutRecord& record);
  prometheus::Counter& RollbackCounter(const std::string& region, const std::string& reason);
  prometheus::Counter& AdvanceCounter(const std::string& region, const std::string& reason);
  using Choose = std::function<Result<size_t>(const acp::RolloutRecord&, size_t current)>;
  // Read, choose the target, compare-and-swap; retried when another writer came first.
  Result<acp::RolloutRecord> Change(const std::string& region, const Choose& choose, bool halted,
                                    const std::string& reason, const std::string& detail);

  const RolloutConfig config_;
  const std::vector<Stage> stages_;
  const std::string node_id_;
  const std::string region_;
  acp::StateStore& store_;
  const Clock& clock_;
  const AnomalySource anomalies_;

  prometheus::Family<prometheus::Gauge>& progress_family_;
  prometheus::Family<prometheus::Counter>& rollbacks_family_;
  prometheus::Family<prometheus::Counter>& advances_family_;
  prometheus::Family<prometheus::Counter>& webhook_family_;
  prometheus::Gauge& decision_;
  prometheus::Gauge& stage_gauge_;

  mutable std::mutex mu_;
  prometheus::Gauge* progress_ = nullptr;     // the current stage's series; guarded by mu_
  std::string progress_stage_;                // its stage label; guarded by mu_
  std::optional<acp::RolloutRecord> record_;  // last record of region_ seen; guarded by mu_
  Verdict verdict_;                           // guarded by mu_
  std::optional<int64_t> go_since_ms_;        // GO held since, for record_->version; mu_
  uint64_t go_version_ = 0;                   // guarded by mu_
  int64_t next_eval_ms_ = 0;                  // guarded by mu_
  bool store_down_ = false;                   // an outage was logged; guarded by mu_
  bool logged_verdict_ = false;               // the first verdict was logged; guarded by mu_
  std::map<std::pair<std::string, std::string>, prometheus::Counter*> rollbacks_, advances_;
};

}  // namespace dwcp::rollout
