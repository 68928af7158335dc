#include "cli/api_client.h"

#include <fcntl.h>
#include <httplib.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

namespace dwcp::cli {
namespace {

using nlohmann::json;

constexpr char kStartHint[] = "is it running? start a local cluster with `dwcp demo`";

// Splits "http://host:port/prefix". Fails on other schemes, a missing host or a bad port.
Status ParseBaseUrl(const std::string& url, std::string* scheme, std::string* host, int* port,
                    std::string* prefix) {
  size_t sep = url.find("://");
  if (sep == std::string::npos) {
    return InvalidArgument("API URL '" + url + "' must start with http:// or https://");
  }
  *scheme = url.substr(0, sep);
  if (*scheme != "http" && *scheme != "https") {
    return InvalidArgument("API URL '" + url + "' must start with http:// or https://");
  }
  std::string rest = url.substr(sep + 3);
  size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  *prefix = slash == std::string::npos ? "" : rest.substr(slash);
  while (!prefix->empty() && prefix->back() == '/') prefix->pop_back();
  *port = *scheme == "https" ? 443 : 80;
  if (!authority.empty() && authority.front() == '[') {  // [::1]:8080
    size_t close = authority.find(']');
    if (close == std::string::npos) return InvalidArgument("API URL '" + url + "' has a bad host");
    *host = authority.substr(1, close - 1);
    authority = authority.substr(close + 1);
    if (!authority.empty() && authority.front() != ':') {
      return InvalidArgument("API URL '" + url + "' has a bad host");
    }
  } else {
    size_t colon = authority.find(':');
    *host = authority.substr(0, colon);
    authority = colon == std::string::npos ? "" : authority.substr(colon);
  }
  if (host->empty()) return InvalidArgument("API URL '" + url + "' has no host");
  if (!authority.empty()) {  // ":8080"
    std::string digits = authority.substr(1);
    if (digits.empty() || digits.size() > 5 ||
        digits.find_first_not_of("0123456789") != std::string::npos) {
      return InvalidArgument("API URL '" + url + "' has a bad port");
    }
    *port = std::stoi(digits);
    if (*port < 1 || *port > 65535) return InvalidArgument("API URL '" + url + "' has a bad port");
  }
  return Status::Ok();
}

// Connects once to host:port to learn why httplib could not ("Connection refused").
// Returns an empty string when the connection succeeds now.
std::string ProbeConnectError(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* addrs = nullptr;
  int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &addrs);
  if (rc != 0) return std::string("cannot resolve host: ") + gai_strerror(rc);
  std::string reason = "could not connect";
  for (addrinfo* a = addrs; a != nullptr; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    int err = 0;
    if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      err = errno;
      if (err == EINPROGRESS) {
        pollfd p{fd, POLLOUT, 0};
        if (poll(&p, 1, 1000) == 1) {
          socklen_t len = sizeof err;
          getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        } else {
          err = ETIMEDOUT;
        }
      }
    }
    close(fd);
    if (err == 0) {
      reason.clear();
      break;
    }
    reason = std::strerror(err);
  }
  freeaddrinfo(addrs);
  return reason;
}

StatusCode CodeFromHttpStatus(int http_status) {
  switch (http_status) {
    case 400:
      return StatusCode::kInvalidArgument;
    case 401:
    case 403:
      return StatusCode::kUnauthenticated;
    case 404:
      return StatusCode::kNotFound;
    case 409:
      return StatusCode::kFailedPrecondition;
    case 501:
      return StatusCode::kUnimplemented;
    case 502:
    case 503:
      return StatusCode::kUnavailable;
    case 504:
      return StatusCode::kDeadlineExceeded;
    default:
      break;
  }
  return http_status >= 500 ? StatusCode::kInternal : StatusCode::kInvalidArgument;
}

const json* Find(const json& j, std::string_view key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  return it == j.end() ? nullptr : &*it;
}

// Why a request got no HTTP answer, as a Status with a hint for the operator.
Status TransportError(const std::string& base_url, const std::string& host, int port,
                      const char* method, const std::string& path, httplib::Error error) {
  std::string where = "cannot reach dwcpd at " + base_url;
  switch (error) {
    case httplib::Error::Connection: {
      std::string reason = ProbeConnectError(host, port);
      if (reason.empty()) reason = "could not establish a connection";
      return Unavailable(where + ": " + reason + " \u2014 " + kStartHint);
    }
    case httplib::Error::ConnectionTimeout:
      return Unavailable(where + ": connection timed out \u2014 " + kStartHint);
    case httplib::Error::SSLConnection:
    case httplib::Error::SSLLoadingCerts:
    case httplib::Error::SSLServerVerification:
      return Unavailable(where + ": TLS handshake failed (" + httplib::to_string(error) + ")");
    case httplib::Error::Read:
      return Unavailable("dwcpd at " + base_url + " did not answer " + method + " " + path +
                         " (connection closed or no answer within the read timeout)");
    case httplib::Error::Write:
      return Unavailable("lost the connection to dwcpd at " + base_url + " while sending " +
                         method + " " + path);
    default:
      break;
  }
  return Unavailable("request " + std::string(method) + " " + path + " to dwcpd at " + base_url +
                     " failed: " + httplib::to_string(error));
}

// Turns an httplib result into the parsed body or a Status.
Result<json> Finish(const std::string& base_url, const std::string& host, int port,
                    const char* method, const std::string& path, const httplib::Result& result) {
  if (!result) return TransportError(base_url, host, port, method, path, result.error());
  const httplib::Response& res = result.value();
  if (res.status < 200 || res.status > 299) {
    return StatusFromHttpError(res.status, res.body, std::string(method) + " " + path);
  }
  if (res.body.empty()) return json::object();
  json parsed = json::parse(res.body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    return Internal("dwcpd at " + base_url + " answered " + method + " " + path +
                    " with a body that is not JSON");
  }
  return parsed;
}

}  // namespace

