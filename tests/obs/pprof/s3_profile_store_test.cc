// The S3 store and the continuous profiler against a real S3-compatible server: s3rver from
// npm (tools/s3-test-server, installed by `make test`), which verifies SigV4 signatures.
// These tests fail, never skip, when that server cannot be started.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "obs/pprof/continuous_profiler.h"
#include "obs/pprof/profile_store.h"
#include "pprof_test_util.h"

#ifndef DWCP_SOURCE_DIR
#error "DWCP_SOURCE_DIR must name the source tree (CMakeLists.txt defines it)"
#endif

namespace dwcp::obs::pprof {
namespace {

using testing::TempDir;
constexpr char kBucket[] = "profiling-bucket";
constexpr int64_t kT0 = 1762797600000;  // 2025-11-10T18:00:00.000Z

std::string ServerDir() {
  const char* env = std::getenv("DWCP_S3_TEST_SERVER_DIR");
  return env ? env : std::string(DWCP_SOURCE_DIR) + "/tools/s3-test-server";
}

// s3rver on 127.0.0.1:<kernel-picked port> with a temporary directory and one bucket.
class S3TestServer {
 public:
  // Empty on success, else why the server could not start.
  std::string Start() {
    std::string dir = ServerDir();
    if (!std::filesystem::exists(dir + "/node_modules/s3rver/package.json")) {
      return "s3rver is not installed in " + dir +
             ": run `make test` or `cd tools/s3-test-server && npm ci`";
    }
    int code = 0;
    std::string version = testing::Shell("node --version", &code);
    if (code != 0) return "node is not installed (" + version + ")";

    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) return "pipe failed";
    std::string script = dir + "/server.js";
    std::string data = data_.path();
    pid_ = fork();
    if (pid_ < 0) return "fork failed";
    if (pid_ == 0) {
      dup2(in[0], 0);
      dup2(out[1], 1);
      execlp("node", "node", script.c_str(), "--directory", data.c_str(), "--address", "127.0.0.1",
             "--port", "0", "--bucket", kBucket, static_cast<char*>(nullptr));
      _exit(127);
    }
    close(in[0]);
    close(out[1]);
    stdin_ = in[1];
    // The first line of stdout is {"address": ..., "port": N}.
    std::string line;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (line.find('\n') == std::string::npos) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                      deadline - std::chrono::steady_clock::now())
                      .count();
      pollfd p{out[0], POLLIN, 0};
      if (left <= 0 || poll(&p, 1, static_cast<int>(left)) <= 0) {
        close(out[0]);
        return "s3rver did not report its port within 30 s";
      }
      char buf[256];
      ssize_t n = read(out[0], buf, sizeof buf);
      if (n <= 0) {
        close(out[0]);
        return "s3rver exited before listening (see its stderr above)";
      }
      line.append(buf, static_cast<size_t>(n));
    }
    close(out[0]);
    auto json = nlohmann::json::parse(line.substr(0, line.find('\n')), nullptr, false);
    if (!json.is_object() || !json.contains("port")) return "unexpected s3rver output: " + line;
    port_ = json["port"].get<int>();
    return "";
  }

  ~S3TestServer() {
    if (stdin_ >= 0) close(stdin_);
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status = 0;
      waitpid(pid_, &status, 0);
    }
  }

  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
  const std::string& data_dir() const { return data_.path(); }

 private:
  TempDir data_;
  pid_t pid_ = -1;
  int stdin_ = -1;
  int port_ = 0;
};

S3Options OptionsFor(const S3TestServer& server) {
  S3Options o;
  o.endpoint = server.endpoint();
  o.region = "us-east-1";
  o.credentials = {"S3RVER", "S3RVER", ""};
  return o;
}

#define START_S3_SERVER(server)                                             \
  S3TestServer server;                                                      \
  {                                                                         \
    std::string why = server.Start();                                       \
    ASSERT_TRUE(why.empty()) << "cannot start the S3 test server: " << why; \
  }

TEST(S3ProfileStoreTest, PutGetListDeleteWithSignedRequests) {
  START_S3_SERVER(server);
  S3ProfileStore store(OptionsFor(server), kBucket, "dwcp-v3/");
  std::string bytes(4096, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7);
  ASSERT_TRUE(store.Put("node-a/cpu-1.prof", bytes).ok());
  ASSERT_TRUE(store.Put("node-a/heap-1.prof", "heap").ok());
  ASSERT_TRUE(store.Put("node-b/cpu-1.prof", "other node").ok());
  ASSERT_TRUE(store.Put("node a+b/x=1.prof", "encoded").ok());  // keys that need encoding

  auto got = store.Get("node-a/cpu-1.prof");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, bytes);
  EXPECT_EQ(*store.Get("node a+b/x=1.prof"), "encoded");
  auto keys = store.List("node-a/");
  ASSERT_TRUE(keys.ok()) << keys.status().ToString();
  EXPECT_EQ(*keys, (std::vector<std::string>{"node-a/cpu-1.prof", "node-a/heap-1.prof"}));
  EXPECT_EQ(store.List("").value().size(), 4u);

  ASSERT_TRUE(store.Delete("node-a/cpu-1.prof").ok());
  ASSERT_TRUE(store.Delete("node-a/cpu-1.prof").ok());
  EXPECT_EQ(*store.List("node-a/"), (std::vector<std::string>{"node-a/heap-1.prof"}));
  EXPECT_EQ(store.Get("node-a/cpu-1.prof").status().code(), StatusCode::kNotFound);
}

