#include "api/web_assets.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <string>

namespace dwcp::api {
namespace {

// The embedded files are the real Vite build of web/ (cmake/build_web_assets.cmake).
const WebAsset* HashedScript() {
  for (size_t i = 0; i < kWebAssetCount; ++i) {
    std::string path = kWebAssets[i].path;
    if (path.starts_with("/assets/") && path.ends_with(".js")) return &kWebAssets[i];
  }
  return nullptr;
}

TEST(WebAssetsTest, RootIsTheDashboardsIndexHtml) {
  const WebAsset* index = FindWebAsset("/");
  ASSERT_NE(index, nullptr);
  EXPECT_EQ(index, FindWebAsset("/index.html"));
  EXPECT_NE(index->body().find("<div id=\"app\">"), std::string_view::npos);
  EXPECT_EQ(WebContentType(index->path), "text/html; charset=utf-8");
  EXPECT_EQ(WebCacheControl(index->path), "no-cache");
  EXPECT_EQ(FindWebAsset("/missing.js"), nullptr);
  EXPECT_EQ(FindWebAsset(""), nullptr);
}

TEST(WebAssetsTest, HashedAssetsAreReferencedAndImmutable) {
  const WebAsset* script = HashedScript();
  ASSERT_NE(script, nullptr);
  EXPECT_GT(script->size, 1000u);
  EXPECT_NE(FindWebAsset("/")->body().find(script->path), std::string_view::npos)
      << "index.html loads " << script->path;
  EXPECT_EQ(WebContentType(script->path), "text/javascript; charset=utf-8");
  EXPECT_EQ(WebCacheControl(script->path), "public, max-age=31536000, immutable");
  EXPECT_EQ(WebContentType("/assets/style-x.css"), "text/css; charset=utf-8");
  EXPECT_EQ(WebContentType("/x.unknown"), "application/octet-stream");
}

TEST(WebAssetsTest, ServesWithEtagAndAnswers304WhenItMatches) {
  httplib::Request req;
  req.path = "/";
  httplib::Response res;
  ServeWebAsset(req, res);
  EXPECT_EQ(res.status, 200);
  EXPECT_EQ(res.get_header_value("Content-Type"), "text/html; charset=utf-8");
  const std::string etag = res.get_header_value("ETag");
  ASSERT_EQ(etag.size(), 18u) << etag;  // 16 hex digits, quoted
  EXPECT_EQ(res.body, FindWebAsset("/")->body());

  for (const std::string& header : {etag, "W/" + etag, "\"other\", " + etag, std::string("*")}) {
    httplib::Request again;
    again.path = "/";
    again.headers.emplace("If-None-Match", header);
    httplib::Response cached;
    ServeWebAsset(again, cached);
    EXPECT_EQ(cached.status, 304) << header;
    EXPECT_TRUE(cached.body.empty());
  }
  httplib::Request stale;
  stale.path = "/";
  stale.headers.emplace("If-None-Match", "\"0000000000000000\"");
  httplib::Response fresh;
  ServeWebAsset(stale, fresh);
  EXPECT_EQ(fresh.status, 200);
}

TEST(WebAssetsTest, UnknownPathIsAJson404) {
  httplib::Request req;
  req.path = "/assets/nope.js";
  httplib::Response res;
  ServeWebAsset(req, res);
  EXPECT_EQ(res.status, 404);
  EXPECT_NE(res.body.find("\"code\":\"not_found\""), std::string::npos);
}

}  // namespace
}  // namespace dwcp::api
