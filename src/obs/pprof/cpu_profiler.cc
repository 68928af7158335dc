#include "obs/pprof/cpu_profiler.h"

#ifndef DWCP_NO_GPERFTOOLS
#include <gperftools/profiler.h>
#endif
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace dwcp::obs::pprof {
namespace {

// A fresh, empty file for ProfilerStart to write into; "" on failure.
std::string MakeTempFile() {
  const char* dir = std::getenv("TMPDIR");
  std::string path = std::string(dir && *dir ? dir : "/tmp") + "/dwcp-cpu-XXXXXX";
  int fd = mkstemp(path.data());
  if (fd < 0) return "";
  close(fd);
  return path;
}

}  // namespace

CpuProfiler& CpuProfiler::Global() {
  static CpuProfiler* profiler = new CpuProfiler();
  return *profiler;
}

std::chrono::milliseconds CpuProfiler::Remaining() const {
  std::lock_guard lock(mu_);
  if (!busy_) return std::chrono::milliseconds(0);
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline_ - std::chrono::steady_clock::now());
  return std::max(left, std::chrono::milliseconds(0));
}

Result<std::string> CpuProfiler::Profile(std::chrono::milliseconds duration,
                                         const std::string& holder, std::stop_token stop) {
#ifdef DWCP_NO_GPERFTOOLS
  return Unimplemented(kNoProfilerMessage);
#else
  std::unique_lock lock(mu_);
  if (busy_) {
    auto left = std::chrono::duration_cast<std::chrono::seconds>(deadline_ -
                                                                 std::chrono::steady_clock::now())
                    .count();
    return FailedPrecondition("a CPU profile is already running (" + holder_ + ", " +
                              std::to_string(std::max<long>(left, 0) + 1) +
                              "s left); the process has one CPU profiler, retry after it ends");
  }
  ProfilerState state{};
  ProfilerGetCurrentState(&state);
  if (state.enabled) {
    return FailedPrecondition(std::string("the CPU profiler is already writing to ") +
                              state.profile_name + " (CPUPROFILE is set)");
  }
  std::string path = MakeTempFile();
  if (path.empty()) {
    return Internal(std::string("cannot create a temporary profile file: ") + std::strerror(errno));
  }
  if (!ProfilerStart(path.c_str())) {
    unlink(path.c_str());
    return Internal("ProfilerStart failed for " + path);
  }
  busy_ = true;
  holder_ = holder;
  deadline_ = std::chrono::steady_clock::now() + duration;
  // Unlocked while waiting; wakes early only when `stop` is requested.
  bool stopped =
      cv_.wait_until(lock, stop, deadline_, [] { return false; }) || stop.stop_requested();
  ProfilerStop();
  busy_ = false;
  holder_.clear();
  lock.unlock();

  std::ifstream in(path, std::ios::binary);
  std::ostringstream data;
  data << in.rdbuf();
  bool read_ok = in.is_open();
  unlink(path.c_str());
  if (stopped) return Aborted("the CPU profile was cancelled (shutting down)");
  if (!read_ok) return Internal("cannot read the CPU profile back from " + path);
  return data.str();
#endif
}

}  // namespace dwcp::obs::pprof
