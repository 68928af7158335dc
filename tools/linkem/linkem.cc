// linkem: joins two network namespaces through TUN devices and forwards IP packets between
// them in user space with one-way delay, jitter, a rate limit and random loss per
// direction, so real TCP between the namespaces sees a WAN. See docs/linkem.md.
#include <arpa/inet.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/units.h"
#include "linkem_core.h"
#include "linkem_net.h"

namespace dwcp::linkem {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitError = 1;
constexpr int kExitUsage = 2;
constexpr int kReadBudget = 64;  // packets read from one TUN before deliveries are served again
constexpr size_t kReadBufferBytes = 65536;

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * kNanosPerSecond + ts.tv_nsec;
}

// Flag values as typed; Options() turns them into settings.
struct Flags {
  std::string ns_a = "dwcp-a", ns_b = "dwcp-b";
  bool use_existing = false;
  std::string addr_a = "10.250.0.1/24", addr_b = "10.250.0.2/24";
  std::string dev = "linkem0";
  int mtu = 1500;
  std::string delay = "0", jitter = "0", rate = "unlimited", loss = "0%", queue;
  // Per-direction overrides of the five above.
  std::optional<std::string> delay_ab, jitter_ab, rate_ab, loss_ab, queue_ab;
  std::optional<std::string> delay_ba, jitter_ba, rate_ba, loss_ba, queue_ba;
  bool reorder = false;
  uint64_t seed = 1;
  size_t max_packets = 65536;
  std::string duration = "10m";
  std::string ready_file;
  std::string link_file;
};

struct Options {
  SideConfig a, b;
  bool use_existing = false;
  LinkConfig ab, ba;
  uint64_t seed = 1;
  size_t max_packets = 0;
  int64_t duration_ns = 0;
  std::string ready_file;
  std::string link_file;
};

Status CheckName(const std::string& flag, const std::string& name, size_t max_len) {
  if (name.empty() || name.size() > max_len) {
    return InvalidArgument(flag + " must have 1 to " + std::to_string(max_len) + " characters");
  }
  auto alnum = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; };
  for (char c : name) {
    if (!alnum(name[0]) || (!alnum(c) && c != '-' && c != '_' && c != '.')) {
      return InvalidArgument(flag + " '" + name +
                             "' must start with a letter or digit and use only those and - _ .");
    }
  }
  return Status::Ok();
}

// "10.250.0.1/24" or "fd00::1/64": returns the address family.
Result<int> CheckPrefix(const std::string& flag, const std::string& text) {
  size_t slash = text.find('/');
  Status bad = InvalidArgument(flag + " '" + text + "' is not an address with a prefix length " +
                               "such as 10.250.0.1/24");
  if (slash == std::string::npos) return bad;
  std::string ip = text.substr(0, slash), len = text.substr(slash + 1);
  unsigned char buf[16];
  int family = inet_pton(AF_INET, ip.c_str(), buf) == 1    ? AF_INET
               : inet_pton(AF_INET6, ip.c_str(), buf) == 1 ? AF_INET6
                                                           : 0;
  if (family == 0 || len.empty() || len.size() > 3 ||
      !std::all_of(len.begin(), len.end(), ::isdigit)) {
    return bad;
  }
  int prefix = std::stoi(len);
  if (prefix > (family == AF_INET ? 32 : 128) || prefix == 0) return bad;
  return family;
}

// A flag value with the name the user typed it under, for error messages.
struct Setting {
  std::string value;
  std::string flag;
};

