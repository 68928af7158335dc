#include "acp/store_factory.h"

#include <fstream>

#include "acp/etcd_state_store.h"
#include "acp/sqlite_state_store.h"

namespace dwcp::acp {

bool IsEtcdUrl(const std::string& store) { return store.rfind(kEtcdScheme, 0) == 0; }

Result<EtcdUrl> ParseEtcdUrl(const std::string& store) {
  if (!IsEtcdUrl(store)) {
    return Status(InvalidArgument("store '" + store + "' is not an etcd:// URL"));
  }
  std::string rest = store.substr(std::string(kEtcdScheme).size());
  EtcdUrl url;
  url.key_prefix = "/dwcp/v3/";
  if (auto slash = rest.find('/'); slash != std::string::npos) {
    std::string prefix = rest.substr(slash);
    rest = rest.substr(0, slash);
    if (prefix != "/") {
      if (prefix.back() != '/') prefix += '/';
      url.key_prefix = prefix;
    }
  }
  if (rest.empty()) {
    return Status(InvalidArgument("store '" + store + "' names no etcd endpoint " +
                                  "(etcd://host:port[,host:port...])"));
  }
  size_t start = 0;
  while (start <= rest.size()) {
    size_t comma = rest.find(',', start);
    if (comma == std::string::npos) comma = rest.size();
    const std::string ep = rest.substr(start, comma - start);
    const auto colon = ep.rfind(':');
    if (ep.empty()) {
      return Status(InvalidArgument("store '" + store + "' has an empty etcd endpoint"));
    }
    if (colon == std::string::npos || colon == 0) {
      return Status(
          InvalidArgument("etcd endpoint '" + ep + "' in store '" + store + "' must be host:port"));
    }
    const std::string port = ep.substr(colon + 1);
    int value = 0;
    bool digits = !port.empty() && port.size() <= 5 &&
                  port.find_first_not_of("0123456789") == std::string::npos;
    if (digits) value = std::stoi(port);
    if (!digits || value < 1 || value > 65535) {
      return Status(InvalidArgument("etcd endpoint '" + ep + "' in store '" + store +
                                    "' has a bad port '" + port + "'"));
    }
    url.endpoints.push_back(ep);
    start = comma + 1;
  }
  return url;
}

Status ValidateStoreOptions(const StoreOptions& o) {
  if (!IsEtcdUrl(o.store)) {
    if (o.store.find("://") != std::string::npos) {
      return InvalidArgument("--store '" + o.store +
                             "': unknown scheme; use a SQLite file path or etcd://host:port");
    }
    if (!o.ca_file.empty() || !o.cert_file.empty() || !o.key_file.empty() || !o.username.empty() ||
        !o.password_file.empty()) {
      return InvalidArgument(
          "--store-ca-file, --store-cert-file, --store-key-file, --store-username and "
          "--store-password-file apply to an etcd:// store only");
    }
    return Status::Ok();
  }
  auto url = ParseEtcdUrl(o.store);
  if (!url.ok()) return url.status();
  if (o.timeout.count() <= 0) return InvalidArgument("--store-timeout must be positive");
  if (o.cert_file.empty() != o.key_file.empty()) {
    return InvalidArgument("--store-cert-file and --store-key-file go together");
  }
  if (!o.cert_file.empty() && o.ca_file.empty()) {
    return InvalidArgument("--store-cert-file needs --store-ca-file (TLS to etcd)");
  }
  if (o.username.empty() != o.password_file.empty()) {
    return InvalidArgument("--store-username and --store-password-file go together");
  }
  for (const auto& [flag, path] :
       {std::pair<const char*, std::string>{"--store-ca-file", o.ca_file},
        {"--store-cert-file", o.cert_file},
        {"--store-key-file", o.key_file},
        {"--store-password-file", o.password_file}}) {
    if (path.empty()) continue;
    std::ifstream in(path);
    if (!in) return InvalidArgument(std::string(flag) + ": cannot read '" + path + "'");
  }
  return Status::Ok();
}

Result<std::unique_ptr<StateStore>> OpenStateStore(const StoreOptions& o, Clock& clock) {
  DWCP_RETURN_IF_ERROR(ValidateStoreOptions(o));
  if (!IsEtcdUrl(o.store)) {
    auto sqlite = SqliteStateStore::Open(o.store, clock);
    if (!sqlite.ok()) return sqlite.status();
    return std::unique_ptr<StateStore>(std::move(sqlite).value());
  }
  auto url = ParseEtcdUrl(o.store);
  if (!url.ok()) return url.status();
  EtcdOptions eo;
  eo.endpoints = url->endpoints;
  eo.key_prefix = url->key_prefix;
  eo.ca_file = o.ca_file;
  eo.cert_file = o.cert_file;
  eo.key_file = o.key_file;
  eo.username = o.username;
  eo.timeout = o.timeout;
  eo.health_timeout = std::min(o.timeout, std::chrono::milliseconds(500));
  if (!o.password_file.empty()) {
    std::ifstream in(o.password_file);
    if (!in || !std::getline(in, eo.password)) {
      return Status(
          InvalidArgument("--store-password-file: cannot read '" + o.password_file + "'"));
    }
    if (!eo.password.empty() && eo.password.back() == '\r') eo.password.pop_back();
  }
  auto etcd = EtcdStateStore::Open(eo, clock);
  if (!etcd.ok()) return etcd.status();
  return std::unique_ptr<StateStore>(std::move(etcd).value());
}

}  // namespace dwcp::acp
