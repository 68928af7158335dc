#include "api/guarded_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

namespace dwcp::api {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kStopCheckEvery = std::chrono::milliseconds(100);

// The connection served by this thread.
struct ConnectionState {
  bool close_after_response = false;
  bool request_timed_out = false;
};
thread_local ConnectionState t_connection;

// Runs connections on threads it starts on demand, up to `max_threads`; a connection never
// waits for a thread while fewer than `max_threads` run.
class ElasticTaskQueue : public httplib::TaskQueue {
 public:
  explicit ElasticTaskQueue(size_t max_threads) : max_threads_(std::max<size_t>(1, max_threads)) {}
  ~ElasticTaskQueue() override { shutdown(); }

  void enqueue(std::function<void()> fn) override {
    std::lock_guard lock(mu_);
    jobs_.push_back(std::move(fn));
    if (jobs_.size() <= idle_) {
      cv_.notify_one();
    } else if (threads_.size() < max_threads_) {
      threads_.emplace_back([this] { Work(); });
    }  // else: the next thread to finish takes it
  }

  void shutdown() override {
    std::vector<std::thread> threads;
    {
      std::lock_guard lock(mu_);
      shutdown_ = true;
      threads.swap(threads_);
    }
    cv_.notify_all();
    for (auto& t : threads) t.join();
  }

 private:
  void Work() {
    pthread_setname_np(pthread_self(), "dwcp-api");
    std::unique_lock lock(mu_);
    for (;;) {
      ++idle_;
      cv_.wait(lock, [this] { return shutdown_ || !jobs_.empty(); });
      --idle_;
      if (jobs_.empty()) return;  // shut down
      auto job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      job();
      lock.lock();
    }
  }

  const size_t max_threads_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> threads_;
  size_t idle_ = 0;
  bool shutdown_ = false;
};

// Waits until `fd` has `events`, `deadline` passes or `stopping()`; true when ready.
bool WaitFd(int fd, short events, Clock::time_point deadline,
            const std::function<bool()>& stopping) {
  for (;;) {
    const auto now = Clock::now();
    if (now >= deadline || stopping()) return false;
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - now);
    pollfd p{fd, events, 0};
    int n =
        poll(&p, 1,
             static_cast<int>(std::min(left, std::chrono::milliseconds(kStopCheckEvery)).count()));
    if (n > 0) return true;  // ready, or an error/hang-up the next I/O call reports
    if (n < 0 && errno != EINTR) return false;
  }
}

void AddressOf(const sockaddr_storage& addr, std::string* ip, int* port) {
  char text[INET6_ADDRSTRLEN] = {};
  if (addr.ss_family == AF_INET) {
    const auto& a = reinterpret_cast<const sockaddr_in&>(addr);
    inet_ntop(AF_INET, &a.sin_addr, text, sizeof text);
    *port = ntohs(a.sin_port);
  } else if (addr.ss_family == AF_INET6) {
    const auto& a = reinterpret_cast<const sockaddr_in6&>(addr);
    inet_ntop(AF_INET6, &a.sin6_addr, text, sizeof text);
    *port = ntohs(a.sin6_port);
  }
  *ip = text;
  // An IPv4 client of a dual-stack listener is the same client as over IPv4.
  if (ip->rfind("::ffff:", 0) == 0 && ip->find('.') != std::string::npos) ip->erase(0, 7);
}

// One connection's byte stream for httplib: buffered reads that fail once the request's
// deadline passes, writes that fail when the peer stops reading for write_timeout.
class ConnectionStream : public httplib::Stream {
 public:
  ConnectionStream(int fd, SSL* ssl, std::string ip, int port,
                   std::chrono::milliseconds write_timeout, std::function<bool()> stopping)
      : fd_(fd),
        ssl_(ssl),
        ip_(std::move(ip)),
        port_(port),
        write_timeout_(write_timeout),
        stopping_(std::move(stopping)) {}

  // Waits up to `idle` for the first byte of the next request; false when the connection
  // stays idle, closes or the server stops.
  bool WaitForRequest(std::chrono::milliseconds idle) {
    if (pos_ < len_ || (ssl_ != nullptr && SSL_pending(ssl_) > 0)) return true;
    return WaitFd(fd_, POLLIN, Clock::now() + idle, stopping_);
  }
  void StartRequest(Clock::time_point deadline) {
    deadline_ = deadline;
    timed_out_ = false;
  }
  // Whether the current request did not arrive whole before its deadline.
  bool timed_out() const { return timed_out_; }