// Builds one direction of the link from its five settings.
Result<LinkConfig> Direction(const Setting& delay, const Setting& jitter, const Setting& rate,
                             const Setting& loss, const Setting& queue, bool reorder) {
  auto wrap = [](const Setting& s, const Status& st) {
    return Status(InvalidArgument(s.flag + ": " + st.message()));
  };
  LinkConfig c;
  c.allow_reorder = reorder;
  auto d = ParseDelayNanos(delay.value);
  if (!d.ok()) return wrap(delay, d.status());
  c.delay_ns = *d;
  auto j = ParseDelayNanos(jitter.value);
  if (!j.ok()) return wrap(jitter, j.status());
  c.jitter_ns = *j;
  if (rate.value != "unlimited" && rate.value != "0") {
    auto r = ParseRate(rate.value);
    if (!r.ok()) return wrap(rate, r.status());
    if (*r < 125) return wrap(rate, InvalidArgument("'" + rate.value + "' is below 1kbit"));
    c.rate_bytes_per_s = *r;
  }
  auto l = ParseLossPercent(loss.value);
  if (!l.ok()) return wrap(loss, l.status());
  c.loss = *l;
  if (!queue.value.empty()) {
    auto q = ParseQueueLimit(queue.value, c.rate_bytes_per_s);
    if (!q.ok()) return wrap(queue, q.status());
    c.queue_limit_bytes = *q;
  }
  return c;
}

Result<Options> Validate(const Flags& f) {
  Options o;
  DWCP_RETURN_IF_ERROR(CheckName("--ns-a", f.ns_a, 64));
  DWCP_RETURN_IF_ERROR(CheckName("--ns-b", f.ns_b, 64));
  if (f.ns_a == f.ns_b) return Status(InvalidArgument("--ns-a and --ns-b must differ"));
  DWCP_RETURN_IF_ERROR(CheckName("--dev", f.dev, 15));
  auto fa = CheckPrefix("--addr-a", f.addr_a);
  if (!fa.ok()) return fa.status();
  auto fb = CheckPrefix("--addr-b", f.addr_b);
  if (!fb.ok()) return fb.status();
  if (*fa != *fb) return Status(InvalidArgument("--addr-a and --addr-b must be the same family"));
  if (f.addr_a.substr(0, f.addr_a.find('/')) == f.addr_b.substr(0, f.addr_b.find('/'))) {
    return Status(InvalidArgument("--addr-a and --addr-b must differ"));
  }
  if (f.mtu < (*fa == AF_INET6 ? 1280 : 576) || f.mtu > 65535) {
    return Status(InvalidArgument("--mtu must be between 576 (1280 for IPv6) and 65535"));
  }
  o.a = {f.ns_a, f.dev, f.addr_a, f.mtu};
  o.b = {f.ns_b, f.dev, f.addr_b, f.mtu};
  o.use_existing = f.use_existing;
  auto pick = [](const std::optional<std::string>& v, const std::string& base,
                 const std::string& name, const char* suffix) {
    return v ? Setting{*v, "--" + name + suffix} : Setting{base, "--" + name};
  };
  auto ab = Direction(
      pick(f.delay_ab, f.delay, "delay", "-ab"), pick(f.jitter_ab, f.jitter, "jitter", "-ab"),
      pick(f.rate_ab, f.rate, "rate", "-ab"), pick(f.loss_ab, f.loss, "loss", "-ab"),
      pick(f.queue_ab, f.queue, "queue", "-ab"), f.reorder);
  if (!ab.ok()) return ab.status();
  auto ba = Direction(
      pick(f.delay_ba, f.delay, "delay", "-ba"), pick(f.jitter_ba, f.jitter, "jitter", "-ba"),
      pick(f.rate_ba, f.rate, "rate", "-ba"), pick(f.loss_ba, f.loss, "loss", "-ba"),
      pick(f.queue_ba, f.queue, "queue", "-ba"), f.reorder);
  if (!ba.ok()) return ba.status();
  o.ab = *ab;
  o.ba = *ba;
  o.seed = f.seed;
  if (f.max_packets < 1 || f.max_packets > 10'000'000) {
    return Status(InvalidArgument("--max-packets must be between 1 and 10000000"));
  }
  o.max_packets = f.max_packets;
  auto ms = ParseDurationMillis(f.duration);
  if (!ms.ok()) return Status(InvalidArgument("--duration: " + ms.status().message()));
  if (*ms < 1 || *ms > 24 * 3600 * 1000) {
    return Status(InvalidArgument("--duration must be between 1ms and 24h"));
  }
  o.duration_ns = *ms * kNanosPerMilli;
  o.ready_file = f.ready_file;
  o.link_file = f.link_file;
  return o;
}

