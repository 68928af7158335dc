#include "acp/record_json.h"

#include <nlohmann/json.hpp>

namespace dwcp::acp {
namespace {

using nlohmann::json;

// Reads the fields of one record in call order; the first failure sticks.
class Fields {
 public:
  Fields(const std::string& text, const std::string& what) : what_(what) {
    j_ = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j_.is_discarded() || !j_.is_object()) {
      status_ = DataLoss("store value at " + what + " is not a JSON object");
    }
  }

  template <typename T>
  Fields& Get(const char* name, T* out) {
    if (!status_.ok()) return *this;
    auto it = j_.find(name);
    if (it == j_.end() || it->is_null()) return *this;
    if (!TypeFits<T>(*it)) {
      status_ = DataLoss("store value at " + what_ + ": field '" + name + "' has type " +
                         it->type_name());
      return *this;
    }
    *out = it->get<T>();
    return *this;
  }

  const Status& status() const { return status_; }

 private:
  template <typename T>
  static bool TypeFits(const json& v) {
    if constexpr (std::is_same_v<T, std::string>) {
      return v.is_string();
    } else if constexpr (std::is_same_v<T, bool>) {
      return v.is_boolean();
    } else if constexpr (std::is_floating_point_v<T>) {
      return v.is_number();
    } else if constexpr (std::is_unsigned_v<T>) {
      return v.is_number_unsigned();
    } else {
      return v.is_number_integer();
    }
  }

  std::string what_;
  json j_;
  Status status_;
};

}  // namespace

std::string NodeToJson(const NodeRecord& n) {
  return json{{"id", n.id},
              {"region", n.region},
              {"api_url", n.api_url},
              {"data_address", n.data_address},
              {"state", n.state},
              {"version", n.version},
              {"started_ms", n.started_ms},
              {"heartbeat_ms", n.heartbeat_ms},
              {"public_key", n.public_key}}
      .dump();
}

std::string VmToJson(const VmRecord& vm) {
  return json{{"id", vm.id},
              {"node_id", vm.node_id},
              {"state", vm.state},
              {"epoch", vm.epoch},
              {"migration_id", vm.migration_id},
              {"driver", vm.driver},
              {"memory_bytes", vm.memory_bytes},
              {"dirty_rate", vm.dirty_rate},
              {"seed", vm.seed},
              {"created_ms", vm.created_ms},
              {"updated_ms", vm.updated_ms}}
      .dump();
}

std::string MigrationToJson(const MigrationRecord& m) {
  return json{{"id", m.id},
              {"vm_id", m.vm_id},
              {"source_node", m.source_node},
              {"dest_node", m.dest_node},
              {"phase", m.phase},
              {"error", m.error},
              {"protocol", m.protocol},
              {"round", m.round},
              {"memory_bytes", m.memory_bytes},
              {"bytes_transferred", m.bytes_transferred},
              {"network_bytes", m.network_bytes},
              {"remaining_bytes", m.remaining_bytes},
              {"throughput_bps", m.throughput_bps},
              {"downtime_ms", m.downtime_ms},
              {"total_ms", m.total_ms},
              {"epoch_before", m.epoch_before},
              {"source_digest", m.source_digest},
              {"dest_digest", m.dest_digest},
              {"created_ms", m.created_ms},
              {"updated_ms", m.updated_ms},
              {"finished_ms", m.finished_ms},
              {"trace_id", m.trace_id},
              {"precopy_started_ms", m.precopy_started_ms},
              {"switchover_started_ms", m.switchover_started_ms},
              {"commit_started_ms", m.commit_started_ms},
              {"amst_seconds", m.amst_seconds},
              {"hde_seconds", m.hde_seconds},
              {"acp_seconds", m.acp_seconds}}
      .dump();
}

std::string RolloutToJson(const RolloutRecord& r) {
  return json{{"region", r.region}, {"stage", r.stage},           {"percent", r.percent},
              {"halted", r.halted}, {"version", r.version},       {"reason", r.reason},
              {"detail", r.detail}, {"changed_by", r.changed_by}, {"changed_ms", r.changed_ms}}
      .dump();
}

