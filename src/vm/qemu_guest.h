// The `qemu` VM driver: a real QEMU guest that dwcpd starts (or adopts through an existing
// QMP socket) and controls over QMP. docs/qemu.md.
//
// Unlike the page-level Guest of guest.h (synthetic guests, whose memory the migration engine
// reads page by page), a QEMU guest's memory lives in the QEMU process and is not accessible
// to dwcpd: its migration will carry QEMU's own migration stream. So QemuGuest is not a Guest;
// the node keeps qemu VMs apart from the engine's VmTable and refuses to migrate them until
// the engine carries that stream.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "vm/qmp_client.h"

namespace dwcp::vm {

inline constexpr uint64_t kQemuMemoryUnit = 1 << 20;  // QEMU's -m takes MiB

// How to start a QEMU guest.
struct QemuGuestSpec {
  std::string id;
  uint64_t memory_bytes = 256ull << 20;  // a multiple of 1 MiB
  uint32_t cpus = 1;
  std::string kernel;          // absolute paths on this host
  std::string initrd;          // optional
  std::string append;          // kernel command line; empty: "console=ttyS0"
  std::string accel = "auto";  // auto | kvm | tcg
  // The console text that shows the guest has booted, for the KVM probe; empty: the first
  // complete line on the console.
  std::string boot_marker;
  // The guest's own directory (created): qmp.sock, console.log (the serial port), qemu.log
  // (QEMU's stdout and stderr).
  std::string run_dir;
  std::string qemu_binary = "qemu-system-x86_64";
  // How long a KVM boot may take to show boot_marker before `auto` gives up on KVM.
  std::chrono::milliseconds kvm_probe_timeout{30000};
  // How long QEMU may take to open its QMP socket.
  std::chrono::milliseconds start_timeout{20000};
};

// Checks the fields of a spec that do not need the file system.
Status ValidateQemuSpec(const QemuGuestSpec& spec);

// Which accelerator `auto` gives this host's QEMU guests. KVM must be usable (/dev/kvm opens
// read-write and answers KVM_GET_API_VERSION) and must boot the kernel: on hosts with nested
// KVM some kernels (Debian's among them) hang early under KVM without an error, so the first
// `auto` guest of each kernel boots under KVM with a deadline and falls back to TCG when its
// console stays silent. The decision is remembered per kernel (path, size, mtime) for the life
// of this object. Thread-safe.
class AccelSelector {
 public:
  struct Decision {
    std::string accel;   // "kvm" | "tcg"
    std::string reason;  // for logs and the API
  };
  // `kvm_device` empty: assume KVM is usable without checking. `probe_accel`: what the probe
  // boots with. Tests use both to run the probe and its fallback on hosts without KVM.
  explicit AccelSelector(std::string kvm_device = "/dev/kvm", std::string probe_accel = "kvm");

  // Empty when KVM is usable here; else why not ("/dev/kvm: No such file or directory").
  // Checked once, then cached.
  std::string KvmUnusableReason();
  std::optional<Decision> Known(const std::string& kernel) const;
  const std::string& probe_accel() const { return probe_accel_; }
  void Remember(const std::string& kernel, Decision decision);

 private:
  static std::string KernelKey(const std::string& kernel);
  const std::string kvm_device_;
  const std::string probe_accel_;
  mutable std::mutex mu_;
  std::optional<std::string> kvm_unusable_;  // checked yet?
  std::map<std::string, Decision> decisions_;
};

struct QemuStatus {
  std::string status;  // QMP's RunState: "running", "paused", "inmigrate", "shutdown", ...
  bool running = false;
};

// A QEMU guest. Thread-safe.
class QemuGuest {
 public:
  // Starts QEMU for `spec` and returns once its QMP socket answers (under an `auto` KVM probe:
  // once the guest booted, or after the fallback to TCG started). QEMU runs in its own process
  // group and gets SIGKILL when this process exits. Errors say what failed, with QEMU's own
  // last words.
  static Result<std::unique_ptr<QemuGuest>> Start(const QemuGuestSpec& spec, AccelSelector& accel);
  // Takes over a running QEMU through its QMP socket. It is not this process's child: the
  // destructor only disconnects.
  static Result<std::unique_ptr<QemuGuest>> Adopt(const std::string& id,
                                                  const std::string& qmp_socket);
  // A started guest is quit (then killed if it lingers); an adopted one is left running.
  ~QemuGuest();
  QemuGuest(const QemuGuest&) = delete;
  QemuGuest& operator=(const QemuGuest&) = delete;

  const std::string& id() const { return id_; }
  bool adopted() const { return pid_ == 0; }
  pid_t pid() const { return pid_; }  // 0 when adopted
  // "kvm" or "tcg", and why.
  const std::string& accel() const { return accel_; }
  const std::string& accel_reason() const { return accel_reason_; }
  uint64_t memory_bytes() const { return memory_bytes_; }
  const std::string& qmp_socket() const { return qmp_socket_; }
  const std::string& console_path() const { return console_path_; }  // empty when adopted
  const std::string& qemu_version() const { return qmp_->qemu_version(); }
  // Seconds from starting QEMU to the boot marker, when a KVM probe waited for it; else 0.
  double boot_seconds() const { return boot_seconds_; }

  // QEMU's run state (QMP `query-status`).
  Result<QemuStatus> QueryStatus(std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Stops the vCPUs (QMP `stop`); the guest's memory stays as it is.
  Status Pause();
  // Continues the vCPUs (QMP `cont`).
  Status Resume();
  // Asks QEMU to exit (QMP `quit`) and, for a started guest, waits up to `timeout` for the
  // process, killing it after that.
  Status Quit(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // False once the started process exited or the adopted guest's QMP connection closed.
  bool Alive();
  // The process's exit description ("exited with status 0", "killed by signal 9") once it
  // exited; empty while it runs or when adopted.
  std::string ExitDescription();
  QmpClient& qmp() { return *qmp_; }

 private:
  QemuGuest() = default;
  // Reaps the child if it exited; true if it has. Caller holds mu_.
  bool ReapLocked();
  void KillAndReap();

  std::string id_;
  pid_t pid_ = 0;
  std::string accel_, accel_reason_;
  uint64_t memory_bytes_ = 0;
  std::string qmp_socket_, console_path_;
  double boot_seconds_ = 0;
  std::unique_ptr<QmpClient> qmp_;
  std::mutex mu_;
  bool reaped_ = false;
  int wait_status_ = 0;
};

// The last `max_bytes` of a file (QEMU's log, a console), for error messages and tests.
std::string ReadFileTail(const std::string& path, size_t max_bytes = 4096);

}  // namespace dwcp::vm