// The link settings, the only flags a --link-file may hold.
void AddLinkOptions(CLI::App& app, Flags& f) {
  app.add_option("--delay", f.delay, "One-way delay, both directions");
  app.add_option("--jitter", f.jitter, "Delay varies uniformly by +- this much");
  app.add_option("--rate", f.rate, "Bottleneck rate of IP packets: 100Mbit, 1Gbit, 12MB/s");
  app.add_option("--loss", f.loss, "Independent random loss per packet, e.g. 0.1%");
  app.add_option("--queue", f.queue,
                 "Bottleneck queue limit (drop-tail); default 100ms at the rate, >= 24000 B");
  for (auto [name, ab, ba] : {std::tuple{"delay", &f.delay_ab, &f.delay_ba},
                              {"jitter", &f.jitter_ab, &f.jitter_ba},
                              {"rate", &f.rate_ab, &f.rate_ba},
                              {"loss", &f.loss_ab, &f.loss_ba},
                              {"queue", &f.queue_ab, &f.queue_ba}}) {
    app.add_option(std::string("--") + name + "-ab", *ab,
                   std::string("--") + name + " for A to B only");
    app.add_option(std::string("--") + name + "-ba", *ba,
                   std::string("--") + name + " for B to A only");
  }
  app.add_flag("--reorder", f.reorder,
               "Let jitter reorder packets (default: delivery keeps arrival order)");
}

// The options of the command line `base` with the link settings of `base.link_file` on top.
// InvalidArgument naming the file for an unreadable file, a flag that is not a link setting,
// or a bad value.
Result<Options> LoadLinkFile(const Flags& base) {
  std::ifstream in(base.link_file);
  if (!in) return Status(InvalidArgument("--link-file: cannot read " + base.link_file));
  std::stringstream text;
  text << in.rdbuf();
  std::vector<std::string> words = SplitLinkFileWords(text.str());
  std::reverse(words.begin(), words.end());  // CLI11 takes a vector in reverse order
  Flags f = base;
  CLI::App app("link settings", "linkem");
  AddLinkOptions(app, f);
  try {
    app.parse(words);
  } catch (const CLI::ParseError& e) {
    return Status(InvalidArgument("--link-file " + base.link_file + ": " + e.what()));
  }
  auto o = Validate(f);
  if (!o.ok()) {
    return Status(InvalidArgument("--link-file " + base.link_file + ": " + o.status().message()));
  }
  return o;
}

// One direction of forwarding: packets read from in_fd leave through out_fd.
struct Lane {
  Lane(int in, int out, const LinkConfig& config, uint64_t seed, size_t max_packets)
      : in_fd(in), out_fd(out), scheduler(config, seed), line(max_packets) {}
  int in_fd, out_fd;
  LinkScheduler scheduler;
  DelayLine line;
  DirectionStats stats;
};

void Send(Lane& lane, std::span<const uint8_t> packet) {
  ssize_t n;
  do {
    n = write(lane.out_fd, packet.data(), packet.size());
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(packet.size())) {
    ++lane.stats.tx_packets;
    lane.stats.tx_bytes += packet.size();
  } else {
    ++lane.stats.tx_errors;
  }
}

