#include "vm/qemu_guest.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <future>
#include <thread>

#include "obs/log.h"

namespace dwcp::vm {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

constexpr auto kPollInterval = milliseconds(50);

Status MakeDir(const std::string& path) {
  std::string partial;
  for (size_t i = 0; i <= path.size(); ++i) {
    if ((i == path.size() || path[i] == '/') && !partial.empty() &&
        mkdir(partial.c_str(), 0755) != 0 && errno != EEXIST) {
      return Unavailable("cannot create directory " + partial + ": " + std::strerror(errno));
    }
    if (i < path.size()) partial += path[i];
  }
  return Status::Ok();
}

Status CheckReadable(const char* what, const std::string& path) {
  if (access(path.c_str(), R_OK) != 0) {
    return InvalidArgument(std::string(what) + " " + path + ": " + std::strerror(errno));
  }
  return Status::Ok();
}

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "stopped";
}

// Starts `args` (args[0] is looked up in $PATH) in its own process group, stdin from
// /dev/null, stdout and stderr appended to `log_path`. SIGKILL when the forking thread exits.
Result<pid_t> SpawnHere(const std::vector<std::string>& args, const std::string& log_path) {
  int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0)
    return Status(Unavailable("cannot open " + log_path + ": " + std::strerror(errno)));
  int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const std::string exec_failed = "dwcpd: cannot execute " + args[0] + "\n";
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec.
    setpgid(0, 0);  // Ctrl-C in dwcpd's terminal reaches dwcpd, which quits QEMU in order
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    signal(SIGPIPE, SIG_DFL);
    if (null_fd >= 0) dup2(null_fd, STDIN_FILENO);
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    execvp(argv[0], argv.data());
    [[maybe_unused]] ssize_t n = write(STDERR_FILENO, exec_failed.data(), exec_failed.size());
    _exit(127);
  }
  const int fork_errno = errno;
  close(log_fd);
  if (null_fd >= 0) close(null_fd);
  if (pid < 0) return Status(Unavailable(std::string("fork: ") + std::strerror(fork_errno)));
  return pid;
}

// PR_SET_PDEATHSIG fires when the *thread* that forked exits, so QEMU is forked by one
// thread that lives as long as the process: a guest dies with dwcpd, not with an HTTP worker.
class Spawner {
 public:
  static Spawner& Instance() {
    static Spawner* spawner = new Spawner();  // never destroyed: its thread runs until exit
    return *spawner;
  }
  Result<pid_t> Spawn(const std::vector<std::string>& args, const std::string& log_path) {
    std::packaged_task<Result<pid_t>()> task([&] { return SpawnHere(args, log_path); });
    auto result = task.get_future();
    {
      std::lock_guard lock(mu_);
      tasks_.push_back(std::move(task));
    }
    cv_.notify_one();
    return result.get();
  }

 private:
  Spawner() {
    std::thread([this] {
      pthread_setname_np(pthread_self(), "dwcp-spawner");
      for (;;) {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [this] { return !tasks_.empty(); });
        auto task = std::move(tasks_.front());
        tasks_.pop_front();
        lock.unlock();
        task();
      }
    }).detach();
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::packaged_task<Result<pid_t>()>> tasks_;
};

// What QEMU wrote to its log from `from` on (its last 1 KiB), on one line: "a; b".
std::string QemuSaid(const std::string& log_path, std::streamoff from) {
  std::ifstream in(log_path, std::ios::binary);
  in.seekg(from);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.size() > 1024) text = "..." + text.substr(text.size() - 1024);
  std::string out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) out += (out.empty() ? "" : "; ") + line;
    start = end + 1;
  }
  return out.empty() ? "(QEMU printed nothing)" : out;
}

std::string ReadWhole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::vector<std::string> QemuArgs(const QemuGuestSpec& spec, const std::string& accel,
                                  const std::string& qmp, const std::string& console) {
  std::vector<std::string> args = {spec.qemu_binary,
                                   "-name",
                                   spec.id,
                                   "-machine",
                                   "q35,accel=" + accel,
                                   "-m",
                                   std::to_string(spec.memory_bytes / kQemuMemoryUnit) + "M",
                                   "-smp",
                                   std::to_string(spec.cpus),
                                   "-nodefaults",
                                   "-no-user-config",
                                   "-display",
                                   "none",
                                   "-kernel",
                                   spec.kernel};
  if (!spec.initrd.empty()) args.insert(args.end(), {"-initrd", spec.initrd});
  args.insert(args.end(), {"-append", spec.append.empty() ? "console=ttyS0" : spec.append,
                           "-chardev", "file,id=console,path=" + console, "-serial",
                           "chardev:console", "-qmp", "unix:" + qmp + ",server=on,wait=off"});
  return args;
}

}  // namespace

