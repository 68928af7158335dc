#include "obs/pprof/profiling_server.h"

#include <httplib.h>
#include <pthread.h>
#include <sys/socket.h>

#include <cctype>
#include <charconv>
#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "common/secret.h"
#include "obs/log.h"
#include "obs/pprof/goroutine_profile.h"
#include "obs/pprof/heap_profile.h"
#include "obs/pprof/symbolizer.h"

namespace dwcp::obs::pprof {
namespace {

constexpr char kComponent[] = "profiling";

int HttpStatusFor(StatusCode code) {
  switch (code) {
    case StatusCode::kInvalidArgument:
      return 400;
    case StatusCode::kNotFound:
      return 404;
    case StatusCode::kFailedPrecondition:
    case StatusCode::kAlreadyExists:
      return 409;
    case StatusCode::kAborted:
    case StatusCode::kUnavailable:
      return 503;
    case StatusCode::kUnimplemented:
      return 501;
    default:
      return 500;
  }
}

void SendErrorWithStatus(httplib::Response& res, int status, const Status& st) {
  res.status = status;
  nlohmann::json body = {{"error", st.message()}, {"code", StatusCodeName(st.code())}};
  res.set_content(body.dump() + "\n", "application/json");
}

void SendError(httplib::Response& res, const Status& st) {
  SendErrorWithStatus(res, HttpStatusFor(st.code()), st);
}

// The integer query parameter `name`; `fallback` when absent. InvalidArgument when it is not
// an integer in [min, max].
Result<int> IntParam(const httplib::Request& req, const char* name, int fallback, int min,
                     int max) {
  if (!req.has_param(name)) return fallback;
  std::string v = req.get_param_value(name);
  int out = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || end != v.data() + v.size() || out < min || out > max) {
    return Status(InvalidArgument(std::string("query parameter '") + name +
                                  "' must be an integer in " + std::to_string(min) + ".." +
                                  std::to_string(max) + ", got '" + v + "'"));
  }
  return out;
}

std::string HtmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

}  // namespace

Result<std::string> ResolveSymbols(const std::string& body) {
  Symbolizer symbolizer;
  std::string out;
  size_t i = 0;
  while (i < body.size()) {
    while (i < body.size() &&
           (body[i] == '+' || std::isspace(static_cast<unsigned char>(body[i])))) {
      ++i;
    }
    if (i >= body.size()) break;
    size_t start = i;
    while (i < body.size() && body[i] != '+' &&
           !std::isspace(static_cast<unsigned char>(body[i]))) {
      ++i;
    }
    std::string_view tok(body.data() + start, i - start);
    if (tok.size() > 2 && tok[0] == '0' && (tok[1] == 'x' || tok[1] == 'X')) tok.remove_prefix(2);
    uint64_t pc = 0;
    auto [end, ec] = std::from_chars(tok.data(), tok.data() + tok.size(), pc, 16);
    if (ec != std::errc() || end != tok.data() + tok.size()) {
      return Status(InvalidArgument("not a hex address: '" + body.substr(start, i - start) + "'"));
    }
    std::string name = symbolizer.Symbolize(static_cast<uintptr_t>(pc));
    if (name.empty()) continue;
    char addr[32];
    std::snprintf(addr, sizeof addr, "0x%016" PRIx64 "\t", pc);
    out += addr + name + "\n";
  }
  return out;
}

std::string ProcessCmdline() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!s.empty() && s.back() == '\0') s.pop_back();
  return RedactCmdline(std::move(s));
}

std::string RedactCmdline(std::string cmdline) {
  constexpr std::string_view kSecretFlags[] = {"--api-token"};
  std::vector<std::string> args;
  size_t start = 0;
  for (;;) {
    size_t nul = cmdline.find('\0', start);
    args.push_back(cmdline.substr(start, nul - start));
    if (nul == std::string::npos) break;
    start = nul + 1;
  }
  for (size_t i = 0; i < args.size(); ++i) {
    for (std::string_view flag : kSecretFlags) {
      if (args[i] == flag && i + 1 < args.size()) {
        args[++i] = "REDACTED";
      } else if (args[i].size() > flag.size() && args[i].rfind(flag, 0) == 0 &&
                 args[i][flag.size()] == '=') {
        args[i] = std::string(flag) + "=REDACTED";
      }
    }
  }
  std::string out;
  for (size_t i = 0; i < args.size(); ++i) {
    if (i > 0) out += '\0';
    out += args[i];
  }
  return out;
}

