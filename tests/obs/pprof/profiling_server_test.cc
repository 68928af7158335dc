#include "obs/pprof/profiling_server.h"

#include <gtest/gtest.h>
#include <httplib.h>
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "obs/pprof/goroutine_profile.h"
#include "pprof_test_util.h"

// Names the profiles must show; outside any namespace and never inlined so that the symbol
// table has them under exactly these names.
extern "C" __attribute__((noinline)) double dwcp_pprof_test_burn_cpu(std::atomic<bool>* stop) {
  volatile double x = 1.0;
  while (!stop->load(std::memory_order_relaxed)) {
    for (int i = 0; i < 100000; ++i) x = std::sqrt(x + i);
  }
  return x;
}

extern "C" __attribute__((noinline)) int dwcp_pprof_test_known_function(int v) {
  asm volatile("");
  return v * 3 + 1;
}

namespace dwcp::obs::pprof {
namespace {

using testing::Shell;
using testing::ShellQuote;
using testing::TempDir;

// A thread burning CPU in dwcp_pprof_test_burn_cpu until destroyed.
class CpuBurner {
 public:
  CpuBurner() : thread_([this] { dwcp_pprof_test_burn_cpu(&stop_); }) {}
  ~CpuBurner() {
    stop_ = true;
    thread_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

class ProfilingServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<ProfilingServer>(tasks_);
    ASSERT_TRUE(server_->Bind("127.0.0.1", 0).ok());
    ASSERT_NE(server_->port(), 0);
    server_->Start();
  }
  void TearDown() override { server_->Stop(); }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(server_->port()); }
  httplib::Client Client() const {
    httplib::Client c("127.0.0.1", server_->port());
    c.set_read_timeout(std::chrono::seconds(60));
    return c;
  }

  TaskRegistry tasks_;
  std::unique_ptr<ProfilingServer> server_;
};

void ExpectJsonError(const httplib::Result& res, int status, const std::string& code) {
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, status) << res->body;
  auto body = nlohmann::json::parse(res->body, nullptr, false);
  ASSERT_TRUE(body.is_object()) << res->body;
  EXPECT_EQ(body.value("code", ""), code) << res->body;
  EXPECT_FALSE(body.value("error", "").empty()) << res->body;
}

TEST_F(ProfilingServerTest, CpuProfileIsReadByGooglePprofWithSymbols) {
  DWCP_SKIP_WITHOUT_PROFILER();
  CpuBurner burner;
  auto res = Client().Get("/debug/pprof/profile?seconds=1");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(res->get_header_value("Content-Type"), "application/octet-stream");
  ASSERT_GT(res->body.size(), 64u);

  TempDir dir;
  std::string file = dir.path() + "/cpu.prof";
  testing::WriteFile(file, res->body);
  int code = 0;
  std::string out = Shell(
      "google-pprof --text " + ShellQuote(testing::SelfExe()) + " " + ShellQuote(file), &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("dwcp_pprof_test_burn_cpu"), std::string::npos) << out;
}

TEST_F(ProfilingServerTest, GooglePprofFetchesRemoteProfilesThroughBothPathForms) {
  DWCP_SKIP_WITHOUT_PROFILER();
  CpuBurner burner;
  TempDir dir;
  // http://host:port/debug/pprof/profile -> /debug/pprof/{profile,symbol,cmdline};
  // a bare http://host:port -> /pprof/{profile,symbol,cmdline}. Neither needs the binary.
  for (const std::string& target : {url() + "/debug/pprof/profile", url()}) {
    int code = 0;
    std::string out = Shell("PPROF_TMPDIR=" + ShellQuote(dir.path()) +
                                " google-pprof --text --seconds=1 " + ShellQuote(target),
                            &code);
    EXPECT_EQ(code, 0) << target << "\n" << out;
    EXPECT_NE(out.find("dwcp_pprof_test_burn_cpu"), std::string::npos) << target << "\n" << out;
  }
}