// Reads up to kReadBudget packets from the lane's source. Internal on a read error.
Status Drain(Lane& lane, std::vector<uint8_t>& buf) {
  for (int i = 0; i < kReadBudget; ++i) {
    ssize_t n = read(lane.in_fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return Status::Ok();
      return Internal(std::string("read from TUN: ") + std::strerror(errno));
    }
    if (n == 0) return Status::Ok();
    ++lane.stats.rx_packets;
    lane.stats.rx_bytes += n;
    int64_t now = NowNs();
    auto d = lane.scheduler.Admit(now, static_cast<uint32_t>(n), lane.stats);
    if (d.verdict != LinkScheduler::Verdict::kForward) continue;
    std::span<const uint8_t> packet(buf.data(), static_cast<size_t>(n));
    if (d.deliver_at_ns <= now && lane.line.empty()) {
      Send(lane, packet);  // nothing ahead of it and nothing to wait for
    } else if (!lane.line.Push(d.deliver_at_ns, packet)) {
      ++lane.stats.drop_overflow;
    }
  }
  return Status::Ok();
}

enum class Stop { kDuration, kSignal };

// Forwards until `end_ns` or a signal on `signal_fd`; a SIGHUP calls `on_hup` instead of
// stopping when one is given. Internal on an epoll or TUN error.
Result<Stop> Forward(Lane& ab, Lane& ba, int signal_fd, int64_t end_ns,
                     const std::function<void()>& on_hup) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) return Status(Internal(std::string("epoll_create1: ") + std::strerror(errno)));
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{ep};
  for (auto [fd, tag] : {std::pair{ab.in_fd, 0}, {ba.in_fd, 1}, {signal_fd, 2}}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = static_cast<uint32_t>(tag);
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
      return Status(Internal(std::string("epoll_ctl: ") + std::strerror(errno)));
    }
  }
  std::vector<uint8_t> buf(kReadBufferBytes);
  Lane* lanes[2] = {&ab, &ba};
  while (true) {
    int64_t now = NowNs();
    for (Lane* lane : lanes) {
      lane->line.PopDue(now, [lane](std::span<const uint8_t> p) { Send(*lane, p); });
    }
    if (now >= end_ns) return Stop::kDuration;
    int64_t next = std::min({end_ns, ab.line.NextDueNs(), ba.line.NextDueNs()});
    int64_t wait = std::max<int64_t>(next - now, 0);
    timespec timeout{static_cast<time_t>(wait / kNanosPerSecond),
                     static_cast<long>(wait % kNanosPerSecond)};
    epoll_event events[4];
    int n = epoll_pwait2(ep, events, 4, &timeout, nullptr);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status(Internal(std::string("epoll_pwait2: ") + std::strerror(errno)));
    }
    for (int i = 0; i < n; ++i) {
      uint32_t tag = events[i].data.u32;
      if (tag == 2) {
        signalfd_siginfo info;
        bool stop = false, hup = false;
        while (read(signal_fd, &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
          (info.ssi_signo == SIGHUP && on_hup ? hup : stop) = true;
        }
        if (stop) return Stop::kSignal;
        if (hup) on_hup();
        continue;
      }
      DWCP_RETURN_IF_ERROR(Drain(*lanes[tag], buf));
    }
  }
}

// Link-file reloads so far: applied, and refused (the settings stayed as they were).
struct Reloads {
  uint64_t ok = 0;
  uint64_t errors = 0;
};

Status WriteReadyFile(const std::string& path, const Options& o, const Reloads& reloads) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << "{\"pid\":" << getpid() << ",\"ns_a\":\"" << o.a.ns << "\",\"ns_b\":\"" << o.b.ns
        << "\",\"addr_a\":\"" << o.a.addr << "\",\"addr_b\":\"" << o.b.addr << "\",\"dev\":\""
        << o.a.dev << "\",\"reloads\":" << reloads.ok << ",\"reload_errors\":" << reloads.errors
        << "}\n";
    if (!out.flush()) return Internal("cannot write " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return Internal("cannot rename " + tmp + " to " + path + ": " + std::strerror(errno));
  }
  return Status::Ok();
}