ApiClient::ApiClient(std::string base_url, ApiClientOptions options)
    : base_url_(std::move(base_url)) {
  while (base_url_.size() > 1 && base_url_.back() == '/') base_url_.pop_back();
  std::string scheme;
  url_status_ = ParseBaseUrl(base_url_, &scheme, &host_, &port_, &prefix_);
  if (!url_status_.ok()) return;
  std::string host_for_url = host_.find(':') != std::string::npos ? "[" + host_ + "]" : host_;
  const std::string origin = scheme + "://" + host_for_url + ":" + std::to_string(port_);
  if (scheme == "https" && !options.client_cert.empty()) {
    client_ = std::make_unique<httplib::Client>(origin, options.client_cert, options.client_key);
  } else {
    client_ = std::make_unique<httplib::Client>(origin);
  }
  if (scheme == "https" && !options.ca_cert.empty()) client_->set_ca_cert_path(options.ca_cert);
  client_->set_connection_timeout(options.connect_timeout);
  client_->set_read_timeout(options.read_timeout);
  client_->set_write_timeout(options.read_timeout);
  client_->set_keep_alive(true);
  client_->set_default_headers({{"Accept", "application/json"}, {"User-Agent", "dwcp/3.0.0"}});
  if (!options.bearer_token.empty()) client_->set_bearer_token_auth(options.bearer_token);
}

ApiClient::~ApiClient() = default;

Result<json> ApiClient::Get(const std::string& path) {
  if (!url_status_.ok()) return url_status_;
  httplib::Result result = client_->Get(prefix_ + path);
  return Finish(base_url_, host_, port_, "GET", path, result);
}

Result<json> ApiClient::Post(const std::string& path, const json& body) {
  if (!url_status_.ok()) return url_status_;
  std::string payload = body.dump(-1, ' ', false, json::error_handler_t::replace);
  httplib::Result result = client_->Post(prefix_ + path, payload, "application/json");
  return Finish(base_url_, host_, port_, "POST", path, result);
}

Result<json> ApiClient::Put(const std::string& path, const json& body) {
  if (!url_status_.ok()) return url_status_;
  std::string payload = body.dump(-1, ' ', false, json::error_handler_t::replace);
  httplib::Result result = client_->Put(prefix_ + path, payload, "application/json");
  return Finish(base_url_, host_, port_, "PUT", path, result);
}

Result<json> ApiClient::Delete(const std::string& path) {
  if (!url_status_.ok()) return url_status_;
  httplib::Result result = client_->Delete(prefix_ + path);
  return Finish(base_url_, host_, port_, "DELETE", path, result);
}

StatusCode StatusCodeFromName(std::string_view name) {
  for (int i = static_cast<int>(StatusCode::kInvalidArgument);
       i <= static_cast<int>(StatusCode::kUnimplemented); ++i) {
    auto code = static_cast<StatusCode>(i);
    if (name == StatusCodeName(code)) return code;
  }
  return StatusCode::kOk;
}

Status StatusFromHttpError(int http_status, const std::string& body, std::string_view what) {
  json parsed = json::parse(body, nullptr, /*allow_exceptions=*/false);
  StatusCode code = StatusCodeFromName(JsonString(parsed, "code"));
  if (code == StatusCode::kOk) code = CodeFromHttpStatus(http_status);
  std::string message = JsonString(parsed, "error");
  if (message.empty()) message = JsonString(parsed, "reason");
  if (message.empty()) {
    message = "dwcpd answered " + std::string(what) + " with HTTP " + std::to_string(http_status);
    if (parsed.is_discarded() && !body.empty() && body.size() <= 200) message += ": " + body;
  }
  return Status(code, std::move(message));
}

std::string JsonString(const json& j, std::string_view key) {
  const json* v = Find(j, key);
  return v != nullptr && v->is_string() ? v->get<std::string>() : std::string();
}

int64_t JsonInt(const json& j, std::string_view key, int64_t fallback) {
  const json* v = Find(j, key);
  if (v == nullptr) return fallback;
  if (v->is_number_unsigned()) {
    uint64_t u = v->get<uint64_t>();
    return u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
               ? std::numeric_limits<int64_t>::max()
               : static_cast<int64_t>(u);
  }
  if (v->is_number_integer()) return v->get<int64_t>();
  if (v->is_number_float()) {
    double d = v->get<double>();
    if (!std::isfinite(d) || std::fabs(d) >= 9.2e18) return fallback;
    return std::llround(d);
  }
  return fallback;
}

uint64_t JsonUint(const json& j, std::string_view key, uint64_t fallback) {
  const json* v = Find(j, key);
  if (v == nullptr) return fallback;
  if (v->is_number_unsigned()) return v->get<uint64_t>();
  if (v->is_number_integer()) {
    int64_t i = v->get<int64_t>();
    return i < 0 ? 0 : static_cast<uint64_t>(i);
  }
  if (v->is_number_float()) {
    double d = v->get<double>();
    if (!std::isfinite(d) || d < 0 || d >= 1.8e19) return fallback;
    return static_cast<uint64_t>(std::round(d));
  }
  return fallback;
}

double JsonDouble(const json& j, std::string_view key, double fallback) {
  const json* v = Find(j, key);
  return v != nullptr && v->is_number() ? v->get<double>() : fallback;
}

bool JsonBool(const json& j, std::string_view key, bool fallback) {
  const json* v = Find(j, key);
  return v != nullptr && v->is_boolean() ? v->get<bool>() : fallback;
}

std::string DumpJson(const json& j) {
  return j.dump(2, ' ', false, json::error_handler_t::replace);
}

}  // namespace dwcp::cli
