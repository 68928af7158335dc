#include "rollout/controller.h"

#include <algorithm>
#include <cassert>
#include <set>

#include "obs/log.h"

namespace dwcp::rollout {
namespace {

using nlohmann::json;

// Migrations read from the store per evaluation: the newest of the cluster. A window busier
// than this is judged on its most recent part.
constexpr size_t kMaxMigrations = 1000;
// Attempts of an operator's change when other writers keep coming first.
constexpr int kChangeAttempts = 5;

std::string Join(const std::vector<std::string>& parts, const char* sep) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : sep) + p;
  return out;
}

json NullableMs(std::optional<int64_t> ms) { return ms ? json(*ms) : json(); }

}  // namespace

RolloutController::RolloutController(RolloutConfig config, std::string node_id, std::string region,
                                     acp::StateStore& store, obs::Metrics& metrics,
                                     const Clock& clock, AnomalySource anomalies)
    : config_(std::move(config)),
      stages_(StageList(config_)),
      node_id_(std::move(node_id)),
      region_(std::move(region)),
      store_(store),
      clock_(clock),
      anomalies_(std::move(anomalies)),
      progress_family_(metrics.GaugeFamily(
          std::nullopt, "rollout_progress", "percent",
          "Share of unpinned migrations that use v3 in the region's current stage, 0..100; one "
          "series, labelled with the current stage (docs/rollout.md)")),
      rollbacks_family_(metrics.CounterFamily(
          std::nullopt, "rollout_rollbacks",
          "Rollout stage rollbacks this node performed, by region and reason (no_go: the "
          "controller's NO-GO, alert: the Alertmanager webhook, manual: an operator)")),
      advances_family_(metrics.CounterFamily(
          std::nullopt, "rollout_advances",
          "Rollout stage advances this node performed, by region and reason (go: a GO held "
          "for the GO period, manual: an operator)")),
      webhook_family_(metrics.CounterFamily(
          std::nullopt, "rollout_webhook_requests",
          "Calls of the Alertmanager webhook POST /api/v1/rollback by result (rolled_back, "
          "ignored, unauthenticated, invalid, failed)")),
      decision_(metrics
                    .GaugeFamily(std::nullopt, "rollout_decision", "",
                                 "GO / NO-GO of the region's current rollout stage, v3 against "
                                 "v1: 1 GO, 0 NO-GO, 0.5 pending (too few samples)")
                    .Add({{"region", region_}})),
      stage_gauge_(metrics
                       .GaugeFamily(std::nullopt, "rollout_stage", "",
                                    "Index of the region's current rollout stage: 0 = v1 only, "
                                    "then the configured stages in order")
                       .Add({{"region", region_}})) {
  assert(ValidateRolloutConfig(config_).ok());
  decision_.Set(DecisionValue(Decision::kPending));
  const size_t initial = InitialStageIndex(config_);
  progress_stage_ = stages_[initial].name;
  progress_ = &progress_family_.Add({{"region", region_}, {"stage", progress_stage_}});
  progress_->Set(stages_[initial].percent);
  stage_gauge_.Set(static_cast<double>(initial));
  for (const char* reason : {kReasonNoGo, kReasonAlert, kReasonManual}) {
    RollbackCounter(region_, reason);
  }
  for (const char* reason : {kReasonGo, kReasonManual}) AdvanceCounter(region_, reason);
  for (const char* result : {"rolled_back", "ignored", "unauthenticated", "invalid", "failed"}) {
    webhook_family_.Add({{"result", result}});
  }
}

prometheus::Counter& RolloutController::RollbackCounter(const std::string& region,
                                                        const std::string& reason) {
  std::lock_guard lock(mu_);
  auto& c = rollbacks_[{region, reason}];
  if (c == nullptr) c = &rollbacks_family_.Add({{"region", region}, {"reason", reason}});
  return *c;
}

prometheus::Counter& RolloutController::AdvanceCounter(const std::string& region,
                                                       const std::string& reason) {
  std::lock_guard lock(mu_);
  auto& c = advances_[{region, reason}];
  if (c == nullptr) c = &advances_family_.Add({{"region", region}, {"reason", reason}});
  return *c;
}

