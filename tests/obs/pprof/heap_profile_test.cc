// Heap profiles need TCMALLOC_SAMPLE_PARAMETER at start-up: each test re-runs itself in a child
// process of this binary with the period it needs (pprof_test_util.h).
#include "obs/pprof/heap_profile.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "obs/pprof/profiling_server.h"
#include "pprof_test_util.h"

namespace {
std::vector<std::unique_ptr<char[]>> g_kept;
}

// Allocation sites the heap profiles must name.
extern "C" __attribute__((noinline)) void dwcp_pprof_test_alloc_first(size_t blocks) {
  for (size_t i = 0; i < blocks; ++i) {
    g_kept.emplace_back(new char[64 * 1024]);
    g_kept.back()[0] = 1;
  }
  asm volatile("");
}

extern "C" __attribute__((noinline)) void dwcp_pprof_test_alloc_second(size_t blocks) {
  for (size_t i = 0; i < blocks; ++i) {
    g_kept.emplace_back(new char[64 * 1024]);
    g_kept.back()[0] = 2;
  }
  asm volatile("");
}

namespace dwcp::obs::pprof {
namespace {

using testing::Shell;
using testing::ShellQuote;
using testing::TempDir;

// Allocates on a fresh thread: tcmalloc delays the first sample of the main thread.
template <typename Fn>
void OnThread(Fn fn) {
  std::thread(fn).join();
}

TEST(PprofHeapTest, HeapProfilesReadByGooglePprofIncludingBase) {
  DWCP_SKIP_WITHOUT_PROFILER();
  if (!testing::RunHereWithSamplePeriod(kDefaultHeapSamplePeriod)) return;
  ASSERT_EQ(HeapSamplePeriod(), kDefaultHeapSamplePeriod);
  TaskRegistry tasks;
  ProfilingServer server(tasks);
  ASSERT_TRUE(server.Bind("127.0.0.1", 0).ok());
  server.Start();
  httplib::Client client("127.0.0.1", server.port());
  TempDir dir;
  std::string exe = ShellQuote(testing::SelfExe());

  OnThread([] { dwcp_pprof_test_alloc_first(512); });  // 32 MiB
  auto h1 = client.Get("/debug/pprof/heap");
  ASSERT_TRUE(h1);
  ASSERT_EQ(h1->status, 200) << h1->body;
  EXPECT_EQ(h1->body.rfind("heap profile:", 0), 0u) << h1->body.substr(0, 200);
  EXPECT_NE(h1->body.find("heap_v2/524288"), std::string::npos);
  std::string f1 = dir.path() + "/heap1.prof";
  testing::WriteFile(f1, h1->body);

  int code = 0;
  std::string out = Shell("google-pprof --text " + exe + " " + ShellQuote(f1), &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("dwcp_pprof_test_alloc_first"), std::string::npos) << out;

  OnThread([] { dwcp_pprof_test_alloc_second(512); });
  auto h2 = client.Get("/pprof/heap");  // google-pprof's own path serves the same profile
  ASSERT_TRUE(h2);
  ASSERT_EQ(h2->status, 200);
  std::string f2 = dir.path() + "/heap2.prof";
  testing::WriteFile(f2, h2->body);
  // What grew between the two samples: only the second allocation site.
  out = Shell("google-pprof --text --base=" + ShellQuote(f1) + " " + exe + " " + ShellQuote(f2),
              &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("dwcp_pprof_test_alloc_second"), std::string::npos) << out;

  // Remote form: google-pprof fetches /debug/pprof/heap and symbolizes over /debug/pprof/symbol.
  out = Shell("PPROF_TMPDIR=" + ShellQuote(dir.path()) + " google-pprof --text http://127.0.0.1:" +
                  std::to_string(server.port()) + "/debug/pprof/heap",
              &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("dwcp_pprof_test_alloc_second"), std::string::npos) << out;

  auto report = client.Get("/debug/pprof/heap?debug=1");
  ASSERT_TRUE(report);
  EXPECT_EQ(report->status, 200);
  EXPECT_NE(report->body.find("generic.current_allocated_bytes"), std::string::npos);
  EXPECT_NE(report->body.find("MALLOC:"), std::string::npos);
  EXPECT_NE(report->body.find("VmRSS:"), std::string::npos);
  EXPECT_NE(report->body.find("dwcp_pprof_test_alloc_first"), std::string::npos) << report->body;

  auto growth = client.Get("/debug/pprof/growth");
  ASSERT_TRUE(growth);
  EXPECT_EQ(growth->status, 200);
  EXPECT_EQ(growth->body.rfind("heap profile:", 0), 0u);
  server.Stop();
  g_kept.clear();
}

TEST(PprofHeapTest, HeapWithoutSamplingIsAClearError) {
  DWCP_SKIP_WITHOUT_PROFILER();
  if (!testing::RunHereWithSamplePeriod(0)) return;
  EXPECT_EQ(HeapProfile().status().code(), StatusCode::kFailedPrecondition);
  TaskRegistry tasks;
  ProfilingServer server(tasks);
  ASSERT_TRUE(server.Bind("127.0.0.1", 0).ok());
  server.Start();
  httplib::Client client("127.0.0.1", server.port());
  auto res = client.Get("/debug/pprof/heap");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 409);
  auto body = nlohmann::json::parse(res->body, nullptr, false);
  EXPECT_EQ(body.value("code", ""), "failed_precondition");
  EXPECT_NE(body.value("error", "").find("TCMALLOC_SAMPLE_PARAMETER"), std::string::npos);
  // The report still answers, and says why it has no stacks.
  auto report = client.Get("/debug/pprof/heap?debug=1");
  ASSERT_TRUE(report);
  EXPECT_EQ(report->status, 200);
  EXPECT_NE(report->body.find("heap sampling: OFF"), std::string::npos);
  EXPECT_NE(report->body.find("MALLOC:"), std::string::npos);
  server.Stop();
}

TEST(PprofHeapTest, EnableHeapSamplingReexecsWithTheVariableSet) {
  if (std::getenv("DWCP_PPROF_TEST_REEXEC") != nullptr) {
    // The re-executed child: tcmalloc saw the variable at start-up, and the process kept its
    // name (exec of /proc/self/exe would have renamed it "exe").
    EXPECT_EQ(HeapSamplePeriod(), kDefaultHeapSamplePeriod);
    std::ifstream comm("/proc/self/comm");
    std::string name;
    std::getline(comm, name);
    EXPECT_EQ(name, std::filesystem::path(testing::SelfExe()).filename().string().substr(0, 15));
    return;
  }
  // An explicit value (0 turns sampling off) is respected: no exec, OK.
  setenv("TCMALLOC_SAMPLE_PARAMETER", "0", 1);
  std::string arg0 = "unused";
  char* no_exec_argv[] = {arg0.data(), nullptr};
  EXPECT_TRUE(EnableHeapSampling(no_exec_argv).ok());
  unsetenv("TCMALLOC_SAMPLE_PARAMETER");

  // Unset: the process re-executes itself with the same argv and the variable set.
  std::string exe = testing::SelfExe();
  std::string filter = "--gtest_filter=PprofHeapTest.EnableHeapSamplingReexecsWithTheVariableSet";
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    setenv("DWCP_PPROF_TEST_REEXEC", "1", 1);
    char* argv[] = {exe.data(), filter.data(), nullptr};
    Status st = EnableHeapSampling(argv);
    _exit(st.ok() ? 3 : 4);  // reached only when no exec happened
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "3: EnableHeapSampling returned OK without exec; "
                                       "4: exec failed; 1: the child's period check failed";
}

}  // namespace
}  // namespace dwcp::obs::pprof
