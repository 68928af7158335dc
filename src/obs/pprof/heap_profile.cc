#include "obs/pprof/heap_profile.h"

#ifndef DWCP_NO_GPERFTOOLS
#include <gperftools/malloc_extension.h>
#endif
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <vector>

#include "obs/pprof/cpu_profiler.h"
#include "obs/pprof/symbolizer.h"

namespace dwcp::obs::pprof {
namespace {

constexpr char kSampleVar[] = "TCMALLOC_SAMPLE_PARAMETER";

// The value of `name` in the environment the process started with; nullopt when absent.
std::optional<std::string> StartupEnv(const std::string& name) {
  std::ifstream in("/proc/self/environ", std::ios::binary);
  std::string entry;
  while (std::getline(in, entry, '\0')) {
    if (entry.size() > name.size() && entry.compare(0, name.size(), name) == 0 &&
        entry[name.size()] == '=') {
      return entry.substr(name.size() + 1);
    }
  }
  return std::nullopt;
}

#ifndef DWCP_NO_GPERFTOOLS
bool TcmallocPresent() {
  size_t v = 0;
  return MallocExtension::instance()->GetNumericProperty("generic.current_allocated_bytes", &v);
}

std::string Mib(double bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f MiB", bytes / (1024.0 * 1024.0));
  return buf;
}
#endif

// VmRSS and friends from /proc/self/status, as "VmRSS: 123 kB" lines.
std::string ProcessMemoryLines() {
  std::ifstream in("/proc/self/status");
  std::string line, out;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0 || line.rfind("VmHWM:", 0) == 0 ||
        line.rfind("VmSize:", 0) == 0 || line.rfind("RssAnon:", 0) == 0) {
      out += "# " + line + "\n";
    }
  }
  return out;
}

struct Allocation {
  double objects = 0;
  double bytes = 0;
  std::vector<uintptr_t> stack;
};

}  // namespace

int64_t HeapSamplePeriod() {
  auto v = StartupEnv(kSampleVar);
  if (!v) return 0;
  char* end = nullptr;
  long long n = std::strtoll(v->c_str(), &end, 10);
  return (end != v->c_str() && n > 0) ? n : 0;
}

Status EnableHeapSampling(char** argv) {
  if (std::getenv(kSampleVar) != nullptr) return Status::Ok();
  // Exec the binary by its real path, not /proc/self/exe: the process name (comm, what ps
  // and systemd show) comes from the executed file's name.
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) {
    return Unavailable(std::string("cannot read /proc/self/exe, heap profiles are off: ") +
                       std::strerror(errno));
  }
  exe[n] = '\0';
  setenv(kSampleVar, std::to_string(kDefaultHeapSamplePeriod).c_str(), 1);
  execv(exe, argv);
  int err = errno;
  unsetenv(kSampleVar);
  return Unavailable(std::string("cannot re-execute with ") + kSampleVar +
                     " set, heap profiles are off: " + std::strerror(err));
}

#ifdef DWCP_NO_GPERFTOOLS
// Sanitizer build: no tcmalloc (cpu_profiler.h, kProfilerAvailable).
Result<std::string> HeapProfile() { return Status(Unimplemented(kNoProfilerMessage)); }
Result<std::string> HeapGrowthProfile() { return Status(Unimplemented(kNoProfilerMessage)); }
std::string HeapReport() {
  return std::string("# ") + kNoProfilerMessage + ": no heap statistics\n" + ProcessMemoryLines();
}
#else
Result<std::string> HeapProfile() {
  if (!TcmallocPresent()) {
    return Status(FailedPrecondition("tcmalloc is not this process's allocator"));
  }
  if (HeapSamplePeriod() <= 0) {
    return Status(FailedPrecondition(std::string("heap sampling is off: start the process with ") +
                                     kSampleVar +
                                     "=524288 (dwcpd sets it itself unless it is set explicitly)"));
  }
  std::string out;
  MallocExtension::instance()->GetHeapSample(&out);
  return out;
}

Result<std::string> HeapGrowthProfile() {
  if (!TcmallocPresent()) {
    return Status(FailedPrecondition("tcmalloc is not this process's allocator"));
  }
  std::string out;
  MallocExtension::instance()->GetHeapGrowthStacks(&out);
  return out;
}

