#include "cli/api_client.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "test_server.h"

namespace dwcp::cli {
namespace {

using nlohmann::json;
using testing::TestServer;
using testing::UnusedPort;

TEST(ApiClientTest, GetReturnsParsedBody) {
  TestServer server;
  server.http().Get("/api/v1/vms", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"vms":[{"id":"vm-1","memory_bytes":1073741824}]})", "application/json");
  });
  server.Start();
  ApiClient client(server.url());
  Result<json> vms = client.Get("/api/v1/vms");
  ASSERT_TRUE(vms.ok()) << vms.status().ToString();
  EXPECT_EQ((*vms)["vms"][0]["id"], "vm-1");
  EXPECT_EQ(JsonUint((*vms)["vms"][0], "memory_bytes"), 1073741824u);
}

TEST(ApiClientTest, PostSendsJsonAndReturnsCreated) {
  TestServer server;
  server.http().Post("/api/v1/vms", [](const httplib::Request& req, httplib::Response& res) {
    json body = json::parse(req.body, nullptr, false);
    json vm = {{"id", body["id"]}, {"node", "node-a"}, {"memory_bytes", body["memory"]}};
    res.status = 201;
    res.set_content(vm.dump(), "application/json");
  });
  server.Start();
  ApiClient client(server.url());
  Result<json> vm = client.Post("/api/v1/vms", {{"id", "vm-7"}, {"memory", 4096}});
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  EXPECT_EQ(JsonString(*vm, "id"), "vm-7");
  EXPECT_EQ(JsonUint(*vm, "memory_bytes"), 4096u);
}

TEST(ApiClientTest, ErrorBodyBecomesStatus) {
  TestServer server;
  server.http().Get("/api/v1/vms/vm-9", [](const httplib::Request&, httplib::Response& res) {
    res.status = 404;
    res.set_content(R"({"error":"vm vm-9 does not exist","code":"not_found"})", "application/json");
  });
  server.http().Post("/api/v1/vms", [](const httplib::Request&, httplib::Response& res) {
    res.status = 409;
    res.set_content(R"({"error":"vm vm-1 already exists","code":"already_exists"})",
                    "application/json");
  });
  server.http().Post("/api/v1/migrations", [](const httplib::Request&, httplib::Response& res) {
    res.status = 409;
    res.set_content(R"({"error":"vm vm-1 is already migrating","code":"failed_precondition"})",
                    "application/json");
  });
  server.Start();
  ApiClient client(server.url());

  Result<json> missing = client.Get("/api/v1/vms/vm-9");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(), "vm vm-9 does not exist");

  Result<json> exists = client.Post("/api/v1/vms", {{"id", "vm-1"}});
  ASSERT_FALSE(exists.ok());
  EXPECT_EQ(exists.status().code(), StatusCode::kAlreadyExists);

  Result<json> busy = client.Post("/api/v1/migrations", {{"vm", "vm-1"}, {"to", "node-b"}});
  ASSERT_FALSE(busy.ok());
  EXPECT_EQ(busy.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(busy.status().message(), "vm vm-1 is already migrating");
}

TEST(ApiClientTest, ErrorWithoutJsonUsesHttpStatus) {
  TestServer server;
  server.http().Get("/readyz", [](const httplib::Request&, httplib::Response& res) {
    res.status = 503;
    res.set_content(R"({"status":"not_ready","reason":"store not open"})", "application/json");
  });
  server.http().Get("/boom", [](const httplib::Request&, httplib::Response& res) {
    res.status = 500;
    res.set_content("oops", "text/plain");
  });
  server.Start();
  ApiClient client(server.url());

  Result<json> ready = client.Get("/readyz");
  ASSERT_FALSE(ready.ok());
  EXPECT_EQ(ready.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(ready.status().message(), "store not open");

  Result<json> boom = client.Get("/boom");
  ASSERT_FALSE(boom.ok());
  EXPECT_EQ(boom.status().code(), StatusCode::kInternal);
  EXPECT_EQ(boom.status().message(), "dwcpd answered GET /boom with HTTP 500: oops");

  Result<json> unknown = client.Get("/no/such/path");  // httplib's own 404, empty body
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), StatusCode::kNotFound);
}