Status ValidateQemuSpec(const QemuGuestSpec& spec) {
  if (spec.memory_bytes == 0 || spec.memory_bytes % kQemuMemoryUnit != 0) {
    return InvalidArgument("qemu guest memory must be a positive multiple of 1 MiB");
  }
  if (spec.memory_bytes < (32ull << 20)) {
    return InvalidArgument("qemu guest memory must be at least 32 MiB");
  }
  if (spec.cpus == 0 || spec.cpus > 64) return InvalidArgument("cpus must be 1-64");
  if (spec.kernel.empty()) return InvalidArgument("a qemu guest needs a kernel");
  for (const std::string* p : {&spec.kernel, &spec.initrd}) {
    if (!p->empty() && (*p)[0] != '/') {
      return InvalidArgument("'" + *p + "' must be an absolute path on the node's host");
    }
  }
  if (spec.accel != "auto" && spec.accel != "kvm" && spec.accel != "tcg") {
    return InvalidArgument("accel must be auto, kvm or tcg");
  }
  if (spec.run_dir.empty()) return InvalidArgument("a qemu guest needs a run directory");
  // sockaddr_un holds 107 bytes of path.
  if (spec.run_dir.size() + sizeof("/qmp.sock") > 108) {
    return InvalidArgument("the guest's directory " + spec.run_dir +
                           " is too long for a unix socket path (use a shorter data dir)");
  }
  return Status::Ok();
}

// ---- AccelSelector ----

AccelSelector::AccelSelector(std::string kvm_device, std::string probe_accel)
    : kvm_device_(std::move(kvm_device)), probe_accel_(std::move(probe_accel)) {}

std::string AccelSelector::KvmUnusableReason() {
  std::lock_guard lock(mu_);
  if (kvm_unusable_) return *kvm_unusable_;
  std::string reason;
  int fd = kvm_device_.empty() ? -2 : open(kvm_device_.c_str(), O_RDWR | O_CLOEXEC);
  if (fd == -2) {
    // Told not to check.
  } else if (fd < 0) {
    reason = kvm_device_ + ": " + std::strerror(errno);
  } else {
    int version = ioctl(fd, KVM_GET_API_VERSION, 0);
    if (version != KVM_API_VERSION) {
      reason = kvm_device_ + ": KVM_GET_API_VERSION returned " + std::to_string(version);
    }
    close(fd);
  }
  kvm_unusable_ = reason;
  return reason;
}

std::string AccelSelector::KernelKey(const std::string& kernel) {
  struct stat st {};
  if (stat(kernel.c_str(), &st) != 0) return kernel;
  return kernel + ":" + std::to_string(st.st_size) + ":" + std::to_string(st.st_mtime);
}

std::optional<AccelSelector::Decision> AccelSelector::Known(const std::string& kernel) const {
  std::lock_guard lock(mu_);
  auto it = decisions_.find(KernelKey(kernel));
  if (it == decisions_.end()) return std::nullopt;
  return it->second;
}

void AccelSelector::Remember(const std::string& kernel, Decision decision) {
  std::lock_guard lock(mu_);
  decisions_[KernelKey(kernel)] = std::move(decision);
}

// ---- QemuGuest ----

