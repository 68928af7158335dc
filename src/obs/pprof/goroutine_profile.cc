#include "obs/pprof/goroutine_profile.h"

#include <dirent.h>
#ifdef DWCP_NO_GPERFTOOLS
#include <execinfo.h>
#else
#include <gperftools/stacktrace.h>
#endif
#include <signal.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <tuple>

#include "obs/pprof/symbolizer.h"

namespace dwcp::obs::pprof {
namespace {

constexpr int kMaxFrames = 64;
constexpr auto kStackTimeout = std::chrono::milliseconds(100);

pid_t GetTid() { return static_cast<pid_t>(syscall(SYS_gettid)); }

// The caller's return addresses, innermost first: gperftools' unwinder, or glibc's in a
// sanitizer build (no gperftools there; InstallHandler warms it up outside signal context).
// Always inlined, so the stack starts at the caller as GetStackTrace's did.
[[gnu::always_inline]] inline int Unwind(void** pcs, int max) {
#ifdef DWCP_NO_GPERFTOOLS
  return backtrace(pcs, max);
#else
  return GetStackTrace(pcs, max, 0);
#endif
}

std::string ReadSmallFile(const std::string& path) {
  std::ifstream in(path);
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!s.empty() && (s.back() == '\n' || s.back() == '\0')) s.pop_back();
  return s;
}

const char* StateName(char s) {
  switch (s) {
    case 'R':
      return "running";
    case 'S':
      return "sleeping";
    case 'D':
      return "disk-wait";
    case 'T':
      return "stopped";
    case 't':
      return "tracing-stop";
    case 'Z':
      return "zombie";
    case 'X':
      return "dead";
    case 'I':
      return "idle";
    default:
      return "unknown";
  }
}

// "text" with quotes and control characters escaped.
std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned char>(c));
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// Tabs and newlines would break the one-record-per-line summary.
std::string Flat(std::string s) {
  for (char& c : s) {
    if (c == '\t' || c == '\n' || c == '\r') c = ' ';
  }
  return s;
}

// --- stacks of other threads, taken from a signal handler ---------------------------------

struct StackSlot {
  // The tid asked; the handler claims the request by swapping it to -tid.
  std::atomic<pid_t> target{0};
  std::atomic<bool> done{false};
  void* pcs[kMaxFrames];
  int depth = 0;
  uintptr_t interrupted_pc = 0;
};
StackSlot g_slot;
std::mutex g_capture_mu;

int StackSignal() { return SIGRTMIN + 4; }

void OnStackSignal(int, siginfo_t*, void* context) {
  int saved_errno = errno;
  pid_t self = GetTid();
  pid_t expected = self;
  if (g_slot.target.compare_exchange_strong(expected, -self)) {
    g_slot.depth = Unwind(g_slot.pcs, kMaxFrames);
    const auto* uc = static_cast<const ucontext_t*>(context);
    g_slot.interrupted_pc = static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_RIP]);
    g_slot.done.store(true, std::memory_order_release);
  }
  errno = saved_errno;
}

// Installs the handler once; false when someone else owns the signal.
bool InstallHandler() {
  static bool installed = false;
  if (installed) return true;
  void* warm[1];
  (void)Unwind(warm, 1);  // the first unwind may load libgcc_s: not in the handler
  struct sigaction old {};
  if (sigaction(StackSignal(), nullptr, &old) != 0) return false;
  if ((old.sa_flags & SA_SIGINFO) == 0 && old.sa_handler != SIG_DFL) return false;
  if ((old.sa_flags & SA_SIGINFO) != 0 && old.sa_sigaction != OnStackSignal) return false;
  struct sigaction sa {};
  sa.sa_sigaction = OnStackSignal;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  if (sigaction(StackSignal(), &sa, nullptr) != 0) return false;
  installed = true;
  return true;
}

bool SignalBlocked(pid_t tid) {
  std::ifstream in("/proc/self/task/" + std::to_string(tid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("SigBlk:", 0) == 0) {
      unsigned long long mask = std::strtoull(line.c_str() + 7, nullptr, 16);
      return (mask >> (StackSignal() - 1)) & 1ULL;
    }
  }
  return false;
}

// Drops the handler's own frames: the stack starts at the interrupted instruction.
std::vector<uintptr_t> TrimToInterrupted(void* const* pcs, int depth, uintptr_t interrupted) {
  int first = -1;
  for (int i = 0; i < depth; ++i) {
    if (reinterpret_cast<uintptr_t>(pcs[i]) == interrupted) {
      first = i;
      break;
    }
  }
  std::vector<uintptr_t> out;
  if (first < 0) {
    out.push_back(interrupted);
    first = std::min(depth, 2);  // the handler and the signal trampoline
  }
  for (int i = first; i < depth; ++i) out.push_back(reinterpret_cast<uintptr_t>(pcs[i]));
  return out;
}

