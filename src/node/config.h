// dwcpd's configuration: a YAML file (--config) whose every key is also a flag; flags win.
// Reference: docs/configuration.md.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "acp/store_factory.h"
#include "common/status.h"
#include "obs/anomaly.h"
#include "obs/sla.h"
#include "rollout/rollout_config.h"

namespace dwcp::node {

// The guide's `sampling:` block (section 3.3), applied to the tracer (docs/tracing.md).
struct SamplingConfig {
  std::string type = "probabilistic";
  double param = 0.1;
  std::vector<std::string> always_sample = {"migrate_vm", "acp_consensus", "error_*"};
  bool present = false;
};

// The guide's `profiling:` block (section 5.4) for continuous profiling (docs/profiling.md),
// plus how long each CPU profile runs and the retention of stored profiles.
struct ProfilingConfig {
  bool enabled = false;
  std::string interval = "60s";
  bool cpu = true;
  bool heap = true;
  bool goroutine = true;
  std::string storage;  // file:///dir/ or s3://bucket/prefix/
  std::string cpu_duration = "10s";
  std::string max_age = "168h";  // retention.max_age
  uint64_t keep_last = 0;        // retention.keep_last; 0 = no count limit
};

struct NodeConfig {
  std::string node_id;  // default: the host name
  std::string region = "local";
  std::string api_listen = "0.0.0.0:8080";   // HTTP API, /metrics, health
  std::string data_listen = "0.0.0.0:7070";  // DWCP data connections
  std::string advertise_host;                // how peers reach us; default from the listeners
  std::string data_advertise;  // HOST:PORT peers dial for data (NAT, proxy); default
                               // advertise_host and the data listener's port
  std::string data_dir = "/var/lib/dwcp";
  std::string store;  // SQLite file (default <data_dir>/state.db) or etcd://host:port,...
  // etcd store only (docs/configuration.md): TLS, authentication and the per-call deadline.
  std::string store_ca_file, store_cert_file, store_key_file;
  std::string store_username, store_password_file;
  std::string store_timeout = "2s";
  int64_t store_timeout_ms = 2000;  // filled by ValidateNodeConfig
  std::string log_level = "info";
  std::string log_file;                         // default: stderr
  std::string pprof_listen = "127.0.0.1:6060";  // /debug/pprof/ (loopback unless configured)
  // HTTP API access control and limits (docs/security.md).
  // The bearer token of mutating API calls (and of an exposed pprof listener); "" = none.
  // From api_token, else the file api_token_file names, else $DWCP_API_TOKEN (at most one of
  // the first two). Never logged.
  std::string api_token;
  std::string api_token_file;
  // TLS on the API listener: on when both are set.
  std::string api_tls_cert, api_tls_key;
  // A client certificate signed by this CA authorizes mutating calls like the token; one from
  // another CA, or expired, fails the handshake. Needs api_tls_cert.
  std::string api_client_ca;
  std::string api_max_body = "1MiB";      // request body limit (413)
  std::string api_rate = "200/s";         // requests per second per client address; 0 = unlimited
  uint32_t api_burst = 400;               // requests a client may send at once above the rate
  std::string api_read_timeout = "10s";   // a whole request (TLS handshake, headers, body)
  std::string api_write_timeout = "10s";  // each write of a response must progress within
  std::string api_idle_timeout = "5s";    // an idle keep-alive connection is closed after
  uint32_t api_max_connections = 256;     // open API connections, all clients together
  uint32_t api_max_connections_per_client = 32;
  // Filled by ValidateNodeConfig from the strings above.
  uint64_t api_max_body_bytes = 0;
  double api_rate_per_second = 0;  // 0: unlimited
  int64_t api_read_timeout_ms = 0, api_write_timeout_ms = 0, api_idle_timeout_ms = 0;
  bool ApiTls() const { return !api_tls_cert.empty(); }
  // Whether pprof_listen is not a loopback address (then it needs the API token).
  bool PprofExposed() const;
  // Mutual TLS 1.3 on data connections (docs/security.md): on unless turned off.
  std::string amst_mode = "auto";  // auto | datacenter | hybrid | internet (pinned)
  // AMST data plane (docs/amst.md). `transport`: tcp (rdma is not in this build: an error).
  std::string transport = "tcp";
  std::string streams = "auto";  // auto (adaptive within min/max) or a fixed count
  uint32_t min_streams = 1;
  uint32_t max_streams = 8;
  std::string bandwidth_limit = "unlimited";  // node-wide cap, e.g. 100MB/s, 1Gbit/s
  // HDE (docs/hde.md).
  std::string hde_codec = "auto";  // auto | zstd | lz4 | none
  int hde_zstd_level = 0;          // 0: chosen per batch
  std::string hde_delta_cache = "256MiB";
  std::string hde_dedup_index = "32MiB";
  bool hde_dedup = true;
  bool hde_delta = true;
  uint32_t worker_threads = 0;  // encode/decode threads; 0 = one per core
  // Filled by ValidateNodeConfig from the strings above.
  uint32_t fixed_streams = 0;            // 0: adaptive
  uint64_t bandwidth_limit_bps = 0;      // 0: unlimited
  uint64_t hde_delta_cache_bytes = 0;
  uint64_t hde_dedup_index_bytes = 0;
  bool tls = true;
  std::string tls_ca, tls_cert, tls_key;
  int64_t downtime_budget_ms = 300;
  // A node whose heartbeat is older than this is not alive: no migration goes to it and the
  // cluster leader marks it down (docs/consensus.md).
  int64_t node_lease_ms = 10000;
  // A peer that sends nothing for this long during a migration is gone (any single frame).
  int64_t peer_timeout_ms = 15000;
  // Byzantine detection (docs/consensus.md): ask sources for signed round commitments —
  // auto (over internet-mode links), on, off — and how long a peer caught lying is refused.
  std::string round_commitments = "auto";
  int64_t quarantine_ms = 600000;
  uint32_t max_rounds = 30;
  std::string on_round_limit = "force";  // force | abort
  uint32_t io_threads = 4;
  uint32_t max_tasks = 4096;                     // coroutine task limit (the "goroutines" 100%)
  // Data-plane limits (docs/security.md#limits).
  std::string max_frame_bytes = "4MiB";      // AMST frame payload
  std::string max_control_bytes = "64KiB";   // control message
  uint32_t max_migrations = 16;              // running here, incoming + outgoing
  uint32_t max_migrations_per_peer = 4;      // with one peer, both directions
  uint32_t max_connections = 1024;           // open on the data listener
  uint32_t max_connections_per_peer = 128;   // open on the data listener per remote IP
  int64_t handshake_timeout_ms = 10000;      // accept to Hello, TLS included
  std::string max_buffer_memory = "512MiB";  // page batches in flight, node-wide
  bool tls_check_node_id = true;             // a peer's certificate must name its node id
  // Filled by ValidateNodeConfig from the strings above.
  uint32_t max_frame_bytes_value = 4u << 20;
  uint32_t max_control_bytes_value = 64u << 10;
  uint64_t max_buffer_memory_bytes = 512ull << 20;
  bool tracing = true;                           // export spans over OTLP/gRPC
  std::string otlp_endpoint = "localhost:4317";  // the OpenTelemetry Collector
  SamplingConfig sampling;
  ProfilingConfig profiling;
  obs::SlaConfig sla;          // `sla:` objectives (docs/sla.md)
  obs::AnomalyConfig anomaly;  // `anomaly:` detector tuning (docs/anomaly.md)
  rollout::RolloutConfig rollout;  // `rollout:` the v1→v3 rollout (docs/rollout.md)

