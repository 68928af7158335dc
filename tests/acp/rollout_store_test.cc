// The rollouts table of the SQLite state store: compare-and-swap by version, across
// connections and processes, and the upgrade of a version 1 file.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "acp/sqlite_state_store.h"
#include "common/clock.h"

namespace dwcp::acp {
namespace {

constexpr int64_t kT0 = 1'700'000'000'000;

RolloutRecord Stage(const std::string& region, const std::string& stage, double percent) {
  RolloutRecord r;
  r.region = region;
  r.stage = stage;
  r.percent = percent;
  r.reason = "manual";
  r.detail = "by a test";
  r.changed_by = "node-a";
  r.changed_ms = kT0;
  return r;
}

class RolloutStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/rollout_store_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/state.db";
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::unique_ptr<SqliteStateStore> Open() {
    auto store = SqliteStateStore::Open(path_, clock_);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return store.ok() ? std::move(store).value() : nullptr;
  }

  std::string dir_, path_;
  FakeClock clock_{kT0};
};

TEST_F(RolloutStoreTest, CreatesOnceThenSwapsByVersion) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->GetRollout("eu").status().code(), StatusCode::kNotFound);

  RolloutRecord canary = Stage("eu", "canary", 5);
  canary.halted = true;
  canary.version = 42;  // ignored: the store numbers versions
  auto created = store->CompareAndSwapRollout(0, canary);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  EXPECT_EQ(created->version, 1u);
  auto got = store->GetRollout("eu");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->stage, "canary");
  EXPECT_EQ(got->percent, 5);
  EXPECT_TRUE(got->halted);
  EXPECT_EQ(got->version, 1u);
  EXPECT_EQ(got->reason, "manual");
  EXPECT_EQ(got->detail, "by a test");
  EXPECT_EQ(got->changed_by, "node-a");
  EXPECT_EQ(got->changed_ms, kT0);

  // A second creation loses, naming what is stored.
  auto again = store->CompareAndSwapRollout(0, Stage("eu", "full", 100));
  EXPECT_EQ(again.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(again.status().message().find("version 1, stage canary"), std::string::npos)
      << again.status().message();

  auto early = store->CompareAndSwapRollout(1, Stage("eu", "early", 25));
  ASSERT_TRUE(early.ok());
  EXPECT_EQ(early->version, 2u);
  EXPECT_FALSE(early->halted);
  // A writer that read version 1 cannot overwrite version 2.
  EXPECT_EQ(store->CompareAndSwapRollout(1, Stage("eu", "v1", 0)).status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(store->GetRollout("eu")->stage, "early");
  EXPECT_EQ(store->CompareAndSwapRollout(0, Stage("", "v1", 0)).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(RolloutStoreTest, ListsRegionsInOrder) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  for (const char* region : {"us-east", "ap-south", "eu-west"}) {
    ASSERT_TRUE(store->CompareAndSwapRollout(0, Stage(region, "canary", 5)).ok());
  }
  auto list = store->ListRollouts();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 3u);
  EXPECT_EQ((*list)[0].region, "ap-south");
  EXPECT_EQ((*list)[1].region, "eu-west");
  EXPECT_EQ((*list)[2].region, "us-east");
}

// Several processes each try to advance the stage they read, as dwcpd nodes do: every
// version is written exactly once, so the number of successful swaps equals the final
// version and no advance is lost or doubled.
TEST_F(RolloutStoreTest, ProcessesRacingToAdvanceSucceedOncePerVersion) {
  {
    auto store = Open();
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->CompareAndSwapRollout(0, Stage("eu", "s0", 0)).ok());
  }  // closed: no connection crosses fork()
  constexpr int kProcesses = 3;
  constexpr int kRounds = 40;
  int pipes[kProcesses][2];
  std::vector<pid_t> children;
  for (int p = 0; p < kProcesses; ++p) {
    ASSERT_EQ(pipe(pipes[p]), 0);
    pid_t pid = fork();
    if (pid == 0) {
      close(pipes[p][0]);
      FakeClock clock;
      auto store = SqliteStateStore::Open(path_, clock);
      if (!store.ok()) _exit(2);
      int wins = 0;
      for (int i = 0; i < kRounds; ++i) {
        auto current = (*store)->GetRollout("eu");
        if (!current.ok()) _exit(3);
        RolloutRecord next = *current;
        next.stage = "s" + std::to_string(current->version);
        next.changed_by = "p" + std::to_string(p);
        auto swapped = (*store)->CompareAndSwapRollout(current->version, next);
        if (swapped.ok()) {
          ++wins;
        } else if (swapped.status().code() != StatusCode::kFailedPrecondition) {
          _exit(4);
        }
      }
      if (write(pipes[p][1], &wins, sizeof wins) != sizeof wins) _exit(5);
      _exit(0);
    }
    ASSERT_GT(pid, 0);
    close(pipes[p][1]);
    children.push_back(pid);
  }
  int total = 0;
  for (int p = 0; p < kProcesses; ++p) {
    int wins = 0;
    EXPECT_EQ(read(pipes[p][0], &wins, sizeof wins), static_cast<ssize_t>(sizeof wins));
    close(pipes[p][0]);
    total += wins;
    int status = 0;
    ASSERT_EQ(waitpid(children[p], &status, 0), children[p]);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child " << p;
  }
  auto store = Open();
  ASSERT_NE(store, nullptr);
  auto final_record = store->GetRollout("eu");
  ASSERT_TRUE(final_record.ok());
  EXPECT_EQ(final_record->version, static_cast<uint64_t>(total) + 1);
  EXPECT_EQ(final_record->stage, "s" + std::to_string(total));
  EXPECT_GE(total, kRounds);  // each round of each process reads, so at least one wins a round
}

TEST_F(RolloutStoreTest, AVersionOneFileGainsTheTable) {
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(
        sqlite3_exec(db,
                     "CREATE TABLE nodes (id TEXT NOT NULL PRIMARY KEY, region TEXT NOT NULL, "
                     "api_url TEXT NOT NULL, data_address TEXT NOT NULL, state TEXT NOT NULL, "
                     "version TEXT NOT NULL, started_ms INTEGER NOT NULL, "
                     "heartbeat_ms INTEGER NOT NULL);"
                     "INSERT INTO nodes VALUES ('node-a', 'eu', 'http://a', 'a:7070', 'up', "
                     "'3.0.0', 1, 2);"
                     "PRAGMA user_version = 1;",
                     nullptr, nullptr, nullptr),
        SQLITE_OK);
    sqlite3_close(db);
  }
  auto store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(store->GetNode("node-a").ok());  // kept
  ASSERT_TRUE(store->CompareAndSwapRollout(0, Stage("eu", "canary", 5)).ok());
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2(path_.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &stmt, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(stmt, 0), SqliteStateStore::kSchemaVersion);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
}

}  // namespace
}  // namespace dwcp::acp