void ProfilingServer::RequireBearerToken(std::string token,
                                         std::function<void(std::string_view)> on_failure) {
  server_->set_pre_routing_handler([token = std::move(token), on_failure = std::move(on_failure)](
                                       const httplib::Request& req, httplib::Response& res) {
    const std::string authorization = req.get_header_value("Authorization");
    const std::string_view presented = BearerCredentials(authorization);
    if (SecretEquals(presented, token)) return httplib::Server::HandlerResponse::Unhandled;
    if (on_failure) on_failure(presented.empty() ? "missing_token" : "wrong_token");
    res.set_header("WWW-Authenticate", "Bearer realm=\"dwcp-pprof\"");
    SendErrorWithStatus(res, 401,
                        Status(StatusCode::kUnauthenticated,
                               "this profiling endpoint is exposed beyond loopback: send "
                               "'Authorization: Bearer TOKEN' with the node's API token"));
    return httplib::Server::HandlerResponse::Handled;
  });
}

ProfilingServer::ProfilingServer(TaskRegistry& tasks, CpuProfiler& cpu)
    : tasks_(tasks), cpu_(cpu), server_(std::make_unique<httplib::Server>()) {
  AddRoutes();
  server_->set_payload_max_length(4 << 20);  // symbol requests list every PC of a profile
  // httplib's default adds SO_REUSEPORT, which would let a second process share the port and
  // answer half of the requests with its own profiles; a taken port must fail Bind().
  server_->set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  server_->set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown error";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        SendError(res, Internal(what));
      });
  server_->set_logger([](const httplib::Request& req, const httplib::Response& res) {
    LogDebug(kComponent, "profiling request",
             {{"method", req.method},
              {"path", req.path},
              {"status", res.status},
              {"remote", req.remote_addr}});
  });
  server_->set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 404) {
      SendError(res, NotFound("no profiling endpoint " + req.path + "; see /debug/pprof/"));
    }
  });
}

ProfilingServer::~ProfilingServer() { Stop(); }

void ProfilingServer::AddRoutes() {
  auto bind = [this](void (ProfilingServer::*fn)(const httplib::Request&, httplib::Response&)) {
    return
        [this, fn](const httplib::Request& req, httplib::Response& res) { (this->*fn)(req, res); };
  };
  routes_ = {
      {"GET", "/profile",
       "CPU profile of the whole process; ?seconds=N (1..300, default 30). "
       "google-pprof --text http://HOST:PORT/debug/pprof/profile",
       bind(&ProfilingServer::CpuProfile)},
      {"GET", "/heap",
       "sampled live heap (tcmalloc); ?debug=1 human-readable report with allocator stats",
       bind(&ProfilingServer::Heap)},
      {"GET", "/growth", "stacks at which the heap grew (tcmalloc)",
       bind(&ProfilingServer::Growth)},
      {"GET", "/goroutine",
       "threads and coroutine tasks; no debug: sorted counts to diff, ?debug=1 every thread "
       "and task, ?debug=2 with stacks",
       bind(&ProfilingServer::Goroutine)},
      {"GET", "/symbol", "symbol lookup for google-pprof (\"num_symbols: 1\")",
       bind(&ProfilingServer::SymbolCount)},
      {"POST", "/symbol", "resolves \"0xaddr+0xaddr\" to function names",
       bind(&ProfilingServer::SymbolLookup)},
      {"GET", "/cmdline", "the process's arguments, NUL-separated",
       bind(&ProfilingServer::Cmdline)},
  };
  for (const char* prefix : {"/debug/pprof", "/pprof"}) {
    for (const Route& r : routes_) {
      std::string path = prefix + r.path;
      if (r.method == "GET") {
        server_->Get(path, r.handler);
      } else {
        server_->Post(path, r.handler);
      }
    }
  }
  auto index = bind(&ProfilingServer::Index);
  server_->Get("/debug/pprof/", index);
  server_->Get("/debug/pprof", index);
  server_->Get("/", index);
}

Status ProfilingServer::Bind(const std::string& host, uint16_t port) {
  if (port == 0) {
    int p = server_->bind_to_any_port(host);
    if (p < 0) return Unavailable("cannot bind the profiling endpoint on " + host);
    port_ = static_cast<uint16_t>(p);
  } else {
    if (!server_->bind_to_port(host, port)) {
      return Unavailable("cannot bind the profiling endpoint on " + host + ":" +
                         std::to_string(port) + " (port in use?)");
    }
    port_ = port;
  }
  return Status::Ok();
}