  std::string StorePath() const { return store.empty() ? data_dir + "/state.db" : store; }
  bool EtcdStore() const { return store.rfind("etcd://", 0) == 0; }
};

// The store options of `config` (StorePath() and the store_* keys), for acp::OpenStateStore.
acp::StoreOptions StoreOptionsOf(const NodeConfig& config);

// Parses dwcpd's command line (and the --config file it names). Returns InvalidArgument with
// a message meant for the user on any bad flag, key or value; for --help and --version, prints
// them to stdout, sets *exit_now and returns an unvalidated config the caller should ignore.
Result<NodeConfig> ParseNodeConfig(int argc, char** argv, bool* exit_now);

// Loads a YAML file on top of `config`. Unknown, repeated or empty keys are InvalidArgument,
// as are an unreadable file and invalid YAML.
Status LoadYamlConfig(const std::string& path, NodeConfig* config);
// The same for YAML text; `name` names it in errors.
Status LoadYamlConfigText(const std::string& text, const std::string& name, NodeConfig* config);

// True for "localhost", 127.0.0.0/8 and ::1.
bool IsLoopbackHost(const std::string& host);

// "200/s", "600/m" or "0"/"unlimited" as requests per second (0 = unlimited).
Result<double> ParseRequestRate(std::string_view text);

// Checks values and fills defaults that depend on others: node_id (the host name) and
// advertise_host (the data listener's host, else the API listener's, else 127.0.0.1 when
// both listen on a wildcard address).
Status ValidateNodeConfig(NodeConfig* config);
// The data-plane limits part of it (max_frame_bytes ... max_buffer_memory): checks them and
// fills the *_value / *_bytes fields.
Status ValidateLimits(NodeConfig* config);

}  // namespace dwcp::node
