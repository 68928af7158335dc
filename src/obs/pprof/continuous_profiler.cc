#include "obs/pprof/continuous_profiler.h"

#include <prometheus/family.h>
#include <pthread.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <map>
#include <vector>

#include "obs/log.h"
#include "obs/pprof/goroutine_profile.h"
#include "obs/pprof/heap_profile.h"

namespace dwcp::obs::pprof {
namespace {

constexpr char kComponent[] = "profiling";
constexpr ProfileKind kKinds[] = {ProfileKind::kCpu, ProfileKind::kHeap, ProfileKind::kGoroutine};

std::string Timestamp(int64_t wall_millis) {
  std::time_t t = static_cast<std::time_t>(wall_millis / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[48];
  std::snprintf(buf, sizeof buf, "%04d%02d%02dT%02d%02d%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(wall_millis % 1000));
  return buf;
}

}  // namespace

const char* ProfileKindName(ProfileKind kind) {
  switch (kind) {
    case ProfileKind::kCpu:
      return "cpu";
    case ProfileKind::kHeap:
      return "heap";
    case ProfileKind::kGoroutine:
      return "goroutine";
  }
  return "unknown";
}

Status ValidateContinuousProfilerConfig(const ContinuousProfilerConfig& c) {
  if (c.interval.count() <= 0) return InvalidArgument("profiling.interval must be positive");
  if (c.cpu && (c.cpu_duration.count() <= 0 || c.cpu_duration > c.interval)) {
    return InvalidArgument(
        "profiling.cpu_duration must be positive and at most profiling.interval");
  }
  if (c.max_age.count() < 0)
    return InvalidArgument("profiling.retention.max_age must not be negative");
  if (c.storage.empty())
    return InvalidArgument("profiling.storage is required when profiling is enabled");
  if (c.node_id.empty() || c.node_id.find('/') != std::string::npos) {
    return InvalidArgument("continuous profiling needs a node id without '/'");
  }
  return Status::Ok();
}

std::string ProfileKey(const std::string& node_id, ProfileKind kind, int64_t wall_millis) {
  return node_id + "/" + ProfileKindName(kind) + "-" + Timestamp(wall_millis) + ".prof";
}

std::optional<std::pair<ProfileKind, int64_t>> ParseProfileKey(const std::string& node_id,
                                                               const std::string& key) {
  std::string dir = node_id + "/";
  if (key.compare(0, dir.size(), dir) != 0) return std::nullopt;
  std::string name = key.substr(dir.size());
  for (ProfileKind kind : kKinds) {
    std::string head = std::string(ProfileKindName(kind)) + "-";
    if (name.compare(0, head.size(), head) != 0) continue;
    std::string ts = name.substr(head.size());
    std::tm tm{};
    int ms = 0, consumed = 0;
    if (std::sscanf(ts.c_str(), "%4d%2d%2dT%2d%2d%2d.%3dZ.prof%n", &tm.tm_year, &tm.tm_mon,
                    &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms, &consumed) != 7 ||
        static_cast<size_t>(consumed) != ts.size()) {
      return std::nullopt;
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    int64_t secs = timegm(&tm);
    return std::make_pair(kind, secs * 1000 + ms);
  }
  return std::nullopt;
}

Result<std::unique_ptr<ContinuousProfiler>> ContinuousProfiler::Create(
    ContinuousProfilerConfig config, Metrics* metrics, const Clock& clock) {
  DWCP_RETURN_IF_ERROR(ValidateContinuousProfilerConfig(config));
  // Requests are signed with the real time whatever clock names the profiles.
  auto store = OpenProfileStore(config.storage);
  if (!store.ok()) return store.status();
  return std::make_unique<ContinuousProfiler>(std::move(config), std::move(store).value(), metrics,
                                              clock);
}

ContinuousProfiler::ContinuousProfiler(ContinuousProfilerConfig config,
                                       std::unique_ptr<ProfileStore> store, Metrics* metrics,
                                       const Clock& clock, CpuProfiler& cpu, TaskRegistry& tasks)
    : config_(std::move(config)),
      store_(std::move(store)),
      clock_(clock),
      cpu_(cpu),
      tasks_(tasks) {
  prometheus::Registry* registry = nullptr;
  if (metrics != nullptr) {
    registry = &metrics->registry();
  } else {
    own_registry_ = std::make_shared<prometheus::Registry>();
    registry = own_registry_.get();
  }
  auto& written = prometheus::BuildCounter()
                      .Name("dwcp_v3_profiles_written_total")
                      .Help("Profiles the continuous profiler wrote to its storage, by kind")
                      .Register(*registry);
  auto& errors = prometheus::BuildCounter()
                     .Name("dwcp_v3_profile_errors_total")
                     .Help("Continuous-profiling failures (capture, upload or retention), by kind")
                     .Register(*registry);
  for (ProfileKind kind : kKinds) {
    int i = static_cast<int>(kind);
    written_[i] = &written.Add({{"kind", ProfileKindName(kind)}});
    errors_[i] = &errors.Add({{"kind", ProfileKindName(kind)}});
  }
}

ContinuousProfiler::~ContinuousProfiler() { Stop(); }

double ContinuousProfiler::written(ProfileKind kind) const {
  return written_[static_cast<int>(kind)]->Value();
}

double ContinuousProfiler::errors(ProfileKind kind) const {
  return errors_[static_cast<int>(kind)]->Value();
}

void ContinuousProfiler::Start() {
  if (!config_.enabled) return;
  LogInfo(kComponent, "continuous profiling started",
          {{"storage", store_->Describe()},
           {"interval_ms", config_.interval.count()},
           {"cpu", config_.cpu},
           {"heap", config_.heap},
           {"goroutine", config_.goroutine}});
  thread_ = std::jthread([this](std::stop_token stop) { Run(stop); });
}

void ContinuousProfiler::Stop() {
  if (!thread_.joinable()) return;
  thread_.request_stop();
  cv_.notify_all();
  thread_.join();
}

void ContinuousProfiler::Run(std::stop_token stop) {
  pthread_setname_np(pthread_self(), "dwcp-profiler");
  auto next = std::chrono::steady_clock::now() + config_.interval;
  while (!stop.stop_requested()) {
    {
      std::unique_lock lock(mu_);
      cv_.wait_until(lock, stop, next, [] { return false; });
    }
    if (stop.stop_requested()) break;
    Status st = CollectOnce(stop);  // failures are counted and logged there
    (void)st;
    next += config_.interval;
    auto now = std::chrono::steady_clock::now();
    if (next < now) next = now + config_.interval;  // a slow cycle skips, never bursts
  }
}

Status ContinuousProfiler::CollectOnce(std::stop_token stop) {
  Status first;
  auto keep = [&first](Status st) {
    if (first.ok() && !st.ok()) first = std::move(st);
  };
  if (config_.cpu) {
    int64_t started = clock_.WallMillis();
    auto profile = cpu_.Profile(config_.cpu_duration, "continuous profiler", stop);
    if (!profile.ok() && stop.stop_requested()) return Status::Ok();  // shutting down
    keep(Write(ProfileKind::kCpu, started, std::move(profile)));
  }
  if (config_.heap) keep(Write(ProfileKind::kHeap, clock_.WallMillis(), HeapProfile()));
  if (config_.goroutine) {
    keep(Write(ProfileKind::kGoroutine, clock_.WallMillis(), GoroutineProfile(1, tasks_)));
  }
  keep(ApplyRetention());
  return first;
}

Status ContinuousProfiler::Write(ProfileKind kind, int64_t wall_millis,
                                 Result<std::string> profile) {
  if (!profile.ok()) {
    Fail(kind, profile.status());
    return profile.status();
  }
  std::string key = ProfileKey(config_.node_id, kind, wall_millis);
  Status st = store_->Put(key, *profile);
  if (!st.ok()) {
    Fail(kind, st);
    return st;
  }
  written_[static_cast<int>(kind)]->Increment();
  int i = static_cast<int>(kind);
  if (failing_[i]) {
    failing_[i] = false;
    LogInfo(kComponent, "continuous profiles are written again",
            {{"kind", ProfileKindName(kind)}, {"storage", store_->Describe()}});
  }
  LogDebug(kComponent, "profile written", {{"kind", ProfileKindName(kind)}, {"key", key}});
  return Status::Ok();
}

void ContinuousProfiler::Fail(ProfileKind kind, const Status& status) {
  int i = static_cast<int>(kind);
  errors_[i]->Increment();
  nlohmann::json fields = {{"kind", ProfileKindName(kind)},
                           {"storage", store_->Describe()},
                           {"error", status.ToString()}};
  if (!failing_[i]) {
    failing_[i] = true;
    LogWarn(kComponent, "continuous profile not written; retrying every interval", fields);
  } else {
    LogDebug(kComponent, "continuous profile not written", fields);
  }
}

Status ContinuousProfiler::ApplyRetention() {
  if (config_.max_age.count() == 0 && config_.keep_last == 0) return Status::Ok();
  auto keys = store_->List(config_.node_id + "/");
  if (!keys.ok()) {
    for (ProfileKind kind : kKinds) errors_[static_cast<int>(kind)]->Increment();
    if (!retention_failing_) {
      LogWarn(kComponent, "cannot list stored profiles for retention",
              {{"storage", store_->Describe()}, {"error", keys.status().ToString()}});
    }
    retention_failing_ = true;
    return keys.status();
  }
  retention_failing_ = false;
  std::map<ProfileKind, std::vector<std::pair<int64_t, std::string>>> by_kind;
  for (const std::string& key : *keys) {
    if (auto parsed = ParseProfileKey(config_.node_id, key)) {
      by_kind[parsed->first].emplace_back(parsed->second, key);
    }
  }
  int64_t now = clock_.WallMillis();
  Status first;
  for (auto& [kind, entries] : by_kind) {
    std::sort(entries.begin(), entries.end(), std::greater<>());  // newest first
    for (size_t i = 0; i < entries.size(); ++i) {
      bool too_many = config_.keep_last > 0 && i >= config_.keep_last;
      bool too_old =
          config_.max_age.count() > 0 && now - entries[i].first > config_.max_age.count();
      if (!too_many && !too_old) continue;
      Status st = store_->Delete(entries[i].second);
      if (!st.ok()) {
        Fail(kind, st);
        if (first.ok()) first = st;
      } else {
        LogDebug(kComponent, "old profile deleted", {{"key", entries[i].second}});
      }
    }
  }
  return first;
}

}  // namespace dwcp::obs::pprof
