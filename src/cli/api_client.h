// A small typed client for dwcpd's HTTP API (docs/api.md).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/status.h"

namespace httplib {
class Client;  // <httplib.h> stays in api_client.cc: it must see the CPPHTTPLIB_* defines
}  // namespace httplib

namespace dwcp::cli {

inline constexpr char kDefaultApiUrl[] = "http://127.0.0.1:8080";

struct ApiClientOptions {
  std::chrono::milliseconds connect_timeout{3000};
  std::chrono::milliseconds read_timeout{30000};
  // Sent as "Authorization: Bearer <token>" when non-empty.
  std::string bearer_token;
  // https only: the PEM CA that signed dwcpd's API certificate (default: the system's), and
  // a client certificate and key to present (dwcpd's api_client_ca).
  std::string ca_cert;
  std::string client_cert;
  std::string client_key;
};

// Talks JSON to one dwcpd. `base_url` is "http[s]://host[:port][/prefix]". Requests go to
// base_url + path. Not thread-safe: use one client per thread. Keeps the connection alive
// between calls, so polling does not reconnect.
class ApiClient {
 public:
  explicit ApiClient(std::string base_url, ApiClientOptions options = {});
  ~ApiClient();
  ApiClient(const ApiClient&) = delete;
  ApiClient& operator=(const ApiClient&) = delete;

  // GET base_url + path. Returns the parsed body of a 2xx answer ({} when empty).
  // Errors: InvalidArgument for a malformed base URL; Unavailable when dwcpd cannot be reached
  // (the message says how to start it); for a non-2xx answer, the code and message of the
  // JSON error body ({"error": ..., "code": ...}), else a code derived from the HTTP status.
  Result<nlohmann::json> Get(const std::string& path);
  // POST `body` as JSON to base_url + path; answers as Get does.
  Result<nlohmann::json> Post(const std::string& path, const nlohmann::json& body);
  // PUT `body` as JSON to base_url + path; answers as Get does.
  Result<nlohmann::json> Put(const std::string& path, const nlohmann::json& body);
  // DELETE base_url + path; answers as Get does.
  Result<nlohmann::json> Delete(const std::string& path);

  const std::string& base_url() const { return base_url_; }

 private:
  std::string base_url_;
  Status url_status_;  // non-OK when base_url_ does not parse
  std::string host_;
  int port_ = 0;
  std::string prefix_;  // path prefix without a trailing '/'
  std::unique_ptr<httplib::Client> client_;
};

// The StatusCode whose StatusCodeName is `name` ("not_found"); kOk when the name is unknown.
StatusCode StatusCodeFromName(std::string_view name);

// Maps a non-2xx HTTP answer to a Status: the JSON body's `code` and `error` when present,
// else a code from the HTTP status and a message from `error`, `reason` or the status line.
Status StatusFromHttpError(int http_status, const std::string& body, std::string_view what);

// Safe readers for JSON objects (never throw): the value at `key`, or the fallback when the
// key is missing or has another type. Numbers are converted between integer and float.
std::string JsonString(const nlohmann::json& j, std::string_view key);
int64_t JsonInt(const nlohmann::json& j, std::string_view key, int64_t fallback = 0);
uint64_t JsonUint(const nlohmann::json& j, std::string_view key, uint64_t fallback = 0);
double JsonDouble(const nlohmann::json& j, std::string_view key, double fallback = 0);
bool JsonBool(const nlohmann::json& j, std::string_view key, bool fallback = false);

// Pretty-prints JSON for people and pipes; invalid UTF-8 is replaced, never thrown on.
std::string DumpJson(const nlohmann::json& j);

}  // namespace dwcp::cli
