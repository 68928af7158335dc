// Whole-process CPU profiles with gperftools' libprofiler. There is one profiler per process
// (ProfilerStart is process-wide), so /debug/pprof/profile and the continuous profiler share
// this gate: while one profile runs, a second request is refused, never queued.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stop_token>
#include <string>

#include "common/status.h"

namespace dwcp::obs::pprof {

// False in a sanitizer build (DWCP_SANITIZE): gperftools is not linked, CPU and heap profiles
// are Unimplemented with kNoProfilerMessage and their endpoints answer 501.
#ifdef DWCP_NO_GPERFTOOLS
inline constexpr bool kProfilerAvailable = false;
#else
inline constexpr bool kProfilerAvailable = true;
#endif
inline constexpr char kNoProfilerMessage[] = "profiling not available in a sanitizer build";

class CpuProfiler {
 public:
  CpuProfiler() = default;
  CpuProfiler(const CpuProfiler&) = delete;
  CpuProfiler& operator=(const CpuProfiler&) = delete;

  // The process-wide gate, never destroyed.
  static CpuProfiler& Global();

  // Samples every thread of the process for `duration` (SIGPROF at CPUPROFILE_FREQUENCY,
  // default 100 Hz) and returns the profile in gperftools' binary format, which google-pprof
  // and `go tool pprof` read. Blocks the caller for `duration`. `holder` names the requester
  // in the refusal others get meanwhile ("GET /debug/pprof/profile from 10.0.0.7").
  // Errors: Unimplemented when !kProfilerAvailable;
  // FailedPrecondition while another profile runs (or CPUPROFILE started one);
  // Aborted when `stop` is requested before the end (what was sampled is discarded);
  // Internal when the profiler cannot start or its file cannot be read. Thread-safe.
  Result<std::string> Profile(std::chrono::milliseconds duration, const std::string& holder,
                              std::stop_token stop = {});

  // Time left of the profile in progress; zero when none runs.
  std::chrono::milliseconds Remaining() const;

 private:
  mutable std::mutex mu_;
  std::condition_variable_any cv_;
  bool busy_ = false;
  std::string holder_;
  std::chrono::steady_clock::time_point deadline_;
};

}  // namespace dwcp::obs::pprof
