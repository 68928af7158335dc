#include "obs/process_metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

namespace dwcp::obs {
namespace {

prometheus::MetricFamily Family(const char* name, const char* help, prometheus::MetricType type,
                                double value) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  prometheus::ClientMetric m;
  if (type == prometheus::MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  f.metric.push_back(m);
  return f;
}

double BootTimeSeconds() {
  std::ifstream in("/proc/stat");
  std::string key;
  double value = 0;
  while (in >> key) {
    if (key == "btime") {
      in >> value;
      return value;
    }
    in.ignore(1 << 16, '\n');
  }
  return 0;
}

}  // namespace

ProcessSample ReadProcessSample() {
  ProcessSample s;
  std::ifstream stat("/proc/self/stat");
  std::string line;
  if (std::getline(stat, line)) {
    // Fields after the command name (which may contain spaces) start after the last ')'.
    auto close = line.rfind(')');
    std::istringstream rest(close == std::string::npos ? "" : line.substr(close + 2));
    std::vector<std::string> f;
    std::string tok;
    while (rest >> tok) f.push_back(tok);
    // f[0] is field 3 (state): utime=14, stime=15, num_threads=20, starttime=22, vsize=23,
    // rss=24 in proc(5) numbering.
    if (f.size() > 21) {
      const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
      const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
      s.cpu_seconds = (std::stod(f[11]) + std::stod(f[12])) / ticks;
      s.threads = std::stoull(f[17]);
      s.start_time_seconds = BootTimeSeconds() + std::stod(f[19]) / ticks;
      s.virtual_bytes = std::stoull(f[20]);
      s.resident_bytes = static_cast<uint64_t>(std::stod(f[21]) * page);
    }
  }
  if (DIR* d = opendir("/proc/self/fd")) {
    while (readdir(d) != nullptr) ++s.open_fds;
    closedir(d);
    s.open_fds = s.open_fds >= 3 ? s.open_fds - 3 : 0;  // ".", ".." and the DIR's own fd
  }
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0) s.max_fds = lim.rlim_cur;
  return s;
}

uint64_t HostMemoryBytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  while (in >> key >> kib) {
    if (key == "MemTotal:") return kib * 1024;
    in.ignore(1 << 16, '\n');
  }
  return 0;
}

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  using prometheus::MetricType;
  ProcessSample s = ReadProcessSample();
  return {
      Family("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
             MetricType::Counter, s.cpu_seconds),
      Family("process_resident_memory_bytes", "Resident memory size in bytes.", MetricType::Gauge,
             static_cast<double>(s.resident_bytes)),
      Family("process_virtual_memory_bytes", "Virtual memory size in bytes.", MetricType::Gauge,
             static_cast<double>(s.virtual_bytes)),
      Family("process_open_fds", "Number of open file descriptors.", MetricType::Gauge,
             static_cast<double>(s.open_fds)),
      Family("process_max_fds", "Maximum number of open file descriptors.", MetricType::Gauge,
             static_cast<double>(s.max_fds)),
      Family("process_start_time_seconds",
             "Start time of the process since unix epoch in seconds.", MetricType::Gauge,
             s.start_time_seconds),
      Family("process_threads", "Number of OS threads in the process.", MetricType::Gauge,
             static_cast<double>(s.threads)),
  };
}

}  // namespace dwcp::obs