  bool is_readable() const override {
    if (pos_ < len_ || (ssl_ != nullptr && SSL_pending(ssl_) > 0)) return true;
    return WaitFd(fd_, POLLIN, deadline_, stopping_);
  }

  bool is_writable() const override {
    return WaitFd(fd_, POLLOUT, Clock::now() + write_timeout_, stopping_);
  }

  ssize_t read(char* ptr, size_t size) override {
    if (pos_ == len_) {
      ssize_t n = Fill();
      if (n <= 0) return n;
    }
    size_t n = std::min(size, len_ - pos_);
    std::memcpy(ptr, buf_ + pos_, n);
    pos_ += n;
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    size_t done = 0;
    while (done < size) {
      short want = POLLOUT;
      if (ssl_ != nullptr) {
        ERR_clear_error();
        int n =
            SSL_write(ssl_, ptr + done, static_cast<int>(std::min<size_t>(size - done, 1 << 30)));
        if (n > 0) {
          done += static_cast<size_t>(n);
          continue;
        }
        int e = SSL_get_error(ssl_, n);
        if (e == SSL_ERROR_WANT_READ) {
          want = POLLIN;
        } else if (e != SSL_ERROR_WANT_WRITE) {
          return -1;
        }
      } else {
        ssize_t n = send(fd_, ptr + done, size - done, MSG_NOSIGNAL);
        if (n > 0) {
          done += static_cast<size_t>(n);
          continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return -1;
      }
      if (!WaitFd(fd_, want, Clock::now() + write_timeout_, stopping_)) return -1;
    }
    return static_cast<ssize_t>(size);
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = ip_;
    port = port_;
  }

  void get_local_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    ip.clear();
    port = 0;
    if (getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
      AddressOf(addr, &ip, &port);
  }

  socket_t socket() const override { return fd_; }

 private:
  // Reads what is available into the buffer, waiting until the request's deadline.
  ssize_t Fill() {
    for (;;) {
      short want = POLLIN;
      if (ssl_ != nullptr) {
        ERR_clear_error();
        int n = SSL_read(ssl_, buf_, sizeof buf_);
        if (n > 0) return Filled(n);
        int e = SSL_get_error(ssl_, n);
        if (e == SSL_ERROR_ZERO_RETURN) return 0;
        if (e == SSL_ERROR_WANT_WRITE) {
          want = POLLOUT;
        } else if (e != SSL_ERROR_WANT_READ) {
          return -1;
        }
      } else {
        ssize_t n = recv(fd_, buf_, sizeof buf_, 0);
        if (n > 0) return Filled(n);
        if (n == 0) return 0;
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return -1;
      }
      if (!WaitFd(fd_, want, deadline_, stopping_)) {  // too slow: give up
        timed_out_ = !stopping_();
        t_connection.request_timed_out = timed_out_;
        return -1;
      }
    }
  }
  ssize_t Filled(ssize_t n) {
    pos_ = 0;
    len_ = static_cast<size_t>(n);
    return n;
  }

  const int fd_;
  SSL* const ssl_;
  const std::string ip_;
  const int port_;
  const std::chrono::milliseconds write_timeout_;
  const std::function<bool()> stopping_;
  Clock::time_point deadline_ = Clock::now();
  bool timed_out_ = false;
  char buf_[16 * 1024];
  size_t pos_ = 0, len_ = 0;
};

std::string JsonResponse(int status, const char* reason, const std::string& message) {
  const char* code = status == 408 ? "invalid_argument" : "unavailable";
  std::string body = nlohmann::json{{"error", message}, {"code", code}}.dump();
  return "HTTP/1.1 " + std::to_string(status) + " " + reason +
         "\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\n"
         "Content-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

// Answers a refused plain-HTTP connection without waiting for anything, then closes it.
void RefuseAndClose(int fd, int status, const std::string& message) {
  std::string response =
      JsonResponse(status, status == 429 ? "Too Many Requests" : "Service Unavailable", message);
  (void)!send(fd, response.data(), response.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  shutdown(fd, SHUT_WR);
  char drain[4096];  // what the client already sent, so that close() does not reset
  (void)!recv(fd, drain, sizeof drain, MSG_DONTWAIT);
  close(fd);
}

// After answering a request whose body was not read: closing now would reset the connection
// (unread data) and the client could lose the answer. Stops sending, then reads and drops
// what the client still sends for a short, bounded while.
void LingerAndDrain(int fd) {
  shutdown(fd, SHUT_WR);
  const auto until = Clock::now() + std::chrono::milliseconds(500);
  char drain[16 * 1024];
  for (size_t total = 0; total < (4u << 20);) {
    if (!WaitFd(fd, POLLIN, until, [] { return false; })) return;
    ssize_t n = recv(fd, drain, sizeof drain, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return;
    if (n > 0) total += static_cast<size_t>(n);
  }
}

bool AcceptTls(SSL* ssl, int fd, Clock::time_point deadline,
               const std::function<bool()>& stopping) {
  for (;;) {
    ERR_clear_error();
    int r = SSL_accept(ssl);
    if (r == 1) return true;
    int e = SSL_get_error(ssl, r);
    short want = e == SSL_ERROR_WANT_READ ? POLLIN : e == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
    if (want == 0 || !WaitFd(fd, want, deadline, stopping)) return false;
  }
}

using BadCertificateCallback = std::function<void(const std::string& reason)>;

int VerifyClientCertificate(int preverify_ok, X509_STORE_CTX* store) {
  if (preverify_ok == 1) return 1;
  auto* ssl =
      static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  if (ssl != nullptr) {
    auto* on_bad = static_cast<BadCertificateCallback*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
    if (on_bad != nullptr && *on_bad) {
      (*on_bad)(X509_verify_cert_error_string(X509_STORE_CTX_get_error(store)));
    }
  }
  return 0;  // fails the handshake at the first error: one call per refused certificate
}

void FreeApiTlsContext(SSL_CTX* ctx) {
  if (ctx == nullptr) return;
  delete static_cast<BadCertificateCallback*>(SSL_CTX_get_app_data(ctx));
  SSL_CTX_free(ctx);
}

std::string OpenSslError() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown error";
  char text[256];
  ERR_error_string_n(e, text, sizeof text);
  return text;
}

}  // namespace

Result<SslCtxPtr> MakeApiTlsContext(const std::string& cert, const std::string& key,
                                    const std::string& client_ca,
                                    BadCertificateCallback on_bad_client_certificate) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()), FreeApiTlsContext);
  if (!ctx) return Status(Internal("cannot create a TLS context: " + OpenSslError()));
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), cert.c_str()) != 1) {
    return Status(InvalidArgument("api_tls_cert: cannot load " + cert + ": " + OpenSslError()));
  }
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), key.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx.get()) != 1) {
    return Status(InvalidArgument("api_tls_key: cannot load " + key +
                                  " or it does not match api_tls_cert: " + OpenSslError()));
  }
  const char kSessionContext[] = "dwcp-api";
  SSL_CTX_set_session_id_context(ctx.get(), reinterpret_cast<const unsigned char*>(kSessionContext),
                                 sizeof kSessionContext - 1);
  if (!client_ca.empty()) {
    if (SSL_CTX_load_verify_locations(ctx.get(), client_ca.c_str(), nullptr) != 1) {
      return Status(
          InvalidArgument("api_client_ca: cannot load " + client_ca + ": " + OpenSslError()));
    }
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(client_ca.c_str());
    if (names != nullptr) SSL_CTX_set_client_CA_list(ctx.get(), names);
    SSL_CTX_set_app_data(ctx.get(),
                         new BadCertificateCallback(std::move(on_bad_client_certificate)));
    // Asks for a certificate but admits a client without one (it may use the token).
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, VerifyClientCertificate);
  }
  return ctx;
}

