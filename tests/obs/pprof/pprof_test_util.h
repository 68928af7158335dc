// Helpers for the profiling tests: child processes, shell commands, temp dirs.
#pragma once

#include <gtest/gtest.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "obs/pprof/cpu_profiler.h"
#include "obs/pprof/heap_profile.h"

// First line of a test that needs gperftools' CPU or heap profiles: skips it, saying why, in
// a sanitizer build, where gperftools is not linked (kProfilerAvailable, docs/fuzzing.md).
#define DWCP_SKIP_WITHOUT_PROFILER()                                                        \
  do {                                                                                      \
    if (!::dwcp::obs::pprof::kProfilerAvailable) {                                          \
      GTEST_SKIP() << ::dwcp::obs::pprof::kNoProfilerMessage << " (gperftools not linked)"; \
    }                                                                                       \
  } while (0)

namespace dwcp::obs::pprof::testing {

// The absolute path of this test binary.
inline std::string SelfExe() {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

// Runs `command` with /bin/sh, stderr merged into the returned stdout.
inline std::string Shell(const std::string& command, int* exit_code) {
  std::string out;
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) {
    *exit_code = -1;
    return "popen failed";
  }
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = pclose(p);
  *exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return out;
}

inline std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

// tcmalloc reads TCMALLOC_SAMPLE_PARAMETER only at start-up. Returns true when this process
// already runs with `period` (0: sampling off); otherwise runs the current test in a child
// process of this binary started with it, expects that child to pass, and returns false (the
// caller returns at once).
inline bool RunHereWithSamplePeriod(int64_t period) {
  if (HeapSamplePeriod() == period) return true;
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string filter = std::string(info->test_suite_name()) + "." + info->name();
  int code = 0;
  std::string out = Shell("TCMALLOC_SAMPLE_PARAMETER=" + std::to_string(period) + " " +
                              ShellQuote(SelfExe()) + " --gtest_filter=" + ShellQuote(filter),
                          &code);
  EXPECT_EQ(code, 0) << "child run of " << filter << " failed:\n" << out;
  EXPECT_NE(out.find("[  PASSED  ] 1 test"), std::string::npos) << out;
  return false;
}

// A fresh directory under $TMPDIR, removed with its contents on destruction.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/dwcp-pprof-test-XXXXXX";
    path_ = mkdtemp(tmpl.data()) ? tmpl : "";
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out << data;
}

}  // namespace dwcp::obs::pprof::testing
