#include "linkem_net.h"

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

extern char** environ;

namespace dwcp::linkem {
namespace {

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

std::string Join(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) out += (out.empty() ? "" : " ") + a;
  return out;
}

// Switches the calling thread into namespace `ns` for its lifetime and back on destruction.
class NetnsScope {
 public:
  explicit NetnsScope(const std::string& ns) {
    home_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (home_ < 0) {
      status_ = Internal(Errno("open /proc/thread-self/ns/net"));
      return;
    }
    int target = open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
    if (target < 0) {
      status_ = Internal(Errno("open /run/netns/" + ns));
      return;
    }
    if (setns(target, CLONE_NEWNET) != 0) status_ = Internal(Errno("setns " + ns));
    entered_ = status_.ok();
    close(target);
  }
  ~NetnsScope() {
    if (entered_ && setns(home_, CLONE_NEWNET) != 0) {
      // Continuing in the wrong namespace would configure the wrong devices.
      std::perror("linkem: cannot return to the original network namespace");
      std::abort();
    }
    if (home_ >= 0) close(home_);
  }
  const Status& status() const { return status_; }

 private:
  int home_ = -1;
  bool entered_ = false;
  Status status_;
};

}  // namespace

Status RunCommand(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, args[0], nullptr, &attr, args.data(), environ);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return Internal("cannot run " + argv[0] + ": " + std::strerror(rc));
  int wstatus = 0;
  while (waitpid(pid, &wstatus, 0) < 0) {
    if (errno != EINTR) return Internal(Errno("waitpid " + argv[0]));
  }
  if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) return Status::Ok();
  return Internal("'" + Join(argv) + "' failed with " +
                  (WIFEXITED(wstatus) ? "exit status " + std::to_string(WEXITSTATUS(wstatus))
                                      : "signal " + std::to_string(WTERMSIG(wstatus))));
}

bool NamespaceExists(const std::string& name) {
  struct stat st;
  return stat(("/run/netns/" + name).c_str(), &st) == 0;
}

NetnsLink::NetnsLink(SideConfig a, SideConfig b, bool use_existing)
    : a_(std::move(a)), b_(std::move(b)), use_existing_(use_existing) {}

NetnsLink::~NetnsLink() {
  Status st = Teardown();
  if (!st.ok()) std::fprintf(stderr, "linkem: %s\n", st.ToString().c_str());
}

Status NetnsLink::Setup() {
  for (const SideConfig* side : {&a_, &b_}) {
    bool exists = NamespaceExists(side->ns);
    if (use_existing_) {
      if (!exists) return NotFound("network namespace '" + side->ns + "' does not exist");
      continue;
    }
    if (exists) {
      return AlreadyExists("network namespace '" + side->ns +
                           "' already exists (delete it with `ip netns del " + side->ns +
                           "`, or pass --use-existing-ns)");
    }
    DWCP_RETURN_IF_ERROR(RunCommand({"ip", "netns", "add", side->ns}));
    created_.push_back(side->ns);
  }
  DWCP_RETURN_IF_ERROR(SetupSide(a_, fd_a_));
  DWCP_RETURN_IF_ERROR(SetupSide(b_, fd_b_));
  return Status::Ok();
}

Status NetnsLink::SetupSide(const SideConfig& side, int& fd) {
  {
    // A TUN device lives in the namespace of the task that opened /dev/net/tun.
    NetnsScope scope(side.ns);
    DWCP_RETURN_IF_ERROR(scope.status());
    fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return Internal(Errno("open /dev/net/tun"));
    struct ifreq ifr;
    std::memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    std::strncpy(ifr.ifr_name, side.dev.c_str(), IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
      return Internal(Errno("TUNSETIFF " + side.dev + " in " + side.ns));
    }
  }
  const std::string& ns = side.ns;
  // No IPv6 link-local address, so no router solicitations or MLD reports in the stats.
  DWCP_RETURN_IF_ERROR(
      RunCommand({"ip", "-n", ns, "link", "set", "dev", side.dev, "addrgenmode", "none"}));
  std::vector<std::string> addr = {"ip", "-n", ns, "addr", "add", side.addr, "dev", side.dev};
  if (side.addr.find(':') != std::string::npos) addr.push_back("nodad");
  DWCP_RETURN_IF_ERROR(RunCommand(addr));
  DWCP_RETURN_IF_ERROR(RunCommand(
      {"ip", "-n", ns, "link", "set", "dev", side.dev, "mtu", std::to_string(side.mtu), "up"}));
  DWCP_RETURN_IF_ERROR(RunCommand({"ip", "-n", ns, "link", "set", "dev", "lo", "up"}));
  return Status::Ok();
}

Status NetnsLink::Teardown() {
  for (int* fd : {&fd_a_, &fd_b_}) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
  }
  Status first;
  for (const auto& ns : created_) {
    Status st = RunCommand({"ip", "netns", "del", ns});
    if (!st.ok() && first.ok()) first = st;
  }
  created_.clear();
  return first;
}

}  // namespace dwcp::linkem
