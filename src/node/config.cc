#include "node/config.h"

#include <arpa/inet.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <set>
#include <tuple>

#include "acp/store_factory.h"
#include "amst/host_port.h"
#include "common/units.h"
#include "hde/codec_selector.h"
#include "hde/page_encoder.h"
#include "obs/anomaly.h"
#include "obs/log.h"
#include "obs/sla.h"

namespace dwcp::node {
namespace {

const char* kVersion = "3.0.0";

// Reads a scalar with a type-checked conversion, naming the key on failure.
template <typename T>
Status ReadScalar(const YAML::Node& node, const std::string& key, T* out) {
  // yaml-cpp reads an empty value ("api_token:") as the string "null"; never guess.
  if (node.IsNull()) return InvalidArgument("config key '" + key + "' has no value");
  try {
    *out = node.as<T>();
  } catch (const YAML::Exception& e) {
    return InvalidArgument("config key '" + key + "': " + e.msg);
  }
  return Status::Ok();
}

Status ReadDuration(const YAML::Node& node, const std::string& key, int64_t* ms) {
  std::string text;
  DWCP_RETURN_IF_ERROR(ReadScalar(node, key, &text));
  auto parsed = ParseDurationMillis(text);
  if (!parsed.ok())
    return InvalidArgument("config key '" + key + "': " + parsed.status().message());
  *ms = *parsed;
  return Status::Ok();
}

// The string fields of the API's access-control and limit keys, by config key; null for others.
std::string* ApiStringKey(const std::string& key, NodeConfig* c) {
  if (key == "api_token") return &c->api_token;
  if (key == "api_token_file") return &c->api_token_file;
  if (key == "api_tls_cert") return &c->api_tls_cert;
  if (key == "api_tls_key") return &c->api_tls_key;
  if (key == "api_client_ca") return &c->api_client_ca;
  if (key == "api_max_body") return &c->api_max_body;
  if (key == "api_rate") return &c->api_rate;
  if (key == "api_read_timeout") return &c->api_read_timeout;
  if (key == "api_write_timeout") return &c->api_write_timeout;
  if (key == "api_idle_timeout") return &c->api_idle_timeout;
  return nullptr;
}

uint32_t* ApiCountKey(const std::string& key, NodeConfig* c) {
  if (key == "api_burst") return &c->api_burst;
  if (key == "api_max_connections") return &c->api_max_connections;
  if (key == "api_max_connections_per_client") return &c->api_max_connections_per_client;
  return nullptr;
}

// Whether `path` names a readable regular file.
bool ReadableFile(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_regular_file(path, ec) && access(path.c_str(), R_OK) == 0;
}

// The API token from api_token, api_token_file or $DWCP_API_TOKEN; checks the TLS files, the
// limits and that an exposed pprof listener has a token (docs/security.md).
Status ValidateApiAccess(NodeConfig* c) {
  if (!c->api_token.empty() && !c->api_token_file.empty()) {
    return InvalidArgument(
        "api_token and api_token_file are both set: give the API token one way (prefer the "
        "file or $DWCP_API_TOKEN; a --api-token flag shows in `ps`)");
  }
  if (!c->api_token_file.empty()) {
    std::ifstream in(c->api_token_file, std::ios::binary);
    if (!in || !ReadableFile(c->api_token_file)) {
      return InvalidArgument("api_token_file: cannot read " + c->api_token_file);
    }
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto space = [](unsigned char ch) { return std::isspace(ch) != 0; };
    text.erase(text.begin(), std::find_if_not(text.begin(), text.end(), space));
    text.erase(std::find_if_not(text.rbegin(), text.rend(), space).base(), text.end());
    if (text.empty()) return InvalidArgument("api_token_file: " + c->api_token_file + " is empty");
    c->api_token = std::move(text);
  } else if (c->api_token.empty()) {
    const char* env = std::getenv("DWCP_API_TOKEN");
    if (env != nullptr) c->api_token = env;
  }
  for (char ch : c->api_token) {
    if (ch < 0x21 || ch > 0x7e) {
      return InvalidArgument(
          "the API token may contain only printable ASCII without spaces (it is sent as "
          "'Authorization: Bearer TOKEN')");
    }
  }
  if (c->api_tls_cert.empty() != c->api_tls_key.empty()) {
    return InvalidArgument("api_tls_cert and api_tls_key go together: set both or neither");
  }
  if (!c->api_client_ca.empty() && c->api_tls_cert.empty()) {
    return InvalidArgument(
        "api_client_ca needs TLS on the API: set api_tls_cert and api_tls_key too");
  }
  for (const auto& [key, path] :
       {std::pair<const char*, const std::string&>{"api_tls_cert", c->api_tls_cert},
        {"api_tls_key", c->api_tls_key},
        {"api_client_ca", c->api_client_ca}}) {
    if (!path.empty() && !ReadableFile(path)) {
      return InvalidArgument(std::string(key) + ": cannot read " + path);
    }
  }
  auto body = ParseBytes(c->api_max_body);
  if (!body.ok() || *body < 1024 || *body > (1ull << 30)) {
    return InvalidArgument("api_max_body must be a size from 1KiB to 1GiB like 1MiB, not '" +
                           c->api_max_body + "'");
  }
  c->api_max_body_bytes = *body;
  auto rate = ParseRequestRate(c->api_rate);
  if (!rate.ok()) return InvalidArgument("api_rate: " + rate.status().message());
  c->api_rate_per_second = *rate;
  if (c->api_rate_per_second > 0 && c->api_burst < 1) {
    return InvalidArgument("api_burst must be at least 1 when api_rate is limited");
  }
  for (auto [key, text, out] :
       {std::tuple{"api_read_timeout", &c->api_read_timeout, &c->api_read_timeout_ms},
        std::tuple{"api_write_timeout", &c->api_write_timeout, &c->api_write_timeout_ms},
        std::tuple{"api_idle_timeout", &c->api_idle_timeout, &c->api_idle_timeout_ms}}) {
    auto ms = ParseDurationMillis(*text);
    if (!ms.ok() || *ms < 100 || *ms > 3600 * 1000) {
      return InvalidArgument(std::string(key) +
                             " must be a duration from 100ms to 1h like 10s, not '" + *text + "'");
    }
    *out = *ms;
  }
  if (c->api_max_connections < 1 || c->api_max_connections > 10000) {
    return InvalidArgument("api_max_connections must be between 1 and 10000");
  }
  if (c->api_max_connections_per_client < 1 ||
      c->api_max_connections_per_client > c->api_max_connections) {
    return InvalidArgument(
        "api_max_connections_per_client must be between 1 and api_max_connections");
  }
  if (c->PprofExposed() && c->api_token.empty()) {
    return InvalidArgument(
        "pprof_listen " + c->pprof_listen +
        " is not a loopback address: exposing the profiles needs an API token, which every "
        "pprof request must then carry. Set api_token_file (or $DWCP_API_TOKEN), or keep "
        "pprof_listen on 127.0.0.1");
  }
  return Status::Ok();
}

}  // namespace

bool IsLoopbackHost(const std::string& host) {
  if (host == "localhost" || host == "::1" || host == "[::1]") return true;
  in_addr v4{};
  return inet_pton(AF_INET, host.c_str(), &v4) == 1 && (ntohl(v4.s_addr) >> 24) == 127;
}

bool NodeConfig::PprofExposed() const {
  std::string host;
  uint16_t port = 0;
  if (!amst::SplitHostPort(pprof_listen, &host, &port).ok()) return false;
  return !IsLoopbackHost(host);
}

Result<double> ParseRequestRate(std::string_view text) {
  if (text == "0" || text == "unlimited") return 0.0;
  double per = 1;
  std::string_view number = text;
  if (text.ends_with("/s")) {
    number.remove_suffix(2);
  } else if (text.ends_with("/m")) {
    number.remove_suffix(2);
    per = 60;
  }
  double n = 0;
  auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), n);
  if (number.empty() || ec != std::errc() || end != number.data() + number.size() || n <= 0 ||
      n > 1e6) {
    return Status(InvalidArgument("a request rate is like 200/s or 600/m (0: unlimited), not '" +
                                  std::string(text) + "'"));
  }
  return n / per;
}