TEST_F(ProfilingServerTest, SecondConcurrentCpuProfileIsRefusedWith409) {
  DWCP_SKIP_WITHOUT_PROFILER();
  auto first = std::async(std::launch::async,
                          [this] { return Client().Get("/debug/pprof/profile?seconds=2"); });
  for (int i = 0; i < 2000 && CpuProfiler::Global().Remaining().count() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_GT(CpuProfiler::Global().Remaining().count(), 0);
  auto second = Client().Get("/debug/pprof/profile?seconds=1");
  ExpectJsonError(second, 409, "failed_precondition");
  EXPECT_FALSE(second->get_header_value("Retry-After").empty());
  EXPECT_NE(second->body.find("already running"), std::string::npos) << second->body;
  // The server keeps answering other endpoints meanwhile.
  auto cmdline = Client().Get("/debug/pprof/cmdline");
  ASSERT_TRUE(cmdline);
  EXPECT_EQ(cmdline->status, 200);

  auto done = first.get();
  ASSERT_TRUE(done);
  EXPECT_EQ(done->status, 200);
  // Free again afterwards.
  auto third = Client().Get("/debug/pprof/profile?seconds=1");
  ASSERT_TRUE(third);
  EXPECT_EQ(third->status, 200);
}

// A sanitizer build has no gperftools: CPU and heap profiles are a clear 501, the rest works.
TEST_F(ProfilingServerTest, ProfilesAre501WithoutGperftools) {
  if (kProfilerAvailable) GTEST_SKIP() << "gperftools is linked in this build";
  for (const char* path : {"/debug/pprof/profile?seconds=1", "/debug/pprof/heap",
                           "/debug/pprof/growth", "/pprof/profile?seconds=1"}) {
    SCOPED_TRACE(path);
    auto res = Client().Get(path);
    ExpectJsonError(res, 501, "unimplemented");
    EXPECT_NE(res->body.find(kNoProfilerMessage), std::string::npos) << res->body;
  }
  auto report = Client().Get("/debug/pprof/heap?debug=1");
  ASSERT_TRUE(report);
  EXPECT_EQ(report->status, 200);
  EXPECT_NE(report->body.find(kNoProfilerMessage), std::string::npos) << report->body;
  auto goroutine = Client().Get("/debug/pprof/goroutine?debug=2");
  ASSERT_TRUE(goroutine);
  EXPECT_EQ(goroutine->status, 200);
}

TEST_F(ProfilingServerTest, BadParametersAre400JsonErrors) {
  for (const char* path : {"/debug/pprof/profile?seconds=0", "/debug/pprof/profile?seconds=301",
                           "/debug/pprof/profile?seconds=abc", "/debug/pprof/profile?seconds=",
                           "/debug/pprof/heap?debug=x", "/debug/pprof/heap?debug=7",
                           "/debug/pprof/goroutine?debug=-1", "/pprof/profile?seconds=1e3"}) {
    SCOPED_TRACE(path);
    ExpectJsonError(Client().Get(path), 400, "invalid_argument");
  }
  ExpectJsonError(Client().Post("/debug/pprof/symbol", "0x12+zz", "text/plain"), 400,
                  "invalid_argument");
  ExpectJsonError(Client().Get("/debug/pprof/nothing"), 404, "not_found");
}

TEST_F(ProfilingServerTest, StopCancelsACpuProfileInProgress) {
  DWCP_SKIP_WITHOUT_PROFILER();
  auto pending = std::async(std::launch::async,
                            [this] { return Client().Get("/debug/pprof/profile?seconds=60"); });
  for (int i = 0; i < 2000 && CpuProfiler::Global().Remaining().count() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  auto start = std::chrono::steady_clock::now();
  server_->Stop();
  auto res = pending.get();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  if (res) ExpectJsonError(res, 503, "aborted");
  EXPECT_EQ(CpuProfiler::Global().Remaining().count(), 0);
}

TEST_F(ProfilingServerTest, IndexListsTheEndpoints) {
  for (const char* path : {"/debug/pprof/", "/debug/pprof"}) {
    auto res = Client().Get(path);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
    for (const char* endpoint :
         {"/debug/pprof/profile", "/debug/pprof/heap", "/debug/pprof/goroutine",
          "/debug/pprof/symbol", "/debug/pprof/cmdline"}) {
      EXPECT_NE(res->body.find(endpoint), std::string::npos) << endpoint;
    }
  }
}

TEST_F(ProfilingServerTest, SymbolResolvesKnownFunctionAddresses) {
  auto count = Client().Get("/debug/pprof/symbol");
  ASSERT_TRUE(count);
  EXPECT_EQ(count->body, "num_symbols: 1\n");

  char body[128];
  auto fn = reinterpret_cast<uintptr_t>(&dwcp_pprof_test_known_function);
  std::snprintf(body, sizeof body, "0x%lx+0x%lx+0x1", static_cast<unsigned long>(fn + 1),
                static_cast<unsigned long>(reinterpret_cast<uintptr_t>(&ResolveSymbols)));
  for (const char* path : {"/debug/pprof/symbol", "/pprof/symbol"}) {
    auto res = Client().Post(path, body, "application/x-www-form-urlencoded");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200) << res->body;
    char line[64];
    std::snprintf(line, sizeof line, "0x%016lx\tdwcp_pprof_test_known_function\n",
                  static_cast<unsigned long>(fn + 1));
    EXPECT_NE(res->body.find(line), std::string::npos) << res->body;
    // Non-exported C++ functions are named too, demangled.
    EXPECT_NE(res->body.find("dwcp::obs::pprof::ResolveSymbols("), std::string::npos) << res->body;
    EXPECT_EQ(res->body.find("0x0000000000000001"), std::string::npos) << res->body;
  }
}

TEST_F(ProfilingServerTest, CmdlineIsNulSeparatedArgv) {
  for (const char* path : {"/debug/pprof/cmdline", "/pprof/cmdline"}) {
    auto res = Client().Get(path);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
    EXPECT_EQ(res->body, ProcessCmdline());
  }
  std::string args = ProcessCmdline();
  EXPECT_NE(args.find("dwcp_unit_tests"), std::string::npos);
  EXPECT_NE(args.back(), '\0');
}

TEST(RedactCmdlineTest, HidesTheApiTokenInBothFlagForms) {
  using namespace std::string_literals;
  EXPECT_EQ(RedactCmdline("dwcpd\0--api-token\0s3cret\0--node-id\0a"s),
            "dwcpd\0--api-token\0REDACTED\0--node-id\0a"s);
  EXPECT_EQ(RedactCmdline("dwcpd\0--api-token=s3cret"s), "dwcpd\0--api-token=REDACTED"s);
  EXPECT_EQ(RedactCmdline("dwcpd\0--api-token-file\0/etc/t"s), "dwcpd\0--api-token-file\0/etc/t"s);
  EXPECT_EQ(RedactCmdline("dwcpd\0--api-token"s), "dwcpd\0--api-token"s);
  EXPECT_EQ(RedactCmdline("dwcpd"), "dwcpd");
}

TEST(ExposedProfilingServerTest, EveryRequestNeedsTheBearerToken) {
  TaskRegistry tasks;
  ProfilingServer server(tasks);
  std::vector<std::string> failures;
  std::mutex mu;
  server.RequireBearerToken("pprof-token", [&](std::string_view reason) {
    std::lock_guard lock(mu);
    failures.emplace_back(reason);
  });
  ASSERT_TRUE(server.Bind("127.0.0.1", 0).ok());
  server.Start();
  httplib::Client c("127.0.0.1", server.port());
  auto none = c.Get("/debug/pprof/cmdline");
  ASSERT_TRUE(none);
  EXPECT_EQ(none->status, 401);
  EXPECT_EQ(none->get_header_value("WWW-Authenticate").rfind("Bearer", 0), 0u);
  auto wrong = c.Get("/debug/pprof/goroutine", {{"Authorization", "Bearer nope"}});
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 401);
  auto right = c.Get("/debug/pprof/cmdline", {{"Authorization", "Bearer pprof-token"}});
  ASSERT_TRUE(right);
  EXPECT_EQ(right->status, 200);
  server.Stop();
  std::lock_guard lock(mu);
  EXPECT_EQ(failures, (std::vector<std::string>{"missing_token", "wrong_token"}));
}