const char* kDescription =
    "linkem: a user-space WAN link emulator. Creates two network namespaces, a TUN device in\n"
    "each, and forwards IP packets between them applying one-way delay, jitter, a bottleneck\n"
    "rate (serialization model with a drop-tail queue) and random loss per direction.\n"
    "The --delay/--jitter/--rate/--loss/--queue flags set both directions; the -ab (A to B)\n"
    "and -ba (B to A) variants override one direction. With --link-file, SIGHUP re-reads\n"
    "the link settings from that file while running. Stops after --duration or on\n"
    "SIGINT/SIGTERM, deletes the namespaces it created, and prints one JSON line of stats.\n"
    "Needs root. Exit status: 0 done, 1 setup or runtime error, 2 bad flags.";

const char* kFooter =
    "Examples:\n"
    "  linkem --ns-a dwcp-a --ns-b dwcp-b --delay 25ms --jitter 2ms --rate 1Gbit --loss 0.1% \\\n"
    "         --duration 600s --ready-file /tmp/linkem.ready &\n"
    "  ip netns exec dwcp-a ping -c 5 10.250.0.2      # RTT about 50 ms\n"
    "  linkem --delay 40ms --rate-ab 100Mbit --rate-ba 10Mbit --duration 2m   # asymmetric\n"
    "  echo '--delay 25ms' > /tmp/link; linkem --link-file /tmp/link & ...; kill -HUP $!\n"
    "Units: times in us/ms/s/m (bare number = ms); rates like 100Mbit, 1Gbit, 10Mbps, 12MB/s\n"
    "(bytes); loss needs a % sign; --queue takes a size (512KiB) or a time at the rate (50ms).";