acp::StoreOptions StoreOptionsOf(const NodeConfig& c) {
  acp::StoreOptions o;
  o.store = c.StorePath();
  o.ca_file = c.store_ca_file;
  o.cert_file = c.store_cert_file;
  o.key_file = c.store_key_file;
  o.username = c.store_username;
  o.password_file = c.store_password_file;
  o.timeout = std::chrono::milliseconds(c.store_timeout_ms);
  return o;
}

namespace {

// The keys of a parsed config file (`path` names it in errors) on top of `c`.
Status ApplyYamlConfig(const YAML::Node& root, const std::string& path, NodeConfig* c) {
  if (root.IsNull()) return Status::Ok();
  if (!root.IsMap()) return InvalidArgument("config file '" + path + "' must be a YAML mapping");
  // Keys must be plain strings, each given once.
  auto key_of = [&](const YAML::Node& k, const std::string& prefix, std::set<std::string>* seen,
                    std::string* out) -> Status {
    if (!k.IsScalar()) return InvalidArgument("config file '" + path + "' has a non-string key");
    *out = k.Scalar();
    if (!seen->insert(*out).second) {
      return InvalidArgument("config key '" + prefix + *out + "' is given twice in " + path);
    }
    return Status::Ok();
  };
  std::set<std::string> seen;
  for (auto it = root.begin(); it != root.end(); ++it) {
    std::string key;
    DWCP_RETURN_IF_ERROR(key_of(it->first, "", &seen, &key));
    const YAML::Node v = it->second;  // a handle; the iterator's value is a temporary
    if (key == "node_id") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->node_id));
    } else if (key == "region") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->region));
    } else if (key == "api_listen") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->api_listen));
    } else if (key == "data_listen") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->data_listen));
    } else if (key == "advertise_host") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->advertise_host));
    } else if (key == "data_advertise") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->data_advertise));
    } else if (key == "data_dir") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->data_dir));
    } else if (key == "store") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->store));
    } else if (key == "store_ca_file") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->store_ca_file));
    } else if (key == "store_cert_file") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->store_cert_file));
    } else if (key == "store_key_file") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->store_key_file));
    } else if (key == "store_username") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->store_username));
    } else if (key == "store_password_file") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->store_password_file));
    } else if (key == "store_timeout") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->store_timeout));
    } else if (key == "log_level") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->log_level));
    } else if (key == "log_file") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->log_file));
    } else if (key == "sla") {
      DWCP_RETURN_IF_ERROR(obs::ParseSlaConfig(v, &c->sla));
    } else if (key == "anomaly") {
      DWCP_RETURN_IF_ERROR(obs::ParseAnomalyConfig(v, &c->anomaly));
    } else if (key == "rollout") {
      DWCP_RETURN_IF_ERROR(rollout::ParseRolloutConfig(v, &c->rollout));
    } else if (key == "amst_mode") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->amst_mode));
    } else if (key == "transport") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->transport));
    } else if (key == "streams") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->streams));
    } else if (key == "min_streams") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->min_streams));
    } else if (key == "max_streams") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->max_streams));
    } else if (key == "bandwidth_limit") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->bandwidth_limit));
    } else if (key == "hde_codec") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->hde_codec));
    } else if (key == "hde_zstd_level") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->hde_zstd_level));
    } else if (key == "hde_delta_cache") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->hde_delta_cache));
    } else if (key == "hde_dedup_index") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->hde_dedup_index));
    } else if (key == "hde_dedup") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->hde_dedup));
    } else if (key == "hde_delta") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->hde_delta));
    } else if (key == "worker_threads") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->worker_threads));
    } else if (key == "tls") {
      if (!v.IsMap()) return InvalidArgument("config key 'tls' must be a mapping");
      std::set<std::string> seen_sub;
      for (auto t = v.begin(); t != v.end(); ++t) {
        std::string k;
        DWCP_RETURN_IF_ERROR(key_of(t->first, "tls.", &seen_sub, &k));
        if (k == "enabled") {
          DWCP_RETURN_IF_ERROR(ReadScalar(t->second, "tls.enabled", &c->tls));
        } else if (k == "ca") {
          DWCP_RETURN_IF_ERROR(ReadScalar(t->second, "tls.ca", &c->tls_ca));
        } else if (k == "cert") {
          DWCP_RETURN_IF_ERROR(ReadScalar(t->second, "tls.cert", &c->tls_cert));
        } else if (k == "key") {
          DWCP_RETURN_IF_ERROR(ReadScalar(t->second, "tls.key", &c->tls_key));
        } else if (k == "check_node_id") {
          DWCP_RETURN_IF_ERROR(ReadScalar(t->second, "tls.check_node_id", &c->tls_check_node_id));
        } else {
          return InvalidArgument("unknown config key 'tls." + k + "'");
        }
      }
    } else if (key == "pprof_listen") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->pprof_listen));
    } else if (std::string* api_string = ApiStringKey(key, c)) {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, api_string));
    } else if (uint32_t* api_count = ApiCountKey(key, c)) {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, api_count));
    } else if (key == "downtime_budget") {
      DWCP_RETURN_IF_ERROR(ReadDuration(v, key, &c->downtime_budget_ms));
    } else if (key == "node_lease") {
      DWCP_RETURN_IF_ERROR(ReadDuration(v, key, &c->node_lease_ms));
    } else if (key == "peer_timeout") {
      DWCP_RETURN_IF_ERROR(ReadDuration(v, key, &c->peer_timeout_ms));
    } else if (key == "round_commitments") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->round_commitments));
    } else if (key == "quarantine") {
      DWCP_RETURN_IF_ERROR(ReadDuration(v, key, &c->quarantine_ms));
    } else if (key == "max_rounds") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->max_rounds));
    } else if (key == "on_round_limit") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->on_round_limit));
    } else if (key == "io_threads") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->io_threads));
    } else if (key == "tracing") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->tracing));
    } else if (key == "otlp_endpoint") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->otlp_endpoint));
    } else if (key == "max_tasks") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->max_tasks));
    } else if (key == "max_frame_bytes") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->max_frame_bytes));
    } else if (key == "max_control_bytes") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->max_control_bytes));
    } else if (key == "max_migrations") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->max_migrations));
    } else if (key == "max_migrations_per_peer") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->max_migrations_per_peer));
    } else if (key == "max_connections") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->max_connections));
    } else if (key == "max_connections_per_peer") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->max_connections_per_peer));
    } else if (key == "handshake_timeout") {
      DWCP_RETURN_IF_ERROR(ReadDuration(v, key, &c->handshake_timeout_ms));
    } else if (key == "max_buffer_memory") {
      DWCP_RETURN_IF_ERROR(ReadScalar(v, key, &c->max_buffer_memory));
    } else if (key == "sampling") {
      if (!v.IsMap()) return InvalidArgument("config key 'sampling' must be a mapping");
      c->sampling.present = true;
      std::set<std::string> seen_sub;
      for (auto s = v.begin(); s != v.end(); ++s) {
        std::string k;
        DWCP_RETURN_IF_ERROR(key_of(s->first, "sampling.", &seen_sub, &k));
        if (k == "type") {
          DWCP_RETURN_IF_ERROR(ReadScalar(s->second, "sampling.type", &c->sampling.type));
        } else if (k == "param") {
          DWCP_RETURN_IF_ERROR(ReadScalar(s->second, "sampling.param", &c->sampling.param));
        } else if (k == "always_sample") {
          DWCP_RETURN_IF_ERROR(
              ReadScalar(s->second, "sampling.always_sample", &c->sampling.always_sample));
        } else {
          return InvalidArgument("unknown config key 'sampling." + k + "'");
        }
      }
    } else if (key == "profiling") {
      if (!v.IsMap()) return InvalidArgument("config key 'profiling' must be a mapping");
      std::set<std::string> seen_sub;
      for (auto s = v.begin(); s != v.end(); ++s) {
        std::string k;
        DWCP_RETURN_IF_ERROR(key_of(s->first, "profiling.", &seen_sub, &k));
        auto& p = c->profiling;
        if (k == "enabled") {
          DWCP_RETURN_IF_ERROR(ReadScalar(s->second, "profiling.enabled", &p.enabled));
        } else if (k == "interval") {
          DWCP_RETURN_IF_ERROR(ReadScalar(s->second, "profiling.interval", &p.interval));
        } else if (k == "cpu") {
          DWCP_RETURN_IF_ERROR(ReadScalar(s->second, "profiling.cpu", &p.cpu));
        } else if (k == "heap") {
          DWCP_RETURN_IF_ERROR(ReadScalar(s->second, "profiling.heap", &p.heap));
        } else if (k == "goroutine") {
          DWCP_RETURN_IF_ERROR(ReadScalar(s->second, "profiling.goroutine", &p.goroutine));
        } else if (k == "storage") {
          DWCP_RETURN_IF_ERROR(ReadScalar(s->second, "profiling.storage", &p.storage));
        } else if (k == "cpu_duration") {
          DWCP_RETURN_IF_ERROR(ReadScalar(s->second, "profiling.cpu_duration", &p.cpu_duration));
        } else if (k == "retention") {
          if (!s->second.IsMap()) return InvalidArgument("profiling.retention must be a mapping");
          std::set<std::string> seen_retention;
          for (auto r = s->second.begin(); r != s->second.end(); ++r) {
            std::string rk;
            DWCP_RETURN_IF_ERROR(key_of(r->first, "profiling.retention.", &seen_retention, &rk));
            if (rk == "max_age") {
              DWCP_RETURN_IF_ERROR(
                  ReadScalar(r->second, "profiling.retention.max_age", &p.max_age));
            } else if (rk == "keep_last") {
              DWCP_RETURN_IF_ERROR(
                  ReadScalar(r->second, "profiling.retention.keep_last", &p.keep_last));
            } else {
              return InvalidArgument("unknown config key 'profiling.retention." + rk + "'");
            }
          }
        } else {
          return InvalidArgument("unknown config key 'profiling." + k + "'");
        }
      }
    } else {
      return InvalidArgument("unknown config key '" + key + "' in " + path);
    }
  }
  return Status::Ok();
}

}  // namespace