TEST(ApiClientTest, NonJsonSuccessIsInternal) {
  TestServer server;
  server.http().Get("/text", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("hello", "text/plain");
  });
  server.http().Get("/empty",
                    [](const httplib::Request&, httplib::Response& res) { res.status = 204; });
  server.Start();
  ApiClient client(server.url());
  Result<json> text = client.Get("/text");
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().code(), StatusCode::kInternal);
  Result<json> empty = client.Get("/empty");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->is_object());
  EXPECT_TRUE(empty->empty());
}

TEST(ApiClientTest, ConnectionRefusedIsUnavailableWithHint) {
  int port = UnusedPort();
  ASSERT_GT(port, 0);
  std::string url = "http://127.0.0.1:" + std::to_string(port);
  ApiClient client(url);
  Result<json> r = client.Get("/api/v1/vms");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(r.status().message(), "cannot reach dwcpd at " + url +
                                      ": Connection refused \u2014 is it running? start a local "
                                      "cluster with `dwcp demo`");
}

TEST(ApiClientTest, SlowServerHitsReadTimeout) {
  TestServer server;
  server.http().Get("/slow", [](const httplib::Request&, httplib::Response& res) {
    std::this_thread::sleep_for(std::chrono::milliseconds(800));
    res.set_content("{}", "application/json");
  });
  server.Start();
  ApiClientOptions options;
  options.read_timeout = std::chrono::milliseconds(100);
  ApiClient client(server.url(), options);
  auto start = std::chrono::steady_clock::now();
  Result<json> r = client.Get("/slow");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(700));
}

TEST(ApiClientTest, SendsBearerTokenAndUsesPathPrefix) {
  TestServer server;
  server.http().Get("/proxy/api/v1/nodes", [](const httplib::Request& req, httplib::Response& res) {
    if (req.get_header_value("Authorization") != "Bearer s3cret") {
      res.status = 401;
      res.set_content(R"({"error":"missing bearer token","code":"unauthenticated"})",
                      "application/json");
      return;
    }
    res.set_content(R"({"nodes":[]})", "application/json");
  });
  server.Start();
  ApiClientOptions with_token;
  with_token.bearer_token = "s3cret";
  ApiClient good(server.url() + "/proxy/", with_token);
  EXPECT_TRUE(good.Get("/api/v1/nodes").ok());
  ApiClient bad(server.url() + "/proxy");
  Result<json> denied = bad.Get("/api/v1/nodes");
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(denied.status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(denied.status().message(), "missing bearer token");
}

TEST(ApiClientTest, MalformedBaseUrlIsInvalidArgument) {
  for (const char* url :
       {"127.0.0.1:8080", "ftp://host", "http://", "http://host:99999", "http://host:abc"}) {
    ApiClient client(url);
    Result<json> r = client.Get("/healthz");
    ASSERT_FALSE(r.ok()) << url;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << url;
  }
}

TEST(ApiClientTest, StatusCodeNamesRoundTrip) {
  EXPECT_EQ(StatusCodeFromName("not_found"), StatusCode::kNotFound);
  EXPECT_EQ(StatusCodeFromName("unavailable"), StatusCode::kUnavailable);
  EXPECT_EQ(StatusCodeFromName("internal"), StatusCode::kInternal);
  EXPECT_EQ(StatusCodeFromName("bogus"), StatusCode::kOk);
  Status s = StatusFromHttpError(409, R"({"error":"x","code":"bogus"})", "POST /x");
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(), "x");
}

TEST(ApiClientTest, JsonReadersNeverThrow) {
  json j = {{"s", "text"}, {"i", -5},   {"u", 18446744073709551615ull},
            {"f", 2.6},    {"b", true}, {"n", nullptr}};
  EXPECT_EQ(JsonString(j, "s"), "text");
  EXPECT_EQ(JsonString(j, "i"), "");
  EXPECT_EQ(JsonInt(j, "i"), -5);
  EXPECT_EQ(JsonInt(j, "f"), 3);
  EXPECT_EQ(JsonUint(j, "i"), 0u);
  EXPECT_EQ(JsonUint(j, "u"), 18446744073709551615ull);
  EXPECT_DOUBLE_EQ(JsonDouble(j, "i"), -5.0);
  EXPECT_TRUE(JsonBool(j, "b"));
  EXPECT_EQ(JsonInt(j, "missing", 7), 7);
  EXPECT_EQ(JsonInt(j, "n", 7), 7);
  EXPECT_EQ(JsonString(json::array(), "s"), "");
  EXPECT_EQ(JsonUint(json("str"), "u"), 0u);
}

}  // namespace
}  // namespace dwcp::cli