int Main(int argc, char** argv) {
  // Signals are taken through a signalfd so that shutdown always runs the cleanup.
  sigset_t mask;
  sigemptyset(&mask);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) sigaddset(&mask, s);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  Flags f;
  CLI::App app(kDescription, "linkem");
  app.footer(kFooter);
  app.option_defaults()->always_capture_default();
  app.add_option("--ns-a", f.ns_a, "Namespace of side A");
  app.add_option("--ns-b", f.ns_b, "Namespace of side B");
  app.add_flag("--use-existing-ns", f.use_existing,
               "Use namespaces that already exist (and leave them in place) instead of "
               "creating and deleting them");
  app.add_option("--addr-a", f.addr_a, "Address/prefix of A's TUN device");
  app.add_option("--addr-b", f.addr_b, "Address/prefix of B's TUN device");
  app.add_option("--dev", f.dev, "TUN device name in both namespaces");
  app.add_option("--mtu", f.mtu, "MTU of both TUN devices");
  AddLinkOptions(app, f);
  app.add_option("--seed", f.seed, "Seed of the loss and jitter draws (B to A uses seed+1)");
  app.add_option("--max-packets", f.max_packets,
                 "Packets held in flight per direction before dropping (drop_overflow)");
  app.add_option("--duration", f.duration, "Stop after this long (1ms to 24h)");
  app.add_option("--ready-file", f.ready_file,
                 "Write a JSON line here once the link is up; removed on exit");
  app.add_option("--link-file", f.link_file,
                 "Link settings (--delay, --rate, ... as on this command line) read at start "
                 "and again on each SIGHUP, on top of the command line's");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "linkem: %s\nRun linkem --help for usage.\n", e.what());
    return kExitUsage;
  }
  auto options = f.link_file.empty() ? Validate(f) : LoadLinkFile(f);
  if (!options.ok()) {
    std::fprintf(stderr, "linkem: %s\nRun linkem --help for usage.\n",
                 options.status().message().c_str());
    return kExitUsage;
  }
  const Options& o = *options;
  if (geteuid() != 0) {
    std::fprintf(stderr, "linkem: must run as root (it creates namespaces and TUN devices)\n");
    return kExitError;
  }
  int signal_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  if (signal_fd < 0) {
    std::perror("linkem: signalfd");
    return kExitError;
  }
  prctl(PR_SET_TIMERSLACK, 1UL);  // wake up on time: a 1500 B packet at 1 Gbit/s is 12 us

  int64_t start_ns = NowNs();
  int exit_code = kExitOk;
  const char* stop = "error";
  Lane ab(-1, -1, o.ab, o.seed, o.max_packets), ba(-1, -1, o.ba, o.seed + 1, o.max_packets);
  Reloads reloads;
  // SIGHUP with --link-file: re-read it and apply it to both directions, or keep the
  // current settings if it is bad. The ready file's counts tell a waiting script.
  std::function<void()> on_hup;
  if (!o.link_file.empty()) {
    on_hup = [&] {
      auto next = LoadLinkFile(f);
      if (next.ok()) {
        ab.scheduler.Reconfigure(next->ab);
        ba.scheduler.Reconfigure(next->ba);
        ++reloads.ok;
        std::fprintf(stderr, "linkem: reloaded %s\nlinkem: A->B %s\nlinkem: B->A %s\n",
                     o.link_file.c_str(), DescribeConfig(next->ab).c_str(),
                     DescribeConfig(next->ba).c_str());
      } else {
        ++reloads.errors;
        std::fprintf(stderr, "linkem: %s; keeping the current settings\n",
                     next.status().message().c_str());
      }
      if (!o.ready_file.empty()) {
        Status st = WriteReadyFile(o.ready_file, o, reloads);
        if (!st.ok()) std::fprintf(stderr, "linkem: %s\n", st.ToString().c_str());
      }
    };
  }
  {
    NetnsLink link(o.a, o.b, o.use_existing);
    Status st = link.Setup();
    if (st.ok() && !o.ready_file.empty()) st = WriteReadyFile(o.ready_file, o, reloads);
    if (st.ok()) {
      std::fprintf(stderr, "linkem: %s (%s) <-> %s (%s) on %s, mtu %d, for %.3f s\n",
                   o.a.ns.c_str(), o.a.addr.c_str(), o.b.ns.c_str(), o.b.addr.c_str(),
                   o.a.dev.c_str(), o.a.mtu, o.duration_ns / 1e9);
      std::fprintf(stderr, "linkem: A->B %s\nlinkem: B->A %s\n", DescribeConfig(o.ab).c_str(),
                   DescribeConfig(o.ba).c_str());
      ab.in_fd = ba.out_fd = link.fd_a();
      ba.in_fd = ab.out_fd = link.fd_b();
      auto result = Forward(ab, ba, signal_fd, NowNs() + o.duration_ns, on_hup);
      if (result.ok()) {
        stop = *result == Stop::kDuration ? "duration" : "signal";
      } else {
        st = result.status();
      }
    }
    if (!st.ok()) {
      std::fprintf(stderr, "linkem: %s\n", st.ToString().c_str());
      exit_code = kExitError;
    }
    if (!o.ready_file.empty()) std::remove(o.ready_file.c_str());
    Status down = link.Teardown();
    if (!down.ok()) {
      std::fprintf(stderr, "linkem: cleanup: %s\n", down.ToString().c_str());
      exit_code = kExitError;
    }
  }
  ab.stats.in_flight_at_exit = ab.line.size();
  ba.stats.in_flight_at_exit = ba.line.size();
  std::printf(
      "{\"linkem\":{\"stop\":\"%s\",\"elapsed_s\":%.3f,\"ns_a\":\"%s\",\"ns_b\":\"%s\","
      "\"reloads\":%llu,\"reload_errors\":%llu,\"a_to_b\":%s,\"b_to_a\":%s}}\n",
      stop, (NowNs() - start_ns) / 1e9, o.a.ns.c_str(), o.b.ns.c_str(),
      static_cast<unsigned long long>(reloads.ok), static_cast<unsigned long long>(reloads.errors),
      ab.stats.ToJson().c_str(), ba.stats.ToJson().c_str());
  std::fflush(stdout);
  close(signal_fd);
  return exit_code;
}

}  // namespace
}  // namespace dwcp::linkem

int main(int argc, char** argv) { return dwcp::linkem::Main(argc, argv); }
