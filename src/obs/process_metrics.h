// The process's own resource figures: the standard process_* metrics (read at scrape time)
// and the samples behind dwcp_v3_resource_utilization_percent.
#pragma once

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include <cstdint>
#include <vector>

namespace dwcp::obs {

struct ProcessSample {
  double cpu_seconds = 0;  // user + system
  uint64_t resident_bytes = 0;
  uint64_t virtual_bytes = 0;
  uint64_t open_fds = 0;
  uint64_t max_fds = 0;
  uint64_t threads = 0;
  double start_time_seconds = 0;  // since the Unix epoch
};

// Reads /proc/self; zeroes for what cannot be read.
ProcessSample ReadProcessSample();
// Total memory of the host (MemTotal), in bytes; 0 if unknown.
uint64_t HostMemoryBytes();

// process_cpu_seconds_total, process_resident_memory_bytes, process_virtual_memory_bytes,
// process_open_fds, process_max_fds, process_start_time_seconds, process_threads — as the
// Prometheus client libraries define them, computed on every Collect().
class ProcessCollector final : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override;
};

}  // namespace dwcp::obs