Status LoadYamlConfig(const std::string& path, NodeConfig* c) {
  // Read here, not with YAML::LoadFile: yaml-cpp leaks its read buffer when the stream
  // throws (a directory), which LeakSanitizer reports.
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return InvalidArgument("cannot read config file '" + path + "': it is a directory");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in.is_open()) return InvalidArgument("cannot read config file '" + path + "'");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return InvalidArgument("cannot read config file '" + path + "'");
  return LoadYamlConfigText(text, path, c);
}

Status LoadYamlConfigText(const std::string& text, const std::string& name, NodeConfig* c) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return InvalidArgument("config file '" + name + "' is not valid YAML: " + e.what());
  }
  return ApplyYamlConfig(root, name, c);
}

Status ValidateNodeConfig(NodeConfig* c) {
  if (c->node_id.empty()) {
    char host[256] = {};
    if (gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') {
      return InvalidArgument("--node-id is required (cannot read the host name)");
    }
    c->node_id = host;
  }
  for (char ch : c->node_id) {
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_' && ch != '.') {
      return InvalidArgument("node id '" + c->node_id +
                             "' may use only letters, digits, '-', '_', '.'");
    }
  }
  if (c->node_id.size() > 64) return InvalidArgument("node id is longer than 64 characters");
  std::string api_host, data_host;
  uint16_t port = 0;
  Status st = amst::SplitHostPort(c->api_listen, &api_host, &port);
  if (!st.ok()) return InvalidArgument("--api-listen: " + st.message());
  st = amst::SplitHostPort(c->data_listen, &data_host, &port);
  if (!st.ok()) return InvalidArgument("--data-listen: " + st.message());
  if (c->advertise_host.empty()) {
    // Peers use the one address for both listeners: the first specific listen host (data,
    // then API), else loopback when both are wildcards.
    auto wildcard = [](const std::string& h) { return h == "0.0.0.0" || h == "::"; };
    c->advertise_host = !wildcard(data_host)  ? data_host
                        : !wildcard(api_host) ? api_host
                                              : "127.0.0.1";
  }
  {
    auto timeout = ParseDurationMillis(c->store_timeout);
    if (!timeout.ok() || *timeout <= 0) {
      return InvalidArgument("--store-timeout must be a positive duration like 2s, not '" +
                             c->store_timeout + "'");
    }
    c->store_timeout_ms = *timeout;
    acp::StoreOptions so = StoreOptionsOf(*c);
    DWCP_RETURN_IF_ERROR(acp::ValidateStoreOptions(so));
  }
  obs::LogLevel level;
  if (!obs::ParseLogLevel(c->log_level, &level)) {
    return InvalidArgument("--log-level must be debug, info, warn or error, not '" + c->log_level +
                           "'");
  }
  if (c->downtime_budget_ms <= 0) return InvalidArgument("--downtime-budget must be positive");
  if (c->node_lease_ms < 1000 || c->node_lease_ms > 600000) {
    return InvalidArgument("--node-lease must be between 1s and 10m");
  }
  if (c->peer_timeout_ms < 1000 || c->peer_timeout_ms > 600000) {
    return InvalidArgument("--peer-timeout must be between 1s and 10m");
  }
  if (c->round_commitments != "auto" && c->round_commitments != "on" &&
      c->round_commitments != "off") {
    return InvalidArgument("--round-commitments must be auto, on or off, not '" +
                           c->round_commitments + "'");
  }
  if (c->quarantine_ms < 1000 || c->quarantine_ms > 7 * 24 * 3600 * 1000LL) {
    return InvalidArgument("--quarantine must be between 1s and 168h");
  }
  if (!c->data_advertise.empty()) {
    std::string h;
    uint16_t p = 0;
    Status adv = amst::SplitHostPort(c->data_advertise, &h, &p);
    if (!adv.ok() || p == 0) {
      return InvalidArgument("--data-advertise must be HOST:PORT with a non-zero port, not '" +
                             c->data_advertise + "'");
    }
  }
  if (c->max_rounds < 1 || c->max_rounds > 1000) {
    return InvalidArgument("--max-rounds must be between 1 and 1000");
  }
  if (c->on_round_limit != "force" && c->on_round_limit != "abort") {
    return InvalidArgument("--on-round-limit must be 'force' or 'abort'");
  }
  if (c->tracing) {
    std::string otlp_host;
    uint16_t otlp_port = 0;
    Status otlp = amst::SplitHostPort(c->otlp_endpoint, &otlp_host, &otlp_port);
    if (!otlp.ok()) return InvalidArgument("--otlp-endpoint: " + otlp.message());
  }
  if (c->max_tasks < 1 || c->max_tasks > 1'000'000) {
    return InvalidArgument("--max-tasks must be between 1 and 1000000");
  }
  DWCP_RETURN_IF_ERROR(ValidateLimits(c));
  if (c->io_threads < 1 || c->io_threads > 64) {
    return InvalidArgument("--io-threads must be between 1 and 64");
  }
  if (c->sampling.type != "probabilistic" && c->sampling.type != "always" &&
      c->sampling.type != "never") {
    return InvalidArgument("sampling.type must be probabilistic, always or never");
  }
  if (c->sampling.param < 0 || c->sampling.param > 1) {
    return InvalidArgument("sampling.param must be between 0 and 1");
  }
  if (c->amst_mode != "auto" && c->amst_mode != "datacenter" && c->amst_mode != "hybrid" &&
      c->amst_mode != "internet") {
    return InvalidArgument("--amst-mode must be auto, datacenter, hybrid or internet");
  }
  if (c->transport == "rdma") {
    return InvalidArgument(
        "--transport rdma is not supported in this build (it has no RDMA verbs support); "
        "use --transport tcp");
  }
  if (c->transport != "tcp") return InvalidArgument("--transport must be tcp or rdma");
  if (c->min_streams < 1 || c->max_streams > 64 || c->min_streams > c->max_streams) {
    return InvalidArgument("--min-streams and --max-streams must satisfy 1 <= min <= max <= 64");
  }
  if (c->streams == "auto") {
    c->fixed_streams = 0;
  } else {
    unsigned n = 0;
    auto [ptr, ec] = std::from_chars(c->streams.data(), c->streams.data() + c->streams.size(), n);
    if (ec != std::errc() || ptr != c->streams.data() + c->streams.size() || n < 1 || n > 64) {
      return InvalidArgument("--streams must be 'auto' or a stream count from 1 to 64");
    }
    c->fixed_streams = n;
  }
  if (c->bandwidth_limit == "unlimited" || c->bandwidth_limit == "0") {
    c->bandwidth_limit_bps = 0;
  } else {
    auto rate = ParseRate(c->bandwidth_limit);
    if (!rate.ok()) return InvalidArgument("--bandwidth-limit: " + rate.status().message());
    c->bandwidth_limit_bps = *rate;
  }
  {
    auto policy = hde::ParseCodecPolicy(c->hde_codec);
    if (!policy.ok()) return InvalidArgument("--hde-codec: " + policy.status().message());
    auto delta = ParseBytes(c->hde_delta_cache);
    if (!delta.ok()) return InvalidArgument("--hde-delta-cache: " + delta.status().message());
    auto index = ParseBytes(c->hde_dedup_index);
    if (!index.ok()) return InvalidArgument("--hde-dedup-index: " + index.status().message());
    c->hde_delta_cache_bytes = *delta / 4096 * 4096;
    c->hde_dedup_index_bytes = *index;
    hde::EncoderConfig e;
    e.codec = *policy;
    e.zstd_level = c->hde_zstd_level;
    e.delta_cache_bytes = c->hde_delta_cache_bytes;
    e.dedup_index_bytes = c->hde_dedup_index_bytes;
    Status valid = e.Validate();
    if (!valid.ok()) return InvalidArgument("hde: " + valid.message());
  }
  if (c->worker_threads > 256) return InvalidArgument("--worker-threads must be at most 256");
  std::string pprof_host;
  st = amst::SplitHostPort(c->pprof_listen, &pprof_host, &port);
  if (!st.ok()) return InvalidArgument("--pprof-listen: " + st.message());
  DWCP_RETURN_IF_ERROR(ValidateApiAccess(c));
  for (const auto& [key, text] :
       {std::pair<std::string, std::string>{"profiling.cpu_duration", c->profiling.cpu_duration},
        {"profiling.retention.max_age", c->profiling.max_age}}) {
    auto ms = ParseDurationMillis(text);
    if (!ms.ok() || *ms <= 0) return InvalidArgument(key + " must be a positive duration");
  }
  if (c->profiling.enabled && c->profiling.storage.empty()) {
    return InvalidArgument(
        "profiling.storage is required when profiling.enabled (file:///dir/ or s3://bucket/)");
  }
  DWCP_RETURN_IF_ERROR(rollout::ValidateRolloutConfig(c->rollout));
  auto interval = ParseDurationMillis(c->profiling.interval);
  if (!interval.ok() || *interval <= 0) {
    return InvalidArgument("profiling.interval must be a positive duration like 60s");
  }
  return Status::Ok();
}