void ProfilingServer::Start() {
  thread_ = std::thread([this] {
    // The worker pool is created by this thread and inherits its name.
    pthread_setname_np(pthread_self(), "dwcp-pprof");
    server_->listen_after_bind();
  });
  // Ready when Start() returns: Stop() right after must find a running server.
  for (int i = 0; i < 1000 && !server_->is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void ProfilingServer::Stop() {
  stop_.request_stop();
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

void ProfilingServer::Index(const httplib::Request& req, httplib::Response& res) {
  std::ostringstream html;
  html << "<html><head><title>/debug/pprof/</title></head><body>\n"
       << "<h1>/debug/pprof/</h1>\n<p>dwcp profiles (gperftools; read them with "
       << "<code>google-pprof</code>). Live tasks: " << tasks_.Count() << ".</p>\n<table>\n";
  for (const Route& r : routes_) {
    std::string path = "/debug/pprof" + r.path;
    html << "<tr><td>" << r.method << "</td><td><a href=\"" << path
         << (r.path == "/goroutine" ? "?debug=1" : "") << "\">" << path << "</a></td><td>"
         << HtmlEscape(r.help) << "</td></tr>\n";
  }
  html << "</table>\n<p>Every /debug/pprof/X is also served as /pprof/X, the paths "
       << "google-pprof uses for a bare http://host:port. See docs/profiling.md.</p>\n"
       << "</body></html>\n";
  res.set_content(html.str(), "text/html; charset=utf-8");
}

void ProfilingServer::CpuProfile(const httplib::Request& req, httplib::Response& res) {
  auto seconds = IntParam(req, "seconds", kDefaultCpuProfileSeconds, kMinCpuProfileSeconds,
                          kMaxCpuProfileSeconds);
  if (!seconds.ok()) return SendError(res, seconds.status());
  std::string holder =
      "GET " + req.path + "?seconds=" + std::to_string(*seconds) + " from " + req.remote_addr;
  auto profile = cpu_.Profile(std::chrono::seconds(*seconds), holder, stop_.get_token());
  if (!profile.ok()) {
    if (profile.status().code() == StatusCode::kFailedPrecondition) {
      auto left = std::chrono::duration_cast<std::chrono::seconds>(cpu_.Remaining()).count() + 1;
      res.set_header("Retry-After", std::to_string(left));
    } else if (profile.status().code() == StatusCode::kInternal) {
      LogWarn(kComponent, "CPU profile failed", {{"error", profile.status().ToString()}});
    }
    return SendError(res, profile.status());
  }
  res.set_header("Content-Disposition", "attachment; filename=\"profile\"");
  res.set_content(std::move(profile).value(), "application/octet-stream");
}

void ProfilingServer::Heap(const httplib::Request& req, httplib::Response& res) {
  auto debug = IntParam(req, "debug", 0, 0, 2);
  if (!debug.ok()) return SendError(res, debug.status());
  if (*debug > 0) return res.set_content(HeapReport(), "text/plain; charset=utf-8");
  auto profile = HeapProfile();
  if (!profile.ok()) return SendError(res, profile.status());
  res.set_header("Content-Disposition", "attachment; filename=\"heap\"");
  res.set_content(std::move(profile).value(), "application/octet-stream");
}

void ProfilingServer::Growth(const httplib::Request& req, httplib::Response& res) {
  auto profile = HeapGrowthProfile();
  if (!profile.ok()) return SendError(res, profile.status());
  res.set_content(std::move(profile).value(), "application/octet-stream");
}

void ProfilingServer::Goroutine(const httplib::Request& req, httplib::Response& res) {
  auto debug = IntParam(req, "debug", 0, 0, 1000);
  if (!debug.ok()) return SendError(res, debug.status());
  res.set_content(GoroutineProfile(*debug, tasks_), "text/plain; charset=utf-8");
}

void ProfilingServer::SymbolCount(const httplib::Request&, httplib::Response& res) {
  // google-pprof only checks that the number is not 0 before it POSTs addresses.
  res.set_content("num_symbols: 1\n", "text/plain");
}

void ProfilingServer::SymbolLookup(const httplib::Request& req, httplib::Response& res) {
  auto symbols = ResolveSymbols(req.body);
  if (!symbols.ok()) return SendError(res, symbols.status());
  res.set_content(std::move(symbols).value(), "text/plain");
}

void ProfilingServer::Cmdline(const httplib::Request&, httplib::Response& res) {
  res.set_content(ProcessCmdline(), "text/plain");
}

}  // namespace dwcp::obs::pprof