std::string LeaseToJson(const Lease& l) {
  return json{{"name", l.name}, {"holder", l.holder}, {"expires_ms", l.expires_ms}}.dump();
}

Result<NodeRecord> NodeFromJson(const std::string& text, const std::string& what) {
  NodeRecord n;
  Fields f(text, what);
  f.Get("id", &n.id)
      .Get("region", &n.region)
      .Get("api_url", &n.api_url)
      .Get("data_address", &n.data_address)
      .Get("state", &n.state)
      .Get("version", &n.version)
      .Get("started_ms", &n.started_ms)
      .Get("heartbeat_ms", &n.heartbeat_ms)
      .Get("public_key", &n.public_key);
  if (!f.status().ok()) return f.status();
  return n;
}

Result<VmRecord> VmFromJson(const std::string& text, const std::string& what) {
  VmRecord vm;
  Fields f(text, what);
  f.Get("id", &vm.id)
      .Get("node_id", &vm.node_id)
      .Get("state", &vm.state)
      .Get("epoch", &vm.epoch)
      .Get("migration_id", &vm.migration_id)
      .Get("driver", &vm.driver)
      .Get("memory_bytes", &vm.memory_bytes)
      .Get("dirty_rate", &vm.dirty_rate)
      .Get("seed", &vm.seed)
      .Get("created_ms", &vm.created_ms)
      .Get("updated_ms", &vm.updated_ms);
  if (!f.status().ok()) return f.status();
  return vm;
}

Result<MigrationRecord> MigrationFromJson(const std::string& text, const std::string& what) {
  MigrationRecord m;
  Fields f(text, what);
  f.Get("id", &m.id)
      .Get("vm_id", &m.vm_id)
      .Get("source_node", &m.source_node)
      .Get("dest_node", &m.dest_node)
      .Get("phase", &m.phase)
      .Get("error", &m.error)
      .Get("protocol", &m.protocol)
      .Get("round", &m.round)
      .Get("memory_bytes", &m.memory_bytes)
      .Get("bytes_transferred", &m.bytes_transferred)
      .Get("network_bytes", &m.network_bytes)
      .Get("remaining_bytes", &m.remaining_bytes)
      .Get("throughput_bps", &m.throughput_bps)
      .Get("downtime_ms", &m.downtime_ms)
      .Get("total_ms", &m.total_ms)
      .Get("epoch_before", &m.epoch_before)
      .Get("source_digest", &m.source_digest)
      .Get("dest_digest", &m.dest_digest)
      .Get("created_ms", &m.created_ms)
      .Get("updated_ms", &m.updated_ms)
      .Get("finished_ms", &m.finished_ms)
      .Get("trace_id", &m.trace_id)
      .Get("precopy_started_ms", &m.precopy_started_ms)
      .Get("switchover_started_ms", &m.switchover_started_ms)
      .Get("commit_started_ms", &m.commit_started_ms)
      .Get("amst_seconds", &m.amst_seconds)
      .Get("hde_seconds", &m.hde_seconds)
      .Get("acp_seconds", &m.acp_seconds);
  if (!f.status().ok()) return f.status();
  return m;
}

Result<RolloutRecord> RolloutFromJson(const std::string& text, const std::string& what) {
  RolloutRecord r;
  Fields f(text, what);
  f.Get("region", &r.region)
      .Get("stage", &r.stage)
      .Get("percent", &r.percent)
      .Get("halted", &r.halted)
      .Get("version", &r.version)
      .Get("reason", &r.reason)
      .Get("detail", &r.detail)
      .Get("changed_by", &r.changed_by)
      .Get("changed_ms", &r.changed_ms);
  if (!f.status().ok()) return f.status();
  return r;
}

Result<Lease> LeaseFromJson(const std::string& text, const std::string& what) {
  Lease l;
  Fields f(text, what);
  f.Get("name", &l.name).Get("holder", &l.holder).Get("expires_ms", &l.expires_ms);
  if (!f.status().ok()) return f.status();
  return l;
}

}  // namespace dwcp::acp
