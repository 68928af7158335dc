// The qemu VM driver against real QEMU and the project's test guest (scripts/build-guest.sh):
// boot, see the guest's counter advance, pause (it stops), resume (it goes on), quit (the
// process is gone); adopt a QEMU through its QMP socket; QEMU's own errors.
#include "vm/qemu_guest.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "tests/integration/qemu_test_util.h"

namespace dwcp::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

class QemuGuestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string why = QemuSkipReason();
    if (!why.empty()) GTEST_SKIP() << why;
    char dir[] = "/tmp/dwcp-qemu-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  vm::QemuGuestSpec Spec(const std::string& id) {
    const TestGuest guest = TheTestGuest();
    vm::QemuGuestSpec spec;
    spec.id = id;
    spec.memory_bytes = 128ull << 20;
    spec.kernel = guest.kernel;
    spec.initrd = guest.initrd;
    spec.append = guest.append;
    spec.boot_marker = guest.boot_marker;
    spec.run_dir = dir_ + "/" + id;
    spec.kvm_probe_timeout = seconds(60);
    return spec;
  }
  std::string dir_;
};

TEST_F(QemuGuestTest, BootPauseResumeQuit) {
  vm::AccelSelector selector;  // the host's /dev/kvm: KVM when it boots the guest, else TCG
  const auto started = Clock::now();
  auto guest = vm::QemuGuest::Start(Spec("vm-boot"), selector);
  ASSERT_TRUE(guest.ok()) << guest.status().ToString();
  vm::QemuGuest& g = **guest;
  const std::string console = g.console_path();
  EXPECT_GT(g.pid(), 0);
  EXPECT_FALSE(g.adopted());
  EXPECT_TRUE(g.accel() == "kvm" || g.accel() == "tcg") << g.accel();
  EXPECT_FALSE(g.accel_reason().empty());

  const int64_t first = WaitForCounter(console, 1, seconds(240));
  ASSERT_GE(first, 1) << "the guest printed no counter; console:\n" << vm::ReadFileTail(console);
  const double boot_s = std::chrono::duration<double>(Clock::now() - started).count();
  std::cout << "[ guest    ] accel " << g.accel() << " (" << g.accel_reason()
            << "), first counter after " << boot_s << " s\n";
  RecordProperty("accel", g.accel());
  RecordProperty("boot_ms", static_cast<int>(boot_s * 1000));

  // Running: the counter advances.
  const int64_t running = WaitForCounter(console, first + 5, seconds(60));
  ASSERT_GE(running, first + 5) << vm::ReadFileTail(console);
  auto status = g.QueryStatus();
  ASSERT_TRUE(status.ok()) << status.status().ToString();
  EXPECT_EQ(status->status, "running");
  EXPECT_TRUE(status->running);

  // Paused: it stops.
  ASSERT_TRUE(g.Pause().ok());
  EXPECT_TRUE(g.qmp().WaitForEvent("STOP", seconds(10)).ok());
  status = g.QueryStatus();
  ASSERT_TRUE(status.ok()) << status.status().ToString();
  EXPECT_EQ(status->status, "paused");
  EXPECT_FALSE(status->running);
  std::this_thread::sleep_for(milliseconds(500));  // a line being written when it stopped
  const int64_t paused = LastCounter(console);
  std::this_thread::sleep_for(seconds(2));  // 20 ticks of a running guest
  EXPECT_EQ(LastCounter(console), paused);

  // Resumed: it goes on from where it stopped.
  ASSERT_TRUE(g.Resume().ok());
  EXPECT_TRUE(g.qmp().WaitForEvent("RESUME", seconds(10)).ok());
  EXPECT_GE(WaitForCounter(console, paused + 5, seconds(60)), paused + 5)
      << vm::ReadFileTail(console);
  EXPECT_EQ(g.QueryStatus()->status, "running");
  // The workload found every page as it last wrote it.
  EXPECT_EQ(LastBadPages(console), 0) << vm::ReadFileTail(console);
  EXPECT_EQ(vm::ReadFileTail(console, 1 << 20).find("bad page"), std::string::npos);

  // QEMU's own errors come back with their class.
  auto unknown = g.qmp().Execute("no-such-command");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(unknown.status().message().find("CommandNotFound"), std::string::npos);

  // Quit: the process is gone.
  const pid_t pid = g.pid();
  ASSERT_TRUE(g.Quit(seconds(30)).ok());
  EXPECT_FALSE(g.Alive());
  EXPECT_EQ(g.ExitDescription(), "exited with status 0");
  EXPECT_EQ(kill(pid, 0), -1);
  EXPECT_EQ(errno, ESRCH);
  auto after = g.QueryStatus();
  EXPECT_EQ(after.status().code(), StatusCode::kUnavailable);
}

