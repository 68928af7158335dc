// Continuous profiling (guide section 5.4): every `interval` the node writes the enabled
// profile kinds to `storage` and prunes what retention no longer keeps. Failures are counted
// (dwcp_v3_profile_errors_total{kind}) and logged, never fatal. docs/profiling.md.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/registry.h>

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>

#include "common/clock.h"
#include "common/status.h"
#include "obs/metrics.h"
#include "obs/pprof/cpu_profiler.h"
#include "obs/pprof/profile_store.h"
#include "obs/pprof/task_registry.h"

namespace dwcp::obs::pprof {

enum class ProfileKind { kCpu = 0, kHeap, kGoroutine };
inline constexpr int kProfileKindCount = 3;
// "cpu" | "heap" | "goroutine": the `kind` label and the file name prefix.
const char* ProfileKindName(ProfileKind kind);

// The guide's `profiling:` block plus what it leaves open.
struct ContinuousProfilerConfig {
  bool enabled = false;
  std::chrono::milliseconds interval{std::chrono::seconds(60)};
  bool cpu = true;
  bool heap = true;
  bool goroutine = true;
  std::string storage;  // "file:///var/lib/dwcp/profiles/" or "s3://bucket/prefix/"

  // Length of the CPU profile taken in each interval (at most the interval).
  std::chrono::milliseconds cpu_duration{std::chrono::seconds(10)};
  // Retention, applied to this node's profiles of each kind after every cycle: a profile
  // older than max_age is deleted, and of the rest only the newest keep_last are kept.
  // Zero turns a limit off. The age is read from the key's timestamp, not the store's clock.
  std::chrono::milliseconds max_age{std::chrono::hours(24 * 7)};
  size_t keep_last = 0;

  std::string node_id;  // the key's first segment; required
};

// Checks a config: positive interval, 0 < cpu_duration <= interval, storage and node_id set.
Status ValidateContinuousProfilerConfig(const ContinuousProfilerConfig& config);

// "<node>/<kind>-<YYYYMMDDTHHMMSS.mmmZ>.prof" for a Unix time in milliseconds.
std::string ProfileKey(const std::string& node_id, ProfileKind kind, int64_t wall_millis);
// The kind and time of a key made by ProfileKey for `node_id`; nullopt for any other key.
std::optional<std::pair<ProfileKind, int64_t>> ParseProfileKey(const std::string& node_id,
                                                               const std::string& key);

class ContinuousProfiler {
 public:
  // Opens config.storage (S3 settings from the environment) and validates the config.
  // `metrics` (optional) and `clock` must outlive the profiler.
  static Result<std::unique_ptr<ContinuousProfiler>> Create(
      ContinuousProfilerConfig config, Metrics* metrics = nullptr,
      const Clock& clock = RealClock::Instance());

  // With an explicit store (tests). `config` must be valid. When `metrics` is null the
  // counters live in a private registry (still readable through written()/errors()).
  ContinuousProfiler(ContinuousProfilerConfig config, std::unique_ptr<ProfileStore> store,
                     Metrics* metrics, const Clock& clock, CpuProfiler& cpu = CpuProfiler::Global(),
                     TaskRegistry& tasks = TaskRegistry::Global());
  ~ContinuousProfiler();  // Stop()
  ContinuousProfiler(const ContinuousProfiler&) = delete;
  ContinuousProfiler& operator=(const ContinuousProfiler&) = delete;

  // Collects on a background thread ("dwcp-profiler"), the first cycle one interval from now.
  // Does nothing when config.enabled is false. Call once.
  void Start();
  // Interrupts a CPU profile in progress and joins the thread. Idempotent.
  void Stop();

  // One cycle on the calling thread: writes each enabled kind (the CPU profile takes
  // cpu_duration), then applies retention. Returns the first failure; every failure is also
  // counted and logged. Not to be called concurrently with itself or with Start()'s thread.
  Status CollectOnce(std::stop_token stop = {});

  // Counter values: profiles written / failures of `kind` since construction.
  double written(ProfileKind kind) const;
  double errors(ProfileKind kind) const;
  ProfileStore& store() { return *store_; }
  const ContinuousProfilerConfig& config() const { return config_; }

 private:
  void Run(std::stop_token stop);
  Status Write(ProfileKind kind, int64_t wall_millis, Result<std::string> profile);
  Status ApplyRetention();
  void Fail(ProfileKind kind, const Status& status);

  ContinuousProfilerConfig config_;
  std::unique_ptr<ProfileStore> store_;
  const Clock& clock_;
  CpuProfiler& cpu_;
  TaskRegistry& tasks_;
  std::shared_ptr<prometheus::Registry> own_registry_;  // when no Metrics was given
  std::array<prometheus::Counter*, kProfileKindCount> written_{};
  std::array<prometheus::Counter*, kProfileKindCount> errors_{};
  std::array<bool, kProfileKindCount> failing_{};  // logs once per run of failures
  bool retention_failing_ = false;

  std::mutex mu_;
  std::condition_variable_any cv_;
  std::jthread thread_;
};

}  // namespace dwcp::obs::pprof