GuardedServer::GuardedServer(GuardedServerOptions options, SslCtxPtr tls)
    : options_(std::move(options)),
      tls_(std::move(tls)),
      connections_(options_.max_connections, options_.max_connections_per_client) {
  // Admitted connections always find a thread; a few more answer the refused ones.
  const size_t threads = options_.max_connections + 8;
  new_task_queue = [threads] { return new ElasticTaskQueue(threads); };
}

GuardedServer::~GuardedServer() = default;

bool GuardedServer::VerifiedClientCertificate(const httplib::Request& req) {
  return req.ssl != nullptr && SSL_get0_peer_certificate(req.ssl) != nullptr &&
         SSL_get_verify_result(req.ssl) == X509_V_OK;
}

void GuardedServer::CloseAfterResponse() { t_connection.close_after_response = true; }

bool GuardedServer::RequestTimedOut() { return t_connection.request_timed_out; }

void GuardedServer::SetListenBacklog(int backlog) {
  if (svr_sock_ != INVALID_SOCKET) ::listen(svr_sock_, backlog);  // Linux: updates the backlog
}

bool GuardedServer::Stopping() const { return svr_sock_ == INVALID_SOCKET; }

bool GuardedServer::process_and_close_socket(socket_t sock) {
  sockaddr_storage peer{};
  socklen_t peer_len = sizeof peer;
  std::string ip;
  int port = 0;
  if (getpeername(sock, reinterpret_cast<sockaddr*>(&peer), &peer_len) == 0) {
    AddressOf(peer, &ip, &port);
  }
  const auto admission = connections_.Acquire(ip);
  if (admission != ConnectionLimiter::Admission::kAdmitted) {
    if (options_.on_refused) options_.on_refused("api_connections");
    const bool client_full = admission == ConnectionLimiter::Admission::kClientFull;
    if (tls_) {
      close(sock);  // no HTTP answer before a handshake; the client sees the connection close
    } else {
      RefuseAndClose(sock, client_full ? 429 : 503,
                     client_full ? "too many open API connections from " + ip + " (limit " +
                                       std::to_string(options_.max_connections_per_client) + ")"
                                 : "too many open API connections (limit " +
                                       std::to_string(options_.max_connections) + ")");
    }
    return false;
  }
  fcntl(sock, F_SETFL, fcntl(sock, F_GETFL) | O_NONBLOCK);
  int one = 1;
  setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  auto stopping = [this] { return Stopping(); };

  SSL* ssl = nullptr;
  bool ret = false;
  if (tls_) {
    ssl = SSL_new(tls_.get());
    const auto deadline = Clock::now() + options_.read_timeout;
    if (ssl == nullptr || SSL_set_fd(ssl, sock) != 1 || !AcceptTls(ssl, sock, deadline, stopping)) {
      if (Clock::now() >= deadline && options_.on_refused) options_.on_refused("api_read_timeout");
      if (ssl != nullptr) SSL_free(ssl);
      ssl = nullptr;
      ERR_clear_error();
      close(sock);
      connections_.Release(ip);
      return false;
    }
  }
  {
    ConnectionStream stream(sock, ssl, ip, port, options_.write_timeout, stopping);
    for (uint32_t n = 0; n < options_.max_requests_per_connection; ++n) {
      if (!stream.WaitForRequest(options_.idle_timeout)) break;
      stream.StartRequest(Clock::now() + options_.read_timeout);
      t_connection = {};
      bool closed = false;
      const bool last = n + 1 == options_.max_requests_per_connection || Stopping();
      ret = process_request(stream, last, closed, [ssl](httplib::Request& req) { req.ssl = ssl; });
      if (stream.timed_out()) {
        if (options_.on_refused) options_.on_refused("api_read_timeout");
        const std::string answer =
            JsonResponse(408, "Request Timeout",
                         "the request did not arrive whole within api_read_timeout (" +
                             std::to_string(options_.read_timeout.count()) + " ms)");
        if (!ret) stream.write(answer.data(), answer.size());  // else the error handler did
        break;
      }
      if (!ret || closed || last || t_connection.close_after_response) break;
    }
  }
  if (ssl != nullptr) {
    SSL_shutdown(ssl);  // one close_notify, no waiting for the peer's
    SSL_free(ssl);
    ERR_clear_error();
  }
  if (t_connection.close_after_response) LingerAndDrain(sock);
  shutdown(sock, SHUT_RDWR);
  close(sock);
  connections_.Release(ip);
  return ret;
}

}  // namespace dwcp::api
