// Opens the StateStore a configuration names: a SQLite file or an etcd cluster.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "acp/state_store.h"
#include "common/clock.h"
#include "common/status.h"

namespace dwcp::acp {

inline constexpr const char* kEtcdScheme = "etcd://";

struct StoreOptions {
  // A SQLite file path, or etcd://host:port[,host:port...] (optionally ending in a key prefix:
  // etcd://h:2379/dwcp/prod/ — default /dwcp/v3/).
  std::string store;
  // etcd only: TLS when ca_file is set (cert_file + key_file: a client certificate), and
  // authentication when username is set (the password is the first line of password_file).
  std::string ca_file, cert_file, key_file;
  std::string username, password_file;
  std::chrono::milliseconds timeout{2000};  // etcd: budget of each store call
};

// The parts of an etcd:// store URL.
struct EtcdUrl {
  std::vector<std::string> endpoints;  // "host:port"
  std::string key_prefix;              // starts and ends with '/'
};

// True when `store` names an etcd cluster rather than a file.
bool IsEtcdUrl(const std::string& store);

// InvalidArgument naming what is wrong (no endpoint, missing port, bad port, empty host).
Result<EtcdUrl> ParseEtcdUrl(const std::string& store);

// Checks `options` without connecting: the URL, the TLS and password files, the timeout, and
// that etcd-only options are not given with a SQLite store. InvalidArgument for the user.
Status ValidateStoreOptions(const StoreOptions& options);

// Opens the store. For SQLite the file's directory must exist. For etcd, connects and checks
// that the cluster answers within options.timeout; an unreachable cluster is Unavailable or
// DeadlineExceeded with the endpoints in the message (never a hang). `clock` must outlive the
// store.
Result<std::unique_ptr<StateStore>> OpenStateStore(const StoreOptions& options, Clock& clock);

}  // namespace dwcp::acp
