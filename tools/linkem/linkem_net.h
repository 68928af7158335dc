// The system side of linkem: named network namespaces, TUN devices inside them, and the
// `ip` commands that configure them. Everything here needs root (CAP_SYS_ADMIN and
// CAP_NET_ADMIN).
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace dwcp::linkem {

// Runs `argv` (argv[0] looked up in PATH) with default signal dispositions and an empty
// signal mask, waits for it, and returns Internal with its exit status when it fails. The
// child's stdout and stderr are this process's.
Status RunCommand(const std::vector<std::string>& argv);

// True when a named namespace /run/netns/<name> exists.
bool NamespaceExists(const std::string& name);

// What one side of the link needs.
struct SideConfig {
  std::string ns;    // named network namespace
  std::string dev;   // TUN device name inside it (at most 15 characters)
  std::string addr;  // "10.250.0.1/24" or an IPv6 prefix
  int mtu = 1500;
};

// The two namespaces joined by TUN devices. Setup() creates the namespaces (unless told to
// use existing ones), a TUN device in each, and configures addresses, MTU and lo. The
// destructor (and Teardown()) closes the TUN fds, which removes the devices, and then
// deletes exactly the namespaces this object created, also after a failed Setup().
// Not thread-safe; the fds belong to this object.
class NetnsLink {
 public:
  NetnsLink(SideConfig a, SideConfig b, bool use_existing);
  ~NetnsLink();
  NetnsLink(const NetnsLink&) = delete;
  NetnsLink& operator=(const NetnsLink&) = delete;

  Status Setup();
  // Idempotent; returns the first error of deleting a namespace (it tries both).
  Status Teardown();

  // Non-blocking TUN fds (IFF_TUN | IFF_NO_PI: each read or write is one IP packet); -1
  // before Setup().
  int fd_a() const { return fd_a_; }
  int fd_b() const { return fd_b_; }

 private:
  Status SetupSide(const SideConfig& side, int& fd);

  SideConfig a_, b_;
  bool use_existing_;
  int fd_a_ = -1, fd_b_ = -1;
  std::vector<std::string> created_;  // namespaces to delete on teardown
};

}  // namespace dwcp::linkem