TEST(S3ProfileStoreTest, ListFollowsContinuationTokens) {
  START_S3_SERVER(server);
  S3ProfileStore store(OptionsFor(server), kBucket, "");
  // ListObjectsV2 returns at most 1000 keys a page.
  for (int i = 0; i < 1005; ++i) {
    char key[64];
    std::snprintf(key, sizeof key, "n/k%04d", i);
    ASSERT_TRUE(store.Put(key, "x").ok()) << key;
  }
  auto keys = store.List("n/");
  ASSERT_TRUE(keys.ok()) << keys.status().ToString();
  EXPECT_EQ(keys->size(), 1005u);
  EXPECT_EQ(keys->back(), "n/k1004");
}

TEST(S3ProfileStoreTest, BadCredentialsMissingBucketAndNoServerAreErrors) {
  START_S3_SERVER(server);
  S3Options wrong = OptionsFor(server);
  wrong.credentials.secret_access_key = "not-the-secret";
  Status st = S3ProfileStore(wrong, kBucket, "p/").Put("k", "v");
  EXPECT_EQ(st.code(), StatusCode::kUnauthenticated) << st.ToString();
  EXPECT_NE(st.message().find("SignatureDoesNotMatch"), std::string::npos) << st.ToString();

  st = S3ProfileStore(OptionsFor(server), "no-such-bucket", "").Put("k", "v");
  EXPECT_EQ(st.code(), StatusCode::kNotFound) << st.ToString();

  S3Options nowhere = OptionsFor(server);
  nowhere.endpoint = "http://127.0.0.1:1";
  st = S3ProfileStore(nowhere, kBucket, "").Put("k", "v");
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
}

TEST(S3ProfileStoreTest, ContinuousProfilerUploadsAndPrunes) {
  DWCP_SKIP_WITHOUT_PROFILER();
  if (!testing::RunHereWithSamplePeriod(kDefaultHeapSamplePeriod)) return;
  START_S3_SERVER(server);
  // The same environment an operator sets for dwcpd.
  setenv("AWS_ENDPOINT_URL", server.endpoint().c_str(), 1);
  setenv("AWS_REGION", "us-east-1", 1);
  setenv("AWS_ACCESS_KEY_ID", "S3RVER", 1);
  setenv("AWS_SECRET_ACCESS_KEY", "S3RVER", 1);
  FakeClock clock(kT0);
  ContinuousProfilerConfig config;
  config.enabled = true;
  config.interval = std::chrono::seconds(60);
  config.cpu_duration = std::chrono::milliseconds(200);
  config.storage = std::string("s3://") + kBucket + "/dwcp-v3/";
  config.node_id = "node-a";
  config.keep_last = 2;
  config.max_age = std::chrono::hours(1);
  auto profiler = ContinuousProfiler::Create(config, nullptr, clock);
  ASSERT_TRUE(profiler.ok()) << profiler.status().ToString();

  S3ProfileStore direct(OptionsFor(server), kBucket, "dwcp-v3/");
  ASSERT_TRUE(direct.Put("node-b/heap-20251110T170000.000Z.prof", "another node's").ok());

  ASSERT_TRUE((*profiler)->CollectOnce().ok());
  auto keys = direct.List("node-a/");
  ASSERT_TRUE(keys.ok()) << keys.status().ToString();
  EXPECT_EQ(*keys, (std::vector<std::string>{"node-a/cpu-20251110T180000.000Z.prof",
                                             "node-a/goroutine-20251110T180000.000Z.prof",
                                             "node-a/heap-20251110T180000.000Z.prof"}));
  EXPECT_EQ(direct.Get("node-a/heap-20251110T180000.000Z.prof")->rfind("heap profile:", 0), 0u);

  clock.Advance(std::chrono::minutes(1));
  ASSERT_TRUE((*profiler)->CollectOnce().ok());
  clock.Advance(std::chrono::minutes(1));
  ASSERT_TRUE((*profiler)->CollectOnce().ok());  // keep_last 2: 18:00 goes
  keys = direct.List("node-a/cpu-");
  EXPECT_EQ(*keys, (std::vector<std::string>{"node-a/cpu-20251110T180100.000Z.prof",
                                             "node-a/cpu-20251110T180200.000Z.prof"}));
  clock.Advance(std::chrono::minutes(90));
  ASSERT_TRUE((*profiler)->CollectOnce().ok());  // max_age 1 h: only 19:32 stays
  for (const char* kind : {"cpu", "heap", "goroutine"}) {
    keys = direct.List(std::string("node-a/") + kind + "-");
    EXPECT_EQ(*keys, (std::vector<std::string>{std::string("node-a/") + kind +
                                               "-20251110T193200.000Z.prof"}));
    EXPECT_EQ((*profiler)->written(ProfileKind::kHeap), 4);
    EXPECT_EQ((*profiler)->errors(ProfileKind::kHeap), 0);
  }
  // Retention is per node: node-b's profile is untouched.
  EXPECT_EQ(direct.List("node-b/").value().size(), 1u);

  for (const char* v :
       {"AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}) {
    unsetenv(v);
  }
}

}  // namespace
}  // namespace dwcp::obs::pprof