void RolloutController::CountWebhook(std::string_view result) {
  webhook_family_.Add({{"result", std::string(result)}}).Increment();
}

size_t RolloutController::IndexOf(const acp::RolloutRecord& record) const {
  if (auto i = StageIndex(stages_, record.stage)) return *i;
  // A stage this node's configuration does not name (the list changed): the highest stage
  // that does not send more than the record's share over v3.
  size_t best = 0;
  for (size_t i = 0; i < stages_.size(); ++i) {
    if (stages_[i].percent <= record.percent) best = i;
  }
  return best;
}

Result<acp::RolloutRecord> RolloutController::LoadOrCreate(const std::string& region) {
  for (int attempt = 0; attempt < kChangeAttempts; ++attempt) {
    auto got = store_.GetRollout(region);
    if (got.ok() || got.status().code() != StatusCode::kNotFound) return got;
    if (region != region_) {
      // Another region: only one some node belongs to.
      auto nodes = store_.ListNodes();
      if (!nodes.ok()) return nodes.status();
      bool known = std::any_of(nodes->begin(), nodes->end(),
                               [&](const acp::NodeRecord& n) { return n.region == region; });
      if (!known) return Status(NotFound("region " + region + " has no nodes and no rollout"));
    }
    const Stage& initial = stages_[InitialStageIndex(config_)];
    acp::RolloutRecord fresh;
    fresh.region = region;
    fresh.stage = initial.name;
    fresh.percent = initial.percent;
    fresh.reason = "initial";
    fresh.detail = "rollout.initial_stage";
    fresh.changed_by = node_id_;
    fresh.changed_ms = clock_.WallMillis();
    auto created = store_.CompareAndSwapRollout(0, fresh);
    if (created.ok()) {
      obs::LogInfo("rollout", "rollout started",
                   {{"region", region}, {"stage", fresh.stage}, {"percent", fresh.percent}});
      return created;
    }
    if (created.status().code() != StatusCode::kFailedPrecondition) return created.status();
    // Another node created it first: read theirs.
  }
  return Status(Aborted("the rollout record of region " + region + " keeps changing"));
}

Status RolloutController::Start() {
  if (!config_.webhook_token_file.empty()) {
    auto secret = ReadSecretFile(config_.webhook_token_file);
    if (!secret.ok())
      return Status(InvalidArgument("rollout.webhook_token_file: " + secret.status().message()));
  }
  auto record = LoadOrCreate(region_);
  if (!record.ok()) return record.status();
  std::lock_guard lock(mu_);
  ExportRecord(*record);
  return Status::Ok();
}

void RolloutController::ExportRecord(const acp::RolloutRecord& record) {
  if (record_ && record_->version != record.version) {
    go_since_ms_.reset();  // a new stage is judged from scratch
  }
  record_ = record;
  const size_t index = IndexOf(record);
  stage_gauge_.Set(static_cast<double>(index));
  if (progress_stage_ != record.stage) {
    if (progress_ != nullptr) progress_family_.Remove(progress_);
    progress_stage_ = record.stage;
    progress_ = &progress_family_.Add({{"region", region_}, {"stage", record.stage}});
  }
  progress_->Set(record.percent);
}