std::string HeapReport() {
  std::ostringstream out;
  if (!TcmallocPresent()) {
    out << "# tcmalloc is not this process's allocator: no heap statistics\n";
    out << ProcessMemoryLines();
    return out.str();
  }
  MallocExtension* ext = MallocExtension::instance();
  int64_t period = HeapSamplePeriod();
  out << "# dwcp heap report (tcmalloc)\n";
  if (period > 0) {
    out << "# heap sampling: one allocation per " << period << " bytes on average\n";
  } else {
    out << "# heap sampling: OFF (" << kSampleVar
        << " was not set when the process started; no allocation stacks)\n";
  }
  static const char* kProps[] = {"generic.current_allocated_bytes", "generic.heap_size",
                                 "tcmalloc.pageheap_free_bytes", "tcmalloc.pageheap_unmapped_bytes",
                                 "tcmalloc.current_total_thread_cache_bytes"};
  for (const char* p : kProps) {
    size_t v = 0;
    if (ext->GetNumericProperty(p, &v)) out << "# " << p << " = " << v << " (" << Mib(v) << ")\n";
  }
  out << ProcessMemoryLines() << "\n";

  std::string stats(64 * 1024, '\0');
  ext->GetStats(stats.data(), static_cast<int>(stats.size()));
  stats.resize(std::strlen(stats.c_str()));
  out << stats << "\n";

  if (period <= 0) return out.str();
  std::string sample;
  ext->GetHeapSample(&sample);
  std::istringstream lines(sample);
  std::string line;
  std::map<std::string, Allocation> by_stack;
  while (std::getline(lines, line)) {
    if (line.rfind("MAPPED_LIBRARIES", 0) == 0) break;
    auto at = line.find(" @ ");
    unsigned long long count = 0, bytes = 0;
    if (at == std::string::npos || line.rfind("heap profile:", 0) == 0 ||
        std::sscanf(line.c_str(), " %llu: %llu", &count, &bytes) != 2 || count == 0) {
      continue;
    }
    // heap_v2 samples are unbiased by 1 / (1 - exp(-mean_size / period)).
    double mean = static_cast<double>(bytes) / static_cast<double>(count);
    double scale = 1.0 / (1.0 - std::exp(-mean / static_cast<double>(period)));
    std::string key = line.substr(at + 3);
    Allocation& a = by_stack[key];
    a.objects += static_cast<double>(count) * scale;
    a.bytes += static_cast<double>(bytes) * scale;
    if (a.stack.empty()) {
      std::istringstream addrs(key);
      std::string addr;
      while (addrs >> addr) a.stack.push_back(std::strtoull(addr.c_str(), nullptr, 16));
    }
  }
  std::vector<const Allocation*> sorted;
  double total = 0;
  for (const auto& [k, a] : by_stack) {
    sorted.push_back(&a);
    total += a.bytes;
  }
  std::sort(sorted.begin(), sorted.end(),
            [](const Allocation* a, const Allocation* b) { return a->bytes > b->bytes; });
  out << "# sampled live allocations (estimates): " << Mib(total) << " in " << sorted.size()
      << " stacks, largest first\n";
  Symbolizer symbolizer;
  constexpr size_t kMaxStacks = 200;
  for (size_t i = 0; i < sorted.size() && i < kMaxStacks; ++i) {
    const Allocation& a = *sorted[i];
    char head[128];
    std::snprintf(head, sizeof head, "%.0f: %.0f [%s]", a.objects, a.bytes, Mib(a.bytes).c_str());
    out << head << "\n";
    for (uintptr_t pc : a.stack) {
      char frame[32];
      std::snprintf(frame, sizeof frame, "#\t0x%" PRIxPTR "\t", pc);
      out << frame << symbolizer.Describe(pc) << "\n";
    }
  }
  if (sorted.size() > kMaxStacks) out << "# ... " << sorted.size() - kMaxStacks << " more\n";
  return out.str();
}

#endif  // DWCP_NO_GPERFTOOLS

}  // namespace dwcp::obs::pprof
