// Traces of a real migration between two dwcpd processes, received by an OTLP/gRPC
// collector that runs in the test: one trace spans both nodes.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "opentelemetry/proto/collector/trace/v1/trace_service.grpc.pb.h"
#include "tests/integration/cluster.h"

namespace dwcp::testing {
namespace {

namespace otlp = opentelemetry::proto;

std::string Hex(const std::string& bytes) {
  static const char* k = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += k[c >> 4];
    out += k[c & 15];
  }
  return out;
}

struct ReceivedSpan {
  std::string service, instance, name, trace_id, span_id, parent_id;
  std::map<std::string, std::string> attributes;
  int status = 0;
};

class Collector final : public otlp::collector::trace::v1::TraceService::Service {
 public:
  grpc::Status Export(grpc::ServerContext*,
                      const otlp::collector::trace::v1::ExportTraceServiceRequest* req,
                      otlp::collector::trace::v1::ExportTraceServiceResponse*) override {
    std::lock_guard lock(mu_);
    for (const auto& rs : req->resource_spans()) {
      std::string service, instance;
      for (const auto& kv : rs.resource().attributes()) {
        if (kv.key() == "service.name") service = kv.value().string_value();
        if (kv.key() == "service.instance.id") instance = kv.value().string_value();
      }
      for (const auto& ss : rs.scope_spans()) {
        for (const auto& s : ss.spans()) {
          ReceivedSpan r{service,           instance,         s.name(),
                         Hex(s.trace_id()), Hex(s.span_id()), Hex(s.parent_span_id())};
          for (const auto& kv : s.attributes()) {
            const auto& v = kv.value();
            r.attributes[kv.key()] = v.has_string_value() ? v.string_value()
                                     : v.has_bool_value() ? (v.bool_value() ? "true" : "false")
                                     : v.has_int_value()  ? std::to_string(v.int_value())
                                                          : std::to_string(v.double_value());
          }
          r.status = s.status().code();
          spans_.push_back(std::move(r));
        }
      }
    }
    return grpc::Status::OK;
  }
  std::vector<ReceivedSpan> spans() {
    std::lock_guard lock(mu_);
    return spans_;
  }

 private:
  std::mutex mu_;
  std::vector<ReceivedSpan> spans_;
};

// The collector on 127.0.0.1, a free port, for the life of a test.
struct CollectorServer {
  CollectorServer() {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&collector);
    server = builder.BuildAndStart();
  }
  ~CollectorServer() { server->Shutdown(); }
  Collector collector;
  int port = 0;
  std::unique_ptr<grpc::Server> server;
};