Result<std::unique_ptr<QemuGuest>> QemuGuest::Start(const QemuGuestSpec& spec,
                                                    AccelSelector& selector) {
  DWCP_RETURN_IF_ERROR(ValidateQemuSpec(spec));
  DWCP_RETURN_IF_ERROR(CheckReadable("kernel", spec.kernel));
  if (!spec.initrd.empty()) DWCP_RETURN_IF_ERROR(CheckReadable("initrd", spec.initrd));
  DWCP_RETURN_IF_ERROR(MakeDir(spec.run_dir));
  const std::string qmp_path = spec.run_dir + "/qmp.sock";
  const std::string console_path = spec.run_dir + "/console.log";
  const std::string log_path = spec.run_dir + "/qemu.log";

  // The accelerator, and whether this boot is the KVM probe.
  std::string accel = spec.accel, reason = "requested";
  bool probe = false;
  if (spec.accel == "kvm") {
    std::string why = selector.KvmUnusableReason();
    if (!why.empty()) return Status(FailedPrecondition("accel kvm: KVM is not usable: " + why));
  } else if (spec.accel == "auto") {
    std::string why = selector.KvmUnusableReason();
    if (!why.empty()) {
      accel = "tcg";
      reason = "KVM is not usable (" + why + ")";
    } else if (auto known = selector.Known(spec.kernel)) {
      accel = known->accel;
      reason = known->reason + " (decided earlier for this kernel)";
    } else {
      accel = selector.probe_accel();
      probe = true;
    }
  }

  for (;;) {
    unlink(qmp_path.c_str());
    unlink(console_path.c_str());
    std::streamoff log_start = 0;  // where this start's output begins in qemu.log
    {
      std::ofstream log(log_path, std::ios::app);
      log << "---- dwcpd starts QEMU for " << spec.id << " with " << accel << "\n";
      log.flush();
      log_start = log.tellp();
    }
    const auto started = Clock::now();
    auto pid = Spawner::Instance().Spawn(QemuArgs(spec, accel, qmp_path, console_path), log_path);
    if (!pid.ok()) return pid.status();
    std::unique_ptr<QemuGuest> guest(new QemuGuest());
    guest->id_ = spec.id;
    guest->pid_ = *pid;
    guest->accel_ = accel;
    guest->accel_reason_ = reason;
    guest->memory_bytes_ = spec.memory_bytes;
    guest->qmp_socket_ = qmp_path;
    guest->console_path_ = console_path;

    // QMP comes up within a second or two; QEMU's errors (bad kernel, no KVM) end it sooner.
    const auto qmp_deadline = started + spec.start_timeout;
    Status qmp_error;
    for (;;) {
      {
        std::lock_guard lock(guest->mu_);
        if (guest->ReapLocked()) {
          qmp_error = Unavailable("QEMU " + DescribeWaitStatus(guest->wait_status_) +
                                  " before opening QMP: " + QemuSaid(log_path, log_start));
          break;
        }
      }
      auto qmp = QmpClient::Connect(qmp_path);
      if (qmp.ok()) {
        guest->qmp_ = std::move(qmp).value();
        break;
      }
      const StatusCode code = qmp.status().code();
      const bool not_yet = code == StatusCode::kNotFound || code == StatusCode::kUnavailable ||
                           code == StatusCode::kDeadlineExceeded;
      if (!not_yet || Clock::now() > qmp_deadline) {
        guest->KillAndReap();
        qmp_error = Unavailable("QEMU did not open its QMP socket within " +
                                std::to_string(spec.start_timeout.count()) +
                                " ms: " + qmp.status().message());
        break;
      }
      std::this_thread::sleep_for(kPollInterval);
    }
    if (!qmp_error.ok()) {
      if (!probe) return qmp_error;
      // QEMU refused KVM outright: TCG for this kernel.
      accel = "tcg";
      reason = "QEMU failed under KVM (" + qmp_error.message() + ")";
      selector.Remember(spec.kernel, {"tcg", reason});
      obs::LogWarn("vm", "QEMU failed under KVM: falling back to TCG for this kernel",
                   {{"vm_id", spec.id}, {"kernel", spec.kernel}, {"reason", reason}});
      probe = false;
      continue;
    }
    if (!probe) {
      obs::LogInfo("vm", "qemu guest started",
                   {{"vm_id", spec.id},
                    {"pid", guest->pid_},
                    {"accel", accel},
                    {"accel_reason", reason},
                    {"qemu", guest->qemu_version()}});
      return guest;
    }

    // The KVM probe: the console must show the boot marker in time.
    const auto probe_deadline = started + spec.kvm_probe_timeout;
    bool booted = false, exited = false;
    while (Clock::now() < probe_deadline) {
      const std::string console = ReadWhole(console_path);
      if (spec.boot_marker.empty() ? console.find('\n') != std::string::npos
                                   : console.find(spec.boot_marker) != std::string::npos) {
        booted = true;
        break;
      }
      {
        std::lock_guard lock(guest->mu_);
        if ((exited = guest->ReapLocked())) break;
      }
      std::this_thread::sleep_for(milliseconds(100));
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
    char took[32];
    std::snprintf(took, sizeof(took), "%.1f s", seconds);
    if (booted) {
      guest->boot_seconds_ = seconds;
      guest->accel_reason_ = "the guest booted under " + accel + " in " + took;
      selector.Remember(spec.kernel, {accel, guest->accel_reason_});
      obs::LogInfo("vm", "qemu guest started",
                   {{"vm_id", spec.id},
                    {"pid", guest->pid_},
                    {"accel", accel},
                    {"accel_reason", guest->accel_reason_},
                    {"qemu", guest->qemu_version()}});
      return guest;
    }
    guest->KillAndReap();
    accel = "tcg";
    reason = exited ? "QEMU exited under KVM: " + QemuSaid(log_path, log_start)
                    : "under KVM the guest showed no boot output within " +
                          std::to_string(spec.kvm_probe_timeout.count() / 1000) + " s";
    selector.Remember(spec.kernel, {"tcg", reason});
    obs::LogWarn("vm", "KVM did not boot the guest: falling back to TCG for this kernel",
                 {{"vm_id", spec.id}, {"kernel", spec.kernel}, {"reason", reason}});
    probe = false;
  }
}

Result<std::unique_ptr<QemuGuest>> QemuGuest::Adopt(const std::string& id,
                                                    const std::string& qmp_socket) {
  if (qmp_socket.empty() || qmp_socket[0] != '/') {
    return Status(InvalidArgument("the QMP socket must be an absolute path on the node's host"));
  }
  auto qmp = QmpClient::Connect(qmp_socket);
  if (!qmp.ok()) return qmp.status();
  std::unique_ptr<QemuGuest> guest(new QemuGuest());
  guest->id_ = id;
  guest->qmp_ = std::move(qmp).value();
  guest->qmp_socket_ = qmp_socket;
  auto memory = guest->qmp_->Execute("query-memory-size-summary");
  if (!memory.ok()) return memory.status();
  guest->memory_bytes_ = memory->value("base-memory", uint64_t{0});
  auto kvm = guest->qmp_->Execute("query-kvm");
  if (!kvm.ok()) return kvm.status();
  guest->accel_ = kvm->value("enabled", false) ? "kvm" : "tcg";
  guest->accel_reason_ = "adopted: as QEMU runs it";
  obs::LogInfo("vm", "qemu guest adopted",
               {{"vm_id", id},
                {"qmp_socket", qmp_socket},
                {"accel", guest->accel_},
                {"memory_bytes", guest->memory_bytes_},
                {"qemu", guest->qemu_version()}});
  return guest;
}

QemuGuest::~QemuGuest() {
  if (adopted()) {
    if (qmp_) qmp_->Close();
    return;
  }
  if (!Alive()) return;
  Status st = Quit(std::chrono::seconds(5));
  if (!st.ok()) {
    obs::LogWarn("vm", "qemu guest did not quit cleanly",
                 {{"vm_id", id_}, {"pid", pid_}, {"error", st.message()}});
  }
}

Result<QemuStatus> QemuGuest::QueryStatus(milliseconds timeout) {
  auto reply = qmp_->Execute("query-status", nlohmann::json::object(), timeout);
  if (!reply.ok()) return reply.status();
  QemuStatus status;
  status.status = reply->value("status", std::string());
  status.running = reply->value("running", false);
  return status;
}

Status QemuGuest::Pause() { return qmp_->Execute("stop").status(); }

Status QemuGuest::Resume() { return qmp_->Execute("cont").status(); }

Status QemuGuest::Quit(milliseconds timeout) {
  auto reply = qmp_->Execute("quit", nlohmann::json::object(), timeout);
  // QEMU may close the socket before its reply arrives: that is the exit we asked for.
  const bool asked = reply.ok() || reply.status().code() == StatusCode::kUnavailable;
  if (adopted()) {
    qmp_->Close();
    return asked ? Status::Ok() : reply.status();
  }
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    {
      std::lock_guard lock(mu_);
      if (ReapLocked()) break;
    }
    if (!asked || Clock::now() >= deadline) {
      KillAndReap();
      qmp_->Close();
      return DeadlineExceeded("QEMU of " + id_ + " did not exit within " +
                              std::to_string(timeout.count()) + " ms of quit" +
                              (asked ? "" : " (" + reply.status().message() + ")") + "; killed it");
    }
    std::this_thread::sleep_for(milliseconds(20));
  }
  qmp_->Close();
  return Status::Ok();
}

bool QemuGuest::Alive() {
  if (adopted()) return qmp_->connected() && QueryStatus().ok();
  std::lock_guard lock(mu_);
  return !ReapLocked();
}

std::string QemuGuest::ExitDescription() {
  if (adopted()) return "";
  std::lock_guard lock(mu_);
  return ReapLocked() ? DescribeWaitStatus(wait_status_) : "";
}

bool QemuGuest::ReapLocked() {
  if (reaped_) return true;
  int status = 0;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_ || (r < 0 && errno == ECHILD)) {
    reaped_ = true;
    wait_status_ = r == pid_ ? status : 0;
  }
  return reaped_;
}

void QemuGuest::KillAndReap() {
  std::lock_guard lock(mu_);
  if (reaped_) return;
  kill(pid_, SIGKILL);
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  reaped_ = true;
  wait_status_ = status;
}

std::string ReadFileTail(const std::string& path, size_t max_bytes) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return "";
  const std::streamoff size = in.tellg();
  const std::streamoff start = size > static_cast<std::streamoff>(max_bytes)
                                   ? size - static_cast<std::streamoff>(max_bytes)
                                   : 0;
  in.seekg(start);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace dwcp::vm