// A named thread parked in a function the debug=2 stacks must show.
extern "C" __attribute__((noinline)) void dwcp_pprof_test_parked(std::mutex* mu,
                                                                 std::condition_variable* cv,
                                                                 bool* release) {
  std::unique_lock lock(*mu);
  cv->wait(lock, [&] { return *release; });
  asm volatile("");
}

TEST_F(ProfilingServerTest, GoroutineListsThreadsAndTasks) {
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  std::thread parked([&] {
    pthread_setname_np(pthread_self(), "pprof-parked");
    dwcp_pprof_test_parked(&mu, &cv, &release);
  });
  for (int i = 0; i < 1000; ++i) {
    bool named = false;
    for (const auto& t : ListThreads()) named |= t.name == "pprof-parked";
    if (named) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  TaskHandle task = tasks_.Register("migration.send", "vm-42 -> node-b");
  task.SetState("precopy round 3");

  auto one = Client().Get("/debug/pprof/goroutine?debug=1");
  ASSERT_TRUE(one);
  EXPECT_EQ(one->status, 200);
  EXPECT_NE(one->body.find("\"pprof-parked\""), std::string::npos) << one->body;
  EXPECT_NE(one->body.find("\"dwcp-pprof\""), std::string::npos) << one->body;
  EXPECT_NE(one->body.find("task " + std::to_string(task.id()) +
                           " migration.send \"vm-42 -> node-b\" state \"precopy round 3\" age "),
            std::string::npos)
      << one->body;
  EXPECT_NE(one->body.find("1\ttask\tmigration.send\tprecopy round 3\n"), std::string::npos)
      << one->body;

  auto two = Client().Get("/debug/pprof/goroutine?debug=2");
  ASSERT_TRUE(two);
  EXPECT_EQ(two->status, 200);
  auto at = two->body.find("\"pprof-parked\"");
  ASSERT_NE(at, std::string::npos) << two->body;
  auto next_thread = two->body.find("\nthread ", at);
  std::string parked_stack = two->body.substr(at, next_thread - at);
  EXPECT_NE(parked_stack.find("dwcp_pprof_test_parked"), std::string::npos) << parked_stack;

  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();
  parked.join();
}

TEST_F(ProfilingServerTest, GoroutineSummaryIsStableAndDiffable) {
  TaskHandle a = tasks_.Register("ass.sync", "vm-1");
  auto g1 = Client().Get("/debug/pprof/goroutine");
  auto g1_again = Client().Get("/pprof/goroutine");
  ASSERT_TRUE(g1);
  ASSERT_TRUE(g1_again);
  EXPECT_EQ(g1->body, g1_again->body);  // nothing changed: identical samples
  EXPECT_EQ(g1->body.find(" age "), std::string::npos);
  EXPECT_NE(g1->body.find("1\ttask\tass.sync\t\n"), std::string::npos) << g1->body;

  TaskHandle leaked = tasks_.Register("ass.sync", "vm-2");
  auto g2 = Client().Get("/debug/pprof/goroutine");
  ASSERT_TRUE(g2);
  EXPECT_NE(g2->body.find("2\ttask\tass.sync\t\n"), std::string::npos) << g2->body;

  TempDir dir;
  testing::WriteFile(dir.path() + "/g1.prof", g1->body);
  testing::WriteFile(dir.path() + "/g2.prof", g2->body);
  int code = 0;
  std::string diff = Shell(
      "diff " + ShellQuote(dir.path() + "/g1.prof") + " " + ShellQuote(dir.path() + "/g2.prof"),
      &code);
  EXPECT_EQ(code, 1) << diff;
  EXPECT_NE(diff.find("< 1\ttask\tass.sync"), std::string::npos) << diff;
  EXPECT_NE(diff.find("> 2\ttask\tass.sync"), std::string::npos) << diff;
}

TEST_F(ProfilingServerTest, BindFailsOnAPortInUse) {
  ProfilingServer other(tasks_);
  Status st = other.Bind("127.0.0.1", server_->port());
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
}

}  // namespace
}  // namespace dwcp::obs::pprof