TEST(TracingIntegrationTest, OneTraceFollowsAMigrationAcrossNodes) {
  CollectorServer server;
  Collector& collector = server.collector;
  const int port = server.port;
  ASSERT_GT(port, 0);

  Cluster c;
  // The guide's sampling block (3.3), at 100% so this plain trace is kept.
  std::string cfg = c.dir() + "/tracing.yaml";
  std::ofstream(cfg) << "sampling:\n  type: probabilistic\n  param: 1.0\n"
                        "  always_sample: [\"migrate_vm\", \"acp_consensus\", \"error_*\"]\n";
  std::vector<std::string> flags = {"--config", cfg, "--otlp-endpoint",
                                    "127.0.0.1:" + std::to_string(port)};
  c.StartNode("node-a", flags);
  c.StartNode("node-b", flags);
  ASSERT_EQ(HttpPost(c.node("node-a").api_port, "/api/v1/vms",
                     {{"id", "vm-12345"}, {"memory", "64MiB"}, {"dirty_rate", "20MB/s"}})
                .status,
            201);
  auto r = HttpPost(c.node("node-a").api_port, "/api/v1/migrations",
                    {{"vm", "vm-12345"}, {"to", "node-b"}});
  ASSERT_EQ(r.status, 202);
  ASSERT_EQ(c.WaitForMigration("node-a", r.body["id"])["result"], "success");

  // Spans are batched once a second.
  std::vector<ReceivedSpan> spans;
  for (int i = 0; i < 100; ++i) {
    spans = collector.spans();
    bool source = false, dest = false;
    for (const auto& s : spans) {
      source = source || s.name == "migrate_vm";
      dest = dest || s.name == "receive_migration";
    }
    if (source && dest) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const ReceivedSpan* root = nullptr;
  for (const auto& s : spans) {
    if (s.name == "migrate_vm") root = &s;
  }
  ASSERT_NE(root, nullptr);
  EXPECT_EQ(root->service, "dwcp-v3");
  EXPECT_EQ(root->instance, "node-a");
  EXPECT_EQ(root->parent_id, "");
  EXPECT_EQ(root->attributes.at("vm.id"), "vm-12345");
  EXPECT_EQ(root->attributes.at("phase"), "completed");
  EXPECT_EQ(root->attributes.at("source.node"), "node-a");
  EXPECT_EQ(root->attributes.at("destination.node"), "node-b");
  EXPECT_EQ(root->attributes.at("mode"), "datacenter");  // loopback
  EXPECT_EQ(root->status, 0);

  std::map<std::string, const ReceivedSpan*> by_id;
  std::set<std::string> names, instances;
  size_t in_trace = 0;
  for (const auto& s : spans) {
    if (s.trace_id != root->trace_id) continue;
    ++in_trace;
    by_id[s.span_id] = &s;
    names.insert(s.name);
    instances.insert(s.instance);
    EXPECT_TRUE(s.attributes.count("component")) << s.name;
  }
  EXPECT_LT(in_trace, 50u);
  EXPECT_EQ(instances, (std::set<std::string>{"node-a", "node-b"}));
  for (const char* name :
       {"migrate_vm", "acp_consensus", "amst_connect", "transfer_data", "amst_transfer",
        "hde_compress", "hde_digest", "receive_migration", "hde_verify", "resume_vm"}) {
    EXPECT_TRUE(names.count(name)) << name;
  }
  // Every span but the root has its parent in the same trace; the destination's work hangs
  // under the source's migrate_vm.
  for (const auto& [id, s] : by_id) {
    if (s == root) continue;
    ASSERT_TRUE(by_id.count(s->parent_id)) << s->name << " has a parent outside the trace";
    if (s->name == "receive_migration") {
      EXPECT_EQ(s->parent_id, root->span_id);
      EXPECT_EQ(s->instance, "node-b");
    }
    if (s->name == "hde_compress") EXPECT_EQ(by_id[s->parent_id]->name, "amst_transfer");
    if (s->name == "amst_transfer") EXPECT_EQ(by_id[s->parent_id]->name, "transfer_data");
  }

  // Log lines about the migration carry its trace id (guide 4.4).
  bool correlated = false;
  std::istringstream log(c.ReadLog("node-b"));
  std::string line;
  while (std::getline(log, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.value("message", "") == "vm resumed on destination") {
      correlated = j.value("trace_id", "") == root->trace_id;
      // ...and the span id of the destination's receive_migration span.
      const std::string span_id = j.value("span_id", "");
      correlated = correlated && by_id.count(span_id) && by_id[span_id]->name == "receive_migration";
    }
  }
  EXPECT_TRUE(correlated);
}

TEST(TracingIntegrationTest, FailedMigrationTracesAreKeptAtZeroSampling) {
  CollectorServer server;
  Collector& collector = server.collector;
  const int port = server.port;

  Cluster c;
  std::string cfg = c.dir() + "/tracing.yaml";
  std::ofstream(cfg) << "sampling:\n  type: probabilistic\n  param: 0\n  always_sample: []\n";
  std::vector<std::string> flags = {"--config", cfg, "--otlp-endpoint",
                                    "127.0.0.1:" + std::to_string(port)};
  c.StartNode("node-a", flags);
  c.StartNode("node-b", flags);
  ASSERT_EQ(
      HttpPost(c.node("node-a").api_port, "/api/v1/vms", {{"id", "vm-1"}, {"memory", "64MiB"}})
          .status,
      201);
  // A successful migration at param 0 leaves no trace...
  auto ok =
      HttpPost(c.node("node-a").api_port, "/api/v1/migrations", {{"vm", "vm-1"}, {"to", "node-b"}});
  ASSERT_EQ(c.WaitForMigration("node-a", ok.body["id"])["result"], "success");
  // ...a failed one (destination killed mid-way) is kept whole, marked as an error.
  auto slow = HttpPost(c.node("node-b").api_port, "/api/v1/migrations",
                       {{"vm", "vm-1"}, {"to", "node-a"}, {"bandwidth_limit", "20MB/s"}});
  ASSERT_EQ(slow.status, 202);
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  c.Kill("node-a");
  ASSERT_EQ(c.WaitForMigration("node-b", slow.body["id"])["result"], "failed");
  std::vector<ReceivedSpan> spans;
  for (int i = 0; i < 50 && spans.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    spans = collector.spans();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  spans = collector.spans();
  const ReceivedSpan* root = nullptr;
  for (const auto& s : spans) {
    if (s.name == "migrate_vm") root = &s;
  }
  ASSERT_NE(root, nullptr) << spans.size() << " spans";
  EXPECT_EQ(root->instance, "node-b");
  EXPECT_EQ(root->status, 2);  // STATUS_CODE_ERROR
  EXPECT_EQ(root->attributes.at("error"), "true");
  EXPECT_EQ(root->attributes.at("phase"), "failed");
  for (const auto& s : spans) EXPECT_EQ(s.trace_id, root->trace_id) << s.name;  // only this one
}

}  // namespace
}  // namespace dwcp::testing
