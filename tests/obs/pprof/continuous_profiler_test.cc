#include "obs/pprof/continuous_profiler.h"

#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <filesystem>
#include <thread>

#include "obs/metrics.h"
#include "pprof_test_util.h"

namespace dwcp::obs::pprof {
namespace {

using testing::TempDir;
constexpr int64_t kT0 = 1762797600000;  // 2025-11-10T18:00:00.000Z

double CounterValue(prometheus::Registry& registry, const std::string& name,
                    const std::string& kind) {
  for (const auto& family : registry.Collect()) {
    if (family.name != name) continue;
    for (const auto& m : family.metric) {
      for (const auto& l : m.label) {
        if (l.name == "kind" && l.value == kind) return m.counter.value;
      }
    }
  }
  return -1;
}

ContinuousProfilerConfig FileConfig(const std::string& dir) {
  ContinuousProfilerConfig c;
  c.enabled = true;
  c.interval = std::chrono::seconds(60);
  c.cpu_duration = std::chrono::milliseconds(200);
  c.storage = "file://" + dir + "/";
  c.node_id = "node-a";
  return c;
}

TEST(ProfileStoreTest, KeysCarryNodeKindAndUtcTime) {
  EXPECT_EQ(ProfileKey("node-a", ProfileKind::kCpu, kT0 + 123),
            "node-a/cpu-20251110T180000.123Z.prof");
  EXPECT_EQ(ProfileKey("node-a", ProfileKind::kGoroutine, kT0),
            "node-a/goroutine-20251110T180000.000Z.prof");
  auto parsed = ParseProfileKey("node-a", "node-a/heap-20251110T180000.123Z.prof");
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->first, ProfileKind::kHeap);
  EXPECT_EQ(parsed->second, kT0 + 123);
  EXPECT_FALSE(ParseProfileKey("node-b", "node-a/heap-20251110T180000.123Z.prof"));
  EXPECT_FALSE(ParseProfileKey("node-a", "node-a/heap-20251110T180000.123Z.prof.bak"));
  EXPECT_FALSE(ParseProfileKey("node-a", "node-a/notes.txt"));
  EXPECT_FALSE(ParseProfileKey("node-a", "node-a/mem-20251110T180000.123Z.prof"));
}

TEST(ProfileStoreTest, OpenRejectsBadUrlsAndConfigs) {
  EXPECT_EQ(OpenProfileStore("http://x/").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(OpenProfileStore("file://relative/dir").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(OpenProfileStore("s3:///prefix/").status().code(), StatusCode::kInvalidArgument);
  S3Options no_creds;
  EXPECT_EQ(OpenProfileStore("s3://bucket/p/", &no_creds).status().code(),
            StatusCode::kInvalidArgument);
  S3Options creds;
  creds.credentials = {"AK", "SK", ""};
  auto s3 = OpenProfileStore("s3://bucket/dwcp-v3", &creds);
  ASSERT_TRUE(s3.ok());
  EXPECT_EQ((*s3)->Describe(), "s3://bucket/dwcp-v3/");
  auto file = OpenProfileStore("file:///var/tmp/x/");
  ASSERT_TRUE(file.ok());
  EXPECT_EQ((*file)->Describe(), "file:///var/tmp/x/");

  ContinuousProfilerConfig c = FileConfig("/tmp");
  EXPECT_TRUE(ValidateContinuousProfilerConfig(c).ok());
  c.cpu_duration = std::chrono::seconds(61);
  EXPECT_FALSE(ValidateContinuousProfilerConfig(c).ok());
  c = FileConfig("/tmp");
  c.interval = std::chrono::milliseconds(0);
  EXPECT_FALSE(ValidateContinuousProfilerConfig(c).ok());
  c = FileConfig("/tmp");
  c.node_id = "";
  EXPECT_FALSE(ValidateContinuousProfilerConfig(c).ok());
  c = FileConfig("/tmp");
  c.storage = "";
  EXPECT_EQ(ContinuousProfiler::Create(c).status().code(), StatusCode::kInvalidArgument);
}

TEST(ProfileStoreTest, FileStoreRoundTrip) {
  TempDir dir;
  FileProfileStore store(dir.path());
  std::string bytes(256, '\0');
  for (int i = 0; i < 256; ++i) bytes[i] = static_cast<char>(i);
  ASSERT_TRUE(store.Put("node-a/b.prof", bytes).ok());
  ASSERT_TRUE(store.Put("node-a/a.prof", "x").ok());
  ASSERT_TRUE(store.Put("node-b/a.prof", "y").ok());
  EXPECT_EQ(*store.Get("node-a/b.prof"), bytes);
  EXPECT_EQ(*store.List("node-a/"), (std::vector<std::string>{"node-a/a.prof", "node-a/b.prof"}));
  EXPECT_EQ(store.List("").value().size(), 3u);
  ASSERT_TRUE(store.Delete("node-a/a.prof").ok());
  ASSERT_TRUE(store.Delete("node-a/a.prof").ok());  // already gone: still OK
  EXPECT_EQ(store.Get("node-a/a.prof").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store.Put("../escape", "z").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store.Put("/abs", "z").code(), StatusCode::kInvalidArgument);
}

TEST(ProfilerContinuousTest, CollectsEveryKindAndAppliesRetention) {
  DWCP_SKIP_WITHOUT_PROFILER();
  if (!testing::RunHereWithSamplePeriod(kDefaultHeapSamplePeriod)) return;
  TempDir dir;
  FakeClock clock(kT0);
  Metrics metrics;
  ContinuousProfilerConfig config = FileConfig(dir.path());
  config.max_age = std::chrono::hours(3);
  config.keep_last = 2;
  auto profiler = ContinuousProfiler::Create(config, &metrics, clock);
  ASSERT_TRUE(profiler.ok()) << profiler.status().ToString();
  // A file that is not a profile of ours is never touched by retention.
  std::filesystem::create_directories(dir.path() + "/node-a");
  testing::WriteFile(dir.path() + "/node-a/notes.txt", "keep me");

  ASSERT_TRUE((*profiler)->CollectOnce().ok());
  auto keys = (*profiler)->store().List("node-a/");
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(*keys, (std::vector<std::string>{"node-a/cpu-20251110T180000.000Z.prof",
                                             "node-a/goroutine-20251110T180000.000Z.prof",
                                             "node-a/heap-20251110T180000.000Z.prof",
                                             "node-a/notes.txt"}));
  auto heap = (*profiler)->store().Get("node-a/heap-20251110T180000.000Z.prof");
  EXPECT_EQ(heap->rfind("heap profile:", 0), 0u);
  auto goroutine = (*profiler)->store().Get("node-a/goroutine-20251110T180000.000Z.prof");
  EXPECT_EQ(goroutine->rfind("dwcp goroutine profile: total ", 0), 0u);
  EXPECT_NE(goroutine->find("\nthreads: "), std::string::npos);
  int code = 0;
  std::string out =
      testing::Shell("google-pprof --text " + testing::ShellQuote(testing::SelfExe()) + " " +
                         dir.path() + "/node-a/cpu-20251110T180000.000Z.prof",
                     &code);
  EXPECT_EQ(code, 0) << out;

  clock.Advance(std::chrono::hours(2));  // 20:00
  ASSERT_TRUE((*profiler)->CollectOnce().ok());
  clock.Advance(std::chrono::hours(2));  // 22:00: the 18:00 profiles are 4 h old
  ASSERT_TRUE((*profiler)->CollectOnce().ok());
  keys = (*profiler)->store().List("node-a/heap-");
  EXPECT_EQ(*keys, (std::vector<std::string>{"node-a/heap-20251110T200000.000Z.prof",
                                             "node-a/heap-20251110T220000.000Z.prof"}));
  clock.Advance(std::chrono::minutes(1));  // 22:01: keep_last 2 drops 20:00
  ASSERT_TRUE((*profiler)->CollectOnce().ok());
  for (const char* kind : {"cpu", "heap", "goroutine"}) {
    keys = (*profiler)->store().List(std::string("node-a/") + kind + "-");
    EXPECT_EQ(*keys, (std::vector<std::string>{
                         std::string("node-a/") + kind + "-20251110T220000.000Z.prof",
                         std::string("node-a/") + kind + "-20251110T220100.000Z.prof"}));
    EXPECT_EQ(CounterValue(metrics.registry(), "dwcp_v3_profiles_written_total", kind), 4) << kind;
    EXPECT_EQ(CounterValue(metrics.registry(), "dwcp_v3_profile_errors_total", kind), 0) << kind;
  }
  EXPECT_EQ(*(*profiler)->store().Get("node-a/notes.txt"), "keep me");
}

TEST(ProfilerContinuousTest, FailuresAreCountedAndNeverFatal) {
  if (!testing::RunHereWithSamplePeriod(0)) return;  // heap sampling off: heap fails too
  FakeClock clock(kT0);
  ContinuousProfilerConfig config = FileConfig("/proc/self/dwcp-not-writable");
  config.cpu = false;
  auto profiler = ContinuousProfiler::Create(config, nullptr, clock);
  ASSERT_TRUE(profiler.ok());
  Status st = (*profiler)->CollectOnce();
  EXPECT_FALSE(st.ok());
  EXPECT_EQ((*profiler)->errors(ProfileKind::kHeap), 1);
  EXPECT_EQ((*profiler)->errors(ProfileKind::kGoroutine), 1);
  EXPECT_EQ((*profiler)->written(ProfileKind::kGoroutine), 0);
  EXPECT_EQ((*profiler)->errors(ProfileKind::kCpu), 0);
  EXPECT_FALSE((*profiler)->CollectOnce().ok());
  EXPECT_EQ((*profiler)->errors(ProfileKind::kGoroutine), 2);
}

TEST(ProfilerContinuousTest, CpuProfileBusyIsCountedAsAnError) {
  DWCP_SKIP_WITHOUT_PROFILER();
  TempDir dir;
  FakeClock clock(kT0);
  ContinuousProfilerConfig config = FileConfig(dir.path());
  config.heap = false;
  config.goroutine = false;
  auto profiler = ContinuousProfiler::Create(config, nullptr, clock);
  ASSERT_TRUE(profiler.ok());
  std::thread other([] { (void)CpuProfiler::Global().Profile(std::chrono::seconds(1), "test"); });
  for (int i = 0; i < 2000 && CpuProfiler::Global().Remaining().count() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ((*profiler)->CollectOnce().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ((*profiler)->errors(ProfileKind::kCpu), 1);
  other.join();
  EXPECT_TRUE((*profiler)->CollectOnce().ok());
  EXPECT_EQ((*profiler)->written(ProfileKind::kCpu), 1);
}

TEST(ProfilerContinuousTest, StartWritesEveryIntervalUntilStopped) {
  TempDir dir;
  ContinuousProfilerConfig config = FileConfig(dir.path());
  config.interval = std::chrono::milliseconds(150);
  config.cpu = false;
  config.heap = false;
  auto profiler = ContinuousProfiler::Create(config);
  ASSERT_TRUE(profiler.ok());
  (*profiler)->Start();
  for (int i = 0; i < 100 && (*profiler)->written(ProfileKind::kGoroutine) < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  auto start = std::chrono::steady_clock::now();
  (*profiler)->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  double written = (*profiler)->written(ProfileKind::kGoroutine);
  EXPECT_GE(written, 3);
  auto keys = (*profiler)->store().List("node-a/goroutine-");
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(keys->size(), static_cast<size_t>(written));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ((*profiler)->written(ProfileKind::kGoroutine), written);  // stopped for good
}

TEST(ProfilerContinuousTest, DisabledDoesNotStart) {
  TempDir dir;
  ContinuousProfilerConfig config = FileConfig(dir.path());
  config.enabled = false;
  config.interval = std::chrono::milliseconds(10);
  config.cpu_duration = std::chrono::milliseconds(5);
  auto profiler = ContinuousProfiler::Create(config);
  ASSERT_TRUE(profiler.ok());
  (*profiler)->Start();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  (*profiler)->Stop();
  EXPECT_EQ((*profiler)->written(ProfileKind::kGoroutine), 0);
}

}  // namespace
}  // namespace dwcp::obs::pprof