std::vector<uintptr_t> StackOf(pid_t tid) {
  if (tid == GetTid()) {
    void* pcs[kMaxFrames];
    int depth = Unwind(pcs, kMaxFrames);
    std::vector<uintptr_t> out;
    for (int i = 0; i < depth; ++i) out.push_back(reinterpret_cast<uintptr_t>(pcs[i]));
    return out;
  }
  if (SignalBlocked(tid)) return {};
  g_slot.done.store(false);
  g_slot.target.store(tid);
  if (syscall(SYS_tgkill, getpid(), tid, StackSignal()) != 0) {
    g_slot.target.store(0);
    return {};
  }
  auto deadline = std::chrono::steady_clock::now() + kStackTimeout;
  while (!g_slot.done.load(std::memory_order_acquire)) {
    if (std::chrono::steady_clock::now() > deadline) {
      pid_t expected = tid;
      if (g_slot.target.compare_exchange_strong(expected, 0)) return {};  // never answered
      // Claimed just now: the handler is writing; it finishes promptly.
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  g_slot.target.store(0);
  return TrimToInterrupted(g_slot.pcs, g_slot.depth, g_slot.interrupted_pc);
}

std::string Seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3fs", s);
  return buf;
}

}  // namespace

std::vector<ThreadInfo> ListThreads() {
  std::vector<ThreadInfo> out;
  DIR* dir = opendir("/proc/self/task");
  if (dir == nullptr) return out;
  static const double kTicks = static_cast<double>(sysconf(_SC_CLK_TCK));
  while (dirent* e = readdir(dir)) {
    char* end = nullptr;
    long tid = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0') continue;
    std::string base = "/proc/self/task/" + std::string(e->d_name);
    ThreadInfo t;
    t.tid = static_cast<pid_t>(tid);
    t.name = ReadSmallFile(base + "/comm");
    std::string stat = ReadSmallFile(base + "/stat");
    auto close_paren = stat.rfind(')');
    if (close_paren == std::string::npos) continue;  // exited meanwhile
    std::istringstream fields(stat.substr(close_paren + 1));
    std::vector<std::string> f;
    std::string tok;
    while (fields >> tok && f.size() < 13) f.push_back(tok);
    if (!f.empty()) t.state = f[0][0];
    if (f.size() >= 13) {
      t.cpu_seconds =
          (std::strtod(f[11].c_str(), nullptr) + std::strtod(f[12].c_str(), nullptr)) / kTicks;
    }
    t.wchan = ReadSmallFile(base + "/wchan");
    if (t.wchan == "0") t.wchan.clear();
    out.push_back(std::move(t));
  }
  closedir(dir);
  std::sort(out.begin(), out.end(),
            [](const ThreadInfo& a, const ThreadInfo& b) { return a.tid < b.tid; });
  return out;
}

std::vector<std::vector<uintptr_t>> CaptureThreadStacks(const std::vector<ThreadInfo>& threads) {
  std::lock_guard lock(g_capture_mu);
  std::vector<std::vector<uintptr_t>> out(threads.size());
  bool can_signal = InstallHandler();
  for (size_t i = 0; i < threads.size(); ++i) {
    if (!can_signal && threads[i].tid != GetTid()) continue;
    out[i] = StackOf(threads[i].tid);
  }
  return out;
}

std::string GoroutineProfile(int debug, const TaskRegistry& tasks) {
  std::vector<ThreadInfo> threads = ListThreads();
  std::vector<TaskInfo> live = tasks.Snapshot();

  // (kind, name, state) -> count; a std::map keeps the summary sorted and stable.
  std::map<std::tuple<std::string, std::string, std::string>, int> summary;
  for (const auto& t : threads) ++summary[{"thread", Flat(t.name), ""}];
  for (const auto& t : live) ++summary[{"task", Flat(t.name), Flat(t.state)}];

  std::ostringstream out;
  out << "dwcp goroutine profile: total " << threads.size() + live.size() << "\n";
  out << "# threads " << threads.size() << ", tasks " << live.size()
      << "; count<TAB>kind<TAB>name[<TAB>state]\n";
  for (const auto& [key, count] : summary) {
    const auto& [kind, name, state] = key;
    out << count << "\t" << kind << "\t" << name;
    if (kind == "task") out << "\t" << state;
    out << "\n";
  }
  if (debug <= 0) return out.str();

  std::vector<std::vector<uintptr_t>> stacks;
  if (debug >= 2) stacks = CaptureThreadStacks(threads);
  Symbolizer symbolizer;  // after the stacks: threads started meanwhile are mapped too

  out << "\nthreads: " << threads.size() << "\n";
  for (size_t i = 0; i < threads.size(); ++i) {
    const ThreadInfo& t = threads[i];
    out << "thread " << t.tid << " " << Quote(t.name) << " [" << t.state << " "
        << StateName(t.state) << "] cpu " << Seconds(t.cpu_seconds);
    if (debug >= 2 && !t.wchan.empty()) out << " wchan " << t.wchan;
    out << "\n";
    if (debug >= 2) {
      if (stacks[i].empty()) out << "    (stack unavailable)\n";
      for (uintptr_t pc : stacks[i]) {
        char addr[32];
        std::snprintf(addr, sizeof addr, "    0x%016" PRIxPTR " ", pc);
        out << addr << symbolizer.Describe(pc) << "\n";
      }
    }
  }
  out << "\ntasks: " << live.size() << "\n";
  for (const TaskInfo& t : live) {
    out << "task " << t.id << " " << t.name << " " << Quote(t.detail) << " state " << Quote(t.state)
        << " age " << Seconds(static_cast<double>(t.age.count()) / 1000.0) << "\n";
  }
  if (debug >= 2) {
    out << "\n# threads come from /proc/self/task; stacks are taken with signal " << StackSignal()
        << " and symbolized from the ELF symbol tables.\n";
  }
  return out.str();
}

}  // namespace dwcp::obs::pprof
