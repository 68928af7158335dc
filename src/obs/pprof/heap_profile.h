// tcmalloc's heap samples. tcmalloc records a stack for about one allocation in every
// TCMALLOC_SAMPLE_PARAMETER bytes, and reads that variable only when the process starts:
// EnableHeapSampling() (the first line of main) re-executes the process once with it set.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace dwcp::obs::pprof {

// The sampling period dwcpd starts with unless the environment already says otherwise.
inline constexpr int64_t kDefaultHeapSamplePeriod = 512 * 1024;

// The heap sampling period (bytes) of this process, read from the environment it was started
// with (/proc/self/environ); 0 when heap sampling is off.
int64_t HeapSamplePeriod();

// Call first in main(), before any thread starts. When TCMALLOC_SAMPLE_PARAMETER is absent
// from the environment, sets it to kDefaultHeapSamplePeriod and re-executes the binary (by
// the real path of /proc/self/exe, so the process keeps its name) with the same argv and
// environment: on success it does not return. An explicit value (including 0, which
// turns sampling off) is respected and nothing happens. Returns the exec error otherwise; the
// caller logs it and carries on without heap profiles.
Status EnableHeapSampling(char** argv);

// The sampled live heap in tcmalloc's text format ("heap profile: ... @ heap_v2/524288", then
// the MAPPED_LIBRARIES section), which google-pprof reads. FailedPrecondition when sampling is
// off or tcmalloc is not the allocator. Thread-safe.
Result<std::string> HeapProfile();

// The stacks at which the heap grew (tcmalloc's growth profile, google-pprof /pprof/growth).
// Works without sampling. FailedPrecondition when tcmalloc is not the allocator.
Result<std::string> HeapGrowthProfile();

// Human-readable heap report for /debug/pprof/heap?debug=1: the allocator's counters, the
// process's resident memory, tcmalloc's statistics text, and the sampled live allocations
// (scaled to estimates, largest first, with symbolized stacks). Never fails: what cannot be
// read is said in the text.
std::string HeapReport();

}  // namespace dwcp::obs::pprof
