// The test guest (scripts/build-guest.sh) for tests that boot real QEMU guests: where it is,
// whether this machine can run it, and the counter its workload prints on the console.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>

namespace dwcp::testing {

struct TestGuest {
  std::string kernel, initrd;
  // The workload: 16 MiB dirtied at 4 MiB/s, a counter line every 100 ms; small enough for TCG.
  std::string append = "console=ttyS0 quiet dwcp.mem_mib=16 dwcp.dirty_mib_s=4 dwcp.tick_ms=100";
  std::string boot_marker = "dwcp-guest ready";
};

inline std::string GuestDir() {
  const char* env = std::getenv("DWCP_GUEST_DIR");
  return env != nullptr && *env != '\0' ? env : DWCP_GUEST_DIR;
}

inline TestGuest TheTestGuest() {
  return {GuestDir() + "/vmlinuz", GuestDir() + "/initramfs.cpio.gz"};
}

// Empty when the guest can boot here; else why not (the test skips with it).
inline std::string QemuSkipReason() {
  bool found = false;
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path != nullptr ? path : "/usr/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    found |= access((dir + "/qemu-system-x86_64").c_str(), X_OK) == 0;
  }
  if (!found) return "qemu-system-x86_64 is not installed (scripts/install-deps.sh)";
  const TestGuest g = TheTestGuest();
  for (const std::string& f : {g.kernel, g.initrd}) {
    if (access(f.c_str(), R_OK) != 0) {
      return "no test guest at " + GuestDir() + " (make guest, or set DWCP_GUEST_DIR)";
    }
  }
  return "";
}

// The value of `key` (e.g. "counter=") in the last complete "dwcp-guest counter=..." line of
// a console; -1 if there is none.
inline int64_t LastWorkloadValue(const std::string& console_path, const std::string& key) {
  std::ifstream in(console_path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t end = text.rfind('\n');
  while (end != std::string::npos && end > 0) {
    size_t start = text.rfind('\n', end - 1);
    start = start == std::string::npos ? 0 : start + 1;
    const std::string line = text.substr(start, end - start);
    size_t at = line.find(key);
    if (line.find("dwcp-guest counter=") != std::string::npos && at != std::string::npos) {
      return std::atoll(line.c_str() + at + key.size());
    }
    if (start == 0) break;
    end = start - 1;
  }
  return -1;
}

// The guest's tick counter: advances only while its vCPUs run.
inline int64_t LastCounter(const std::string& console_path) {
  return LastWorkloadValue(console_path, "counter=");
}
// Pages the guest found changed behind its back (0 unless memory was corrupted).
inline int64_t LastBadPages(const std::string& console_path) {
  return LastWorkloadValue(console_path, "bad_pages=");
}

// Waits until the console's counter reaches `at_least`; returns the last counter seen.
inline int64_t WaitForCounter(const std::string& console_path, int64_t at_least,
                              std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int64_t counter = -1;
  while (std::chrono::steady_clock::now() < deadline) {
    counter = LastCounter(console_path);
    if (counter >= at_least) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return counter;
}

}  // namespace dwcp::testing