Result<std::vector<MigrationSample>> RolloutController::LoadSamples(const std::string& region) {
  auto nodes = store_.ListNodes();
  if (!nodes.ok()) return nodes.status();
  std::set<std::string> members;
  for (const auto& n : *nodes) {
    if (n.region == region) members.insert(n.id);
  }
  auto migrations = store_.ListMigrations(kMaxMigrations);
  if (!migrations.ok()) return migrations.status();
  std::vector<MigrationSample> out;
  for (const auto& m : *migrations) {
    if (m.finished_ms == 0 || members.count(m.source_node) == 0) continue;
    MigrationSample s;
    s.id = m.id;
    if (m.protocol == "v1") {
      s.protocol = 1;
    } else if (m.protocol == "v3") {
      s.protocol = 3;
    } else {
      continue;
    }
    s.success = m.phase == acp::kPhaseCompleted;
    s.latency_seconds =
        m.total_ms > 0 ? m.total_ms / 1e3 : static_cast<double>(m.finished_ms - m.created_ms) / 1e3;
    s.throughput_bytes_per_second = m.throughput_bps;
    s.created_ms = m.created_ms;
    s.finished_ms = m.finished_ms;
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<AnomalySample> RolloutController::Anomalies() const {
  return anomalies_ ? anomalies_() : std::vector<AnomalySample>{};
}

void RolloutController::Tick() {
  const int64_t now = clock_.WallMillis();
  {
    std::lock_guard lock(mu_);
    if (now < next_eval_ms_) return;
    next_eval_ms_ = now + config_.interval.count();
  }
  auto record = LoadOrCreate(region_);
  Result<std::vector<MigrationSample>> samples =
      record.ok() ? LoadSamples(region_) : Result<std::vector<MigrationSample>>(record.status());
  if (!samples.ok()) {
    std::lock_guard lock(mu_);
    if (!store_down_) {
      store_down_ = true;
      obs::LogWarn("rollout", "cannot evaluate the rollout: the state store does not answer",
                   {{"region", region_}, {"error", samples.status().ToString()}});
    }
    return;
  }
  EvaluationInput input;
  input.now_ms = now;
  input.stage = stages_[IndexOf(*record)];
  input.stage.percent = record->percent;
  input.stage_since_ms = record->changed_ms;
  input.migrations = std::move(samples).value();
  input.anomalies = Anomalies();
  Verdict verdict = Evaluate(config_, input);

  const size_t index = IndexOf(*record);
  bool rollback = false, advance = false;
  {
    std::lock_guard lock(mu_);
    if (store_down_) {
      store_down_ = false;
      obs::LogInfo("rollout", "the state store answers again", {{"region", region_}});
    }
    ExportRecord(*record);
    if (verdict.decision != verdict_.decision || !logged_verdict_) {
      logged_verdict_ = true;
      obs::Log(verdict.decision == Decision::kNoGo ? obs::LogLevel::kWarn : obs::LogLevel::kInfo,
               "rollout", "rollout decision",
               {{"region", region_},
                {"stage", record->stage},
                {"percent", record->percent},
                {"decision", DecisionName(verdict.decision)},
                {"reasons", verdict.reasons},
                {"v1_samples", verdict.v1.migrations},
                {"v3_samples", verdict.v3.migrations},
                {"anomalies", verdict.anomalies}});
    }
    verdict_ = verdict;
    decision_.Set(verdict.value());
    if (verdict.decision == Decision::kGo) {
      if (!go_since_ms_) go_since_ms_ = now;
    } else {
      go_since_ms_.reset();
    }
    rollback = verdict.decision == Decision::kNoGo && config_.auto_rollback && index > 0;
    advance = verdict.decision == Decision::kGo && config_.auto_advance && !record->halted &&
              index + 1 < stages_.size() && now - *go_since_ms_ >= config_.go_period.count();
  }
  Result<acp::RolloutRecord> changed = *record;
  if (rollback) {
    changed =
        Transition(*record, index - 1, /*halted=*/true, kReasonNoGo, Join(verdict.reasons, "; "));
  } else if (advance) {
    changed = Transition(*record, index + 1, record->halted, kReasonGo,
                         "GO for " + std::to_string(config_.go_period.count() / 1000) +
                             " s: " + Join(verdict.reasons, "; "));
  }
  if (!changed.ok() && changed.status().code() != StatusCode::kFailedPrecondition) {
    obs::LogWarn("rollout", "cannot change the rollout stage",
                 {{"region", region_}, {"error", changed.status().ToString()}});
  }
  // Another node changed it first (FailedPrecondition): the next evaluation reads theirs.
}

Result<acp::RolloutRecord> RolloutController::Transition(const acp::RolloutRecord& from, size_t to,
                                                         bool halted, const std::string& reason,
                                                         const std::string& detail) {
  assert(to < stages_.size());
  acp::RolloutRecord next = from;
  next.stage = stages_[to].name;
  next.percent = stages_[to].percent;
  next.halted = halted;
  next.reason = reason;
  next.detail = detail;
  next.changed_by = node_id_;
  next.changed_ms = clock_.WallMillis();
  auto written = store_.CompareAndSwapRollout(from.version, next);
  if (!written.ok()) return written;
  const bool back = to < IndexOf(from) || (to == IndexOf(from) && from.percent > next.percent);
  if (back) {
    RollbackCounter(from.region, reason).Increment();
  } else {
    AdvanceCounter(from.region, reason).Increment();
  }
  obs::Log(back ? obs::LogLevel::kWarn : obs::LogLevel::kInfo, "rollout",
           back ? "rollout rolled back" : "rollout advanced",
           {{"region", from.region},
            {"from_stage", from.stage},
            {"from_percent", from.percent},
            {"stage", next.stage},
            {"percent", next.percent},
            {"reason", reason},
            {"detail", detail},
            {"halted", halted},
            {"version", written->version}});
  if (from.region == region_) {
    std::lock_guard lock(mu_);
    ExportRecord(*written);
    next_eval_ms_ = 0;  // judge the new stage at the next tick
  }
  return written;
}

Result<acp::RolloutRecord> RolloutController::Change(const std::string& region,
                                                     const Choose& choose, bool halted,
                                                     const std::string& reason,
                                                     const std::string& detail) {
  for (int attempt = 0; attempt < kChangeAttempts; ++attempt) {
    auto record = LoadOrCreate(region);
    if (!record.ok()) return record.status();
    auto target = choose(*record, IndexOf(*record));
    if (!target.ok()) return target.status();
    auto written = Transition(*record, *target, halted, reason, detail);
    if (written.ok() || written.status().code() != StatusCode::kFailedPrecondition) {
      return written;
    }
  }
  return Status(
      Aborted("the rollout of region " + region + " kept changing under this request; try again"));
}

Result<nlohmann::json> RolloutController::Advance(const std::string& region_arg,
                                                  const std::string& to, const std::string& note) {
  const std::string region = region_arg.empty() ? region_ : region_arg;
  auto choose = [&](const acp::RolloutRecord& r, size_t current) -> Result<size_t> {
    if (to.empty()) {
      if (current + 1 >= stages_.size()) {
        return Status(FailedPrecondition("region " + region + " is at the last stage (" + r.stage +
                                         ", " + std::to_string(int(r.percent)) +
                                         "%): nothing to advance to"));
      }
      return current + 1;
    }
    auto target = StageIndex(stages_, to);
    if (!target) return Status(InvalidArgument("unknown stage '" + to + "'"));
    if (*target <= current) {
      return Status(InvalidArgument("stage " + to + " is not ahead of " + r.stage +
                                    "; use rollback to go back"));
    }
    return *target;
  };
  auto written = Change(region, choose, /*halted=*/false, kReasonManual,
                        note.empty() ? "advanced by an operator" : note);
  if (!written.ok()) return written.status();
  return StatusJson(region);
}

Result<nlohmann::json> RolloutController::Rollback(const std::string& region_arg,
                                                   const std::string& to, const std::string& note) {
  const std::string region = region_arg.empty() ? region_ : region_arg;
  auto choose = [&](const acp::RolloutRecord& r, size_t current) -> Result<size_t> {
    if (to.empty()) {
      if (current == 0) {
        return Status(
            FailedPrecondition("region " + region + " is at v1 already: nothing to roll back"));
      }
      return current - 1;
    }
    auto target = StageIndex(stages_, to);
    if (!target) return Status(InvalidArgument("unknown stage '" + to + "'"));
    if (*target > current || (*target == current && r.stage == to)) {
      return Status(InvalidArgument("stage " + to + " is not behind " + r.stage +
                                    "; use advance to go forward"));
    }
    return *target;
  };
  auto written = Change(region, choose, /*halted=*/true, kReasonManual,
                        note.empty() ? "rolled back by an operator" : note);
  if (!written.ok()) return written.status();
  return StatusJson(region);
}

Result<nlohmann::json> RolloutController::HandleAlert(const AlertNotification& n) {
  json out = {{"action", "ignored"}, {"regions", json::array()}};
  if (n.firing.empty()) {
    CountWebhook("ignored");
    out["reason"] = "no firing alerts";
    return out;
  }
  std::vector<std::string> regions = n.regions;
  if (n.all_regions) {
    std::set<std::string> all(regions.begin(), regions.end());
    all.insert(region_);
    auto records = store_.ListRollouts();
    if (!records.ok()) {
      CountWebhook("failed");
      return records.status();
    }
    for (const auto& r : *records) all.insert(r.region);
    auto nodes = store_.ListNodes();
    if (!nodes.ok()) {
      CountWebhook("failed");
      return nodes.status();
    }
    for (const auto& node : *nodes) all.insert(node.region);
    regions.assign(all.begin(), all.end());
  }
  std::vector<std::string> names = n.firing;
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  const std::string detail =
      "Alertmanager (" + (n.receiver.empty() ? "webhook" : n.receiver) + "): " + Join(names, ", ");
  bool any = false;
  for (const auto& region : regions) {
    json entry = {{"region", region}};
    auto changed = Change(
        region,
        [&](const acp::RolloutRecord& r, size_t current) -> Result<size_t> {
          if (current == 0 && r.percent <= 0) {
            return Status(FailedPrecondition("already at v1"));
          }
          return size_t{0};
        },
        /*halted=*/true, kReasonAlert, detail);
    if (changed.ok()) {
      any = true;
      entry["result"] = "rolled_back";
      entry["stage"] = changed->stage;
    } else if (changed.status().code() == StatusCode::kFailedPrecondition) {
      entry["result"] = "unchanged";
      entry["stage"] = kV1StageName;
    } else if (changed.status().code() == StatusCode::kNotFound) {
      entry["result"] = "unknown_region";
    } else {
      CountWebhook("failed");
      return changed.status();
    }
    out["regions"].push_back(entry);
  }
  out["action"] = any ? "rolled_back" : "ignored";
  out["alerts"] = names;
  CountWebhook(any ? "rolled_back" : "ignored");
  return out;
}

Status RolloutController::AuthorizeWebhook(std::string_view authorization) {
  if (config_.webhook_token_file.empty()) {
    CountWebhook("unauthenticated");
    return Status(StatusCode::kUnauthenticated,
                  "the rollback webhook has no secret configured (rollout.webhook_token_file)");
  }
  auto secret = ReadSecretFile(config_.webhook_token_file);
  if (!secret.ok()) {
    CountWebhook("failed");
    obs::LogError("rollout", "cannot read the webhook secret",
                  {{"error", secret.status().ToString()}});
    return Status(Unavailable("the rollback webhook cannot read its secret"));
  }
  if (!BearerMatches(authorization, *secret)) {
    CountWebhook("unauthenticated");
    obs::LogWarn("rollout", "rollback webhook call refused: missing or wrong secret");
    return Status(StatusCode::kUnauthenticated, "missing or wrong webhook secret");
  }
  return Status::Ok();
}

ProtocolChoice RolloutController::ChooseProtocol(const std::string& vm_id) {
  ProtocolChoice choice;
  choice.region = region_;
  choice.bucket = BucketOf(vm_id);
  auto record = LoadOrCreate(region_);
  if (record.ok()) {
    std::lock_guard lock(mu_);
    ExportRecord(*record);
  } else {
    choice.from_store = false;
    std::lock_guard lock(mu_);
    if (record_) {
      record = *record_;
    } else {
      const Stage& initial = stages_[InitialStageIndex(config_)];
      acp::RolloutRecord r;
      r.stage = initial.name;
      r.percent = initial.percent;
      record = r;
    }
  }
  choice.stage = record->stage;
  choice.percent = record->percent;
  choice.protocol = UsesV3(choice.bucket, choice.percent) ? 3 : 1;
  return choice;
}

Verdict RolloutController::last_verdict() const {
  std::lock_guard lock(mu_);
  return verdict_;
}

json RolloutController::RegionJson(const acp::RolloutRecord& r, const Verdict& v, bool own) const {
  const size_t index = IndexOf(r);
  json out = {{"region", r.region},
              {"stage", r.stage},
              {"stage_index", index},
              {"percent", r.percent},
              {"halted", r.halted},
              {"version", r.version},
              {"changed_ms", r.changed_ms},
              {"changed_by", r.changed_by},
              {"change_reason", r.reason},
              {"change_detail", r.detail},
              {"decision", DecisionName(v.decision)},
              {"decision_value", v.value()},
              {"reasons", v.reasons},
              {"anomalies", v.anomalies},
              {"samples", {{"v1", v.v1.ToJson()}, {"v3", v.v3.ToJson()}}},
              {"evaluated_by", node_id_}};
  std::optional<int64_t> go_since, next_advance;
  if (own) {
    std::lock_guard lock(mu_);
    if (record_ && record_->version == r.version && v.decision == Decision::kGo) {
      go_since = go_since_ms_;
    }
  }
  if (go_since && config_.auto_advance && !r.halted && index + 1 < stages_.size()) {
    next_advance = *go_since + config_.go_period.count();
  }
  out["go_since_ms"] = NullableMs(go_since);
  out["next_advance_ms"] = NullableMs(next_advance);
  out["next_stage"] = index + 1 < stages_.size() ? json(stages_[index + 1].name) : json();
  return out;
}

Result<nlohmann::json> RolloutController::StatusJson(const std::string& only) {
  // Every region a record or a node names, this node's first created if need be.
  (void)LoadOrCreate(region_);
  auto records = store_.ListRollouts();
  if (!records.ok()) return records.status();
  auto nodes = store_.ListNodes();
  if (!nodes.ok()) return nodes.status();
  std::map<std::string, std::optional<acp::RolloutRecord>> regions;
  for (const auto& r : *records) regions[r.region] = r;
  for (const auto& n : *nodes) regions.try_emplace(n.region);
  regions.try_emplace(region_);
  if (!only.empty() && regions.count(only) == 0) {
    return Status(NotFound("region " + only + " has no nodes and no rollout"));
  }
  const std::vector<AnomalySample> anomalies = Anomalies();
  const int64_t now = clock_.WallMillis();
  json list = json::array();
  for (auto& [name, record] : regions) {
    if (!only.empty() && name != only) continue;
    if (!record) {
      // A region whose nodes have not started the rollout yet: it will begin here.
      const Stage& initial = stages_[InitialStageIndex(config_)];
      record = acp::RolloutRecord{};
      record->region = name;
      record->stage = initial.name;
      record->percent = initial.percent;
      record->reason = "initial";
    }
    auto samples = LoadSamples(name);
    if (!samples.ok()) return samples.status();
    EvaluationInput input;
    input.now_ms = now;
    input.stage = stages_[IndexOf(*record)];
    input.stage.percent = record->percent;
    input.stage_since_ms = record->changed_ms;
    input.migrations = std::move(samples).value();
    if (name == region_) input.anomalies = anomalies;
    list.push_back(RegionJson(*record, Evaluate(config_, input), name == region_));
  }
  json stages = json::array();
  for (size_t i = 0; i < stages_.size(); ++i) {
    stages.push_back({{"index", i}, {"name", stages_[i].name}, {"percent", stages_[i].percent}});
  }
  return json{{"node", node_id_},
              {"region", region_},
              {"stages", stages},
              {"rules",
               {{"window_seconds", config_.window.count() / 1e3},
                {"min_samples", config_.min_samples},
                {"go_period_seconds", config_.go_period.count() / 1e3},
                {"auto_advance", config_.auto_advance},
                {"auto_rollback", config_.auto_rollback},
                {"max_success_rate_drop", config_.max_success_rate_drop},
                {"max_latency_increase", config_.max_latency_increase},
                {"max_throughput_drop", config_.max_throughput_drop},
                {"max_critical_anomalies", config_.max_critical_anomalies}}},
              {"regions", list}};
}

}  // namespace dwcp::rollout