Status ValidateLimits(NodeConfig* c) {
  // The largest page batch a source sends (256 pages of 4 KiB with entry headers) must fit
  // in a frame with room to spare.
  constexpr uint64_t kMinFrame = 2ull << 20, kMaxFrame = 256ull << 20;
  auto frame = ParseBytes(c->max_frame_bytes);
  if (!frame.ok()) return InvalidArgument("--max-frame-bytes: " + frame.status().message());
  if (*frame < kMinFrame || *frame > kMaxFrame) {
    return InvalidArgument(
        "--max-frame-bytes must be between 2MiB and 256MiB (a page batch "
        "takes about 1.1MiB), not '" +
        c->max_frame_bytes + "'");
  }
  auto control = ParseBytes(c->max_control_bytes);
  if (!control.ok()) return InvalidArgument("--max-control-bytes: " + control.status().message());
  if (*control < 4096 || *control > *frame) {
    return InvalidArgument("--max-control-bytes must be between 4KiB and --max-frame-bytes, not '" +
                           c->max_control_bytes + "'");
  }
  if (c->max_migrations < 1 || c->max_migrations > c->max_tasks) {
    return InvalidArgument("--max-migrations must be between 1 and --max-tasks (" +
                           std::to_string(c->max_tasks) + ")");
  }
  // Above max_migrations the per-peer limit never binds: allowed, so that lowering
  // --max-migrations alone works.
  if (c->max_migrations_per_peer < 1 || c->max_migrations_per_peer > c->max_tasks) {
    return InvalidArgument("--max-migrations-per-peer must be between 1 and --max-tasks (" +
                           std::to_string(c->max_tasks) + ")");
  }
  if (c->max_connections < 1 || c->max_connections > 1'000'000) {
    return InvalidArgument("--max-connections must be between 1 and 1000000");
  }
  if (c->max_connections_per_peer < c->max_streams ||
      c->max_connections_per_peer > c->max_connections) {
    return InvalidArgument("--max-connections-per-peer must be at least --max-streams (" +
                           std::to_string(c->max_streams) +
                           ": one migration's data streams) and at most --max-connections (" +
                           std::to_string(c->max_connections) + ")");
  }
  if (c->handshake_timeout_ms < 100 || c->handshake_timeout_ms > 600000) {
    return InvalidArgument("--handshake-timeout must be between 100ms and 10m");
  }
  auto buffers = ParseBytes(c->max_buffer_memory);
  if (!buffers.ok()) return InvalidArgument("--max-buffer-memory: " + buffers.status().message());
  if (*buffers < 2 * *frame) {
    return InvalidArgument("--max-buffer-memory must be at least twice --max-frame-bytes (" +
                           c->max_frame_bytes + "), not '" + c->max_buffer_memory + "'");
  }
  c->max_frame_bytes_value = static_cast<uint32_t>(*frame);
  c->max_control_bytes_value = static_cast<uint32_t>(*control);
  c->max_buffer_memory_bytes = *buffers;
  return Status::Ok();
}

