// The qemu driver's decisions that need no QEMU: spec checks and the accelerator choice.
// Booting real guests: tests/integration/qemu_guest_test.cc.
#include "vm/qemu_guest.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace dwcp::vm {
namespace {

QemuGuestSpec ValidSpec() {
  QemuGuestSpec spec;
  spec.id = "vm-q";
  spec.memory_bytes = 128ull << 20;
  spec.kernel = "/boot/vmlinuz";
  spec.run_dir = "/tmp/dwcp-qemu-test/vm-q";
  return spec;
}

TEST(QemuGuestSpecTest, Validation) {
  EXPECT_TRUE(ValidateQemuSpec(ValidSpec()).ok());
  auto with = [](auto change) {
    QemuGuestSpec spec = ValidSpec();
    change(spec);
    return ValidateQemuSpec(spec);
  };
  EXPECT_EQ(with([](auto& s) { s.memory_bytes = (128ull << 20) + 4096; }).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(with([](auto& s) { s.memory_bytes = 16ull << 20; }).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(with([](auto& s) { s.kernel = ""; }).code(), StatusCode::kInvalidArgument);
  Status relative = with([](auto& s) { s.initrd = "build/guest/initramfs.cpio.gz"; });
  EXPECT_EQ(relative.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(relative.message().find("absolute path"), std::string::npos);
  EXPECT_EQ(with([](auto& s) { s.accel = "hvf"; }).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(with([](auto& s) { s.cpus = 0; }).code(), StatusCode::kInvalidArgument);
  Status long_dir = with([](auto& s) { s.run_dir = "/tmp/" + std::string(100, 'd'); });
  EXPECT_EQ(long_dir.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(long_dir.message().find("unix socket"), std::string::npos);
}

TEST(AccelSelectorTest, NoDeviceMeansNoKvm) {
  AccelSelector selector("/nonexistent/kvm");
  EXPECT_EQ(selector.KvmUnusableReason(), "/nonexistent/kvm: No such file or directory");
}

TEST(AccelSelectorTest, DeviceThatIsNotKvm) {
  AccelSelector selector("/dev/null");
  EXPECT_NE(selector.KvmUnusableReason().find("KVM_GET_API_VERSION"), std::string::npos)
      << selector.KvmUnusableReason();
}

TEST(AccelSelectorTest, RemembersPerKernelFile) {
  char dir[] = "/tmp/accel-test-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string a = std::string(dir) + "/vmlinuz-a", b = std::string(dir) + "/vmlinuz-b";
  std::ofstream(a) << "kernel a";
  std::ofstream(b) << "kernel b";
  AccelSelector selector("/nonexistent/kvm");
  EXPECT_FALSE(selector.Known(a).has_value());
  selector.Remember(a, {"tcg", "hung under KVM"});
  ASSERT_TRUE(selector.Known(a).has_value());
  EXPECT_EQ(selector.Known(a)->accel, "tcg");
  EXPECT_EQ(selector.Known(a)->reason, "hung under KVM");
  EXPECT_FALSE(selector.Known(b).has_value());
  // A different kernel at the same path (another size) is probed again.
  std::ofstream(a) << "a rebuilt, longer kernel";
  EXPECT_FALSE(selector.Known(a).has_value());
  unlink(a.c_str());
  unlink(b.c_str());
  rmdir(dir);
}

TEST(QemuGuestStartTest, KvmRequestedWithoutKvmFailsBeforeStarting) {
  char dir[] = "/tmp/accel-test-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  QemuGuestSpec spec = ValidSpec();
  spec.kernel = std::string(dir) + "/vmlinuz";
  std::ofstream(spec.kernel) << "not a kernel";
  spec.run_dir = std::string(dir) + "/run";
  spec.accel = "kvm";
  AccelSelector selector("/nonexistent/kvm");
  auto guest = QemuGuest::Start(spec, selector);
  ASSERT_FALSE(guest.ok());
  EXPECT_EQ(guest.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(guest.status().message(),
            "accel kvm: KVM is not usable: /nonexistent/kvm: No such file or directory");
  std::filesystem::remove_all(dir);
}

TEST(QemuGuestStartTest, UnreadableKernel) {
  QemuGuestSpec spec = ValidSpec();
  spec.kernel = "/nonexistent/vmlinuz";
  AccelSelector selector("/nonexistent/kvm");
  auto guest = QemuGuest::Start(spec, selector);
  ASSERT_FALSE(guest.ok());
  EXPECT_EQ(guest.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(guest.status().message(), "kernel /nonexistent/vmlinuz: No such file or directory");
}

}  // namespace
}  // namespace dwcp::vm
