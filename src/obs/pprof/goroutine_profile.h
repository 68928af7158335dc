// The goroutine profile of a C++ process: its OS threads (from /proc/self/task) and its live
// coroutine tasks (TaskRegistry). There is no binary goroutine profile in C++, so every form
// is text; the default form is stable and sorted so that two samples compare with `diff`.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "obs/pprof/task_registry.h"

namespace dwcp::obs::pprof {

struct ThreadInfo {
  pid_t tid = 0;
  std::string name;        // comm, e.g. "dwcp-io-2"
  char state = '?';        // R running, S sleeping, D disk wait, Z zombie, T stopped, ...
  double cpu_seconds = 0;  // user + system
  std::string wchan;       // kernel function it sleeps in, when readable
};

// Every thread of this process, by tid.
std::vector<ThreadInfo> ListThreads();

// The user-space call stack of every listed thread, innermost frame first, keyed like
// `threads`. A thread is asked with a real-time signal (SIGRTMIN+4, handler installed on first
// use, SA_RESTART) and answers from its handler; one that does not answer within 100 ms (or
// blocks the signal) gets an empty stack. Serialized process-wide; thread-safe.
std::vector<std::vector<uintptr_t>> CaptureThreadStacks(const std::vector<ThreadInfo>& threads);

// debug=0: "dwcp goroutine profile: total N" then one tab-separated line per
//          (kind, name, state) — `count\tthread\tname` or `count\ttask\tname\tstate` — sorted;
//          no ids, ages or addresses, so `diff` of two samples shows only what changed.
// debug=1: the same summary, then every thread (tid, name, state, CPU time) and every task
//          (id, name, detail, state, age).
// debug=2: debug=1 plus each thread's symbolized stack and kernel wait channel.
// Values of debug above 2 act as 2.
std::string GoroutineProfile(int debug, const TaskRegistry& tasks);

}  // namespace dwcp::obs::pprof