Result<NodeConfig> ParseNodeConfig(int argc, char** argv, bool* exit_now) {
  *exit_now = false;
  NodeConfig flags;
  std::string config_path, downtime, node_lease, peer_timeout, quarantine, handshake_timeout;
  CLI::App app{
      "dwcpd — the DWCP v3 node agent: runs VMs, sends and receives live migrations, "
      "serves the HTTP API (/api/v1/), /metrics and health checks."};
  app.set_version_flag("--version", std::string("dwcpd ") + kVersion);
  app.add_option("--config", config_path, "YAML config file; every key is also a flag, flags win");
  app.add_option("--node-id", flags.node_id, "Node id, unique in the cluster (default: host name)");
  app.add_option("--region", flags.region, "Region label of this node")->capture_default_str();
  app.add_option("--api-listen", flags.api_listen, "HTTP API, /metrics and health: HOST:PORT")
      ->capture_default_str();
  app.add_option("--data-listen", flags.data_listen, "DWCP data connections: HOST:PORT")
      ->capture_default_str();
  app.add_option("--advertise-host", flags.advertise_host,
                 "Address peers use to reach this node (default: the data, else the API "
                 "listen host; 127.0.0.1 when both are wildcards)");
  app.add_option("--data-advertise", flags.data_advertise,
                 "HOST:PORT peers dial for data connections, when it differs from the "
                 "listener (NAT, a proxy); default: the advertise host and the data port");
  app.add_option("--data-dir", flags.data_dir, "State directory")->capture_default_str();
  app.add_option("--store", flags.store,
                 "State store: a SQLite file shared by the nodes of one host (default: "
                 "DATA_DIR/state.db), or an etcd cluster etcd://HOST:PORT[,HOST:PORT...]");
  app.add_option("--store-ca-file", flags.store_ca_file,
                 "etcd store: PEM CA of the etcd members (turns on TLS)");
  app.add_option("--store-cert-file", flags.store_cert_file,
                 "etcd store: PEM client certificate (with --store-key-file)");
  app.add_option("--store-key-file", flags.store_key_file, "etcd store: PEM client key");
  app.add_option("--store-username", flags.store_username, "etcd store: user to authenticate as");
  app.add_option("--store-password-file", flags.store_password_file,
                 "etcd store: file whose first line is the user's password");
  app.add_option("--store-timeout", flags.store_timeout,
                 "etcd store: deadline of each store call, retries included")
      ->capture_default_str();
  app.add_option("--log-level", flags.log_level, "debug, info, warn or error")
      ->capture_default_str();
  app.add_option("--log-file", flags.log_file, "Write JSON logs here instead of stderr");
  app.add_option("--amst-mode", flags.amst_mode,
                 "Link mode: auto (detect from RTT, bandwidth, loss) or pin datacenter, hybrid, "
                 "internet")
      ->capture_default_str();
  app.add_option("--transport", flags.transport,
                 "Data transport: tcp (rdma is not supported in this build)")
      ->capture_default_str();
  app.add_option("--streams", flags.streams,
                 "Parallel data streams per migration: auto (adaptive) or a fixed count")
      ->capture_default_str();
  app.add_option("--min-streams", flags.min_streams, "Fewest streams the adaptive count uses")
      ->capture_default_str();
  app.add_option("--max-streams", flags.max_streams,
                 "Most streams per migration (also what this node accepts as destination)")
      ->capture_default_str();
  app.add_option("--bandwidth-limit", flags.bandwidth_limit,
                 "Cap on this node's outgoing migration traffic, e.g. 100MB/s or 1Gbit/s "
                 "(adjustable at run time: PUT /api/v1/nodes/ID/bandwidth)")
      ->capture_default_str();
  app.add_option("--hde-codec", flags.hde_codec,
                 "Batch compression: auto (chosen per batch for the link), zstd, lz4, none")
      ->capture_default_str();
  app.add_option("--hde-zstd-level", flags.hde_zstd_level,
                 "zstd level when pinned (0: chosen per batch)")
      ->capture_default_str();
  app.add_option("--hde-delta-cache", flags.hde_delta_cache,
                 "Previous page versions kept per outgoing migration as delta bases")
      ->capture_default_str();
  app.add_option("--hde-dedup-index", flags.hde_dedup_index,
                 "Content index size per outgoing migration (32 bytes per page)")
      ->capture_default_str();
  app.add_option("--hde-dedup", flags.hde_dedup, "Send duplicate pages as references")
      ->capture_default_str();
  app.add_option("--hde-delta", flags.hde_delta, "Send rewritten pages as deltas")
      ->capture_default_str();
  app.add_option("--worker-threads", flags.worker_threads,
                 "Threads that encode and decode pages (0: one per core)")
      ->capture_default_str();
  app.add_option("--tls", flags.tls,
                 "Mutual TLS 1.3 between nodes (true/false); needs --tls-ca/--tls-cert/--tls-key")
      ->capture_default_str();
  app.add_option("--tls-ca", flags.tls_ca, "PEM CA that signs every node's certificate");
  app.add_option("--tls-cert", flags.tls_cert, "PEM certificate of this node");
  app.add_option("--tls-key", flags.tls_key, "PEM private key of this node");
  app.add_option("--pprof-listen", flags.pprof_listen,
                 "Profiling endpoints /debug/pprof/: HOST:PORT (keep it on loopback)")
      ->capture_default_str();
  app.add_option("--api-token", flags.api_token,
                 "Require 'Authorization: Bearer TOKEN' on mutating API calls (a flag shows in "
                 "`ps`: prefer --api-token-file or $DWCP_API_TOKEN)");
  app.add_option("--api-token-file", flags.api_token_file,
                 "File whose content (surrounding whitespace trimmed) is the API token");
  app.add_option("--api-tls-cert", flags.api_tls_cert,
                 "PEM certificate (chain) of the HTTP API: serve https (with --api-tls-key)");
  app.add_option("--api-tls-key", flags.api_tls_key, "PEM private key of the HTTP API");
  app.add_option("--api-client-ca", flags.api_client_ca,
                 "PEM CA whose client certificates authorize mutating API calls like the token");
  app.add_option("--api-max-body", flags.api_max_body, "Largest API request body (413 beyond)")
      ->capture_default_str();
  app.add_option("--api-rate", flags.api_rate,
                 "API requests per client address, e.g. 200/s or 600/m; 0 = unlimited (429 "
                 "beyond; /metrics, /healthz, /readyz exempt)")
      ->capture_default_str();
  app.add_option("--api-burst", flags.api_burst,
                 "Requests a client may send at once above --api-rate")
      ->capture_default_str();
  app.add_option("--api-read-timeout", flags.api_read_timeout,
                 "A client must send a whole request (TLS handshake, headers, body) within this")
      ->capture_default_str();
  app.add_option("--api-write-timeout", flags.api_write_timeout,
                 "A response write that makes no progress for this long closes the connection")
      ->capture_default_str();
  app.add_option("--api-idle-timeout", flags.api_idle_timeout,
                 "An idle keep-alive API connection is closed after this")
      ->capture_default_str();
  app.add_option("--api-max-connections", flags.api_max_connections,
                 "Open API connections, all clients together (503 beyond)")
      ->capture_default_str();
  app.add_option("--api-max-connections-per-client", flags.api_max_connections_per_client,
                 "Open API connections of one client address (429 beyond)")
      ->capture_default_str();
  app.add_option("--downtime-budget", downtime,
                 "Switch over once the rest fits this downtime (default 300ms)");
  app.add_option("--node-lease", node_lease,
                 "A node that has not heartbeated for this long is down (default 10s)");
  app.add_option("--peer-timeout", peer_timeout,
                 "A migration peer silent for this long is gone (default 15s)");
  app.add_option("--round-commitments", flags.round_commitments,
                 "Ask sources for signed round commitments: auto (over internet-mode links), "
                 "on, off")
      ->capture_default_str();
  app.add_option("--quarantine", quarantine,
                 "How long a peer caught sending bad data or claims is refused (default 10m)");
  app.add_option("--max-rounds", flags.max_rounds, "Pre-copy round limit")->capture_default_str();
  app.add_option("--on-round-limit", flags.on_round_limit,
                 "At the round limit: 'force' switchover or 'abort'")
      ->capture_default_str();
  app.add_option("--io-threads", flags.io_threads, "Network threads")->capture_default_str();
  app.add_option("--tracing", flags.tracing, "Export traces over OTLP/gRPC (true/false)")
      ->capture_default_str();
  app.add_option("--otlp-endpoint", flags.otlp_endpoint,
                 "OpenTelemetry Collector for traces: HOST:PORT")
      ->capture_default_str();
  app.add_option("--rollout-initial-stage", flags.rollout.initial_stage,
                 "Stage a region without a rollout record starts at: v1 or a rollout.stages "
                 "name (default: the last stage, full)");
  app.add_option("--rollout-webhook-token-file", flags.rollout.webhook_token_file,
                 "File with the secret Alertmanager sends as bearer token to /api/v1/rollback");
  app.add_option("--max-tasks", flags.max_tasks,
                 "Coroutine task limit; new migrations are refused beyond it")
      ->capture_default_str();
  app.add_option("--max-frame-bytes", flags.max_frame_bytes,
                 "Largest data frame a peer may send; bigger ones close its connection")
      ->capture_default_str();
  app.add_option("--max-control-bytes", flags.max_control_bytes,
                 "Largest control message a peer may send")
      ->capture_default_str();
  app.add_option("--max-migrations", flags.max_migrations,
                 "Migrations running on this node at once (incoming + outgoing)")
      ->capture_default_str();
  app.add_option("--max-migrations-per-peer", flags.max_migrations_per_peer,
                 "Migrations between this node and one peer at once (both directions)")
      ->capture_default_str();
  app.add_option("--max-connections", flags.max_connections, "Open connections on the data port")
      ->capture_default_str();
  app.add_option("--max-connections-per-peer", flags.max_connections_per_peer,
                 "Open connections on the data port from one remote address")
      ->capture_default_str();
  app.add_option("--handshake-timeout", handshake_timeout,
                 "A data connection must finish TLS and its hello within this (default 10s)");
  app.add_option("--max-buffer-memory", flags.max_buffer_memory,
                 "Page batches in flight on the data plane, all migrations together")
      ->capture_default_str();
  app.add_option("--tls-check-node-id", flags.tls_check_node_id,
                 "A peer's certificate must name the node id it claims (true/false)")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    std::cout << app.help();
    *exit_now = true;
    return flags;
  } catch (const CLI::CallForVersion& e) {
    std::cout << e.what() << "\n";
    *exit_now = true;
    return flags;
  } catch (const CLI::ParseError& e) {
    return Status(InvalidArgument(e.what()));
  }

  NodeConfig config;
  if (!config_path.empty()) DWCP_RETURN_IF_ERROR(LoadYamlConfig(config_path, &config));
  auto given = [&](const char* name) { return app.count(name) > 0; };
  if (given("--node-id")) config.node_id = flags.node_id;
  if (given("--region")) config.region = flags.region;
  if (given("--api-listen")) config.api_listen = flags.api_listen;
  if (given("--data-listen")) config.data_listen = flags.data_listen;
  if (given("--advertise-host")) config.advertise_host = flags.advertise_host;
  if (given("--data-advertise")) config.data_advertise = flags.data_advertise;
  if (given("--round-commitments")) config.round_commitments = flags.round_commitments;
  if (given("--data-dir")) config.data_dir = flags.data_dir;
  if (given("--store")) config.store = flags.store;
  if (given("--store-ca-file")) config.store_ca_file = flags.store_ca_file;
  if (given("--store-cert-file")) config.store_cert_file = flags.store_cert_file;
  if (given("--store-key-file")) config.store_key_file = flags.store_key_file;
  if (given("--store-username")) config.store_username = flags.store_username;
  if (given("--store-password-file")) config.store_password_file = flags.store_password_file;
  if (given("--store-timeout")) config.store_timeout = flags.store_timeout;
  if (given("--log-level")) config.log_level = flags.log_level;
  if (given("--log-file")) config.log_file = flags.log_file;
  if (given("--api-token")) config.api_token = flags.api_token;
  if (given("--api-token-file")) config.api_token_file = flags.api_token_file;
  if (given("--api-tls-cert")) config.api_tls_cert = flags.api_tls_cert;
  if (given("--api-tls-key")) config.api_tls_key = flags.api_tls_key;
  if (given("--api-client-ca")) config.api_client_ca = flags.api_client_ca;
  if (given("--api-max-body")) config.api_max_body = flags.api_max_body;
  if (given("--api-rate")) config.api_rate = flags.api_rate;
  if (given("--api-burst")) config.api_burst = flags.api_burst;
  if (given("--api-read-timeout")) config.api_read_timeout = flags.api_read_timeout;
  if (given("--api-write-timeout")) config.api_write_timeout = flags.api_write_timeout;
  if (given("--api-idle-timeout")) config.api_idle_timeout = flags.api_idle_timeout;
  if (given("--api-max-connections")) config.api_max_connections = flags.api_max_connections;
  if (given("--api-max-connections-per-client")) {
    config.api_max_connections_per_client = flags.api_max_connections_per_client;
  }
  if (given("--pprof-listen")) config.pprof_listen = flags.pprof_listen;
  if (given("--tls")) config.tls = flags.tls;
  if (given("--amst-mode")) config.amst_mode = flags.amst_mode;
  if (given("--transport")) config.transport = flags.transport;
  if (given("--streams")) config.streams = flags.streams;
  if (given("--min-streams")) config.min_streams = flags.min_streams;
  if (given("--max-streams")) config.max_streams = flags.max_streams;
  if (given("--bandwidth-limit")) config.bandwidth_limit = flags.bandwidth_limit;
  if (given("--hde-codec")) config.hde_codec = flags.hde_codec;
  if (given("--hde-zstd-level")) config.hde_zstd_level = flags.hde_zstd_level;
  if (given("--hde-delta-cache")) config.hde_delta_cache = flags.hde_delta_cache;
  if (given("--hde-dedup-index")) config.hde_dedup_index = flags.hde_dedup_index;
  if (given("--hde-dedup")) config.hde_dedup = flags.hde_dedup;
  if (given("--hde-delta")) config.hde_delta = flags.hde_delta;
  if (given("--worker-threads")) config.worker_threads = flags.worker_threads;
  if (given("--tls-ca")) config.tls_ca = flags.tls_ca;
  if (given("--tls-cert")) config.tls_cert = flags.tls_cert;
  if (given("--tls-key")) config.tls_key = flags.tls_key;
  if (given("--max-rounds")) config.max_rounds = flags.max_rounds;
  if (given("--on-round-limit")) config.on_round_limit = flags.on_round_limit;
  if (given("--io-threads")) config.io_threads = flags.io_threads;
  if (given("--max-tasks")) config.max_tasks = flags.max_tasks;
  if (given("--max-frame-bytes")) config.max_frame_bytes = flags.max_frame_bytes;
  if (given("--max-control-bytes")) config.max_control_bytes = flags.max_control_bytes;
  if (given("--max-migrations")) config.max_migrations = flags.max_migrations;
  if (given("--max-migrations-per-peer")) {
    config.max_migrations_per_peer = flags.max_migrations_per_peer;
  }
  if (given("--max-connections")) config.max_connections = flags.max_connections;
  if (given("--max-connections-per-peer")) {
    config.max_connections_per_peer = flags.max_connections_per_peer;
  }
  if (given("--max-buffer-memory")) config.max_buffer_memory = flags.max_buffer_memory;
  if (given("--tls-check-node-id")) config.tls_check_node_id = flags.tls_check_node_id;
  if (given("--rollout-initial-stage")) config.rollout.initial_stage = flags.rollout.initial_stage;
  if (given("--rollout-webhook-token-file")) {
    config.rollout.webhook_token_file = flags.rollout.webhook_token_file;
  }
  if (given("--tracing")) config.tracing = flags.tracing;
  if (given("--otlp-endpoint")) config.otlp_endpoint = flags.otlp_endpoint;
  if (given("--downtime-budget")) {
    auto ms = ParseDurationMillis(downtime);
    if (!ms.ok()) return Status(InvalidArgument("--downtime-budget: " + ms.status().message()));
    config.downtime_budget_ms = *ms;
  }
  for (auto [flag, text, out] :
       {std::tuple{"--node-lease", &node_lease, &config.node_lease_ms},
        std::tuple{"--peer-timeout", &peer_timeout, &config.peer_timeout_ms},
        std::tuple{"--quarantine", &quarantine, &config.quarantine_ms},
        std::tuple{"--handshake-timeout", &handshake_timeout, &config.handshake_timeout_ms}}) {
    if (!given(flag)) continue;
    auto ms = ParseDurationMillis(*text);
    if (!ms.ok()) return Status(InvalidArgument(std::string(flag) + ": " + ms.status().message()));
    *out = *ms;
  }
  DWCP_RETURN_IF_ERROR(ValidateNodeConfig(&config));
  return config;
}

}  // namespace dwcp::node