// The `auto` probe's two ways to give up on KVM, run on any host: told KVM is usable, QEMU
// either refuses KVM outright (no /dev/kvm) or, booting with TCG in the probe's place, never
// shows the boot marker in time. Both fall back to TCG, and the choice sticks to the kernel.
TEST_F(QemuGuestTest, KvmProbeFallsBackToTcgAndRemembers) {
  if (access("/dev/kvm", F_OK) != 0) {
    vm::AccelSelector refusing(/*kvm_device=*/"", /*probe_accel=*/"kvm");
    auto guest = vm::QemuGuest::Start(Spec("vm-nokvm"), refusing);
    ASSERT_TRUE(guest.ok()) << guest.status().ToString();
    EXPECT_EQ((*guest)->accel(), "tcg");
    EXPECT_NE((*guest)->accel_reason().find("QEMU failed under KVM"), std::string::npos)
        << (*guest)->accel_reason();
    ASSERT_TRUE((*guest)->Quit().ok());
  }

  vm::AccelSelector silent(/*kvm_device=*/"", /*probe_accel=*/"tcg");
  vm::QemuGuestSpec spec = Spec("vm-silent");
  spec.boot_marker = "a line this guest never prints";
  spec.kvm_probe_timeout = seconds(3);
  const auto t0 = Clock::now();
  auto guest = vm::QemuGuest::Start(spec, silent);
  ASSERT_TRUE(guest.ok()) << guest.status().ToString();
  EXPECT_GE(Clock::now() - t0, seconds(3));
  EXPECT_EQ((*guest)->accel(), "tcg");
  EXPECT_EQ((*guest)->accel_reason(), "under KVM the guest showed no boot output within 3 s");
  // The fallback guest really runs.
  EXPECT_GE(WaitForCounter((*guest)->console_path(), 1, seconds(240)), 1)
      << vm::ReadFileTail((*guest)->console_path());
  ASSERT_TRUE((*guest)->Quit().ok());

  // The next guest of that kernel goes straight to TCG.
  auto next = vm::QemuGuest::Start(Spec("vm-next"), silent);
  ASSERT_TRUE(next.ok()) << next.status().ToString();
  EXPECT_EQ((*next)->boot_seconds(), 0);  // no probe waited for it
  EXPECT_EQ((*next)->accel(), "tcg");
  EXPECT_EQ((*next)->accel_reason(),
            "under KVM the guest showed no boot output within 3 s (decided earlier for this "
            "kernel)");
  ASSERT_TRUE((*next)->Quit().ok());
}

// A QEMU that someone else started: adopted through its socket, left running when dropped.
TEST_F(QemuGuestTest, AdoptLeavesQemuRunning) {
  const std::string sock = dir_ + "/adopt.sock";
  // -S: the vCPUs never start, so this guest costs no CPU.
  pid_t pid = fork();
  if (pid == 0) {
    execlp("qemu-system-x86_64", "qemu-system-x86_64", "-machine", "q35,accel=tcg", "-m", "64M",
           "-nodefaults", "-no-user-config", "-display", "none", "-S", "-qmp",
           ("unix:" + sock + ",server=on,wait=off").c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  ASSERT_GT(pid, 0);
  auto deadline = Clock::now() + seconds(30);
  while (access(sock.c_str(), F_OK) != 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(50));
  }
  {
    auto guest = vm::QemuGuest::Adopt("vm-adopted", sock);
    ASSERT_TRUE(guest.ok()) << guest.status().ToString();
    EXPECT_TRUE((*guest)->adopted());
    EXPECT_EQ((*guest)->pid(), 0);
    EXPECT_EQ((*guest)->memory_bytes(), 64ull << 20);
    EXPECT_EQ((*guest)->accel(), "tcg");
    auto status = (*guest)->QueryStatus();
    ASSERT_TRUE(status.ok()) << status.status().ToString();
    EXPECT_EQ(status->status, "prelaunch");
    EXPECT_TRUE((*guest)->Alive());
  }
  // Dropped: QEMU still runs and answers the next client.
  EXPECT_EQ(kill(pid, 0), 0);
  auto again = vm::QmpClient::Connect(sock);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE((*again)->Execute("quit").ok());
  int status = 0;
  EXPECT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

// QEMU refusing to start comes back with QEMU's own words.
TEST_F(QemuGuestTest, QemuErrorsAreReported) {
  vm::QemuGuestSpec spec = Spec("vm-bad");
  spec.kernel = dir_ + "/not-a-kernel";
  { std::ofstream(spec.kernel) << "this is not a bzImage\n"; }
  spec.accel = "tcg";
  vm::AccelSelector selector;
  auto guest = vm::QemuGuest::Start(spec, selector);
  ASSERT_FALSE(guest.ok());
  EXPECT_EQ(guest.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(guest.status().message().find("QEMU exited with status 1"), std::string::npos)
      << guest.status().message();
  // QEMU's own words, e.g. "qemu: linux kernel too old to load a ram disk".
  EXPECT_NE(guest.status().message().find("before opening QMP: qemu"), std::string::npos)
      << guest.status().message();
}

}  // namespace
}  // namespace dwcp::testing
